"""FAB: the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L_inf, L2 and L1.

FAB is a minimal-perturbation attack. Written from the paper's Algorithm 1 and Section 3;
details the paper leaves open were checked against the authors' public code (AutoAttack's
``fab_pt.py``, ``fab_base.py``, ``fab_projections.py``; facts only, the code here is our
own). With ``x_orig`` the clean input, ``y`` its true label and ``x_i`` the iterate:

1. **Linearise.** For a class ``s != y`` let ``f_s = z_s - z_y`` (negative while ``x_i`` is
   classified ``y``), ``w_s = grad f_s(x_i)`` and the hyperplane
   ``pi_s = {z : f_s(x_i) + <w_s, z - x_i> = 0}``. Untargeted FAB picks the class whose
   hyperplane is nearest in the dual norm, ``s = argmin_s |f_s| / (1e-12 + ||w_s||_q)``
   (``q = 1, 2, inf`` for ``p = inf, 2, 1``); FAB-T (:func:`fab_t`, the version AutoAttack
   runs) uses one given target class ``s = t``.
2. **Project.** ``delta_i = P_p(x_i)`` and ``delta_orig = P_p(x_orig)``: the displacements
   to the minimal-``p``-norm points of ``pi_s ∩ [lo, hi]^d`` from ``x_i`` and from
   ``x_orig``, both onto the hyperplane linearised at ``x_i``
   (:func:`project_hyperplane_box`, exact; see below).
3. **Biased step.** ``alpha = min(a_i / (a_i + a_o), alpha_max)`` with
   ``a_i = max(||delta_i||_p, 1e-8)``, ``a_o = max(||delta_orig||_p, 1e-8)``;
   ``x_{i+1} = clip((1 - alpha)(x_i + eta delta_i) + alpha (x_orig + eta delta_orig))``.
4. **Backward step.** If ``x_{i+1}`` is misclassified it is recorded when its distance
   ``||x_{i+1} - x_orig||_p`` is the smallest so far, and the iterate moves back towards
   the original: ``x_{i+1} <- x_orig + beta (x_{i+1} - x_orig)``.
5. **Restarts.** The first run (and, for FAB-T, the first run of every target) starts at
   ``x_orig``; a later run starts at ``clip(x_orig + r v / ||v||_p)`` with ``v`` uniform in
   ``[-1, 1]^d`` (L_inf) or standard normal (L2, L1) and radius
   ``r = min(best_norm, eps) / 2``, ``best_norm`` the smallest adversarial distance found
   so far (infinite while none is). Without ``eps``, the official code's default radius
   ``eps = 0.3, 1.0, 5.0`` (L_inf, L2, L1; for inputs in [0, 1]) times ``hi - lo`` is used
   for the restarts only.

Every run makes ``num_steps`` steps (no early stop: FAB keeps shrinking the perturbation).
Defaults are AutoAttack's FAB-T: ``num_steps=100`` (their ``n_iter``), ``restarts=1``
(``n_restarts``), ``num_target_classes=9`` (``n_target_classes``), ``alpha_max=0.1``,
``eta=1.05``, ``beta=0.9``.

**The projections** (step 2). Minimise ``||d||_p`` subject to ``<w, t + d> = b`` and
``lo <= t + d <= hi``. Orient the problem so that ``<u, d> = E`` with ``E >= 0``; each
coordinate can then move by at most ``cap_i`` (to ``hi`` where ``u_i > 0``, to ``lo`` where
``u_i < 0``) in the direction ``sign(u_i)``. By the KKT conditions the solution is

* L_inf: ``d_i = sign(u_i) min(lam, cap_i)``, ``lam`` the root of
  ``sum_i |u_i| min(lam, cap_i) = E``;
* L2: ``d_i = sign(u_i) min(lam |u_i|, cap_i)`` (the box projection of ``lam u``), ``lam``
  the root of ``sum_i u_i^2 min(lam, cap_i / |u_i|) = E``;
* L1: fill coordinates to their caps in the order of decreasing ``|u_i|`` (the cheapest
  first) until ``E`` is reached, the last one partially (a fractional knapsack).

The two root equations are piecewise linear and increasing in ``lam``; after one sort of the
breakpoints they are evaluated at every breakpoint (cumulative sums) and the root is found
by linear interpolation between two neighbouring ones: exact up to rounding, no iteration
(the official code bisects over the same sorted breakpoints). If the hyperplane misses the
box, every coordinate with ``u_i != 0`` goes to its cap: the box corner that comes closest
to the hyperplane (as in the official code). Coordinates with ``u_i = 0`` never move.

Deliberate differences from the official code:

* **Restart radius.** AutoAttack's ``perturb`` calls a fresh single run per restart, which
  resets ``best_norm`` to 1e10, so its restarts always use radius ``eps / 2``; we use the
  best distance found by all earlier runs of this call (``min(best_norm, eps) / 2``) as the
  original FAB code (fra31/fab-attack) and the paper do. With ``restarts=1``
  (AutoAttack's FAB-T) no run starts at a random point and the two agree.
* **Which result is kept.** AutoAttack runs later restarts / targets only on points still
  robust at ``eps`` and keeps the first result within ``eps``. Here every run computes on
  every point (static shapes in one compiled program) and the smallest-distance adversarial
  over all runs is kept; per point the runs are independent, so the set of points broken
  within ``eps`` is the same (up to the random starts) and the reported distance can only
  be smaller.
* **Any box** ``[lo, hi]`` (the official code hard-codes [0, 1]) and any input shape.
* **Gradients.** Untargeted FAB differentiates the ``C - 1`` differences ``z_s - z_y``
  (one ``jax.vjp``, ``jax.vmap`` over its cotangents); the official code takes all ``C``
  class gradients and subtracts. Same numbers, one backward pass fewer.
* **Scale.** The projections first divide ``w`` and ``b - <w, t>`` by ``max_i |w_i|`` (the
  problem is invariant to it), and treat exactly-zero coordinates of ``w`` (of ``w^2`` for
  L2) as absent, where the official L2 / L1 code drops ``|w_i| <= 1e-8`` in absolute terms.
* **Points misclassified at ``x``** are returned unchanged with distance 0 and success
  (the official code skips them the same way; it does not report a distance).

Cost per run: ``num_steps`` iterations of one forward-backward pass (``C - 1`` backward
passes untargeted, 1 for FAB-T) plus one extra forward pass (the misclassification test).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.autopgd import top_other_classes

#: The official code's default ``eps`` (restart radius) per norm, for inputs in [0, 1].
DEFAULT_RESTART_EPS = {'linf': 0.3, 'l2': 1.0, 'l1': 5.0}
_DUAL_TINY = 1e-12    # the official code's guard in |f_s| / (1e-12 + ||w_s||_q)
_NORM_TINY = 1e-8     # ... and in max(||delta||_p, 1e-8) for alpha


# --------------------------------------------------------------------------- projections


def _root_capped(a, r, target):
  """The root ``lam >= 0`` of ``G(lam) = sum_i a_i min(lam, r_i) = target``.

  ``a >= 0`` (weights) and ``r >= 0`` (finite breakpoints) are vectors [n]. Returns
  ``(lam, feasible)`` with ``feasible = target < G(inf) = sum_i a_i r_i``; ``lam`` is only
  meaningful when feasible.
  """
  idx = jnp.argsort(r)
  rs, as_ = r[idx], a[idx]
  ca = jnp.cumsum(as_)                  # sum of weights with breakpoint <= rs[k]
  total = ca[-1]
  g = jnp.cumsum(as_ * rs) + rs * (total - ca)     # G(rs[k]), non-decreasing in k
  k = jnp.sum(g <= target) - 1          # last breakpoint with G <= target (-1: none)
  kc = jnp.clip(k, 0, r.shape[0] - 1)
  slope = total - ca[kc]
  lam_mid = rs[kc] + (target - g[kc]) / jnp.maximum(slope, jnp.finfo(r.dtype).tiny)
  lam_mid = jnp.minimum(lam_mid, rs[jnp.minimum(kc + 1, r.shape[0] - 1)])
  lam_first = target / jnp.maximum(total, jnp.finfo(r.dtype).tiny)
  lam = jnp.where(k < 0, lam_first, lam_mid)
  return lam, target < g[-1]


def _project_1d(t, w, e, lo, hi, norm):
  """Displacement d [n] minimising ||d||_p s.t. <w, d> = e and lo <= t + d <= hi."""
  scale = jnp.max(jnp.abs(w))
  ok = scale > 0
  scale = jnp.where(ok, scale, 1.0)
  sgn = jnp.sign(e)
  u = sgn * w / scale                   # orient: <u, d> = target >= 0
  target = jnp.abs(e) / scale
  au = jnp.abs(u)
  cap = jnp.maximum(jnp.where(u > 0, hi - t, t - lo), 0.0)
  cap = jnp.where(au > 0, cap, 0.0)
  corner = jnp.sign(u) * cap            # where the hyperplane misses the box
  if norm == 'linf':
    lam, feasible = _root_capped(au, cap, target)
    d = jnp.sign(u) * jnp.minimum(lam, cap)
  elif norm == 'l2':
    a = u * u
    live = a > 0
    r = jnp.where(live, cap / jnp.where(live, au, 1.0), 0.0)
    lam, feasible = _root_capped(jnp.where(live, a, 0.0), r, target)
    d = jnp.where(live, jnp.sign(u) * jnp.minimum(lam * au, cap), 0.0)
    corner = jnp.where(live, corner, 0.0)
  elif norm == 'l1':
    order = jnp.argsort(-au)            # cheapest coordinates (largest |u|) first
    au_s, cap_s = au[order], cap[order]
    gain = jnp.cumsum(au_s * cap_s)
    k = jnp.sum(gain < target)          # first coordinate where the gain reaches target
    feasible = k < t.shape[0]
    kc = jnp.minimum(k, t.shape[0] - 1)
    before = jnp.where(kc > 0, gain[jnp.maximum(kc - 1, 0)], 0.0)
    part = jnp.minimum((target - before) / jnp.maximum(au_s[kc], jnp.finfo(t.dtype).tiny),
                       cap_s[kc])
    pos = jnp.arange(t.shape[0])
    mag_s = jnp.where(pos < kc, cap_s, jnp.where(pos == kc, part, 0.0))
    mag = jnp.zeros_like(t).at[order].set(mag_s)
    d = jnp.sign(u) * mag
  else:
    raise ValueError(f'norm={norm!r} is not one of {common.NORMS}.')
  d = jnp.where(feasible, d, corner)
  return jnp.where(ok & (target > 0), d, 0.0).astype(t.dtype)


def _project_flat(t, w, e, lo, hi, norm):
  """Batched :func:`_project_1d` on flat [B, D] arrays (``e`` [B], lo/hi [B, D])."""
  return jax.vmap(lambda a, b, c, l, h: _project_1d(a, b, c, l, h, norm))(t, w, e, lo, hi)


def project_hyperplane_box(points: jax.Array, w: jax.Array, b: jax.Array, norm: str,
                           lo=0.0, hi=1.0) -> jax.Array:
  """Exact minimal-``p``-norm projection of each point onto ``{<w, z> = b} ∩ [lo, hi]``.

  Args:
    points: [B, ...] points ``t`` inside the box.
    w: [B, ...] hyperplane normals (same shape as ``points``).
    b: [B] offsets.
    norm: 'linf', 'l2' or 'l1'.
    lo, hi: the box, scalars or arrays broadcastable to ``points`` (``lo <= t <= hi``).

  Returns:
    The displacements ``d`` [B, ...]: ``t + d`` is the point of the hyperplane ∩ box with
    the smallest ``||d||_p``; where the hyperplane does not meet the box, the box corner
    closest to it (every coordinate with ``w_i != 0`` moved to the bound towards the
    hyperplane); ``d = 0`` where ``w = 0``. See the module docstring for the method.
  """
  _checks.check_choice('norm', norm, common.NORMS)
  shape = points.shape
  t = common._flat(points)
  wf = common._flat(jnp.broadcast_to(w, shape)).astype(t.dtype)
  lo_f = common._flat(jnp.broadcast_to(jnp.asarray(lo, t.dtype), shape))
  hi_f = common._flat(jnp.broadcast_to(jnp.asarray(hi, t.dtype), shape))
  e = jnp.asarray(b, t.dtype) - jnp.sum(wf * t, axis=-1)
  return _project_flat(t, wf, e, lo_f, hi_f, norm).reshape(shape)


# --------------------------------------------------------------------------- the attack


def _flat_norm(d, norm):
  if norm == 'linf':
    return jnp.max(jnp.abs(d), axis=-1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(d * d, axis=-1))
  return jnp.sum(jnp.abs(d), axis=-1)


_DUAL = {'linf': 'l1', 'l2': 'l2', 'l1': 'linf'}


def _dual_norm(g, norm):
  """``||g||_q`` over the last axis, q the dual of ``norm``."""
  return _flat_norm(g, _DUAL[norm])


def _random_direction(key, shape, norm, dtype):
  """A random point on the unit ``norm`` sphere per row of [B, D] (the official recipe)."""
  if norm == 'linf':
    v = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  else:
    v = jax.random.normal(key, shape, dtype)
  return v / jnp.maximum(_flat_norm(v, norm), 1e-12)[:, None]


def _linearise(f, xf, shape, y, others, targets):
  """``(df [B, K], dg [B, K, D])``: ``z_s - z_y`` and its gradient for the K classes s.

  ``others`` [B, C-1] (untargeted: all classes but y; C-1 backward passes) or ``targets``
  [B] (FAB-T: one backward pass).
  """
  def zdiff(v):
    z = f(v.reshape(shape))
    zy = jnp.take_along_axis(z, y[:, None], axis=1)
    if targets is not None:
      return jnp.take_along_axis(z, targets[:, None], axis=1) - zy
    return jnp.take_along_axis(z, others, axis=1) - zy

  df, vjp = jax.vjp(zdiff, xf)
  k = df.shape[1]
  b = xf.shape[0]
  if k == 1:
    (g,) = vjp(jnp.ones_like(df))
    return df, g[:, None, :]
  ct = jnp.broadcast_to(jnp.eye(k, dtype=df.dtype)[:, None, :], (k, b, k))
  (g,) = jax.vmap(vjp)(ct)                            # [K, B, D]
  return df, jnp.moveaxis(g, 0, 1)


def _fab_run(f, x0, shape, y, x_start, lo, hi, *, others, targets, norm, num_steps,
             alpha_max, eta, beta, best, x_best):
  """One FAB run from ``x_start`` (flat [B, D]); updates (best, x_best) in place."""
  b = x0.shape[0]
  rows = jnp.arange(b)

  def body(_, c):
    x1, best, x_best = c
    df, dg = _linearise(f, x1, shape, y, others, targets)
    dist = jnp.abs(df) / (_DUAL_TINY + _dual_norm(dg, norm))     # [B, K]
    s = jnp.argmin(dist, axis=1)
    w = dg[rows, s]                                               # [B, D]
    fs = df[rows, s]
    # Hyperplane {z : fs + <w, z - x1> = 0}: e = b - <w, t> for t = x1 and t = x0.
    e1 = -fs
    e0 = jnp.sum(w * (x1 - x0), axis=-1) - fs
    d = _project_flat(jnp.concatenate([x1, x0]), jnp.concatenate([w, w]),
                      jnp.concatenate([e1, e0]), jnp.broadcast_to(lo, (2 * b,) + x0.shape[1:]),
                      jnp.broadcast_to(hi, (2 * b,) + x0.shape[1:]), norm)
    d1, d2 = d[:b], d[b:]
    a1 = jnp.maximum(_flat_norm(d1, norm), _NORM_TINY)
    a2 = jnp.maximum(_flat_norm(d2, norm), _NORM_TINY)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x_new = jnp.clip((1.0 - alpha) * (x1 + eta * d1) + alpha * (x0 + eta * d2), lo, hi)
    adv = common.predict(f(x_new.reshape(shape))) != y
    dist_new = _flat_norm(x_new - x0, norm)
    imp = adv & (dist_new < best)
    x_best = jnp.where(imp[:, None], x_new, x_best)
    best = jnp.where(imp, dist_new, best)
    x_new = jnp.where(adv[:, None], x0 + beta * (x_new - x0), x_new)
    return x_new, best, x_best

  _, best, x_best = common.fori_loop(0, num_steps, body, (x_start, best, x_best))
  return best, x_best


def _check_fab(norm, eps, num_steps, restarts, alpha_max, eta, beta, bounds):
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  restarts = _checks.check_int('restarts', restarts, minimum=1)
  _checks.check_float('alpha_max', alpha_max, minimum=0.0, maximum=1.0)
  _checks.check_float('eta', eta, minimum=1.0)
  _checks.check_float('beta', beta, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  return bounds, num_steps, restarts


def _fab(logits_fn, x, y, key, *, norm, eps, num_steps, restarts, num_target_classes,
         alpha_max, eta, beta, bounds, name, first_target=0):
  """The shared driver of :func:`fab` (num_target_classes None) and :func:`fab_t`."""
  common.check_call(x, y, bounds, logits_fn)
  budget = 'minimal' if eps is None else 'fixed'
  if restarts > 1 and key is None:
    raise ValueError(f'{name} with restarts={restarts} needs a PRNG key (got key=None).')
  b = x.shape[0]
  if b == 0:
    empty = {'success': jnp.zeros((0,), bool), 'norm': jnp.zeros((0,), x.dtype),
             'x_best': x, 'gradients': jnp.zeros((0,), jnp.int32)}
    return AttackOutput(x, empty, budget)
  lo, hi = (jnp.asarray(v, x.dtype) for v in bounds)
  shape = x.shape
  f = lambda v: common.as_multiclass(logits_fn(v))
  z0 = f(x)
  c = z0.shape[-1]
  x0 = common._flat(x)
  clean_wrong = common.predict(z0) != y
  if num_target_classes is None:
    k_runs = 1
    onehot = jax.nn.one_hot(y, c, dtype=bool)
    others = jnp.argsort(onehot, axis=1, stable=True)[:, :c - 1].astype(jnp.int32)
    targets_all = None
    grads_per_step = c - 1
  else:
    if first_target + num_target_classes > c - 1:
      raise ValueError(f'first_target={first_target} + num_target_classes='
                       f'{num_target_classes} must be <= num_classes - 1 = {c - 1}.')
    k_runs = num_target_classes
    others = None
    targets_all = top_other_classes(z0, y, first_target + num_target_classes)[:, first_target:]
    grads_per_step = 1
  if eps is None:
    r_eps = DEFAULT_RESTART_EPS[norm] * (bounds[1] - bounds[0])
  else:
    r_eps = eps
  r_eps = jnp.asarray(r_eps, x.dtype)

  def one_run(j, carry):
    best, x_best = carry
    tj = None if targets_all is None else jnp.take(targets_all, j // restarts, axis=1)
    if restarts > 1:
      rk = jax.random.fold_in(key, j)
      radius = 0.5 * jnp.minimum(best, r_eps)
      v = _random_direction(rk, x0.shape, norm, x.dtype)
      x_rand = jnp.clip(x0 + radius[:, None] * v, lo, hi)
      x_start = jnp.where(j % restarts > 0, x_rand, x0)
    else:
      x_start = x0
    return _fab_run(f, x0, shape, y, x_start, lo, hi, others=others, targets=tj, norm=norm,
                    num_steps=num_steps, alpha_max=alpha_max, eta=eta, beta=beta,
                    best=best, x_best=x_best)

  init = (jnp.full((b,), jnp.inf, x.dtype), x0)
  n_runs = k_runs * restarts
  if n_runs == 1:
    best, x_best = one_run(0, init)
  else:
    best, x_best = lax.fori_loop(0, n_runs, one_run, init)
  best = jnp.where(clean_wrong, 0.0, best)
  x_best = jnp.where(clean_wrong[:, None], x0, x_best).reshape(shape)
  found = jnp.isfinite(best)
  if eps is None:
    succ = found
  else:
    succ = found & (best <= jnp.asarray(eps, x.dtype))
  x_adv = common.select(succ, x_best, x)
  info = {'success': succ, 'norm': best, 'x_best': x_best,
          'gradients': jnp.full((b,), n_runs * num_steps * grads_per_step, jnp.int32)}
  if targets_all is not None:
    info['targets'] = targets_all
  return AttackOutput(x_adv, info, budget)




def fab(*, norm: str = 'linf', eps=None, num_steps: int = 100, restarts: int = 1,
        alpha_max=0.1, eta=1.05, beta=0.9, bounds=(0.0, 1.0)):
  """Untargeted FAB (Croce & Hein, ICML 2020); the algorithm is in the module docstring.

  Each step linearises the boundary to every class ``s != y`` (``C - 1`` backward passes)
  and moves towards the nearest one. ``y`` are the true labels.

  Args:
    norm: 'linf', 'l2' or 'l1', the norm whose distance is minimised.
    eps: optional budget (may be traced): the radius bound of the restarts, and what
      ``x_adv`` / ``success`` are measured against (see below). ``None``: minimal-norm mode.
    num_steps: iterations per run (the official ``n_iter``).
    restarts: runs; the first starts at ``x``, later ones at random points (needs ``key``).
    alpha_max: the largest weight of the step from ``x_orig`` (``[0, 1]``).
    eta: overshoot ``>= 1`` of the projection steps.
    beta: backward-step factor in ``(0, 1)``.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key) -> AttackOutput`` with budget ``'minimal'`` when
    ``eps=None`` and ``'fixed'`` when ``eps`` is given; ``key`` is only used
    when ``restarts > 1`` (it may be ``None`` otherwise). Cost: ``restarts * num_steps * (C - 1)``
    backward passes.

  What ``x_adv`` is: with ``eps=None``, the smallest-distance misclassified point found
  (``x`` itself where none was found, and where ``x`` is already misclassified); with
  ``eps`` given, that point where its distance is ``<= eps``, and ``x`` elsewhere (so
  ``x_adv`` plugs into "robust accuracy at eps", e.g. AutoAttack). Always
  ``lo <= x_adv <= hi``; with ``eps``, ``||x_adv - x||_p <= eps``.

  ``info``: ``success`` [B] (misclassified at ``x_adv``; with
  ``eps``, that means a misclassified point within ``eps`` was found; clean errors count
  as successes), ``norm`` [B] (``||x_best - x||_p`` of the best adversarial found,
  whatever ``eps``: ``inf`` where none was found, 0 for clean errors), ``x_best`` [B, ...]
  (that point, ``x`` where none), ``gradients`` [B] (backward passes computed per example;
  computed on every point, clean errors included).

  >>> import jax.numpy as jnp
  >>> w = jnp.array([1.0, -2.0, 2.0]); f = lambda x: (x @ w)[:, None] - 0.75
  >>> x = jnp.full((1, 3), 0.5); y = jnp.array([0])      # f(x) = -0.25, class 0
  >>> out = fab(norm='l2', num_steps=1)(f, x, y, None)
  >>> round(float(out.info['norm'][0]), 4)               # eta |f| / ||w|| = 1.05 * 0.25 / 3
  0.0875
  """
  bounds, num_steps, restarts = _check_fab(norm, eps, num_steps, restarts, alpha_max, eta,
                                           beta, bounds)

  def attack(logits_fn, x, y, key=None):
    return _fab(logits_fn, x, y, key, norm=norm, eps=eps, num_steps=num_steps,
                restarts=restarts, num_target_classes=None, alpha_max=alpha_max, eta=eta,
                beta=beta, bounds=bounds, name='fab')
  return attack


def fab_t(*, norm: str = 'linf', eps=None, num_steps: int = 100,
          num_target_classes: int = 9, restarts: int = 1, alpha_max=0.1, eta=1.05,
          beta=0.9, bounds=(0.0, 1.0), first_target: int = 0):
  """FAB-T, the targeted FAB that AutoAttack runs (Croce & Hein, ICML 2020).

  For each of the ``num_target_classes`` classes ranked highest at the clean input (other
  than ``y``), ``restarts`` runs of FAB that linearise only the boundary between ``y`` and
  that target (one backward pass per step). ``y`` are the *true* labels and success is
  misclassification (any class but ``y``), as in AutoAttack: the targets are a search
  device. The smallest-distance adversarial over all targets and runs is kept. Needs
  ``num_target_classes <= num_classes - 1`` (checked at call time).

  Args, ``x_adv`` and ``info``: as :func:`fab`, plus ``num_target_classes`` (>= 1;
  AutoAttack uses 9). Cost: ``num_target_classes * restarts * num_steps`` backward passes;
  ``info`` also has ``targets`` [B, num_target_classes] (by rank at the clean input).
  ``first_target``: as in :func:`apgd_t` (targets are the ranks ``first_target ..
  first_target + num_target_classes - 1``).
  """
  bounds, num_steps, restarts = _check_fab(norm, eps, num_steps, restarts, alpha_max, eta,
                                           beta, bounds)
  num_target_classes = _checks.check_int('num_target_classes', num_target_classes,
                                         minimum=1)
  first_target = _checks.check_int('first_target', first_target, minimum=0)

  def attack(logits_fn, x, y, key=None):
    return _fab(logits_fn, x, y, key, norm=norm, eps=eps, num_steps=num_steps,
                restarts=restarts, num_target_classes=num_target_classes,
                alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds,
                name='fab_t', first_target=first_target)
  return attack
