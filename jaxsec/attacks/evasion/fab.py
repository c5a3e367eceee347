"""FAB: the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L_inf, L2 and L1.

A minimal-perturbation attack (Algorithm 1; open details from AutoAttack's ``fab_*.py``).
With ``x_orig`` the clean input, ``y`` its label and ``x_i`` the iterate, a step: linearise
``f_s = z_s - z_y`` at ``x_i`` (untargeted: the class with the nearest hyperplane,
``argmin_s |f_s| / (1e-12 + ||w_s||_q)``, ``q`` dual to ``p``; FAB-T, :func:`fab_t`: a given
target); project ``x_i`` and ``x_orig`` onto ``pi_s ∩ [lo, hi]^d`` (``delta_i``,
``delta_orig``, :func:`project_hyperplane_box`); step to ``clip((1 - alpha)(x_i + eta
delta_i) + alpha (x_orig + eta delta_orig))``, ``alpha = min(a_i / (a_i + a_o), alpha_max)``,
``a = max(||delta||_p, 1e-8)``; if that is misclassified, record it when closest and move
back to ``x_orig + beta (x_{i+1} - x_orig)``. The first run starts at ``x_orig``, later ones
at ``clip(x_orig + r v / ||v||_p)``, ``v`` uniform (L_inf) or normal, ``r = min(best_norm,
eps) / 2`` (no ``eps``: 0.3, 1, 5 times ``hi - lo`` for L_inf, L2, L1). ``num_steps`` steps
per run, no early stop. Defaults are AutoAttack's FAB-T (100 steps, 1 restart, 9 targets,
``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``). Projections are exact by KKT (``u`` the
oriented normal, ``cap_i`` the room to the box): L_inf ``d_i = sign(u_i) min(lam, cap_i)``, L2
``sign(u_i) min(lam |u_i|, cap_i)``, ``lam`` from one sort of the breakpoints and linear
interpolation (the official code bisects); L1 a fractional knapsack; a hyperplane missing
the box gives the nearest box corner (official).

Deviations from the official code: restarts use the best distance of all earlier runs (as
fra31/fab-attack and the paper; AutoAttack's resets to ``eps / 2``; equal with 1 restart);
every run computes on every point and the smallest adversarial over all runs is kept (same
points broken within ``eps``, distances only smaller); any box and input shape; untargeted
gradients of the ``C - 1`` differences in one ``jax.vjp`` (one backward pass fewer);
projections rescale by ``max |w_i|`` and drop exactly-zero coordinates (official L2 / L1:
``|w_i| <= 1e-8``); points misclassified at ``x`` return unchanged, distance 0, success.
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
