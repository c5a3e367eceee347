"""Optimised model-poisoning attacks on robust aggregation (after Krum, 2020-21).

Update attacks ``attack(updates, byzantine, key) -> updates`` as in
:mod:`jaxsec.federated.byzantine` (honest rows returned bit for bit, Byzantine rows
replaced; ``m = sum(byzantine)`` may be traced). Every search is one ``lax.while_loop``.

* :func:`fang_krum`, :func:`fang_trimmed_mean` -- Fang, Cao, Jia, Gong, "Local Model
  Poisoning Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020, full
  knowledge: the deviation is ``-s``, ``s`` the sign of the benign mean update.
* :func:`min_max`, :func:`min_sum` -- Shejwalkar & Houmansadr, "Manipulating the Byzantine",
  NDSS 2021: AGR-agnostic, ``mean - gamma * p`` with the largest ``gamma`` (their
  Algorithm 1, :func:`agr_agnostic_gamma`) whose distances stay within the benign ones.

All of them work in update space (the global model is the origin), as the authors' code
(which perturbs gradients) does; Fang et al. write the attacks on model parameters.
``statistics='benign'`` (default) is the full-knowledge / known-benign-updates setting,
``'byzantine'`` uses only the attackers' own honest updates.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.federated import byzantine as byz_lib

__all__ = ['fang_krum', 'fang_krum_lambda_bound', 'fang_trimmed_mean', 'min_max', 'min_sum',
           'agr_agnostic_gamma', 'DEVIATIONS']

DEVIATIONS = ('unit_vec', 'std', 'sign')

UpdateAttack = Callable[[Any, jax.Array, jax.Array], Any]


def _flat(updates):
  leaves, treedef = jax.tree_util.tree_flatten(updates)
  k = leaves[0].shape[0]
  x = jnp.concatenate([l.reshape((k, -1)).astype(jnp.promote_types(l.dtype, jnp.float32))
                       for l in leaves], axis=1)
  sizes = [int(np.prod(l.shape[1:])) for l in leaves]

  def unflat(m):   # [K, D] -> tree of [K, ...]
    out, start = [], 0
    for l, size in zip(leaves, sizes, strict=True):
      out.append(m[:, start:start + size].reshape(l.shape).astype(l.dtype))
      start += size
    return jax.tree_util.tree_unflatten(treedef, out)
  return x, unflat


def _sq_dists(x):
  sq = jnp.sum(x * x, axis=1)
  g = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2 * g, 0.0)


def _masked_mean(x, mask):
  w = mask.astype(x.dtype)
  return (w @ x) / jnp.maximum(jnp.sum(w), 1.0)


def _row_attack(statistics: str, craft: Callable) -> UpdateAttack:
  """The update attack whose Byzantine rows are ``craft(x [K, D], byzantine [K], stat [K],
  key)`` (``[K, D]`` or one ``[D]`` for all): ``x`` the flattened updates, ``stat`` the rows
  the attacker's ``statistics`` come from; honest rows are returned bit for bit."""
  _checks.check_choice('statistics', statistics, byz_lib.STATISTICS)

  def attack(updates, byzantine, key):
    _, byzantine = byz_lib._check_inputs(updates, byzantine)  # pylint: disable=protected-access
    x, unflat = _flat(updates)
    stat = byz_lib._stat_mask(statistics, byzantine)  # pylint: disable=protected-access
    mal = unflat(jnp.broadcast_to(craft(x, byzantine, stat, key), x.shape))
    return jax.tree.map(lambda u, m: jnp.where(byz_lib._rows(byzantine, u), m, u),  # pylint: disable=protected-access
                        updates, mal)
  return attack


# ------------------------------------------------------------------------- Fang et al.

def fang_krum_lambda_bound(x: jax.Array, benign: jax.Array, num_byzantine: Any) -> jax.Array:
  """Fang et al.'s upper bound on lambda (their Section 4.2, update space, ``w_Re = 0``):

      1 / ((m - 2c - 1) sqrt(d)) * min_{i benign} sum_{l in Gamma_i} D(w_l, w_i)
        + 1 / sqrt(d) * max_{i benign} D(w_i, 0),

  ``Gamma_i`` the ``m - c - 2`` benign updates nearest to ``w_i``, ``D`` Euclidean, ``m``
  clients, ``c = num_byzantine``, ``d`` coordinates; ``x [m, d]``, ``benign [m]``."""
  m, d = x.shape
  c = jnp.asarray(num_byzantine, jnp.float32)
  dist = jnp.sqrt(_sq_dists(x))
  pair = benign[:, None] & benign[None, :] & ~jnp.eye(m, dtype=bool)
  srt = jnp.sort(jnp.where(pair, dist, jnp.inf), axis=1)
  nn = m - c - 2
  near = jnp.sum(jnp.where((jnp.arange(m)[None, :] < nn) & jnp.isfinite(srt), srt, 0.0), 1)
  term1 = jnp.min(jnp.where(benign, near, jnp.inf)) / (jnp.maximum(m - 2 * c - 1, 1.0)
                                                       * np.sqrt(d))
  term2 = jnp.max(jnp.where(benign, jnp.linalg.norm(x, axis=1), 0.0)) / np.sqrt(d)
  return term1 + term2


