"""Config of experiments/benchmarks/dp_speed.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def _default(c: ml_collections.ConfigDict) -> None:
  c.features = (32, 64)
  c.dense = 1024
  c.batch = 128
  c.repeats = 5
  c.noise_multiplier = 1.0
  c.l2_norm_clip = 1.0
  c.learning_rate = 0.05
  c.torch_threads = 0            # 0 = torch default
  c.opacus_modes = ('hooks', 'ghost')
  # The accounted run (epsilon from jaxsec and from jax_privacy): FMNIST-sized, 60 epochs.
  c.accounting_dataset_size = 60_000
  c.accounting_batch_size = 256
  c.accounting_steps = 60 * 60_000 // 256
  c.accounting_delta = 1e-5
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.features = (4, 8)
  c.dense = 16
  c.batch = 8
  c.repeats = 1
  c.opacus_modes = ('ghost',)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.dp_speed', default=_default,
                    variants={'smoke': _smoke})
