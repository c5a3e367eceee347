"""Config of experiments/benchmarks/train_speed.py.

Variants: ``full`` (the default), ``smoke``, ``device``.
"""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def _default(c: ml_collections.ConfigDict) -> None:
  c.cnn_batch = 128
  c.cnn_steps = 60
  c.num_models = 64
  c.mlp_hidden = (64,)
  c.mlp_epochs = 10
  c.mlp_batch = 32
  c.repeats = 3
  # 'fashion_mnist' (real data through TFDS) or 'synthetic' (uniform images, random labels:
  # throughput does not depend on pixel values; used on lent accelerators without TFDS).
  c.cnn_data = 'fashion_mnist'
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.cnn_steps = 4
  c.num_models = 4
  c.mlp_epochs = 1
  c.repeats = 1


def _device(c: ml_collections.ConfigDict) -> None:
  # A lent accelerator: longer timed runs (steps are ~100x cheaper), same M and models.
  c.cnn_steps = 400
  c.cnn_data = 'synthetic'
  c.repeats = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.train_speed', default=_default,
                    variants={'smoke': _smoke, 'device': _device})
