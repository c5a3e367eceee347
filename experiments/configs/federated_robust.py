"""Config of experiments/federated_robust.py. Variants: ``full`` (the default), ``smoke``.

``full``: 50 rounds of 5 local SGD steps (the issue's 50 rounds; the papers train longer, to
convergence), 25 clients of which 5 (20%) are Byzantine, a 10-unit MLP (as
experiments/federated.py); about 10 minutes on two shared CPU cores.
"""
import ml_collections

from experiments.configs import base
from experiments.federated_robust import AGGREGATORS, ATTACKS, PARTITIONS


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (10,)})
  c.train_subset = 0
  c.test_subset = 0
  c.num_clients = 25
  c.byzantine_fraction = 0.2
  c.partitions = PARTITIONS
  c.alpha = 0.5                 # Dirichlet concentration of the non-IID partition
  c.aggregators = AGGREGATORS
  c.attacks = ATTACKS
  c.num_rounds = 50
  c.eval_every = 10
  c.local_steps = 5
  c.batch_size = 32
  c.client_lr = 0.1
  c.server_lr = 1.0
  c.root_size = 100             # FLTrust's root data set (Cao et al.: 100 examples)
  c.bucket_size = 2             # Karimireddy et al.'s s
  c.cc_tau = 1.0                # centered clipping radius (honest updates: norm 0.2-0.4)
  c.cc_iters = 1
  c.flame_lambda = 0.001        # FLAME's noise level for image classification
  c.sign_flip_scale = 4.0
  c.agr_deviation = 'unit_vec'  # min-max / min-sum perturbation (their default)
  c.dba_target = 0
  c.dba_fraction = 0.5          # poisoned share of each DBA client's minibatch
  c.dba_pieces = 4
  c.dba_bar_length = 4
  c.dba_gap = 2
  c.dba_shift = 1


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.train_subset = 1100
  c.test_subset = 300
  c.num_clients = 10
  c.num_rounds = 2
  c.eval_every = 2
  c.local_steps = 1
  c.batch_size = 8
  c.root_size = 20
  c.aggregators = ('fltrust',)
  c.attacks = ('none', 'fang_krum', 'min_max', 'dba')
  c.partitions = ('iid', 'dirichlet')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='federated_robust', default=_default,
                    variants={'smoke': _smoke})
