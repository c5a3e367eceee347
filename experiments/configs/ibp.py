"""Config of experiments/ibp.py. Variants: ``full`` (the default) and ``smoke``.

Deviations from Gowal et al.'s (2018) training setup (MNIST: 60k steps of batch 100, 2k warm-up and
10k ramp-up steps, Adam 1e-3 with decays, their "small"/"medium"/"large" CNNs): FMNIST with
a small CNN of this package (two 3x3 conv layers of 16 and 32 channels with 2x2 max-pooling,
dense 100), 10 epochs of batch 100 (6,000 steps), warm-up and ramp as the paper's fractions
of training (2/60 and 10/60), constant learning rate. ``eps_train = 1.1 eps_test`` as the
paper (``eps_scale``), ``kappa`` 1 -> 0.5. Evaluation on ``n_test`` random test images:
clean, PGD-20 (step eps/4, random start) and IBP-verified accuracy at ``eps_test = 0.1``.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.defense_cnn(c, features=(16, 32), dense=100, batch_size=100, n_test=1000, epochs=10)
  c.eps_test = 0.1
  c.eps_scale = 1.1                # eps_train = 1.1 eps_test (paper, MNIST)
  c.kappa_final = 0.5
  c.warmup_fraction = 2 / 60       # paper: 2k of 60k steps
  c.ramp_fraction = 10 / 60        # paper: 10k of 60k steps
  c.pgd_steps = 20
  c.eval_batch = 250


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.n_train, c.n_test, c.epochs, c.batch_size = 256, 32, 2, 64
  c.pgd_steps = 5
  c.eval_batch = 16


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='ibp', default=_default, variants={'smoke': _smoke})
