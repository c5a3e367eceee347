"""Config of experiments/federated.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base
from experiments.federated import AGGREGATORS, ATTACKS, PARTITIONS


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (10,)})
  c.train_subset = 0           # 0 = the whole training split, shared by the clients
  c.test_subset = 0            # 0 = the whole test split
  c.num_clients = 30
  c.byzantine_fraction = 0.2
  c.partitions = PARTITIONS
  c.alpha = 0.5                # Dirichlet concentration of the non-IID partition
  c.aggregators = AGGREGATORS
  c.attacks = ('none', 'sign_flip', 'gaussian', 'alie', 'ipm')
  c.num_rounds = 150
  c.eval_every = 25
  c.local_steps = 1            # one local step per round: Baruch et al.'s distributed SGD
  c.batch_size = 32
  c.client_lr = 0.15
  c.server_lr = 1.0
  c.geometric_median_iters = 10
  c.sign_flip_scale = 10.0     # -10 x own update: reverses the mean at 20% Byzantine
  c.gaussian_stddev = 1.0      # per coordinate, >> the honest updates' entries
  c.alie_statistics = 'byzantine'   # the paper's non-omniscient attacker
  c.ipm_epsilon = 0.5


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.train_subset = 2200
  c.test_subset = 500
  c.num_clients = 11          # Bulyan needs K >= 4f + 3 = 11 for f = 2
  c.byzantine_fraction = 0.2
  c.num_rounds = 3
  c.eval_every = 2
  c.local_steps = 2
  c.batch_size = 8
  c.geometric_median_iters = 5
  c.aggregators = ('mean', 'coordinate_median', 'krum')
  c.attacks = ATTACKS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='federated', default=_default,
                    variants={'smoke': _smoke})
