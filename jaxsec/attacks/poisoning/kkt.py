"""The KKT attack of Koh, Steinhardt & Liang (Machine Learning 2022, Sec. 5).

Given decoy parameters ``(w_d, b_d)`` (:mod:`decoy`), the attacker looks for poison that
makes ``(w_d, b_d)`` a minimiser of the victim's objective on clean + poison. With
``n_+`` copies of one point ``x_+`` (label 1) and ``n_-`` copies of ``x_-`` (label 0),
both with margin at most 1 under the decoy (so each contributes its full hinge gradient),
the optimality (KKT) conditions of ``L`` (:mod:`decoy`) at the decoy read

    g + eps_+ (-x_+) + eps_- x_- = 0,     g_b - eps_+ + eps_- = 0,
    g = (1/n) sum_clean d hinge / dw + l2 w_d,   eps_+- = n_+- / n,

and the attack solves ``min ||g - eps_+ x_+ + eps_- x_-||`` over ``x_+ in F_1`` with
``w_d.x_+ + b_d <= 1`` and ``x_- in F_0`` with ``w_d.x_- + b_d >= -1`` (``F_y`` the sphere +
slab feasible set, :mod:`feasible_set`): the authors' ``TwoClassKKT`` with the slab, without
the loss constraint. When the residual is 0 the decoy satisfies the victim's optimality
conditions exactly, so training on clean + poison returns ``w_d`` (the objective is
strongly convex in ``w``). The problem is convex; it is solved here by accelerated
projected gradient (FISTA) on the squared residual, with the exact projections of
:mod:`feasible_set` (the authors call Gurobi through cvxpy). The copy split ``n_+`` is
searched over a grid and the bias-exact split ``n_+ - n_- = n g_b``; every decoy on the
Pareto front is tried and the poison whose victim has the highest validation error is kept
(the authors select by test accuracy after the defense, the attacker knowing the test
set).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.poisoning import decoy as decoy_lib
from jaxsec.attacks.poisoning import feasible_set as fs_lib
from jaxsec.attacks.poisoning.base import PoisonOutput

Array = jax.Array


class KKTPoison(NamedTuple):
  """One solve of the KKT problem. ``residual`` = ``||g - eps_+ x_+ + eps_- x_-||``,
  ``bias_residual`` = ``g_b - eps_+ + eps_-``; ``ok`` False when a constraint set is
  empty (the margin half-space misses ``F_y``)."""
  x_pos: Array
  x_neg: Array
  residual: Array
  bias_residual: Array
  ok: Array


def target_gradient(w_d, b_d, x, y, *, l2: float, weight=None) -> tuple[Array, Array]:
  """``(g, g_b)`` of the module docstring: the clean part of the victim's gradient at the
  decoy, ``n = x.shape[0]``."""
  n = x.shape[0]
  gw, gb = decoy_lib.hinge_subgradient(w_d, b_d, x, y, weight)
  return gw / n + l2 * w_d, gb / n


def kkt_poison(fs: fs_lib.FeasibleSet, w_d, b_d, g, g_b, eps_pos, eps_neg, *,
               num_steps: int = 200) -> KKTPoison:
  """Solves ``min ||g - eps_pos x_+ + eps_neg x_-||`` over the two constraint sets (module
  docstring) by ``num_steps`` FISTA steps from the class centroids (projected); jittable,
  ``eps_*`` may be traced. Returns :class:`KKTPoison`."""
  dt = g.dtype
  eps_pos, eps_neg = jnp.asarray(eps_pos, dt), jnp.asarray(eps_neg, dt)
  lip = jnp.maximum(eps_pos ** 2 + eps_neg ** 2, 1e-30)
  one = jnp.asarray(1.0, dt)

  def proj_pos(p):
    return fs_lib.project_point(fs, p, 1, w_d, one - b_d)

  def proj_neg(p):
    return fs_lib.project_point(fs, p, 0, -w_d, one + b_d)

  def residual(xp, xn):
    return g - eps_pos * xp + eps_neg * xn

  xp0, okp = proj_pos(fs.centroids[1])
  xn0, okn = proj_neg(fs.centroids[0])

  def step(carry, _):
    xp, xn, yp, yn, t = carry
    r = residual(yp, yn)
    xp1, _ = proj_pos(yp + eps_pos * r / lip)
    xn1, _ = proj_neg(yn - eps_neg * r / lip)
    t1 = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    mom = (t - 1.0) / t1
    return (xp1, xn1, xp1 + mom * (xp1 - xp), xn1 + mom * (xn1 - xn), t1), None

  (xp, xn, _, _, _), _ = jax.lax.scan(step, (xp0, xn0, xp0, xn0, one), None,
                                      length=num_steps)
  return KKTPoison(xp, xn, jnp.linalg.norm(residual(xp, xn)), g_b - eps_pos + eps_neg,
                   okp & okn)


def split_grid(n_poison: int, n: int, g_b: float, num_splits: int) -> np.ndarray:
  """Candidate ``n_+`` (copies labelled 1): ``num_splits`` evenly spaced values in
  ``[0, n_poison]`` and the bias-exact ``round((n_poison + n g_b) / 2)`` when it lies in
  that range (the authors' ``epsilon_pairs``); sorted, unique."""
  grid = np.round(np.linspace(0, n_poison, num_splits)).astype(int).tolist()
  exact = int(np.round((n_poison + n * float(g_b)) / 2))
  if 0 <= exact <= n_poison:
    grid.append(exact)
  return np.unique(np.asarray(grid, int))


@functools.partial(jax.jit, static_argnames=('l2', 'num_steps', 'tol'))
def _solve_decoy(fs, x, y, weight, x_val, y_val, w_d, b_d, n_pos, n_p, *, l2, num_steps,
                 tol):
  """All splits ``n_pos`` [S] for one decoy: poison, residuals and the validation error of
  the victim trained on (weighted clean) + poison (the poison passes the sanitiser)."""
  n = x.shape[0]
  g, g_b = target_gradient(w_d, b_d, x, y, l2=l2, weight=weight)

  def one(k):
    kf = k.astype(x.dtype)
    sol = kkt_poison(fs, w_d, b_d, g, g_b, kf / n, (n_p - kf) / n, num_steps=num_steps)
    keep = fs_lib.feasible_mask(fs, jnp.stack([sol.x_pos, sol.x_neg]),
                                jnp.asarray([1, 0], y.dtype))
    xa = jnp.concatenate([x, sol.x_pos[None], sol.x_neg[None]])
    ya = jnp.concatenate([y, jnp.asarray([1, 0], y.dtype)])
    wa = jnp.concatenate([weight, jnp.stack([kf, n_p - kf]) * keep.astype(x.dtype)])
    s = decoy_lib.fit_svm(xa, ya, l2=l2, n=n, weight=wa, tol=tol)
    err = jnp.mean(((x_val @ s.w + s.b) > 0).astype(y_val.dtype) != y_val)
    return sol, err
  return jax.vmap(one)(n_pos)


def kkt_attack(*, fraction: float, l2: float = 0.01, percentile: float = 90.0,
               bounds: tuple[float, float] | None = (0.0, 1.0),
               quantiles: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.25),
               repeats: Sequence[int] = (1, 2, 3, 5, 8), num_splits: int = 5,
               num_steps: int = 200, tol: float = 1e-5) -> Callable:
  """Koh, Steinhardt & Liang's KKT attack on a binary linear SVM behind sphere + slab.

  Args:
    fraction: injection budget, ``n_poison = round(fraction * n)`` points (two distinct
      points, ``n_+`` and ``n_-`` copies).
    l2: the victim's weight decay (``C = 1 / (n l2)``).
    percentile: the defender's radii (:func:`feasible_set.feasible_set`) on the clean data.
    bounds: input box of the poison (None: none).
    quantiles, repeats: decoy grid (:func:`decoy.decoy_parameters`).
    num_splits: evenly spaced ``n_+`` values tried (plus the bias-exact one).
    num_steps: FISTA steps per KKT solve.
    tol: SMO tolerance of every SVM fit.

  Returns:
    ``attack(x, y, key=None, *, x_val=None, y_val=None) -> PoisonOutput(x', y', info)``:
    ``n + n_poison`` rows, the poison last (``n_+`` copies of ``x_+`` labelled 1, then
    ``n_-`` of ``x_-`` labelled 0). Deterministic (the key is unused). The decoys and
    the KKT gradient use the clean points the defender keeps. ``info``: ``poison_mask``,
    ``residual``, ``bias_residual``, ``val_error`` (of the chosen poison), ``decoy_w``,
    ``decoy_b``, ``decoy_index``, ``n_pos``, ``feasible_set``, ``ok``.
  """
  tm = fs_lib.threat_model(fraction=fraction, l2=l2, percentile=percentile, bounds=bounds,
                           tol=tol)
  l2, tol = tm.l2, tm.tol
  num_splits = _checks.check_int('num_splits', num_splits, minimum=1)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)

  def attack(x, y, key=None, *, x_val=None, y_val=None):
    del key
    x_val, y_val, n_p, fs, weight = fs_lib.setup(tm, x, y, x_val, y_val)
    n = x.shape[0]
    dec = decoy_lib.decoy_parameters(x, y, x_val, y_val, l2=l2, weight=weight,
                                     quantiles=quantiles, repeats=repeats, tol=tol)
    best = None
    for i in np.flatnonzero(dec.pareto):
      _, g_b = target_gradient(dec.w[i], dec.b[i], x, y, l2=l2, weight=weight)
      splits = split_grid(n_p, n, float(g_b), num_splits)
      sols, errs = _solve_decoy(fs, x, y, weight, x_val, y_val, dec.w[i], dec.b[i],
                                jnp.asarray(splits, jnp.int32), jnp.asarray(n_p, x.dtype),
                                l2=l2, num_steps=num_steps, tol=tol)
      errs, res = np.asarray(errs), np.asarray(sols.residual)
      j = int(np.lexsort((res, -errs))[0])          # highest error, then smallest residual
      cand = (float(errs[j]), -float(res[j]))
      if best is None or cand > best[0]:
        best = (cand, i, int(splits[j]), jax.tree_util.tree_map(lambda a, j=j: a[j], sols))
    if best is None:
      raise ValueError(f'No decoy on the Pareto front (quantiles={quantiles!r}, '
                       f'repeats={repeats!r}).')
    (err, _), i, n_pos, sol = best
    xp = jnp.concatenate([jnp.broadcast_to(sol.x_pos, (n_pos, x.shape[1])),
                          jnp.broadcast_to(sol.x_neg, (n_p - n_pos, x.shape[1]))])
    yp = jnp.concatenate([jnp.ones(n_pos, y.dtype), jnp.zeros(n_p - n_pos, y.dtype)])
    x2, y2 = jnp.concatenate([x, xp.astype(x.dtype)]), jnp.concatenate([y, yp])
    return PoisonOutput(x2, y2, {
        'poison_mask': jnp.arange(n + n_p) >= n, 'residual': sol.residual,
        'bias_residual': sol.bias_residual, 'val_error': err, 'decoy_w': dec.w[i],
        'decoy_b': dec.b[i], 'decoy_index': int(i), 'n_pos': n_pos, 'feasible_set': fs,
        'ok': sol.ok})
  return attack
