"""DP-FedAvg hooks (McMahan, Ramage, Talwar, Zhang 2018): user-level DP for federated
averaging, used by :func:`jaxsec.federated.fedavg.make_fedavg`.

Each sampled client's model delta is clipped to l2 norm ``S`` (:func:`clip_update`); the
server sums the clipped deltas, adds ``N(0, (z S)^2)`` and divides by the *expected*
number of clients (the fixed-denominator estimator of the paper), see :func:`dp_aggregate`.
The guarantee is user-level (neighbouring data sets differ in one client's whole data)
and is accounted by :func:`account` with the event of the client sampler that ran
(:func:`dp_event`); the number of clients ``W`` is treated as public, as in the paper:

* Poisson sampling (each client joins a round with probability ``q``):
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` per round under add/remove-one-client
  (the clipped sum moves by ``S``); PLD or RDP.
* Fixed-size uniform sampling of ``m`` of the ``W`` clients without replacement (or all of
  them): ``SampledWithoutReplacementDpEvent(W, m, GaussianDpEvent(z / 2))`` per round
  under replace-one-client, the only relation under which a fixed round size is
  meaningful (Wang, Balle, Kasiviswanathan 2019, Thm. 27); the clipped sum moves by
  ``2 S``, hence ``z / 2``. RDP only. Replace-one epsilons are not comparable to
  add/remove ones (replacing is removing then adding).

Adaptive clipping of the client norm (Andrew et al. 2021) is ``dpsgd.AdaptiveClipping`` with
the client count in place of the batch count (:func:`dp_aggregate`); it leaves the event, hence
the reported epsilon, unchanged (their Thm. 1).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import optax

from jaxsec import _checks
from jaxsec.privacy import accounting, clipping, noise
from jaxsec.privacy.dpsgd import AdaptiveClipping

NR = dp_accounting.NeighboringRelation


def clip_update(update: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
  """Client-side: scales a model delta to l2 norm at most ``l2_norm_clip``; returns the norm."""
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  return clipping.clip_tree(update, l2_norm_clip)


class AggregateInfo(NamedTuple):
  norms: jax.Array        # [M] client update norms before clipping
  num_clients: jax.Array  # number of participating (unmasked) clients
  next_l2_norm_clip: jax.Array | None = None   # adaptive clipping: next round's S


def dp_aggregate(updates: Any, key: jax.Array, *, l2_norm_clip: Any, noise_multiplier: float,
                 expected_clients: float, mask: jax.Array | None = None,
                 adaptive_clipping: AdaptiveClipping | None = None
                 ) -> tuple[Any, AggregateInfo]:
  """Server-side: ``(sum_m clip(update_m) + N(0, (z S)^2)) / (q W)``.

  With ``adaptive_clipping`` (Andrew, Thakkar, McMahan, Ramaswamy 2021, Algorithm 2 at the
  client level): the update noise multiplier is ``(z^-2 - (2 sigma_b)^-2)^(-1/2)`` and the
  count of clients with ``||update|| <= S`` is released with ``N(0, sigma_b^2)`` (their
  Thm. 1: together one Gaussian mechanism of multiplier ``z``, so the accounting of
  :func:`account` is unchanged); ``AggregateInfo.next_l2_norm_clip`` is the next round's
  ``S exp(-eta (b - gamma))``, a function of the noised count only. ``z = 0``: no noise on
  either (no privacy), the update follows the exact count.

  Args:
    updates: stacked client deltas, leading axis M (clients of this round).
    key: noise key.
    l2_norm_clip: S (this round's, with adaptive clipping; may be traced).
    noise_multiplier: z.
    expected_clients: q W, the fixed denominator.
    mask: optional [M] 0/1 marking clients that really participate (padding).
    adaptive_clipping: a :class:`jaxsec.privacy.dpsgd.AdaptiveClipping` (``sigma_b``
      defaults to ``expected_clients / 20``), or None (fixed S).
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('expected_clients', expected_clients, minimum=0.0, strict_min=True)
  leaves = jax.tree_util.tree_leaves(updates)
  m = leaves[0].shape[0]
  clipped, norms = jax.vmap(lambda u: clip_update(u, l2_norm_clip))(updates)
  w = jnp.ones((m,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
  summed = jax.tree_util.tree_map(lambda l: jnp.tensordot(w.astype(l.dtype), l, (0, 0)),
                                  clipped)
  next_clip = None
  if adaptive_clipping is not None:
    key, k_count = jax.random.split(key)
    if noise_multiplier == 0:
      sigma, count_std = 0.0, 0.0
    else:
      sigma = adaptive_clipping.gradient_noise_multiplier(noise_multiplier, expected_clients)
      count_std = adaptive_clipping.count_std(expected_clients)
    below = jnp.sum(w * (norms <= l2_norm_clip))
    next_clip = adaptive_clipping.next_clip(l2_norm_clip, below, jnp.sum(w), expected_clients,
                                            k_count, count_std)
  else:
    sigma = noise_multiplier
  noisy = noise.add_gaussian_noise(summed, key, sigma * l2_norm_clip)
  return (jax.tree_util.tree_map(lambda l: l / expected_clients, noisy),
          AggregateInfo(norms * w, jnp.sum(w), next_clip))


def server_noise(*, noise_multiplier: float, l2_norm_clip: float, expected_clients: float,
                 key: jax.Array) -> optax.GradientTransformation:
  """The server's noise as an optax transformation on the *sum* of clipped client deltas
  (chain before a server optimizer, e.g. ``optax.sgd(1.0)`` for plain FedAvg or momentum
  for FedAvgM)."""
  return noise.gaussian_privatizer(noise_multiplier=noise_multiplier, l2_norm_clip=l2_norm_clip,
                                   normalizer=expected_clients, key=key)


# ------------------------------------------------------------------ accounting

#: the client samplers of :func:`jaxsec.federated.fedavg.make_fedavg` (the one home; each
#: has its accounting event in :func:`dp_event`)
SAMPLING = ('uniform', 'poisson')


def dp_event(*, noise_multiplier: float, num_rounds: int, num_clients: int,
             sampling: str, clients_per_round: int | None = None,
             sampling_rate: float | None = None) -> tuple[dp_accounting.SelfComposedDpEvent, NR]:
  """``(event, neighbouring relation)`` of ``num_rounds`` DP-FedAvg rounds (module doc).

  Args:
    noise_multiplier: z (noise std over the clip norm S).
    num_rounds: T.
    num_clients: W, the number of clients sampled from.
    sampling: ``'poisson'`` (needs ``sampling_rate``) or ``'uniform'`` (fixed size
      ``clients_per_round`` without replacement; ``None``: all clients every round).
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0, allow_traced=False)
  num_rounds = _checks.check_int('num_rounds', num_rounds, minimum=0)
  num_clients = _checks.check_int('num_clients', num_clients, minimum=1)
  _checks.check_choice('sampling', sampling, SAMPLING)
  if sampling == 'poisson':
    if sampling_rate is None or clients_per_round is not None:
      raise ValueError("sampling='poisson' takes sampling_rate (not clients_per_round); got "
                       f'sampling_rate={sampling_rate}, clients_per_round={clients_per_round}.')
    _checks.check_float('sampling_rate', sampling_rate, minimum=0.0, maximum=1.0,
                        strict_min=True, allow_traced=False)
    step = dp_accounting.PoissonSampledDpEvent(
        float(sampling_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier)))
    relation = NR.ADD_OR_REMOVE_ONE
  else:
    if sampling_rate is not None:
      raise ValueError(f"sampling_rate={sampling_rate} is only for sampling='poisson'.")
    m = num_clients if clients_per_round is None else _checks.check_int(
        'clients_per_round', clients_per_round, minimum=1, maximum=num_clients)
    step = dp_accounting.SampledWithoutReplacementDpEvent(
        num_clients, m, dp_accounting.GaussianDpEvent(float(noise_multiplier) / 2.0))
    relation = NR.REPLACE_ONE
  return dp_accounting.SelfComposedDpEvent(step, num_rounds), relation


class DPFedAvgAccount(NamedTuple):
  """User-level ``(epsilon, delta)`` of a DP-FedAvg run under ``neighboring_relation``
  (one client's whole data added/removed, or replaced), for ``event``."""
  epsilon: float
  delta: float
  noise_multiplier: float
  l2_norm_clip: float
  num_rounds: int
  accountant: str
  neighboring_relation: NR
  event: dp_accounting.DpEvent


def account(*, noise_multiplier: float, l2_norm_clip: float, num_rounds: int, num_clients: int,
            delta: float, sampling: str, clients_per_round: int | None = None,
            sampling_rate: float | None = None, accountant: str | None = None
            ) -> DPFedAvgAccount:
  """The user-level guarantee of DP-FedAvg with the sampler that ran (:func:`dp_event`).

  ``accountant``: ``'pld'`` (default for Poisson) or ``'rdp'`` (default, and the only one,
  for fixed-size sampling). ``noise_multiplier=0`` gives ``epsilon = inf``.
  """
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True,
                      allow_traced=False)
  event, relation = dp_event(noise_multiplier=noise_multiplier, num_rounds=num_rounds,
                             num_clients=num_clients, sampling=sampling,
                             clients_per_round=clients_per_round, sampling_rate=sampling_rate)
  allowed = ('pld', 'rdp') if sampling == 'poisson' else ('rdp',)
  accountant = allowed[0] if accountant is None else accountant
  if accountant not in allowed:
    raise ValueError(f'accountant={accountant!r} cannot account DP-FedAvg with '
                     f'sampling={sampling!r} ({type(event.event).__name__}); expected one '
                     f'of {allowed}.')
  _checks.check_float('delta', delta, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  if noise_multiplier == 0:
    eps = math.inf
  else:
    eps = accounting.epsilon(event, delta, accountant=accountant,
                             neighboring_relation=relation)
  return DPFedAvgAccount(float(eps), float(delta), float(noise_multiplier), float(l2_norm_clip),
                         int(num_rounds), accountant, relation, event)
