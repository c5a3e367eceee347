"""The sphere + slab feasible set of a binary data set, and exact convex solvers over it.

Koh, Steinhardt & Liang, "Stronger data poisoning attacks break data sanitization
defenses" (Machine Learning 2022, arXiv 1811.00741), Sec. 3: a defender who sanitises with
the sphere and slab defenses of Steinhardt, Koh & Liang (2017) keeps a point ``(x, y)`` iff

    ||x - mu_y|| <= r_y   and   |<x - mu_y, v>| <= s_y,   v = (mu_1 - mu_0) / ||mu_1 - mu_0||,

with the class centroids ``mu_y`` and radii ``r_y``, ``s_y`` (the ``percentile``-th
percentile of the clean class's distances, the authors' ``get_data_params``) computed on
clean data: the defender's own bound. Points inside this set ``F_y`` (intersected with an
optional input box) pass the sanitiser, which is the attacker's constraint.

Solvers (pure JAX, jittable, no external QP solver): the Euclidean projection onto
``F_y`` and the minimiser of a linear function over ``F_y``, each optionally intersected
with one half-space ``a.x <= beta`` (the KKT attack's margin constraint, the min-max
attack's decoy-loss constraint). Both are solved exactly through the Lagrange dual,
one monotone one-dimensional root per constraint: the slab multiplier in closed form (the
root of a piecewise-linear function, found among its breakpoints), the half-space and
ball multipliers by bisection (the returned point is on the feasible side of each
bracket, so it satisfies the constraints up to float rounding). The box ``F_y`` is always
intersected with the box ``mu_y +- r_y`` (implied by the ball), which keeps every
breakpoint finite. Cost per solve: O(d^2) per slab root times a few thousand roots.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning.base import check_dataset, check_fraction, check_validation, num_poison

Array = jax.Array

_BALL_ITERS = 40      # at most this many Illinois steps on the ball multiplier
_HALF_ITERS = 40      # at most this many Illinois steps on the half-space multiplier
_HALF_DOUBLINGS = 60  # bracket doublings for the half-space multiplier


class FeasibleSet(NamedTuple):
  """Sphere + slab (+ box) constraints per class ``y`` in {0, 1}.

  Attributes:
    centroids: [2, d] clean class means ``mu_y``.
    direction: [d] unit vector ``v`` from ``mu_0`` to ``mu_1``.
    sphere_radii: [2] ``r_y``.
    slab_radii: [2] ``s_y``.
    lower, upper: [2, d] the box (the input bounds, if any, intersected with
      ``mu_y +- r_y``, which the ball implies).
  """
  centroids: Array
  direction: Array
  sphere_radii: Array
  slab_radii: Array
  lower: Array
  upper: Array


def _flat(x):
  return x.reshape((x.shape[0], -1))


def check_percentile(percentile) -> float:
  """A concrete percentile in (0, 100]."""
  return float(_checks.check_float('percentile', percentile, minimum=0.0, maximum=100.0,
                                   strict_min=True, allow_traced=False))


def distances(centroids: Array, direction: Array, x: Array, y: Array) -> tuple[Array, Array]:
  """Sphere and slab distances ``(||x - mu_y||, |<x - mu_y, v>|)`` ([n] each)."""
  c = centroids[y]
  diff = _flat(x) - c
  return jnp.linalg.norm(diff, axis=1), jnp.abs(diff @ direction)


def feasible_set(x, y, *, percentile: float = 90.0,
                 bounds: tuple[float, float] | None = None) -> FeasibleSet:
  """The defender's sphere + slab bounds from clean binary data ``(x [n, d], y [n])``.

  ``percentile`` in (0, 100]: each class's radii are that percentile (linear
  interpolation, as ``np.percentile``) of its clean points' distances, so the defender
  alone drops about ``100 - percentile`` percent of each class per defense. ``bounds``:
  an optional input box ``(low, high)`` the poison must also respect.
  """
  _checks.check_array('x', x, ndim=2, dtype_kind='f', finite=True)
  _checks.check_labels('y', y, num_classes=2, batch=x.shape[0])
  percentile = check_percentile(percentile)
  if _checks.is_concrete(y):
    counts = jnp.bincount(jnp.asarray(y), length=2)
    if int(counts.min()) < 1:
      raise ValueError(f'y has class counts {tuple(int(c) for c in counts)}; the '
                       'feasible set needs points of both classes.')
  lo, hi = (-jnp.inf, jnp.inf) if bounds is None else _checks.check_bounds(bounds)
  return _feasible_set(x, y, jnp.asarray(percentile, x.dtype), jnp.asarray(lo, x.dtype),
                       jnp.asarray(hi, x.dtype))


@jax.jit
def _feasible_set(xf, y, percentile, lo, hi):
  onehot = jax.nn.one_hot(y, 2, dtype=xf.dtype)
  mu = (onehot.T @ xf) / jnp.maximum(onehot.sum(0), 1.0)[:, None]
  v = mu[1] - mu[0]
  v = v / jnp.maximum(jnp.linalg.norm(v), 1e-12)
  sph, slb = distances(mu, v, xf, y)

  def per_class(dist):
    return jnp.stack([jnp.nanpercentile(jnp.where(y == k, dist, jnp.nan), percentile)
                      for k in (0, 1)])
  r, s = per_class(sph), per_class(slb)
  lower = jnp.maximum(mu - r[:, None], lo)
  upper = jnp.minimum(mu + r[:, None], hi)
  return FeasibleSet(mu, v, r, s, lower, upper)


def feasible_mask(fs: FeasibleSet, x, y, *, rtol: float = 1e-4) -> Array:
  """Keep-mask [n] of the sanitiser with the bounds ``fs`` (sphere, slab and box; each
  radius and the box widened by ``rtol`` times the class's sphere radius for rounding)."""
  return _feasible_mask(fs, x, y, rtol)


@jax.jit
def _feasible_mask(fs, x, y, rtol):
  sph, slb = distances(fs.centroids, fs.direction, x, y)
  tol = rtol * fs.sphere_radii[y]
  xf = _flat(x)
  in_box = jnp.all((xf >= fs.lower[y] - tol[:, None]) & (xf <= fs.upper[y] + tol[:, None]),
                   axis=1)
  return (sph <= fs.sphere_radii[y] + tol) & (slb <= fs.slab_radii[y] + tol) & in_box


class ThreatModel(NamedTuple):
  """The checked settings the three attacks of Koh et al. share (:func:`threat_model`)."""
  fraction: float
  l2: float
  percentile: float
  bounds: tuple[float, float] | None
  tol: float


def threat_model(*, fraction, l2, percentile, bounds, tol) -> ThreatModel:
  """Checks the shared factory settings: budget, the victim's weight decay, the
  defender's percentile, the input box and the SMO tolerance."""
  return ThreatModel(check_fraction('fraction', fraction),
                     float(_checks.check_positive('l2', l2)), check_percentile(percentile),
                     None if bounds is None else _checks.check_bounds(bounds),
                     float(_checks.check_positive('tol', tol)))


class Setup(NamedTuple):
  """What an attack call starts from: the attacker's validation set, the budget
  ``n_poison``, the defender's bounds ``fs`` and its keep-weights on the clean points."""
  x_val: Array
  y_val: Array
  n_poison: int
  fs: FeasibleSet
  weight: Array


def setup(tm: ThreatModel, x, y, x_val, y_val) -> Setup:
  """Checks a binary data set ``(x [n, d], y)`` and the validation set (default: the
  training set), and computes the defender's bounds on the clean data."""
  check_dataset(x, y, num_classes=2)
  if x.ndim != 2:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected [n, d] features.')
  x_val, y_val = check_validation(x, y, x_val, y_val, num_classes=2, bounds=tm.bounds)
  fs = feasible_set(x, y, percentile=tm.percentile, bounds=tm.bounds)
  return Setup(x_val, y_val, num_poison(tm.fraction, x.shape[0]), fs,
               feasible_mask(fs, x, y).astype(x.dtype))


# --------------------------------------------------------------------------- solvers


def _box_slab_projection(q, v, m, s, lo, hi):
  """``argmin ||z - q||`` over ``lo <= z <= hi``, ``|v.z - m| <= s`` (``v`` unit, the box
  finite and meeting the slab). ``z(mu) = clip(q - mu v)``; ``phi(mu) = v.z(mu) - m`` is
  non-increasing and piecewise linear with breakpoints where a coordinate hits the box; the
  multiplier solves ``phi(mu) = clip(phi(0), -s, s)``, found exactly between breakpoints."""
  dt = q.dtype
  tau = jnp.clip(v @ jnp.clip(q, lo, hi) - m, -s, s)
  nz = v != 0
  safe = jnp.where(nz, v, 1.0)
  k = jnp.concatenate([jnp.zeros((1,), dt), jnp.where(nz, (q - lo) / safe, 0.0),
                       jnp.where(nz, (q - hi) / safe, 0.0)])
  phi = jnp.clip(q[None, :] - k[:, None] * v[None, :], lo, hi) @ v - m
  big = jnp.asarray(jnp.finfo(dt).max, dt)
  il = jnp.argmax(jnp.where(phi >= tau, k, -big))    # last breakpoint with phi >= tau
  ir = jnp.argmin(jnp.where(phi <= tau, k, big))     # first breakpoint with phi <= tau
  kl, kr, pl, pr = k[il], k[ir], phi[il], phi[ir]
  den = pl - pr
  frac = jnp.where(den > 0, (pl - tau) / jnp.where(den > 0, den, 1.0), 0.0)
  mu = kl + frac * (kr - kl)
  return jnp.clip(q - mu * v, lo, hi)


def _illinois(lo, f_lo, hi, f_hi, side):
  """Next point of the Illinois (modified regula falsi) method on a bracket of a
  non-increasing ``f`` (``f_lo > 0 >= f_hi``), or the midpoint when the secant leaves it."""
  den = f_lo - f_hi
  t = hi - f_hi * (hi - lo) / jnp.where(den > 0, den, 1.0)
  inside = (den > 0) & (t > lo) & (t < hi)
  return jnp.where(inside, t, 0.5 * (lo + hi))


def _illinois_update(good, t, f, lo, f_lo, hi, f_hi, side):
  """Moves the bracket end on ``t``'s side; halves the other end's value when the same
  side moved twice in a row (Illinois), which keeps both ends converging."""
  f_lo = jnp.where(good & (side < 0), 0.5 * f_lo, f_lo)
  f_hi = jnp.where(~good & (side > 0), 0.5 * f_hi, f_hi)
  lo, f_lo = jnp.where(good, lo, t), jnp.where(good, f_lo, f)
  hi, f_hi = jnp.where(good, t, hi), jnp.where(good, f, f_hi)
  return lo, f_lo, hi, f_hi, jnp.where(good, -1, 1).astype(jnp.int32)


def _polytope_projection(q, v, m, s, lo, hi, half):
  """Projection onto box ∩ slab ∩ {a.z <= beta} (``half = (a, beta)`` or None). The
  half-space multiplier ``lam >= 0`` (``z(lam) = P_{box ∩ slab}(q - lam a)``; the violation
  ``a.z(lam) - beta`` is non-increasing) is tried at 0, bracketed by doubling and refined
  by the Illinois method until the feasible end is within ``1e-6 (1 + |beta|)`` of the
  boundary; the feasible end is returned. Returns ``(z, ok)``, ``ok`` False when the
  half-space misses box ∩ slab (then ``z`` is the last, most pushed, point)."""
  inner = lambda p: _box_slab_projection(p, v, m, s, lo, hi)  # noqa: E731
  if half is None:
    return inner(q), jnp.asarray(True)
  a, beta = half
  dt = q.dtype
  aa = jnp.maximum(a @ a, jnp.asarray(1e-30, dt))
  tol = 1e-6 * (1.0 + jnp.abs(beta))

  def cond(st):
    _, _, lam_hi, f_hi, _, found, it, _ = st
    return ((~found & (it <= _HALF_DOUBLINGS)) |
            (found & (lam_hi > 0) & (f_hi < -tol) & (it < _HALF_DOUBLINGS + _HALF_ITERS)))

  def body(st):
    lam_lo, f_lo, lam_hi, f_hi, z, found, it, side = st
    lam = jnp.where(found, _illinois(lam_lo, f_lo, lam_hi, f_hi, side), lam_hi)
    zc = inner(q - lam * a)
    viol = a @ zc - beta
    good = viol <= 0
    z = jnp.where(good | ~found, zc, z)
    n_lo, nf_lo, n_hi, nf_hi, n_side = _illinois_update(good, lam, viol, lam_lo, f_lo,
                                                        lam_hi, f_hi, side)
    grown = jnp.where(lam == 0, viol / aa + jnp.asarray(1e-12, dt), 2.0 * lam)
    # before a feasible lam is found: lo follows the failures, hi grows
    n_hi = jnp.where(found | good, n_hi, grown)
    n_side = jnp.where(found, n_side, 0)
    return n_lo, nf_lo, n_hi, nf_hi, z, found | good, it + 1, n_side

  zero = jnp.asarray(0.0, dt)
  init = (zero, zero, zero, zero, q, jnp.asarray(False), jnp.asarray(0, jnp.int32),
          jnp.asarray(0, jnp.int32))
  st = jax.lax.while_loop(cond, body, init)
  return st[4], st[5]


def _ball_search(point_at, c, r, proj):
  """Smallest ``t`` in [0, 1] with ``||proj(point_at(t)) - c|| <= r`` (the distance is
  non-increasing in ``t``): tries ``t = 0`` and ``t = 1``, then the Illinois method until
  the feasible end is within ``1e-6 r`` of the sphere; the feasible end is returned (one
  loop, one evaluation per step). Returns ``(z, ok)``."""
  dt = c.dtype
  tol = 1e-6 * r

  def cond(st):
    _, _, t_hi, g_hi, _, _, have, i, _ = st
    return ((i < _BALL_ITERS + 2) & ~(have & ((t_hi == 0) | ((i >= 2) & (g_hi >= -tol))))
            & ~((i >= 2) & ~have))

  def body(st):
    t_lo, g_lo, t_hi, g_hi, z, ok, have, i, side = st
    t = jnp.where(i == 0, 0.0, jnp.where(i == 1, t_hi, _illinois(t_lo, g_lo, t_hi, g_hi,
                                                                 side))).astype(dt)
    zc, okc = proj(point_at(t))
    g = jnp.linalg.norm(zc - c) - r
    good = g <= 0
    z = jnp.where(good | ~have, zc, z)
    ok = jnp.where(good, okc, ok & have)
    n_lo, ng_lo, n_hi, ng_hi, n_side = _illinois_update(good, t, g, t_lo, g_lo, t_hi, g_hi,
                                                        side)
    n_side = jnp.where(i >= 2, n_side, 0)
    return n_lo, ng_lo, n_hi, ng_hi, z, ok, have | good, i + 1, n_side

  zero, one = jnp.asarray(0.0, dt), jnp.asarray(1.0, dt)
  init = (zero, zero, one, zero, c, jnp.asarray(False), jnp.asarray(False),
          jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
  st = jax.lax.while_loop(cond, body, init)
  return st[4], st[5] & st[6]


def _class_parts(fs: FeasibleSet, y):
  c = fs.centroids[y]
  return (c, fs.sphere_radii[y], fs.direction, fs.direction @ c, fs.slab_radii[y],
          fs.lower[y], fs.upper[y])


def _halfspace(a, beta):
  return None if a is None else (a, beta)


@jax.jit
def project_point(fs: FeasibleSet, p: Array, y, a: Array | None = None, beta=None):
  """Euclidean projection of ``p`` [d] onto ``F_y`` (∩ ``{a.x <= beta}`` if given).

  Dual: ``z(t) = P_Q((1 - t) p + t mu_y)`` with ``Q`` = box ∩ slab (∩ half-space), ``t``
  the ball multiplier ``lam / (1 + lam)``. Returns ``(z, ok)``; ``ok`` is False when the
  constraints have no common point (then ``z`` is the nearest point of ``Q`` to ``mu_y``).
  """
  c, r, v, m, s, lo, hi = _class_parts(fs, y)
  half = _halfspace(a, beta)
  return _ball_search(lambda t: (1.0 - t) * p + t * c, c, r,
                      lambda q: _polytope_projection(q, v, m, s, lo, hi, half))


@jax.jit
def linear_minimizer(fs: FeasibleSet, u: Array, y, a: Array | None = None, beta=None):
  """``argmin_{x in F_y (∩ a.x <= beta)} u.x`` for ``u`` [d].

  Dual of the ball: ``z(rho) = P_Q(mu_y - rho u/||u||)`` (``rho = ||u|| / lam``), whose
  distance to ``mu_y`` grows with ``rho``; the ball's multiplier is bisected in
  ``log rho`` over ``r_y [1e-6, 1e6]`` (at the top end the projection of a far point lies
  on the minimising face of ``Q``: the case of an inactive ball). Returns ``(z, ok)``.
  """
  c, r, v, m, s, lo, hi = _class_parts(fs, y)
  half = _halfspace(a, beta)
  uhat = u / jnp.maximum(jnp.linalg.norm(u), 1e-30)
  log_hi = jnp.log(jnp.maximum(r, 1e-30)) + jnp.log(1e6)
  log_lo = jnp.log(jnp.maximum(r, 1e-30)) + jnp.log(1e-6)

  def point_at(t):
    return c - jnp.exp(log_hi + t * (log_lo - log_hi)) * uhat
  return _ball_search(point_at, c, r, lambda q: _polytope_projection(q, v, m, s, lo, hi,
                                                                     half))


@jax.jit
def project(fs: FeasibleSet, x, y):
  """Rows of ``x`` [n, d] projected onto ``F_{y_i}``; returns ``(x', ok [n])``."""
  return jax.vmap(lambda p, yy: project_point(fs, p, yy))(x, y)
