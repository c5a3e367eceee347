"""Config of experiments/benchmarks/sweep_overhead.py.

Variants: ``full`` (the default; refuses a loaded CPU machine) and ``smoke``.
"""
import ml_collections

from experiments.benchmarks import machine
from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.mode = 'benchmark'         # 'trivial': one point of the launcher's timed sweeps
  c.num_points = 16            # trivial points per launch
  c.ray_cpus = 2               # the local Ray's CPUs (this repository's CI machine: 2)
  c.num_eps = 16               # the vectorised eps axis
  c.eps_max = 0.3
  c.pgd_steps = 20
  c.num_images = 256           # digits test images attacked
  c.hidden = (64,)
  c.num_epochs = 5
  c.repeats = 3
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.num_points = 4
  c.num_eps = 4
  c.pgd_steps = 2
  c.num_images = 16
  c.hidden = (16,)
  c.num_epochs = 3
  c.repeats = 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.sweep_overhead', default=_default,
                    variants={'smoke': _smoke})
