"""The one Gaussian noise addition of DP-SGD and DP-FedAvg (jax_privacy's
``noise_addition`` is the model).

:func:`add_gaussian_noise` adds ``N(0, stddev^2 I)`` to every leaf of a pytree with an
independent key per leaf (``jax.random.split(key, num_leaves)``), drawn in float32 and cast
to the leaf's dtype. :func:`gaussian_privatizer` is the same noise as an optax
transformation on a *sum* of clipped contributions, followed by division by a fixed
normaliser. Callers: :func:`jaxsec.privacy.dpsgd.make_step` (DP-SGD, Abadi et al. 2016)
and :func:`jaxsec.federated.dp.dp_aggregate` / :func:`~jaxsec.federated.dp.server_noise`
(DP-FedAvg, McMahan et al. 2018). The guarantee is the Gaussian mechanism's for the
sensitivity ``stddev / noise_multiplier`` of the sum; accounting is the caller's.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsec import _checks

__all__ = ['add_gaussian_noise', 'gaussian_privatizer', 'PrivatizerState']


def add_gaussian_noise(tree: Any, key: jax.Array, stddev: Any) -> Any:
  """``tree + N(0, stddev^2)`` leafwise, with independent keys per leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noisy = [l + (stddev * jax.random.normal(k, l.shape, jnp.float32)).astype(l.dtype)
           for l, k in zip(leaves, keys, strict=True)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


class PrivatizerState(NamedTuple):
  key: jax.Array


def gaussian_privatizer(*, noise_multiplier: float, l2_norm_clip: float, normalizer: float,
                        key: jax.Array) -> optax.GradientTransformation:
  """Optax transformation: summed clipped gradients -> ``(sum + N(0, (sigma C)^2)) / m``.

  Its input must be the *sum* of contributions clipped to ``l2_norm_clip`` (per-example
  gradients from ``clipped_grad``, or client deltas); ``normalizer`` m is the (expected)
  number of contributions. Chain it in front of any optimizer:
  ``optax.chain(gaussian_privatizer(...), optax.adam(1e-3))``.
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  _checks.check_float('normalizer', normalizer, minimum=0.0, strict_min=True)

  def init_fn(params):
    del params
    return PrivatizerState(key)

  def update_fn(updates, state, params=None):
    del params
    k, nk = jax.random.split(state.key)
    noisy = add_gaussian_noise(updates, k, noise_multiplier * l2_norm_clip)
    return jax.tree_util.tree_map(lambda l: l / normalizer, noisy), PrivatizerState(nk)

  return optax.GradientTransformation(init_fn, update_fn)
