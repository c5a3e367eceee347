"""Config of experiments/gradient_masking.py. Variants: ``full`` (the default) and ``smoke``.

SPSA as CleverHans / Uesato et al. (Adam, learning rate 0.01, delta 0.01, margin loss,
early stop) with 32 antithetic pairs (64 queries) per step and 100 steps (paper: 8192
queries per step for ImageNet-scale inputs) on 100 random test images; PGD-40 with step
eps / 10 and a random start.
Three networks of 2 epochs each on all of FMNIST (undistilled, teacher and student at
T = 100). Measured: about 15 minutes of training and 38 of attacks (SPSA ~10 minutes per
model) on this repository's 2-core CPU while other jobs ran (load average 5-15).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.defense_cnn(c, features=(16, 32), dense=100, epochs=2)
  c.temperature = 100.0            # Papernot et al.'s distillation temperature
  c.n_attack = 100                 # random test images attacked
  c.eps = 0.1
  c.pgd_steps = 40
  c.pgd_step_factor = 0.1          # step = eps * factor
  c.spsa_steps = 100
  c.spsa_learning_rate = 0.01
  c.spsa_delta = 0.01
  c.spsa_samples = 32              # antithetic pairs per step
  c.eval_batch = 100


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.n_train, c.n_test, c.n_attack, c.epochs, c.batch_size = 256, 64, 8, 1, 64
  c.pgd_steps, c.spsa_steps, c.spsa_samples, c.eval_batch = 3, 3, 4, 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='gradient_masking', default=_default,
                    variants={'smoke': _smoke})
