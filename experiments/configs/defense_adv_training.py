"""Config of experiments/defense_adv_training.py.

Variants: ``full`` (the default; meant to reach Song et al.'s figures), ``smoke``, ``budget``
(what the shared 2-core CPU allows), ``pgd_at`` and ``pgd_at_wide`` (full data, PGD-AT only).
"""
import ml_collections

from experiments.configs import base
from experiments.defense_adv_training import METHODS


def _default(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.batch_size = 128
  c.learning_rate = 2e-3          # peak of the one-cycle schedule
  c.eps = 0.1                     # L_inf, inputs in [0, 1]
  c.fgsm_alpha = 0.5              # Goodfellow's mix
  c.pgd_train_steps = 7
  c.pgd_train_step_size = 0.025   # 7 x 0.025 = 1.75 eps of path (Song: 8 x 0.02)
  c.trades_beta = 6.0
  c.trades_steps = 7
  c.trades_step_size = 0.025
  c.fast_step = 1.25              # x eps (Wong et al.)
  c.eval_pgd_steps = 20
  c.eval_pgd_step_size = 0.01
  c.eval_batch = 250
  c.autoattack_version = 'standard'
  c.autoattack_methods = ('pgd_at', 'trades', 'fast_at')
  c.methods = METHODS
  c.n_train, c.n_test, c.n_autoattack = 0, 0, 1000
  c.epochs = 15


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 16})
  c.n_train, c.n_test, c.n_autoattack = 256, 64, 32
  c.batch_size = 64
  c.epochs = 1
  c.pgd_train_steps = 2
  c.trades_steps = 2
  c.eval_pgd_steps = 3
  c.eval_batch = 32
  c.autoattack_version = 'jaxsec-fast'
  c.autoattack_methods = ('pgd_at',)
  c.methods = ('pgd_at',)


def _budget(c: ml_collections.ConfigDict) -> None:
  # The project's shared 2-core CPU gave this run ~0.2 cores: 5000 images, 2 epochs, 3
  # attack steps in training. It shows the ordering, not Song et al.'s figures.
  c.n_train, c.n_test, c.n_autoattack = 5000, 300, 100
  c.epochs = 2
  c.pgd_train_steps, c.pgd_train_step_size = 3, 0.04
  c.trades_steps, c.trades_step_size = 3, 0.04
  c.autoattack_version = 'jaxsec-fast'
  c.autoattack_methods = ('pgd_at',)


def _pgd_at(c: ml_collections.ConfigDict) -> None:
  """Full data, PGD-AT only (~1 h on 2 CPU cores)."""
  c.methods = ('pgd_at',)
  c.autoattack_methods = ('pgd_at',)


def _pgd_at_wide(c: ml_collections.ConfigDict) -> None:
  """Madry et al.'s MNIST widths (conv 32/64 -> 64/128, dense 1024): capacity buys clean
  accuracy under adversarial training. GPU-sized."""
  _pgd_at(c)
  c.model_kwargs = ml_collections.ConfigDict({'features': (64, 128), 'dense': 1024})
  c.epochs = 30


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='defense_adv_training', default=_default,
                    variants={'smoke': _smoke, 'budget': _budget, 'pgd_at': _pgd_at,
                              'pgd_at_wide': _pgd_at_wide})
