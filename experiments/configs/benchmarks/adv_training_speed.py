"""Config of experiments/benchmarks/adv_training_speed.py.

Variants: ``full`` (the default), ``smoke``.
"""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def _default(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.batch_size = 128
  c.eps = 0.1
  c.pgd_steps = (3, 7, 10)
  c.trades_steps = 7
  c.steps = 4
  c.repeats = 5
  c.epoch_examples = 60000
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 8})
  c.batch_size = 16
  c.pgd_steps = (2,)
  c.trades_steps = 2
  c.steps, c.repeats = 2, 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.adv_training_speed', default=_default,
                    variants={'smoke': _smoke})
