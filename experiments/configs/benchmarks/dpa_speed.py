"""Config of experiments/benchmarks/dpa_speed.py.

Variants: ``full`` (the default: the DPA study's ``cpu`` setting, k = 50 MLPs on the whole
FMNIST training set, fewer epochs), ``smoke``, ``device`` (the study's CNN on a GPU).
"""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.n_train = 0                 # 0 = the whole training split
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (256,)})
  c.num_partitions = 50
  c.capacity_factor = 1.3       # parts padded to ceil(1.3 N / k) rows, as experiments/dpa.py
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.num_epochs = 5
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.dataset = 'synthetic'       # no 10 s TFDS load in the test suite
  c.n_train = 240
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (8,)})
  c.num_partitions = 3
  c.capacity_factor = 2.0
  c.batch_size = 16
  c.num_epochs = 1


def _device(c: ml_collections.ConfigDict) -> None:
  # A lent accelerator without TFDS: synthetic images of FMNIST's shape (timings and memory
  # do not depend on pixel values), the DPA study's CNN base models.
  c.dataset = 'synthetic'
  c.n_train = 60000
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 64})
  c.num_epochs = 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.dpa_speed', default=_default,
                    variants={'smoke': _smoke, 'device': _device})
