"""Zeroth-order gradient estimates from loss queries, shared by the score-based attacks.

Both estimators are central finite differences along random directions with antithetic
pairs ``(+u_i, -u_i)`` (the variance reduction of Salimans et al. 2017 that SPSA and NES
rely on), for a batch ``x [B, ...]`` of independent examples:

    g = 1/n sum_i (L(x + c u_i) - L(x - c u_i)) / (2 c) * u_i

* :func:`spsa_gradient`: ``u_i`` Rademacher (+-1), ``c = delta`` (Spall 1992; Uesato et
  al., ICML 2018, eq. 4, where ``v^{-1} = v`` for +-1 entries). For a quadratic loss the
  difference quotient is exact and ``E[g] = grad L(x)``.
* :func:`nes_gradient`: ``u_i ~ N(0, I)``, ``c = sigma`` (Ilyas, Engstrom, Athalye & Lin,
  ICML 2018, Algorithm 1): an unbiased estimate of the gradient of the Gaussian-smoothed
  loss ``E_u[L(x + sigma u)]``, which equals ``grad L(x)`` for a quadratic ``L``.

Each estimate costs ``2 n`` queries per example, sent as one call of ``loss_fn`` on the
``[B, 2 n, ...]`` sample points. The sample points are not clipped to the input box (as in
both reference implementations). Randomness is per example (``fold_in(key, index)``), so
an example's draws do not depend on the rest of the batch.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

LOSSES = ('margin', 'ce')


def attack_loss(loss: str, targeted: bool) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The per-example loss ``f(scores, y) -> [B]`` the attacks *minimise*.

  'margin': ``z_y - max_{j != y} z_j`` (untargeted; < 0 iff misclassified), ``max_{j != t}
  z_j - z_t`` (targeted): CleverHans' ``margin_logit_loss`` with its sign. 'ce':
  ``-CE(z, y)`` (untargeted), ``CE(z, t)`` (targeted), Ilyas et al.'s loss.
  """
  if loss == 'margin':
    return (lambda z, y: -common.margin(z, y)) if targeted else common.margin
  if loss == 'ce':
    return common.cross_entropy if targeted else (lambda z, y: -common.cross_entropy(z, y))
  raise ValueError(f'loss={loss!r} is not one of {LOSSES}.')


def sample_losses(query_fn, loss_fn, y: jax.Array):
  """``points [B, M, ...] -> losses [B, M]``: one ``query_fn`` call on the ``B * M`` points,
  example ``b``'s points scored against ``y[b]``."""
  def f(points):
    b, m = points.shape[:2]
    z = common.as_multiclass(query_fn(points.reshape((b * m,) + points.shape[2:])))
    return loss_fn(z, jnp.repeat(y, m)).reshape((b, m))
  return f


def example_keys(key: jax.Array, b: int) -> jax.Array:
  """One key per example: ``fold_in(key, index)`` for ``index < b``."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))


def antithetic_estimate(loss_fn, x: jax.Array, u: jax.Array, c) -> tuple[jax.Array, jax.Array]:
  """The antithetic finite-difference estimate for directions ``u [B, n, ...]`` and scale
  ``c``: ``(g [B, ...], mean loss over the 2 n sample points [B])``."""
  n = u.shape[1]
  c = jnp.asarray(c, x.dtype)
  pts = x[:, None] + c * jnp.concatenate([u, -u], axis=1)
  losses = loss_fn(pts)                                       # [B, 2n]
  diff = (losses[:, :n] - losses[:, n:]) / (2 * c)            # [B, n]
  g = jnp.mean(diff.reshape(diff.shape + (1,) * (x.ndim - 1)) * u, axis=1)
  return g.astype(x.dtype), jnp.mean(losses, axis=1)


def spsa_gradient(loss_fn, x: jax.Array, key: jax.Array, *, delta, num_samples: int):
  """SPSA estimate of ``grad loss_fn`` at ``x [B, ...]`` from ``num_samples`` antithetic
  Rademacher pairs (``2 * num_samples`` queries per example).

  ``loss_fn: points [B, M, ...] -> [B, M]`` (see :func:`sample_losses`). Returns
  ``(g [B, ...], mean loss at the sample points [B])``.
  """
  shape = (num_samples,) + x.shape[1:]
  u = jax.vmap(lambda k: jax.random.rademacher(k, shape, x.dtype))(
      example_keys(key, x.shape[0]))
  return antithetic_estimate(loss_fn, x, u, delta)


def nes_gradient(loss_fn, x: jax.Array, key: jax.Array, *, sigma, num_samples: int):
  """NES estimate of ``grad loss_fn`` at ``x [B, ...]`` from ``num_samples`` antithetic
  Gaussian pairs (``2 * num_samples`` queries per example); as :func:`spsa_gradient`."""
  shape = (num_samples,) + x.shape[1:]
  u = jax.vmap(lambda k: jax.random.normal(k, shape, x.dtype))(
      example_keys(key, x.shape[0]))
  return antithetic_estimate(loss_fn, x, u, sigma)


def score_attack(run_fn: Callable, bounds, check: Callable | None = None, **hyper) -> Callable:
  """The attack function of a score-based attack: checks the call (and ``check(x)`` if
  given), runs ``run_fn(query_fn, x, y, key, bounds=bounds, **hyper) -> (x_adv, success,
  queries, loss)`` and returns the fixed-budget ``AttackOutput`` with per-example
  ``info['queries']``."""
  def attack(query_fn, x, y, key):
    common.check_call(x, y, bounds, query_fn)
    if check is not None:
      check(x)
    x_adv, succ, queries, loss_v = run_fn(query_fn, x, y, key, bounds=bounds, **hyper)
    return AttackOutput(x_adv, {'success': succ, 'queries': queries, 'loss': loss_v},
                        'fixed')
  return attack