def _krum_choice(x, num_byzantine):
  """Index Krum picks with ``f = num_byzantine`` (traced), neighbours ``K - f - 2``."""
  k = x.shape[0]
  d = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, _sq_dists(x))
  srt = jnp.sort(d, axis=1)
  nn = jnp.maximum(k - num_byzantine - 2, 1)
  return jnp.argmin(jnp.sum(jnp.where(jnp.arange(k)[None, :] < nn, srt, 0.0), axis=1))


def fang_krum(*, epsilon: float = 1e-5, statistics: str = 'benign') -> UpdateAttack:
  """Fang et al. 2020's full-knowledge attack on Krum.

  Every Byzantine client sends ``-lambda * s``, ``s = sign(mean of the honest updates)``
  (the direction the global model would move), with the largest ``lambda`` that Krum (with
  ``f`` = this round's number of attackers) still selects: starting from
  :func:`fang_krum_lambda_bound`, ``lambda`` is halved until Krum picks a Byzantine row or
  ``lambda < epsilon``. Fang et al. make the other ``c - 1`` crafted models close to the
  first; here they are equal to it (as in the re-implementations of their attack).
  """
  epsilon = float(_checks.check_float('epsilon', epsilon, minimum=0.0, strict_min=True,
                                      allow_traced=False))

  def craft(x, byzantine, stat, key):
    del key
    c = jnp.sum(byzantine.astype(jnp.int32))
    s = jnp.sign(_masked_mean(x, stat))
    lam0 = fang_krum_lambda_bound(x, ~byzantine, c)

    def chosen_is_byzantine(lam):
      return byzantine[_krum_choice(jnp.where(byzantine[:, None], -lam * s, x), c)]

    lam = jax.lax.while_loop(lambda l: (l >= epsilon) & ~chosen_is_byzantine(l),
                             lambda l: l / 2, lam0)
    return -lam * s
  return _row_attack(statistics, craft)


def fang_trimmed_mean(*, b: float = 2.0, statistics: str = 'benign') -> UpdateAttack:
  """Fang et al. 2020's full-knowledge attack on trimmed mean (also used on the median).

  With ``w_max``, ``w_min`` the coordinate-wise max / min of the honest updates and ``s`` the
  sign of their mean, each Byzantine client draws every coordinate independently and
  uniformly from ``[w_max, b w_max]`` (``w_max > 0``) or ``[w_max, w_max / b]`` where
  ``s <= 0``, and from ``[w_min / b, w_min]`` (``w_min > 0``) or ``[b w_min, w_min]`` where
  ``s > 0``: just beyond the honest range, against the benign direction. ``b = 2`` in the
  paper.
  """
  b = float(_checks.check_float('b', b, minimum=1.0, strict_min=True, allow_traced=False))

  def craft(x, byzantine, stat, key):
    del byzantine
    s = jnp.sign(_masked_mean(x, stat))
    w_max = jnp.max(jnp.where(stat[:, None], x, -jnp.inf), axis=0)
    w_min = jnp.min(jnp.where(stat[:, None], x, jnp.inf), axis=0)
    up_lo, up_hi = w_max, jnp.where(w_max > 0, b * w_max, w_max / b)
    dn_lo, dn_hi = jnp.where(w_min > 0, w_min / b, b * w_min), w_min
    lo = jnp.where(s > 0, dn_lo, up_lo)
    hi = jnp.where(s > 0, dn_hi, up_hi)
    u = jax.random.uniform(key, x.shape, x.dtype)
    return lo + u * (hi - lo)
  return _row_attack(statistics, craft)


# -------------------------------------------------------------- Shejwalkar & Houmansadr

def _deviation(kind, x, mask, mu):
  if kind == 'unit_vec':
    return mu / jnp.maximum(jnp.linalg.norm(mu), jnp.finfo(mu.dtype).tiny)
  if kind == 'sign':
    return jnp.sign(mu)
  w = mask.astype(x.dtype)
  n = jnp.sum(w)
  var = (w @ jnp.square(x - mu)) / jnp.maximum(n - 1.0, 1.0)   # torch.std: unbiased
  return jnp.sqrt(var)


