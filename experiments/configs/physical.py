"""Config of experiments/physical.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn(c)
  c.target = 8                       # 'Bag'
  c.sizes = (0.04, 0.09, 0.16, 0.25)  # fractions of the image area
  c.patch = ml_collections.ConfigDict({
      'shape': 'circle', 'num_steps': 250, 'batch_size': 64, 'learning_rate': 0.05,
      'max_rotation': 22.5, 'scale': (0.9, 1.1), 'brightness': (0.9, 1.1)})
  c.fit_examples = 10000             # training images the patch is fitted on
  c.eval_examples = 2000             # held-out test images (label != target)
  c.eval_draws = 2                   # random placements per test image
  c.eval_batch = 500
  c.history_every = 10               # objective trace kept every this many steps


def _smoke(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn_smoke(c)
  c.sizes = (0.04, 0.16)
  c.patch.num_steps = 30
  c.patch.batch_size = 16
  c.patch.learning_rate = 0.1
  c.fit_examples = 512
  c.eval_examples = 64
  c.eval_draws = 1
  c.eval_batch = 64
  c.history_every = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='physical', default=_default,
                    variants={'smoke': _smoke})
