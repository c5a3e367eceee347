"""Config of experiments/distributed_dp.py. Variants: ``full`` (the default), ``smoke``.

Deviations from the papers' setting (Kairouz et al. 2021, Agarwal et al. 2021: EMNIST /
Stack Overflow, hundreds of clients per round sampled from thousands, thousands of rounds,
a CNN): ``num_clients`` = 100 IID clients of Fashion-MNIST, ALL of them in each of
``num_rounds`` rounds (no sampling, so no amplification: dp_accounting has no Skellam event,
see jaxsec.federated.distributed_dp), a linear model on 14x14 average-pooled inputs (1970
parameters, D = 2048), so that the full run, with the real Bonawitz protocol among 100
clients every round, fits about 30 minutes on 2 shared cores per repeat. delta = 1e-5 (1 / N^1.1 would
be 6e-3 with N = 100 clients, too large to mean anything). With so few clients the noise
per client is large and accuracy at epsilon 1 is expected to be low for both DP arms: the
comparison that matters is central vs distributed at the same epsilon.
"""
import math

import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.train_subset = 0
  c.test_subset = 0
  c.pool = 2                   # 28x28 -> 14x14 average pooling
  c.model = 'logreg'
  c.num_clients = 100
  c.num_rounds = 15
  c.local_steps = 10
  c.batch_size = 32
  c.client_lr = 0.5
  c.server_lr = 1.0
  c.l2_norm_clip = 1.0
  c.epsilons = (1.0, 3.0, 8.0)
  c.delta = 1e-5
  c.arms = ('none', 'central', 'distributed')
  c.scale = 1000.0              # integers per unit: Delta_2 ~ 1000 >> sqrt(D) / 2
  c.modulus_bits = 32
  c.beta = math.exp(-0.5)
  c.rotate = True
  c.secure = True               # the real protocol every round (False: the same sum, clear)
  c.repeats = 5                 # DP arms: independent runs (training and noise draws); each
                                # finished run is checkpointed, a rerun with more repeats
                                # runs only the new ones (a distributed run: 1-6 min here)


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.train_subset = 600
  c.test_subset = 200
  c.pool = 4
  c.num_clients = 6
  c.num_rounds = 2
  c.local_steps = 2
  c.batch_size = 8
  c.epsilons = (8.0,)
  c.repeats = 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='distributed_dp', default=_default,
                    variants={'smoke': _smoke})
