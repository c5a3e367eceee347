"""Config of experiments/defense_regularizers.py.

Variants: ``full`` (the default), ``smoke``, ``budget``.
"""
import ml_collections

from experiments.configs import base
from experiments.defense_regularizers import TRAINED


def _default(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.eps = (0.03, 0.1)
  c.pgd_steps = 20
  c.l2 = 1e-3
  c.dropout = 0.5
  c.input_gradient = 10.0
  c.contractive = 0.01
  c.deep_contractive = 0.01
  c.projections = 1
  c.dae_hidden = (512,)
  c.dae_noise = 0.1
  c.test_noise = 0.1
  c.eot_samples = 8
  c.detector_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 64})
  c.detector_eps = 0.1
  c.trained = TRAINED
  c.eval_batch = 250
  c.autoattack_n = 500              # AutoAttack-style ensemble on the first n test images
  c.autoattack_version = 'standard'
  # (the full variant)
  c.n_train, c.n_test, c.n_detector = 0, 2000, 10000
  c.epochs, c.dae_epochs, c.detector_epochs = 15, 20, 10


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 16})
  c.detector_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 8})
  c.n_train, c.n_test, c.n_detector = 256, 64, 128
  c.epochs, c.dae_epochs, c.detector_epochs = 1, 1, 1
  c.batch_size = 64
  c.pgd_steps = 3
  c.eot_samples = 2
  c.eps = (0.1,)
  c.trained = ('plain',)
  c.dae_hidden = (32,)
  c.eval_batch = 32
  c.autoattack_n, c.autoattack_version = 16, 'jaxsec-fast'


def _budget(c: ml_collections.ConfigDict) -> None:
  c.n_train, c.n_test, c.n_detector = 5000, 200, 1000
  c.epochs, c.dae_epochs, c.detector_epochs = 2, 5, 3
  c.eot_samples = 4
  c.eval_batch = 200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='defense_regularizers', default=_default,
                    variants={'smoke': _smoke, 'budget': _budget})
