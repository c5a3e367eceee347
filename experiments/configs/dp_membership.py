"""Config of experiments/dp_membership.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.pool_size = 10000           # each model trains on half of it
  c.test_size = 2000
  c.hidden = (256,)
  c.num_shadow = 16             # even; every example IN for half of them
  c.epsilons = (0.0, 8.0, 1.0)  # 0.0 = non-private reference (no clip, no noise)
  c.delta = 1e-5
  c.epochs = 20                 # long enough to overfit without DP
  c.expected_batch_size = 100
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.l2_norm_clip = 1.0
  c.accountant = 'pld'


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.pool_size, c.test_size = 128, 64
  c.hidden = (16,)
  c.num_shadow = 4
  c.epsilons = (0.0, 2.0)
  c.epochs = 2
  c.expected_batch_size = 16
  c.accountant = 'rdp'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dp_membership', default=_default,
                    variants={'smoke': _smoke})