def agr_agnostic_gamma(x: jax.Array, mask: jax.Array, mean: jax.Array, deviation: jax.Array,
                       *, objective: str, gamma_init: Any = 10.0, tol: float = 1e-5
                       ) -> jax.Array:
  """Shejwalkar & Houmansadr's search (NDSS 2021, Algorithm 1, as in their code) for the
  largest ``gamma`` with ``m = mean - gamma * deviation`` inside the benign updates
  ``x[mask]``:

  * ``objective='min_max'``: ``max_i ||m - x_i||^2 <= max_{i,j} ||x_i - x_j||^2``;
  * ``objective='min_sum'``: ``sum_i ||m - x_i||^2 <= min_i sum_j ||x_i - x_j||^2``.

  From ``gamma = gamma_init`` with step ``gamma_init``: each iteration halves the step and
  moves ``gamma`` up by it after a success (remembered as ``gamma_succ``) or down after a
  failure, until ``|gamma_succ - gamma| <= tol``; returns ``gamma_succ`` (0 if no
  ``gamma`` succeeded). Squared Euclidean distances, as theirs.
  """
  _checks.check_choice('objective', objective, ('min_max', 'min_sum'))
  pair = mask[:, None] & mask[None, :]
  d = jnp.where(pair, _sq_dists(x), 0.0)
  if objective == 'min_max':
    threshold = jnp.max(d)
  else:
    threshold = jnp.min(jnp.where(mask, jnp.sum(d, axis=1), jnp.inf))
  w = mask.astype(x.dtype)
  x_sq = jnp.sum(x * x, axis=1)

  def stat(gamma):
    m = mean - gamma * deviation
    dm = jnp.maximum(x_sq - 2 * jnp.matmul(x, m, precision=jax.lax.Precision.HIGHEST)
                     + jnp.sum(m * m), 0.0)
    return jnp.max(jnp.where(mask, dm, -jnp.inf)) if objective == 'min_max' else w @ dm

  def body(carry):
    gamma, succ, step = carry
    ok = stat(gamma) <= threshold
    succ = jnp.where(ok, gamma, succ)
    gamma = jnp.where(ok, gamma + step / 2, gamma - step / 2)
    return gamma, succ, step / 2

  g0 = jnp.asarray(gamma_init, x.dtype)
  _, succ, _ = jax.lax.while_loop(lambda c: jnp.abs(c[1] - c[0]) > tol, body,
                                  (g0, jnp.zeros_like(g0), g0))
  return succ


def _agr_agnostic(objective, deviation, gamma_init, tol, statistics):
  _checks.check_choice('deviation', deviation, DEVIATIONS)
  _checks.check_float('gamma_init', gamma_init, minimum=0.0, strict_min=True)
  tol = float(_checks.check_float('tol', tol, minimum=0.0, strict_min=True,
                                  allow_traced=False))

  def craft(x, byzantine, mask, key):
    del byzantine, key
    mu = _masked_mean(x, mask)
    p = _deviation(deviation, x, mask, mu)
    gamma = agr_agnostic_gamma(x, mask, mu, p, objective=objective, gamma_init=gamma_init,
                               tol=tol)
    return mu - gamma * p
  return _row_attack(statistics, craft)


def min_max(*, deviation: str = 'unit_vec', gamma_init: Any = 10.0, tol: float = 1e-5,
            statistics: str = 'benign') -> UpdateAttack:
  """Min-max (Shejwalkar & Houmansadr, NDSS 2021): every Byzantine client sends
  ``mean - gamma * p``, the largest ``gamma`` (:func:`agr_agnostic_gamma`) keeping its
  largest distance to a benign update within the largest benign pairwise distance.
  ``deviation`` is the perturbation ``p``: ``'unit_vec'`` (the mean's unit vector: the
  inverse unit vector is ``-p``), ``'std'`` (coordinate-wise std, unbiased) or ``'sign'``
  (the mean's sign). ``gamma_init`` 10 as in the authors' code (the paper: 10 to 50)."""
  return _agr_agnostic('min_max', deviation, gamma_init, tol, statistics)


def min_sum(*, deviation: str = 'unit_vec', gamma_init: Any = 10.0, tol: float = 1e-5,
            statistics: str = 'benign') -> UpdateAttack:
  """Min-sum (Shejwalkar & Houmansadr, NDSS 2021): as :func:`min_max`, with the sum of
  squared distances to the benign updates kept below the smallest such sum of a benign
  update (a stricter constraint, smaller ``gamma``)."""
  return _agr_agnostic('min_sum', deviation, gamma_init, tol, statistics)
