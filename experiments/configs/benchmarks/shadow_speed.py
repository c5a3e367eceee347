"""Config of experiments/benchmarks/shadow_speed.py.

Variants: ``full`` (the default), ``smoke``, ``device``.
"""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.hidden = (256,)
  c.num_models = 64
  c.pool_size = 5000           # each model trains on half of it
  c.num_epochs = 2
  c.batch_size = 64
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.hidden = (8,)
  c.num_models = 2
  c.pool_size = 128
  c.num_epochs = 1
  c.batch_size = 32


def _device(c: ml_collections.ConfigDict) -> None:
  # A lent accelerator without TFDS: synthetic images of FMNIST's shape (timings and
  # memory do not depend on pixel values; the losses then mean nothing).
  c.dataset = 'synthetic'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.shadow_speed', default=_default,
                    variants={'smoke': _smoke, 'device': _device})
