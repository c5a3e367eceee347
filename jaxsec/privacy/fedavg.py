"""DP-FedAvg hooks (McMahan, Ramage, Talwar, Zhang 2018): user-level DP for federated
averaging, for ``jaxsec.federated`` to use.

Each sampled client's model delta is clipped to l2 norm ``S`` (:func:`clip_update`); the
server sums the clipped deltas, adds ``N(0, (z S)^2)`` and divides by the *expected*
number of clients ``q W`` (the fixed-denominator estimator of the paper, whose sensitivity
is ``S / (q W)``), see :func:`dp_aggregate`. Client sampling is Poisson with rate ``q``:
account with ``sampling.PoissonSampler(dataset_size=num_clients, sampling_probability=q,
num_steps=rounds)``, whose ``dp_event(z)`` is then a *user-level* guarantee (adjacency:
adding or removing one client's whole data). Adaptive clipping of the client norm is
``dpsgd.AdaptiveClipping`` with the client count in place of the batch count.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsec import _checks
from jaxsec.privacy import clipping, dpsgd


def clip_update(update: Any, clip_norm: Any) -> tuple[Any, jax.Array]:
  """Client-side: scales a model delta to l2 norm at most ``clip_norm``; returns the norm."""
  _checks.check_float('clip_norm', clip_norm, minimum=0.0, strict_min=True)
  return clipping.clip_tree(update, clip_norm)


class AggregateInfo(NamedTuple):
  norms: jax.Array        # [M] client update norms before clipping
  num_clients: jax.Array  # number of participating (unmasked) clients


def dp_aggregate(updates: Any, key: jax.Array, *, clip_norm: Any, noise_multiplier: float,
                 expected_clients: float, mask: jax.Array | None = None
                 ) -> tuple[Any, AggregateInfo]:
  """Server-side: ``(sum_m clip(update_m) + N(0, (z S)^2)) / (q W)``.

  Args:
    updates: stacked client deltas, leading axis M (clients of this round).
    key: noise key.
    clip_norm: S.
    noise_multiplier: z.
    expected_clients: q W, the fixed denominator.
    mask: optional [M] 0/1 marking clients that really participate (padding).
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('expected_clients', expected_clients, minimum=0.0, strict_min=True)
  leaves = jax.tree_util.tree_leaves(updates)
  m = leaves[0].shape[0]
  clipped, norms = jax.vmap(lambda u: clip_update(u, clip_norm))(updates)
  w = jnp.ones((m,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
  summed = jax.tree_util.tree_map(lambda l: jnp.tensordot(w.astype(l.dtype), l, (0, 0)),
                                  clipped)
  noisy = dpsgd.add_gaussian_noise(summed, key, noise_multiplier * clip_norm)
  return (jax.tree_util.tree_map(lambda l: l / expected_clients, noisy),
          AggregateInfo(norms * w, jnp.sum(w)))


def server_noise(*, noise_multiplier: float, clip_norm: float, expected_clients: float,
                 key: jax.Array) -> optax.GradientTransformation:
  """The server's noise as an optax transformation on the *sum* of clipped client deltas
  (chain before a server optimizer, e.g. ``optax.sgd(1.0)`` for plain FedAvg or momentum
  for FedAvgM)."""
  return dpsgd.gaussian_privatizer(noise_multiplier=noise_multiplier, l2_norm_clip=clip_norm,
                                   normalizer=expected_clients, key=key)
