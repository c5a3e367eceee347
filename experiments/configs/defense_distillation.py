"""Config of experiments/defense_distillation.py.

Variants: ``full`` (the default), ``smoke``, ``budget``.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.temperature = 100.0
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.fgsm_eps = 0.1
  c.jsma_gamma = 0.145
  # The paper's / CleverHans's rule on an empty saliency map; the 'stop' rule's success is
  # derived from the same run (examples that never met an empty map agree under both).
  c.jsma_empty_map = 'continue'
  c.cw_binary_steps = 6
  c.cw_steps = 200
  c.cw_initial_const = 0.1
  c.eval_batch = 100
  # (the full variant)
  c.n_train, c.n_test, c.n_attack = 0, 0, 1000
  c.epochs = 20
  c.cw_binary_steps, c.cw_steps = 9, 1000


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 16})
  c.n_train, c.n_test, c.n_attack = 128, 32, 4
  c.epochs = 1
  c.batch_size = 64
  c.cw_binary_steps, c.cw_steps = 2, 10
  c.eval_batch = 4
  c.jsma_gamma = 0.02


def _budget(c: ml_collections.ConfigDict) -> None:
  c.n_train, c.n_test, c.n_attack = 5000, 300, 50
  c.epochs = 3
  c.cw_binary_steps, c.cw_steps = 4, 100
  c.eval_batch = 50


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='defense_distillation', default=_default,
                    variants={'smoke': _smoke, 'budget': _budget})
