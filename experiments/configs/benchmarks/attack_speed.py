"""Config of experiments/benchmarks/attack_speed.py.

Variants: ``full`` (the default), ``smoke``, ``device``.
"""
import ml_collections

from experiments.configs import base
from experiments.benchmarks import machine


def briefly_trained_cnn(c: ml_collections.ConfigDict) -> None:
  """The attacked model of the attack benchmarks: the reference CNN, one FMNIST epoch."""
  c.dataset = 'fashion_mnist'
  c.model_kwargs = ml_collections.ConfigDict({})    # the reference CNN (models.CNN defaults)
  c.train_subset = 10000
  c.train_epochs = 1
  c.train_batch = 128
  c.batch = 256


def _default(c: ml_collections.ConfigDict) -> None:
  briefly_trained_cnn(c)
  c.eps = 0.1
  c.pgd_steps = 10
  c.pgd_rel_step = 2.5
  c.cw_binary_steps = 3
  c.cw_steps = 50
  c.cw_lr = 0.01
  c.cw_initial_const = 1.0
  c.deepfool_steps = 50
  c.overshoot = 0.02
  c.apgd_steps = 20              # APGD-CE (vs torchattacks.APGD, the official code's port)
  c.fab_steps = 20               # FAB-T, 9 target classes (vs torchattacks.FAB multi-targeted)
  c.repeats = 3
  c.slow_repeats = 1          # for C&W and DeepFool (minutes per call on CPU for the peers)
  c.peers = ('torchattacks', 'foolbox')
  c.attacks = ('fgsm', 'pgd', 'cw', 'deepfool', 'apgd', 'fab')
  c.max_load_per_cpu = machine.DEFAULT_MAX_LOAD_PER_CPU   # refuse a loaded machine


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.max_load_per_cpu = None
  c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 32})
  c.train_subset = 512
  c.batch = 8
  c.pgd_steps = 2
  c.cw_binary_steps = 1
  c.cw_steps = 3
  c.deepfool_steps = 3
  c.apgd_steps = 2
  c.fab_steps = 2
  c.repeats = 1
  c.slow_repeats = 1
  c.peers = ()


def _device(c: ml_collections.ConfigDict) -> None:
  # A lent accelerator without TFDS or the peers installed: the compute-limit ratio and
  # jaxsec's own timings only. 'synthetic' data (uniform images, random labels) does not
  # change any timing; the strength numbers of this variant mean nothing.
  c.dataset = 'synthetic'
  c.train_subset = 4096
  c.repeats = 10
  c.slow_repeats = 3
  c.peers = ()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='benchmarks.attack_speed', default=_default,
                    variants={'smoke': _smoke, 'device': _device})
