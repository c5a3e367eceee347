"""The (improved) min-max attack and the certified bound of the sphere + slab defender.

Steinhardt, Koh & Liang (NeurIPS 2017) bound the victim's loss under any ``eps n`` poison
points inside the feasible set ``F`` (:mod:`feasible_set`) by, for every ``(w, b)``,

    U(w, b) = L_c(w, b) + eps max_{y, x in F_y} hinge(w, b; x, y) + (l2/2) ||w||^2
            >= min_{w', b'} L(w', b'; D_c u D_p),

(``L_c`` the mean clean hinge, ``L`` the victim's objective of :mod:`decoy`), and minimise
``U`` by online gradient descent on ``(w, b)``: each step adds the feasible point of
largest loss (a linear maximisation over ``F_y``, exact here), then steps on
``L_c + eps hinge(point) + l2/2 ||w||^2`` with AdaGrad. The points collected form their
candidate attack, and ``min_t U(w_t, b_t)`` is the defender's certificate
(:func:`certified_bound`).

Koh, Steinhardt & Liang (Machine Learning 2022, Sec. 5.3, the authors' ``generateAttackTar.m``)
improve the attack with a decoy ``(w_d, b_d)``: each point must also have small loss
under the decoy, ``hinge(w_d, b_d; x, y) <= rho_max`` (0.25), so that the poison pulls the
learner towards the decoy instead of merely maximising the current loss. The first
``burn_frac`` of the steps are burn-in; the attack's ``n_poison`` points are taken evenly
from the rest (the authors repeat the post-burn-in points up to ``n_poison``; here the
number of steps is a setting, which matters when ``n_poison`` is a handful of points).
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
from jaxsec.attacks.poisoning.base import PoisonOutput, check_fraction, num_poison

Array = jax.Array


class MinMaxPath(NamedTuple):
  """One min-max run: ``x`` [T, d] and ``y`` [T] the chosen points, ``loss`` [T] their hinge
  loss under the current parameters, ``ok`` [T] (a feasible point existed), ``bound`` [T]
  ``U(w_t, b_t)`` (the defender's certificate along the path), ``w``, ``b`` the final
  parameters."""
  x: Array
  y: Array
  loss: Array
  ok: Array
  bound: Array
  w: Array
  b: Array


def _max_loss_point(fs, w, b, y: int, half):
  """The point of ``F_y`` (∩ the decoy half-space) maximising ``1 - s_y (w.x + b)``."""
  s = 2.0 * y - 1.0
  a, beta = half if half is not None else (None, None)
  z, ok = fs_lib.linear_minimizer(fs, s * w, y, a, beta)
  return z, jnp.where(ok, 1.0 - s * (w @ z + b), -jnp.inf), ok


@functools.partial(jax.jit, static_argnames=('num_steps', 'l2', 'use_decoy'))
def minmax_path(fs: fs_lib.FeasibleSet, x, y, weight, w0, b0, w_d, b_d, eps, rho_max, eta,
                *, num_steps: int, l2: float, use_decoy: bool) -> MinMaxPath:
  """``num_steps`` min-max steps from ``(w0, b0)`` (one jitted scan).

  Args:
    fs: the feasible set; x, y, weight: clean data and the defender's keep weights
      (``n = x.shape[0]`` normalises ``L_c``).
    w_d, b_d, rho_max: the decoy and its loss cap (ignored unless ``use_decoy``).
    eps: poison budget ``n_poison / n``; eta: AdaGrad step size.
  """
  n = x.shape[0]
  dt = x.dtype

  def decoy_half(yc):
    # hinge(w_d; x, yc) <= rho  <=>  (-s w_d).x <= rho - 1 + s b_d
    s = 2.0 * yc - 1.0
    return -s * w_d, rho_max - 1.0 + s * b_d

  def step(carry, _):
    w, b, gw2, gb2 = carry
    z_free = [_max_loss_point(fs, w, b, yc, None) for yc in (0, 1)]
    worst = jnp.maximum(z_free[0][1], z_free[1][1])
    clean = jnp.sum(weight * decoy_lib.hinge_losses(w, b, x, y)) / n
    bound = clean + eps * jnp.maximum(worst, 0.0) + 0.5 * l2 * jnp.sum(w * w)
    cands = ([_max_loss_point(fs, w, b, yc, decoy_half(yc))
              for yc in (0, 1)] if use_decoy else z_free)
    pick = (cands[1][1] > cands[0][1]).astype(jnp.int32)
    zp = jnp.where(pick == 1, cands[1][0], cands[0][0])
    lp = jnp.where(pick == 1, cands[1][1], cands[0][1])
    okp = jnp.where(pick == 1, cands[1][2], cands[0][2])
    gcw, gcb = decoy_lib.hinge_subgradient(w, b, x, y, weight)
    gpw, gpb = decoy_lib.hinge_subgradient(w, b, zp[None], pick[None], okp[None].astype(dt))
    gw = gcw / n + eps * gpw + l2 * w
    gb = gcb / n + eps * gpb
    gw2, gb2 = gw2 + gw * gw, gb2 + gb * gb
    w = w - eta * gw / jnp.sqrt(gw2)
    b = b - eta * gb / jnp.sqrt(gb2)
    return (w, b, gw2, gb2), (zp, pick, lp, okp, bound)

  init = (w0, jnp.asarray(b0, dt), jnp.full_like(w0, 1e-12), jnp.asarray(1e-12, dt))
  (w, b, _, _), (zs, ys, ls, oks, bounds) = jax.lax.scan(step, init, None, length=num_steps)
  return MinMaxPath(zs, ys.astype(y.dtype), ls, oks, bounds, w, b)


def certified_bound(fs: fs_lib.FeasibleSet, x, y, *, fraction: float, l2: float,
                    weight=None, num_steps: int = 300, eta: float = 0.03,
                    tol: float = 1e-5) -> tuple[float, MinMaxPath]:
  """Steinhardt et al.'s upper bound ``min_t U(w_t, b_t)`` (module docstring) for
  ``round(fraction * n)`` poison points in ``fs``, from ``num_steps`` min-max steps started
  at the clean SVM. Any poison inside ``fs`` leaves the victim's minimal objective (on the
  clean points with ``weight`` + the poison) at most this. Returns ``(bound, path)``."""
  fraction = check_fraction('fraction', fraction)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  n = x.shape[0]
  weight = jnp.ones(n, x.dtype) if weight is None else jnp.asarray(weight, x.dtype)
  s = decoy_lib.fit_svm(x, y, l2=float(l2), n=n, weight=weight, tol=tol)
  eps = num_poison(fraction, n) / n
  path = minmax_path(fs, x, y, weight, s.w, s.b, s.w, s.b, jnp.asarray(eps, x.dtype),
                     jnp.asarray(0.0, x.dtype), jnp.asarray(eta, x.dtype),
                     num_steps=num_steps, l2=float(l2), use_decoy=False)
  return float(jnp.min(path.bound)), path


def take_points(path: MinMaxPath, n_poison: int, burn_frac: float) -> tuple[Array, Array]:
  """``n_poison`` points evenly spaced over the post-burn-in steps (feasible ones only;
  the last feasible point fills in if too few)."""
  t = path.x.shape[0]
  start = min(int(np.floor(burn_frac * t)), t - 1)
  ok = np.flatnonzero(np.asarray(path.ok)[start:]) + start
  if ok.size == 0:
    ok = np.flatnonzero(np.asarray(path.ok))
  if ok.size == 0:
    raise ValueError('The min-max attack found no feasible point (the decoy constraint '
                     'misses the feasible set at every step); raise rho_max.')
  idx = ok[np.round(np.linspace(0, ok.size - 1, n_poison)).astype(int)] if n_poison else ok[:0]
  return path.x[idx], path.y[idx]


@functools.partial(jax.jit, static_argnames=('l2', 'tol'))
def _victim_error(x, y, weight, xp, yp, x_val, y_val, *, l2, tol):
  n = x.shape[0]
  s = decoy_lib.fit_svm(jnp.concatenate([x, xp]), jnp.concatenate([y, yp]), l2=l2, n=n,
                        weight=jnp.concatenate([weight, jnp.ones(xp.shape[0], x.dtype)]),
                        tol=tol)
  return jnp.mean(((x_val @ s.w + s.b) > 0).astype(y_val.dtype) != y_val)


def minmax_attack(*, fraction: float, l2: float = 0.01, percentile: float = 90.0,
                  bounds: tuple[float, float] | None = (0.0, 1.0), decoys: bool = True,
                  rho_max: float = 0.25, num_steps: int = 100, burn_frac: float = 0.33,
                  eta: float = 0.03,
                  quantiles: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.25),
                  repeats: Sequence[int] = (1, 2, 3, 5, 8), tol: float = 1e-5) -> Callable:
  """The min-max attack (``decoys=False``: Steinhardt et al. 2017) or the improved one
  with decoy parameters (Koh et al. 2022), against a binary linear SVM behind sphere + slab.

  Args:
    fraction: injection budget (``round(fraction * n)`` points).
    l2, percentile, bounds: the victim's weight decay, the defender's radii, the box.
    decoys: use decoy parameters (every Pareto decoy is run, the poison with the highest
      validation error of the retrained victim is kept).
    rho_max: the decoy-loss cap of each point (the authors' 0.25).
    num_steps, burn_frac, eta: min-max steps, burn-in fraction, AdaGrad step.
    quantiles, repeats, tol: decoy grid and SMO tolerance.

  Returns:
    ``attack(x, y, key=None, *, x_val=None, y_val=None) -> PoisonOutput(x', y', info)``,
    ``n + n_poison`` rows, the poison last; deterministic. ``info``: ``poison_mask``,
    ``val_error``, ``decoy_index`` (-1 without decoys), ``path_loss``, ``bound`` (the
    certificate along the chosen run), ``feasible_set``.
  """
  tm = fs_lib.threat_model(fraction=fraction, l2=l2, percentile=percentile, bounds=bounds,
                           tol=tol)
  l2, tol = tm.l2, tm.tol
  rho_max = _checks.check_positive('rho_max', rho_max)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  burn_frac = float(_checks.check_float('burn_frac', burn_frac, minimum=0.0, maximum=1.0,
                                        strict_max=True, allow_traced=False))
  eta = _checks.check_positive('eta', eta)

  def attack(x, y, key=None, *, x_val=None, y_val=None):
    del key
    x_val, y_val, n_p, fs, weight = fs_lib.setup(tm, x, y, x_val, y_val)
    n = x.shape[0]
    dt = x.dtype
    s = decoy_lib.fit_svm(x, y, l2=l2, n=n, weight=weight, tol=tol)
    if decoys:
      dec = decoy_lib.decoy_parameters(x, y, x_val, y_val, l2=l2, weight=weight,
                                       quantiles=quantiles, repeats=repeats, tol=tol)
      targets = [(int(i), dec.w[i], dec.b[i]) for i in np.flatnonzero(dec.pareto)]
    else:
      targets = [(-1, s.w, s.b)]
    best = None
    for i, w_d, b_d in targets:
      path = minmax_path(fs, x, y, weight, s.w, s.b, w_d, b_d, jnp.asarray(n_p / n, dt),
                         jnp.asarray(rho_max, dt), jnp.asarray(eta, dt),
                         num_steps=num_steps, l2=l2, use_decoy=decoys)
      if not bool(jnp.any(path.ok)):
        continue
      xp, yp = take_points(path, n_p, burn_frac)
      err = float(_victim_error(x, y, weight, xp, yp, x_val, y_val, l2=l2, tol=tol))
      if best is None or err > best[0]:
        best = (err, i, xp, yp, path)
    if best is None:
      raise ValueError('The min-max attack found no feasible point for any decoy; raise '
                       f'rho_max={rho_max}.')
    err, i, xp, yp, path = best
    x2, y2 = jnp.concatenate([x, xp.astype(dt)]), jnp.concatenate([y, yp])
    return PoisonOutput(x2, y2, {
        'poison_mask': jnp.arange(n + n_p) >= n, 'val_error': err, 'decoy_index': i,
        'path_loss': path.loss, 'bound': path.bound, 'feasible_set': fs})
  return attack
