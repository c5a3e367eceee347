"""Auto-PGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum, APGD-CE / -DLR / -T.

Paper's Algorithm 1, open details from the authors' code. Start ``clip(x + eps t / ||t||_p)``,
``t ~ U[-1, 1]^d`` (L_inf) or ``N(0, I)`` (L2); ``eta^(0) = 2 eps``; ``x^(1) = P(x^(0) + eta
grad)``, then ``z = P(x^(k) + eta d(grad))``, ``x^(k+1) = P(x^(k) + alpha (z - x^(k)) + (1 -
alpha)(x^(k) - x^(k-1)))``, ``alpha = 0.75``, ``d`` the sign or L2-normalised gradient, ``P``
onto ball ∩ box. At checkpoint ``w_j`` the step is halved and the iterate and its gradient
reset to ``x_max`` when (1) ``#{i in [w_{j-1}, w_j): f(x^(i+1)) > f(x^(i))} <= rho (w_j -
w_{j-1})`` or (2) the step was not reduced at ``w_{j-1}`` and ``f_max`` did not change; the
momentum after a reset is ``x_max - x^(w_j - 1)`` (official code). Cost: ``N + 1``
forward-backward passes per restart (and per target class).

``schedule='official'`` (default) is the official code: segments ``h_0 = max(floor(0.22 N),
1)``, ``h_{j+1} = max(h_j - max(floor(0.03 N), 1), max(floor(0.06 N), 1))``, checkpoints at
their partial sums (N = 50: 11, 21, 30, 38, 45); ``<=`` in (1); (2) off at the first
checkpoint; (1) compares pre-reset losses, the first comparison being ``f(x^(1)) > 0`` (the
official ``check_oscillation`` reads an unwritten zero slot). ``schedule='paper'``:
``w_j = ceil(p_j N)``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
strict ``<`` in (1); (2) may fire at the first checkpoint (``w_0 = 0``); after a reset the
next comparison is with ``f(x_max)``. The two agree at N = 100.

``eot_iter`` (AutoAttack 'rand'): each gradient is the mean over independent draws; loss and
success use the last draw (official). ``norm='l1'``: l1-APGD ("Mind the box", ICCV 2021) as
the official code (:func:`apgd_l1_run`, :func:`apgd_l1_largereps_run`), one deviation: the
iterate is ``x + (d_u + d_p)``, not ``(x + d_u) + d_p``: coordinates the projection zeroes are 0.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common


SCHEDULES = ('official', 'paper')


def checkpoints(num_steps: int, schedule: str = 'official') -> list[int]:
  """The iterations ``w_j`` (``1 <= w_j <= N``) where APGD checks the step size.

  ``'official'``: the official code's integer schedule (see the module docstring);
  ``'paper'``: ``w_j = ceil(p_j N)`` from the paper's ``p_j``.
  """
  _checks.check_choice('schedule', schedule, SCHEDULES)
  if schedule == 'official':
    h = max(int(0.22 * num_steps), 1)
    h_min = max(int(0.06 * num_steps), 1)
    decr = max(int(0.03 * num_steps), 1)
    out, w = [], 0
    while w + h <= num_steps:
      w += h
      out.append(w)
      h = max(h - decr, h_min)
    return out
  p_prev, p = 0.0, 0.22
  out = []
  while p <= 1.0 + 1e-12:
    w = int(math.ceil(p * num_steps - 1e-9))
    if 1 <= w <= num_steps and (not out or w > out[-1]):
      out.append(w)
    p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
  return out


def checkpoint_reduce(count, seg_len, rho, reduced_last, f_max_last, f_max,
                      schedule: str = 'official'):
  """APGD's step-size test at a checkpoint ``w_j`` (per example, bool).

  ``count``: the number of steps ``i in [w_{j-1}, w_j)`` with ``f(x^(i+1)) > f(x^(i))``;
  ``seg_len = w_j - w_{j-1}``; ``reduced_last``: the step was halved at ``w_{j-1}``;
  ``f_max_last``: the best objective at ``w_{j-1}``. Halve when condition (1)
  ``count <= rho * seg_len`` (``'official'``; ``<`` for ``'paper'``) or condition (2)
  ``not reduced_last and f_max == f_max_last``.
  """
  cond1 = (count <= rho * seg_len) if schedule == 'official' else (count < rho * seg_len)
  cond2 = (~reduced_last) & (f_max_last >= f_max)
  return cond1 | cond2


def _apgd_start(key, x, eps, p, bounds):
  lo, hi = bounds
  if p == 'linf':
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t = t / common._bcast(jnp.maximum(common.norm(t, 'linf'), 1e-12), t)
  else:
    t = common.normalize(jax.random.normal(key, x.shape, x.dtype), 'l2')
  return jnp.clip(x + common._bcast(eps, x) * t, lo, hi)


def _eot_value_and_grad(logits_fn, obj, eot_iter):
  """``(x, y, key) -> (f, logits, grad)`` for a randomised ``logits_fn(x, key)``: the mean of
  ``eot_iter`` per-draw gradients of the per-example objective, draw ``s`` with key
  ``jax.random.split(key, eot_iter)[s]``; ``f`` and ``logits`` of the last draw (as the
  official code)."""

  def run(xx, yy, key):
    def one(gsum, k):
      f, logits, g = common.value_and_grad(lambda z: logits_fn(z, k), obj)(xx, yy)
      return gsum + g, (f, logits)

    gsum, (fs, lgs) = lax.scan(one, jnp.zeros_like(xx), jax.random.split(key, eot_iter))
    return fs[-1], lgs[-1], gsum / eot_iter
  return run


def apgd_run(logits_fn, x, y, key, *, eps, p, num_steps, obj, success_fn, bounds, rho,
             alpha, random_start=True, return_state=False, schedule='official',
             x_init=None, eot_iter=None):
  """One APGD run. ``obj(logits, y) -> [B]`` is maximised, ``success_fn(logits) -> [B]``.

  Returns ``(x_out, success, objective_at_x_out)``: ``x_out`` is a successful iterate where
  one was found (the one with the highest objective), otherwise the highest-objective one.
  With ``return_state`` a fourth element, the final loop state (``eta``, ``f_max``, ...).
  ``x_init``: the starting point (a point of the ball ∩ box) instead of the random start.
  ``eot_iter``: None for a deterministic ``logits_fn(x)``; an int for a randomised
  ``logits_fn(x, key)`` whose gradients are averaged over ``eot_iter`` draws (EOT).
  """
  b = x.shape[0]
  official = schedule == 'official'
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (b,))
  k_start, k_eot = jax.random.split(key)
  if eot_iter is None:
    vg0 = common.value_and_grad(logits_fn, obj)
    vg = lambda xx, yy, i: vg0(xx, yy)
  else:
    vge = _eot_value_and_grad(logits_fn, obj, eot_iter)
    vg = lambda xx, yy, i: vge(xx, yy, jax.random.fold_in(k_eot, i))
  proj = lambda z: common.project(z, x, eps_b, p, bounds)
  direction = (lambda g: jnp.sign(g)) if p == 'linf' else (lambda g: common.normalize(g, 'l2'))

  ck = checkpoints(num_steps, schedule)
  is_ck = [False] * (num_steps + 1)
  seg = [0] * (num_steps + 1)
  prev = 0
  for w in ck:
    is_ck[w] = True
    seg[w] = w - prev
    prev = w
  is_ck = jnp.asarray(is_ck)
  seg = jnp.asarray(seg, x.dtype)

  if x_init is not None:
    x0 = jnp.asarray(x_init, x.dtype)
  else:
    x0 = _apgd_start(k_start, x, eps_b, p, bounds) if random_start else x
  f0, logits0, g0 = vg(x0, y, 0)
  s0 = success_fn(logits0)
  if official:
    # check_oscillation's first comparison reads the unwritten slot loss_steps[-1] == 0
    # (loss_steps[0] itself when N == 1, a comparison that is always false).
    f_cmp0 = jnp.full_like(f0, 0.0 if num_steps > 1 else jnp.inf)
  else:
    f_cmp0 = f0

  state = dict(
      x_cur=x0, x_prev=x0, g=g0, f_cur=f_cmp0, eta=2.0 * eps_b,
      x_max=x0, f_max=f0, g_max=g0,
      count=jnp.zeros((b,), x.dtype), f_max_last=f0,
      reduced_last=jnp.full((b,), official),
      x_out=x0, s_out=s0, v_out=f0)

  def body(i, st):
    a = jnp.where(i == 0, 1.0, alpha).astype(x.dtype)
    xk, xkm1 = st['x_cur'], st['x_prev']
    z = proj(xk + common._bcast(st['eta'], xk) * direction(st['g']))
    x_new = proj(xk + a * (z - xk) + (1.0 - a) * (xk - xkm1))
    f_new, logits, g_new = vg(x_new, y, i + 1)
    best = _track_best(st, x_new, f_new, g_new, success_fn(logits))
    x_out, s_out, v_out = best['x_out'], best['s_out'], best['v_out']
    x_max, f_max, g_max = best['x_max'], best['f_max'], best['g_max']
    count = st['count'] + (f_new > st['f_cur']).astype(x.dtype)
    # Checkpoint at w_j = i + 1.
    at_ck = is_ck[i + 1]
    reduce = at_ck & checkpoint_reduce(count, seg[i + 1], rho, st['reduced_last'],
                                       st['f_max_last'], f_max, schedule)
    eta = jnp.where(reduce, 0.5 * st['eta'], st['eta'])
    x_next = common.select(reduce, x_max, x_new)
    g_next = common.select(reduce, g_max, g_new)
    f_next = f_new if official else jnp.where(reduce, f_max, f_new)
    return dict(
        x_cur=x_next, x_prev=xk, g=g_next, f_cur=f_next, eta=eta,
        x_max=x_max, f_max=f_max, g_max=g_max,
        count=jnp.where(at_ck, 0.0, count).astype(x.dtype),
        f_max_last=jnp.where(at_ck, f_max, st['f_max_last']),
        reduced_last=jnp.where(at_ck, reduce, st['reduced_last']),
        x_out=x_out, s_out=s_out, v_out=v_out)

  st = common.fori_loop(0, num_steps, body, state)
  if return_state:
    return st['x_out'], st['s_out'], st['v_out'], st
  return st['x_out'], st['s_out'], st['v_out']


def _track_best(st, x_new, f_new, g_new, s_new):
  """The two bests APGD keeps after a step: the output (success first, then objective:
  ``x_out, s_out, v_out``) and the best-objective point of the step-size control
  (``x_max, f_max, g_max``)."""
  imp = common.better(s_new, f_new, st['s_out'], st['v_out'])
  up = f_new > st['f_max']
  return dict(x_out=common.select(imp, x_new, st['x_out']),
              s_out=st['s_out'] | s_new,
              v_out=jnp.where(imp, f_new, st['v_out']),
              x_max=common.select(up, x_new, st['x_max']),
              f_max=jnp.where(up, f_new, st['f_max']),
              g_max=common.select(up, g_new, st['g_max']))


def _value_and_grad(logits_fn, obj, eot_iter, key):
  """``(x, y, i) -> (f, logits, grad)``: deterministic, or EOT with the draws of step ``i``."""
  if eot_iter is None:
    vg0 = common.value_and_grad(logits_fn, obj)
    return lambda xx, yy, i: vg0(xx, yy)
  vge = _eot_value_and_grad(logits_fn, obj, eot_iter)
  return lambda xx, yy, i: vge(xx, yy, jax.random.fold_in(key, i))


def l1_topk_direction(g: jax.Array, topk: jax.Array) -> jax.Array:
  """APGD-L1's sparse step direction (Croce & Hein, ICCV 2021, official code): the signs of
  the coordinates with ``|g_i| >= q``, ``q`` the entry at index
  ``clip(floor((1 - topk) n), 0, n - 1)`` of the ascending ``|g|`` (about the top
  ``topk`` fraction), divided by their number: a step of unit L1 norm."""
  b = g.shape[0]
  a = jnp.abs(g.reshape((b, -1)))
  n = a.shape[1]
  idx = jnp.clip(jnp.floor((1.0 - topk) * n), 0, n - 1).astype(jnp.int32)
  q = jnp.take_along_axis(jnp.sort(a, axis=-1), idx[:, None], axis=-1)
  sg = jnp.sign(g.reshape((b, -1))) * (a >= q)
  d = sg / (jnp.sum(jnp.abs(sg), axis=-1, keepdims=True) + 1e-10)
  return d.reshape(g.shape).astype(g.dtype)


def apgd_l1_run(logits_fn, x, y, key, *, eps, num_steps, obj, success_fn, bounds,
                x_init=None, eot_iter=None):
  """One run of l1-APGD (Croce & Hein, "Mind the box", ICCV 2021), as the official
  ``autopgd_base.py`` with ``norm='L1'``:

  * start: ``x^(0) = clip(x + t + P(t))``, ``t ~ N(0, I)``, ``P`` the exact projection of
    :func:`common.project_l1` onto ``{||d||_1 <= eps} ∩ box`` (the official
    ``L1_projection``); or ``x_init``;
  * step: ``x^(k+1) = x + P(x^(k) + eta d_k - x)``, ``d_k`` of :func:`l1_topk_direction`
    with the current sparsity ``topk`` (initially 0.2; ``L0(x_init - x) / (1.5 n)`` from
    ``x_init``), initial ``eta = eps``, no momentum;
  * every ``k = max(floor(0.04 N), 1)`` iterations: with ``s = L0(x_max - x)`` (``x_max``
    the best-objective point) and ``s_old`` its value at the previous check (``n``, or
    ``L0(x_init - x)``): ``topk = s / (1.5 n)``; where ``s / s_old < 0.95`` the step
    returns to ``eps`` and the iterate and its gradient are reset to ``x_max``, elsewhere
    the step is divided by 1.5; then ``eta`` is clipped to ``[eps / 10, eps]``.

  Returns ``(x_out, success, objective_at_x_out, x_max)`` (``x_out`` as in :func:`apgd_run`).
  """
  b = x.shape[0]
  lo, hi = bounds
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (b,))
  k_start, k_eot = jax.random.split(key)
  vg = _value_and_grad(logits_fn, obj, eot_iter, k_eot)
  proj = lambda z: x + common.project_l1(z - x, eps_b, lo - x, hi - x)
  n = math.prod(x.shape[1:])
  l0 = lambda d: common.norm(d, 'l0')
  if x_init is None:
    t = jax.random.normal(k_start, x.shape, x.dtype)
    x0 = jnp.clip(x + common.project_l1(t, eps_b, lo - x, hi - x), lo, hi)
    topk0 = jnp.full((b,), 0.2, x.dtype)
    sp0 = jnp.full((b,), float(n), x.dtype)
  else:
    x0 = jnp.clip(jnp.asarray(x_init, x.dtype), lo, hi)
    sp0 = l0(x0 - x)
    topk0 = sp0 / n / 1.5
  f0, logits0, g0 = vg(x0, y, 0)
  s0 = success_fn(logits0)
  every = max(int(0.04 * num_steps), 1)

  state = dict(x_cur=x0, g=g0, eta=eps_b, topk=topk0, sp_old=sp0,
               x_max=x0, f_max=f0, g_max=g0, x_out=x0, s_out=s0, v_out=f0)

  def body(i, st):
    xk = st['x_cur']
    x_new = proj(xk + common._bcast(st['eta'], xk) * l1_topk_direction(st['g'], st['topk']))
    f_new, logits, g_new = vg(x_new, y, i + 1)
    best = _track_best(st, x_new, f_new, g_new, success_fn(logits))
    x_max, g_max = best['x_max'], best['g_max']
    at_ck = (i + 1) % every == 0
    sp = l0(x_max - x)
    red = at_ck & (sp / st['sp_old'] < 0.95)
    eta = jnp.where(red, eps_b, st['eta'] / 1.5)
    eta = jnp.where(at_ck, jnp.clip(eta, eps_b / 10.0, eps_b), st['eta'])
    return dict(
        x_cur=common.select(red, x_max, x_new), g=common.select(red, g_max, g_new),
        eta=eta, topk=jnp.where(at_ck, sp / n / 1.5, st['topk']),
        sp_old=jnp.where(at_ck, sp, st['sp_old']), **best)

  # A loop, never unrolled: the projection's sort-based program is large, and the CPU
  # unrolling of common.fori_loop would copy it N times (compile time grows with N).
  st = lax.fori_loop(0, num_steps, body, state)
  return st['x_out'], st['s_out'], st['v_out'], st['x_max']


def largereps_iters(num_steps: int) -> list[int]:
  """Iterations per radius of the official ``use_largereps`` schedule (3 eps, 2 eps, eps):
  ``ceil(0.3 N), ceil(0.3 N)`` and the rest."""
  a = math.ceil(0.3 * num_steps)
  return [a, a, num_steps - 2 * a]


def apgd_l1_largereps_run(logits_fn, x, y, key, *, eps, num_steps, obj, success_fn,
                          bounds, eot_iter=None):
  """The official ``decr_eps_pgd`` (``use_largereps``, AutoAttack's L1 'standard'): l1-APGD
  at radii 3 eps, 2 eps, eps for :func:`largereps_iters` iterations, each stage started
  from the previous stage's best-objective point projected onto the new ball. The first
  start is the official one: ``v = x + t``, ``t ~ N(0, I)``, is projected as if it were a
  perturbation, ``u = v + L1_projection(x, v, 3 eps)``, and ``u`` (now a small vector) is
  used as a point and projected onto the 3 eps ball around ``x``. Success and ``x_out``
  come from the last stage (radius eps) only."""
  lo, hi = bounds
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
  k0, k1 = jax.random.split(key)
  v = x + jax.random.normal(k0, x.shape, x.dtype)
  x_init = common.project_l1(v, 3.0 * eps_b, lo - x, hi - x)
  outs = []
  for j, (mult, it) in enumerate(zip((3.0, 2.0, 1.0), largereps_iters(num_steps), strict=True)):
    e = mult * eps_b
    x_init = x + common.project_l1(x_init - x, e, lo - x, hi - x)
    outs.append(apgd_l1_run(logits_fn, x, y, jax.random.fold_in(k1, j), eps=e,
                            num_steps=max(it, 0), obj=obj, success_fn=success_fn,
                            bounds=bounds, x_init=x_init, eot_iter=eot_iter))
    x_init = outs[-1][3]
  return outs[-1]


def _check_apgd(eps, norm, num_steps, restarts, rho, alpha, bounds, schedule='official',
                eot_iter=None):
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds,
                               norms=('linf', 'l2', 'l1'))
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  restarts = _checks.check_int('restarts', restarts, minimum=1)
  _checks.check_float('rho', rho, minimum=0.0, maximum=1.0)
  _checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0, strict_min=True)
  _checks.check_choice('schedule', schedule, SCHEDULES)
  if eot_iter is not None:
    _checks.check_int('eot_iter', eot_iter, minimum=1)
  return bounds, num_steps, restarts


def _single_run(logits_fn, x, y, *, eps, norm, num_steps, obj, success_fn, bounds, rho,
                alpha, schedule, eot_iter=None, use_largereps=False):
  """``key -> (x_out, success, objective)`` of one APGD run for the norm."""
  kw = dict(eps=eps, num_steps=num_steps, obj=obj, success_fn=success_fn, bounds=bounds,
            eot_iter=eot_iter)
  if norm == 'l1':
    f = apgd_l1_largereps_run if use_largereps else apgd_l1_run
    return lambda k: f(logits_fn, x, y, k, **kw)[:3]
  return lambda k: apgd_run(logits_fn, x, y, k, p=norm, rho=rho, alpha=alpha,
                            schedule=schedule, **kw)


def _check_largereps(use_largereps, norm):
  common.check_bool(use_largereps=use_largereps)
  if use_largereps and norm != 'l1':
    raise ValueError(f"use_largereps=True is the official L1 schedule; norm={norm!r} "
                     "needs use_largereps=False.")


def _restarts(run, key, restarts, b):
  x_b, s_b, v_b = run(jax.random.fold_in(key, 0))

  def body(i, c):
    x_r, s_r, v_r = run(jax.random.fold_in(key, i))
    imp = common.better(s_r, v_r, c[1], c[2])
    return common.select(imp, x_r, c[0]), c[1] | s_r, jnp.where(imp, v_r, c[2])

  if restarts > 1:
    x_b, s_b, v_b = lax.fori_loop(1, restarts, body, (x_b, s_b, v_b))
  return x_b, s_b, v_b


def apgd(*, eps, norm: str = 'linf', num_steps: int = 100, loss: str = 'ce',
         targeted: bool = False, restarts: int = 1, rho: float = 0.75, alpha: float = 0.75,
         bounds=(0.0, 1.0), schedule: str = 'official', eot_iter: int | None = None,
         use_largereps: bool = False):
  """APGD-CE / APGD-DLR (Croce & Hein, ICML 2020); see the module docstring for the exact
  algorithm. ``norm='l1'`` is l1-APGD (Croce & Hein, "Mind the box", ICCV 2021;
  :func:`apgd_l1_run`).

  Guarantee: ``||x_adv - x||_p <= eps`` (p = linf, l2 or l1) and ``lo <= x_adv <= hi``.

  Args:
    eps: radius (may be traced, so ``jax.vmap`` over eps works).
    norm: 'linf', 'l2' or 'l1' (l1-APGD: sparse top-k steps, exact projection onto the L1
      ball ∩ box, its own step-size rule; ``rho``, ``alpha`` and ``schedule`` are unused).
    num_steps: iterations N (static); N + 1 gradients per restart.
    loss: 'ce' (APGD-CE), 'dlr' (APGD-DLR, needs >= 3 classes) or 'cw' (margin).
    targeted: ``y`` are target labels; the objective is ``-CE(x, t)`` for 'ce' and the
      DLR-normalised target margin for 'dlr' (see :func:`common.objective`); success means
      predicting ``t``. For AutoAttack's APGD-T (targeted DLR over the top-k classes,
      untargeted success) use :func:`apgd_t`.
    restarts: independent random starts; per example the best result is kept.
    rho: the fraction in checkpoint condition (1).
    alpha: the momentum weight (0.75; 1 = no momentum).
    bounds: the input box.
    schedule: 'official' (the official code's checkpoints and step-size test, default) or
      'paper' (the paper's formula); see the module docstring.
    eot_iter: None (deterministic ``logits_fn(x)``) or the number of EOT draws per gradient
      for a randomised ``logits_fn(x, key)`` (AutoAttack's 'rand' version uses 20); success
      and ``loss`` then refer to single draws of the model.
    use_largereps: L1 only: the official ``use_largereps`` schedule (radii 3 eps, 2 eps,
      eps; :func:`apgd_l1_largereps_run`), as AutoAttack's L1 'standard' version uses.

  Returns:
    ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed'); info: ``success``
    [B], ``loss`` [B] (objective at x_adv) and ``gradients`` [B] (per restart ``N + 1``,
    times ``eot_iter``; ``N + 3`` with ``use_largereps``).
  """
  bounds, num_steps, restarts = _check_apgd(eps, norm, num_steps, restarts, rho, alpha,
                                            bounds, schedule, eot_iter)
  _checks.check_choice('loss', loss, common.LOSSES)
  common.check_bool(targeted=targeted)
  _check_largereps(use_largereps, norm)
  obj = common.objective(loss, targeted)
  per_run = num_steps + (3 if use_largereps else 1)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn, randomized=eot_iter is not None)
    succ = lambda logits: common.success(logits, y, targeted)
    run = _single_run(logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps, obj=obj,
                      success_fn=succ, bounds=bounds, rho=rho, alpha=alpha,
                      schedule=schedule, eot_iter=eot_iter, use_largereps=use_largereps)
    x_adv, s, v = _restarts(run, key, restarts, x.shape[0])
    return AttackOutput(x_adv, {'success': s, 'loss': v, 'gradients': jnp.full(
        (x.shape[0],), restarts * per_run * (eot_iter or 1), jnp.int32)}, 'fixed')
  return attack


def top_other_classes(logits: jax.Array, y: jax.Array, k: int) -> jax.Array:
  """The ``k`` classes with the largest logits other than ``y``, by rank: [B, k]."""
  z = common.as_multiclass(logits)
  z = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
  return lax.top_k(z, k)[1].astype(jnp.int32)


def apgd_t(*, eps, norm: str = 'linf', num_steps: int = 100, num_target_classes: int = 9,
           restarts: int = 1, rho: float = 0.75, alpha: float = 0.75, bounds=(0.0, 1.0),
           first_target: int = 0, schedule: str = 'official', use_largereps: bool = False):
  """APGD-T of AutoAttack (Croce & Hein, ICML 2020): APGD on the targeted DLR loss
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` for each of the ``num_target_classes``
  classes ranked highest (other than ``y``) at the clean input, ``restarts`` runs each.

  ``y`` are the *true* labels and success is misclassification (an untargeted attack
  that uses targets as a search device). Per example the best result over all targets and
  restarts is kept. Needs >= 4 classes and ``num_target_classes <= num_classes - 1``
  (checked when the attack is called, once the number of classes is known).
  ``first_target`` skips the ``first_target`` highest-ranked classes: the targets are the
  ranks ``first_target .. first_target + num_target_classes - 1`` (a host driver runs one
  target at a time on the points still robust, as the official code does; see
  :func:`jaxsec.attacks.evasion.run_auto_attack`).
  ``norm``, ``schedule``, ``use_largereps``: as in :func:`apgd` (``norm='l1'``: l1-APGD).
  Cost: ``num_target_classes * restarts * (num_steps + 1)`` gradients (``+ 3`` with
  ``use_largereps``). Returns ``AttackOutput`` (budget 'fixed'); info: ``success``,
  ``loss``, ``gradients`` [B] and ``targets`` [B, num_target_classes].
  """
  bounds, num_steps, restarts = _check_apgd(eps, norm, num_steps, restarts, rho, alpha,
                                            bounds, schedule)
  num_target_classes = _checks.check_int('num_target_classes', num_target_classes,
                                         minimum=1)
  first_target = _checks.check_int('first_target', first_target, minimum=0)
  _check_largereps(use_largereps, norm)
  per_run = num_steps + (3 if use_largereps else 1)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    logits = common.as_multiclass(logits_fn(x))
    c = logits.shape[-1]
    if c < 4:
      raise ValueError(f'APGD-T needs at least 4 classes (targeted DLR); the model has {c}.')
    if first_target + num_target_classes > c - 1:
      raise ValueError(f'first_target={first_target} + num_target_classes='
                       f'{num_target_classes} must be <= num_classes - 1 = {c - 1}.')
    targets = top_other_classes(logits, y, first_target + num_target_classes)[:, first_target:]
    succ = lambda lg: common.success(lg, y, False)

    def per_target(j):
      t = targets[:, j]
      obj = lambda lg, yy: common.targeted_dlr_loss(lg, yy, t)
      run = _single_run(logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps, obj=obj,
                        success_fn=succ, bounds=bounds, rho=rho, alpha=alpha,
                        schedule=schedule, use_largereps=use_largereps)
      return _restarts(run, jax.random.fold_in(key, j), restarts, x.shape[0])

    x_b, s_b, v_b = common.best_of_runs(per_target, num_target_classes)
    return AttackOutput(x_b, {'success': s_b, 'loss': v_b, 'gradients': jnp.full(
        (x.shape[0],), num_target_classes * restarts * per_run, jnp.int32),
                              'targets': targets}, 'fixed')
  return attack
