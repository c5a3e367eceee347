"""HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020): decision-based, L2 and L_inf.

Sees decisions only (``query_fn: x -> labels``); Algorithm 2 (arXiv:1904.02144), per step:

1. Start adversarial: a given point (needed when targeted) or uniform noise blended towards
   ``x`` by binary search (the official ``initialize``).
2. Binary search between ``x`` and ``x~_{t-1}`` for the boundary point ``x_t`` (L2: on the
   segment, to width ``theta``; L_inf: ``clip(x~, x - a, x + a)``, to
   ``min(theta ||x~ - x||_inf, theta)``).
3. Direction at ``x_t``: ``B_t = min(B_0 sqrt(t), B_max)`` unit directions ``u_b``,
   ``phi_b = +-1`` as ``clip(x_t + delta_t u_b)`` is adversarial or not (``u_b`` recomputed
   from the clipped point), ``v_t = mean_b (phi_b - phi_bar) u_b`` (``phi_bar mean_b u_b`` if
   all agree); ``delta_t = sqrt(d) theta d_{t-1}`` (L2) or ``d theta d_{t-1}`` (L_inf) with
   ``d_{t-1}`` the distance before step 2, ``delta_1 = 0.1 (hi - lo)``; ``theta = gamma /
   d^{3/2}`` (L2) or ``gamma / d^2`` (L_inf).
4. Step ``xi_t = ||x_t - x||_p / sqrt(t)``, halved until ``x_t + xi_t v'_t`` is adversarial
   (``v'_t = v_t`` for L2, ``sign(v_t)`` for L_inf).

Departures from the paper and the authors' code (Jianbo-Lab/HSJA, Foolbox), none changing an
iteration: ``max_queries`` per example (clean query included) is never exceeded, the attack
stopping with its best point; the smallest-distance boundary point is returned (the paper:
the last); static caps ``num_iterations``, ``_MAX_HALVINGS``, ``_MAX_BISECT`` and
``init_num_tries`` (official: 10^4); estimate queries in chunks of ``eval_batch`` (a partial
last chunk, and masked examples, not counted); randomness ``fold_in(key, example index)``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

NORMS = ('l2', 'linf')
_MAX_HALVINGS = 40     # geometric step-size search: 2^-40 of the first step at most
_MAX_BISECT = 100      # binary-search steps (float precision ends them before this)
_INT_MAX = np.iinfo(np.int32).max
_TINY = 1e-12


# --------------------------------------------------------------------------- pieces


def labels_of(out: jax.Array) -> jax.Array:
  """The labels of a query answer: int labels ``[N]`` as they are, scores ``[N, K]`` argmax
  (a single score column ``[N, 1]`` is the binary decision ``score > 0``)."""
  if out.ndim == 1:
    return out.astype(jnp.int32)
  return common.predict(out)


class _Phi:
  """The decision function of a batch: ``one(z [B, ...])`` and ``many(z [B, M, ...])``."""

  def __init__(self, query_fn, y, targeted):
    self.query_fn, self.y, self.targeted = query_fn, y, targeted

  def _cmp(self, lab, yy):
    return lab == yy if self.targeted else lab != yy

  def one(self, z):
    return self._cmp(labels_of(self.query_fn(z)), self.y)

  def many(self, z):
    b, m = z.shape[:2]
    lab = labels_of(self.query_fn(z.reshape((b * m,) + z.shape[2:]))).reshape((b, m))
    return self._cmp(lab, self.y[:, None])


def distance(a: jax.Array, b: jax.Array, norm: str) -> jax.Array:
  """Per-example ``||a - b||_p`` (p = 2 or inf)."""
  return common.norm(a - b, norm)


def theta_of(d: int, norm: str, gamma: float) -> float:
  """The binary-search threshold ``theta``: ``gamma / d^{3/2}`` (L2), ``gamma / d^2``
  (L_inf)."""
  return gamma / (d * math.sqrt(d)) if norm == 'l2' else gamma / (d * d)


def num_evals_schedule(init_num_evals: int, max_num_evals: int, num_iterations: int
                       ) -> np.ndarray:
  """``B_t = min(int(B_0 sqrt(t)), B_max)`` for ``t = 1 .. num_iterations`` (official code)."""
  return np.asarray([min(int(init_num_evals * math.sqrt(t)), max_num_evals)
                     for t in range(1, max(num_iterations, 1) + 1)], np.int32)


def _bc(v, x):
  return common._bcast(v, x)


def _project(x, x_tilde, alpha, norm):
  """The point of parameter ``alpha`` [B] between ``x`` and ``x_tilde`` (official
  ``project``): the blend ``(1 - a) x + a x~`` (L2) or ``clip(x~, x - a, x + a)`` (L_inf)."""
  a = _bc(alpha, x)
  if norm == 'l2':
    return (1 - a) * x + a * x_tilde
  return jnp.clip(x_tilde, x - a, x + a)


def binary_search(phi, x, x_tilde, active, queries, max_queries, *, norm, theta):
  """Binary search from ``x`` (not adversarial) to ``x_tilde`` (adversarial), per example.

  Only ``active`` examples are searched, one query per step each, and never past
  ``max_queries``. L2: over the blending factor ``a`` in [0, 1], until ``high - low <=
  theta``; L_inf: over the radius ``a`` in [0, ||x~ - x||_inf], until ``high - low <=
  min(theta ||x~ - x||_inf, theta)`` (official ``binary_search_batch``). A step is also
  skipped when float precision cannot split the interval.

  Returns ``(x_high, queries)``: the last point found adversarial (``x_tilde`` where no step
  succeeded or nothing was searched) and the updated query counts.
  """
  b = x.shape[0]
  if norm == 'l2':
    high = jnp.ones((b,), x.dtype)
    thr = jnp.full((b,), theta, x.dtype)
  else:
    high = distance(x_tilde, x, 'linf').astype(x.dtype)
    thr = jnp.minimum(high * theta, theta)
  low = jnp.zeros((b,), x.dtype)

  def running(low, high, q):
    mid = 0.5 * (low + high)
    return (active & (high - low > thr) & (q < max_queries) & (mid > low) & (mid < high))

  return _bisect(phi, lambda a: _project(x, x_tilde, a, norm), running, low, high, x_tilde,
                 queries)


def _bisect(phi, point, running, low, high, x_high, queries):
  """Per-example bisection of ``[low, high]`` (``point(low)`` not adversarial,
  ``point(high)`` adversarial) while ``running(low, high, queries)`` [B], one query of
  ``point(mid)`` a step each, for at most ``_MAX_BISECT`` steps.

  Returns ``(x_high, queries)``: the last point found adversarial (the given ``x_high``
  where no step succeeded) and the updated query counts.
  """
  def cond(st):
    _, low, high, _, q = st
    return (st[0] < _MAX_BISECT) & jnp.any(running(low, high, q))

  def body(st):
    i, low, high, x_high, q = st
    run = running(low, high, q)
    mid = 0.5 * (low + high)
    z = point(mid)
    dec = phi.one(z)
    up = run & dec
    x_high = common.select(up, z, x_high)
    high = jnp.where(up, mid, high)
    low = jnp.where(run & ~dec, mid, low)
    return i + 1, low, high, x_high, q + run.astype(q.dtype)

  st = (jnp.asarray(0, jnp.int32), low, high, x_high, queries)
  _, _, _, x_high, queries = lax.while_loop(cond, body, st)
  return x_high, queries


def estimate_direction(phi, key_of, x_b, n_used, delta, *, norm, bounds, eval_batch,
                       draws=None):
  """The Monte-Carlo gradient-direction estimate with baseline subtraction.

  Args:
    phi: the batch's decision function.
    key_of: ``chunk index -> [B] keys`` (per-example randomness of each chunk).
    x_b: boundary points ``[B, ...]``.
    n_used: ``[B]`` number of random vectors per example (0: no estimate, zero vector).
    delta: ``[B]`` probe radius.
    draws: None, or the raw random vectors ``[B, M, ...]`` (standard normal for L2,
      uniform in ``[-1, 1]`` for L_inf, before normalisation) to use instead of drawing
      them from ``key_of``; ``M`` must be a multiple of ``eval_batch`` and ``>= n_used``
      (for reference replays with fixed randomness).

  Returns the unit-L2 direction ``[B, ...]`` (zero where ``n_used = 0``).
  """
  lo, hi = bounds
  b = x_b.shape[0]
  shape = x_b.shape[1:]
  cnt_max = jnp.max(n_used)

  if draws is not None and (draws.shape[1] % eval_batch or draws.shape[0] != b):
    raise ValueError(f'draws has shape {tuple(draws.shape)}; expected [{b}, M, ...] with M a '
                     f'multiple of eval_batch={eval_batch}.')

  def cond(st):
    return st[0] * eval_batch < cnt_max

  def body(st):
    c, s_frv, s_rv, s_f = st
    if draws is not None:
      rv = lax.dynamic_slice_in_dim(draws, c * eval_batch, eval_batch, axis=1)
    elif norm == 'l2':
      keys = key_of(c)
      rv = jax.vmap(lambda k: jax.random.normal(k, (eval_batch,) + shape, x_b.dtype))(keys)
    else:
      keys = key_of(c)
      rv = jax.vmap(lambda k: jax.random.uniform(k, (eval_batch,) + shape, x_b.dtype,
                                                 -1.0, 1.0))(keys)
    axes = tuple(range(2, rv.ndim))
    rv = rv / (jnp.sqrt(jnp.sum(rv * rv, axis=axes, keepdims=True)) + _TINY)
    dl = delta.reshape((b, 1) + (1,) * len(shape))
    pert = jnp.clip(x_b[:, None] + dl * rv, lo, hi)
    rv = (pert - x_b[:, None]) / dl
    dec = phi.many(pert)                                        # [B, chunk]
    mask = (c * eval_batch + jnp.arange(eval_batch))[None, :] < n_used[:, None]
    f = jnp.where(mask, jnp.where(dec, 1.0, -1.0), 0.0).astype(x_b.dtype)
    m = mask.astype(x_b.dtype)
    ex = lambda w: w.reshape((b, eval_batch) + (1,) * len(shape))
    s_frv = s_frv + jnp.sum(ex(f) * rv, axis=1)
    s_rv = s_rv + jnp.sum(ex(m) * rv, axis=1)
    s_f = s_f + jnp.sum(jnp.where(mask & dec, 1, 0) - jnp.where(mask & ~dec, 1, 0),
                        axis=1).astype(s_f.dtype)
    return c + 1, s_frv, s_rv, s_f

  zeros = jnp.zeros_like(x_b)
  st = (jnp.asarray(0, jnp.int32), zeros, zeros, jnp.zeros((b,), jnp.int32))
  _, s_frv, s_rv, s_f = lax.while_loop(cond, body, st)
  n = jnp.maximum(n_used, 1).astype(x_b.dtype)
  fbar = s_f.astype(x_b.dtype) / n
  agree = jnp.abs(s_f) == n_used                     # every phi_b equal: no baseline
  grad = jnp.where(_bc(agree, x_b), _bc(fbar, x_b) * s_rv,
                   s_frv - _bc(fbar, x_b) * s_rv) / _bc(n, x_b)
  grad = jnp.where(_bc(n_used > 0, x_b), grad, 0.0)
  return grad / _bc(common.norm(grad, 'l2') + _TINY, grad)


def geometric_step(phi, x_b, update, xi0, run, queries, max_queries, *, bounds):
  """The geometric step-size search: halve ``xi`` (from ``xi0`` [B]) until
  ``clip(x_b + xi * update)`` is adversarial, one query per try, for the ``run`` examples,
  at most ``_MAX_HALVINGS`` halvings and never past ``max_queries``.

  Returns ``(moved [B], x_tilde, queries)``: ``x_tilde`` is that adversarial point where one
  was found (``moved``), ``x_b`` elsewhere.
  """
  lo, hi = bounds
  b = x_b.shape[0]

  def gs_running(s):
    _, _, found, _, qq = s
    return run & ~found & (qq < max_queries)

  def gs_cond(s):
    return (s[0] < _MAX_HALVINGS) & jnp.any(gs_running(s))

  def gs_body(s):
    k, xi, found, x_new, qq = s
    r = gs_running(s)
    z = jnp.clip(x_b + _bc(xi, x_b) * update, lo, hi)
    dec = r & phi.one(z)
    return (k + 1, jnp.where(r & ~dec, 0.5 * xi, xi), found | dec,
            common.select(dec, z, x_new), qq + r.astype(jnp.int32))

  _, _, moved, x_tilde, queries = lax.while_loop(
      gs_cond, gs_body, (jnp.asarray(0, jnp.int32), xi0, jnp.zeros((b,), bool), x_b,
                         queries))
  return moved, x_tilde, queries


# --------------------------------------------------------------------------- engine


def run_hsja(query_fn, x, y, key, *, norm, targeted, num_iterations, max_queries,
             init_num_evals, max_num_evals, gamma, init_num_tries, init_blend_tol,
             eval_batch, bounds, starting_points=None):
  """The HopSkipJumpAttack engine. Returns ``(x_adv, success, queries, dist, iterations)``."""
  lo, hi = bounds
  b = x.shape[0]
  d = math.prod(x.shape[1:])
  theta = theta_of(d, norm, gamma)
  delta_scale = math.sqrt(d) * theta if norm == 'l2' else d * theta
  max_q = jnp.asarray(_INT_MAX if max_queries is None else max_queries).astype(jnp.int32)
  phi = _Phi(query_fn, y, targeted)
  evals_np = num_evals_schedule(init_num_evals, max_num_evals, num_iterations)
  chunks = -(-int(evals_np.max()) // eval_batch)       # gradient chunks per iteration, max
  # One key per example and random draw, from ONE hash site: every separate threefry call
  # adds seconds of XLA:CPU compile time. Draw j of example i is fold_in(key, i * J + j):
  # an example's randomness does not depend on the batch.
  n_draws = init_num_tries + num_iterations * chunks
  ids = (jnp.arange(b, dtype=jnp.uint32)[:, None] * jnp.uint32(max(n_draws, 1))
         + jnp.arange(max(n_draws, 1), dtype=jnp.uint32)[None, :])
  key_tab = jax.vmap(jax.vmap(lambda i: jax.random.fold_in(key, i)))(ids)      # [B, J]
  dist = lambda z: distance(z, x, norm).astype(x.dtype)

  # ---- query 1: the clean point. Already adversarial: returned unchanged.
  already = phi.one(x)
  queries = jnp.ones((b,), jnp.int32)

  # ---- starting points (checked with one query each).
  if starting_points is not None:
    run = ~already & (queries < max_q)
    have = run & phi.one(starting_points)
    queries = queries + run.astype(jnp.int32)
    x_tilde = common.select(have, starting_points, x)
  else:
    have = jnp.zeros((b,), bool)
    x_tilde = x

  # ---- uniform noise until adversarial, then blended towards x (binary search).
  def noise_running(st):
    _, found, _, q = st
    return ~already & ~have & ~found & (q < max_q)

  def noise_cond(st):
    return (st[0] < init_num_tries) & jnp.any(noise_running(st))

  def noise_body(st):
    k, found, noise, q = st
    run = noise_running(st)
    keys = key_tab[:, k]
    z = jax.vmap(lambda kk: jax.random.uniform(kk, x.shape[1:], x.dtype, lo, hi))(keys)
    dec = run & phi.one(z)
    return k + 1, found | dec, common.select(dec, z, noise), q + run.astype(jnp.int32)

  found = jnp.zeros((b,), bool)
  if init_num_tries > 0:
    _, found, noise, queries = lax.while_loop(
        noise_cond, noise_body, (jnp.asarray(0, jnp.int32), found, x, queries))

    blended, queries = _bisect(
        phi, lambda a: _project(x, noise, a, 'l2'),
        lambda low, high, q: found & (high - low > init_blend_tol) & (q < max_q),
        jnp.zeros((b,), x.dtype), jnp.ones((b,), x.dtype), noise, queries)
    x_tilde = common.select(found, blended, x_tilde)

  alive = ~already & (have | found)

  # ---- project the initial point to the boundary.
  x_b, queries = binary_search(phi, x, x_tilde, alive, queries, max_q, norm=norm,
                               theta=theta)
  d_prev = dist(x_tilde)                      # d_0 = ||x~_0 - x||_p (before the search)
  dist_b = dist(x_b)
  evals = jnp.asarray(evals_np)

  def it_running(st):
    return alive & (st['queries'] < max_q)

  def it_cond(st):
    return (st['t'] <= num_iterations) & jnp.any(it_running(st))

  def it_body(st):
    t = st['t']
    run = it_running(st)
    x_b, q = st['x_b'], st['queries']
    tf = t.astype(x.dtype)
    delta = jnp.where(t == 1, 0.1 * (hi - lo), delta_scale * st['d_prev']).astype(x.dtype)
    n_t = evals[jnp.minimum(t, num_iterations) - 1]
    n_used = jnp.where(run, jnp.minimum(n_t, max_q - q), 0)
    base = init_num_tries + (t - 1) * chunks
    key_of = lambda c: key_tab[:, base + jnp.minimum(c, chunks - 1)]
    grad = estimate_direction(phi, key_of, x_b, n_used, delta, norm=norm, bounds=bounds,
                              eval_batch=eval_batch)
    q = q + n_used
    update = grad if norm == 'l2' else jnp.sign(grad)

    xi0 = st['dist_b'] / jnp.sqrt(tf)
    moved, x_tilde, q = geometric_step(phi, x_b, update, xi0, run, q, max_q, bounds=bounds)
    d_post = dist(x_tilde)
    x_new, q = binary_search(phi, x, x_tilde, moved, q, max_q, norm=norm, theta=theta)
    x_b = common.select(moved, x_new, x_b)
    dist_b = dist(x_b)
    better = moved & (dist_b < st['best_dist'])
    return {
        't': t + 1, 'x_b': x_b, 'dist_b': dist_b,
        'd_prev': jnp.where(moved, d_post, st['d_prev']),
        'best_x': common.select(better, x_b, st['best_x']),
        'best_dist': jnp.where(better, dist_b, st['best_dist']),
        'queries': q, 'iterations': st['iterations'] + run.astype(jnp.int32),
    }

  st = {'t': jnp.asarray(1, jnp.int32), 'x_b': x_b, 'dist_b': dist_b, 'd_prev': d_prev,
        'best_x': x_b, 'best_dist': dist_b, 'queries': queries,
        'iterations': jnp.zeros((b,), jnp.int32)}
  if num_iterations > 0:
    st = lax.while_loop(it_cond, it_body, st)
  x_adv = common.select(alive, st['best_x'], x)
  success = already | alive
  return x_adv, success, st['queries'], dist(x_adv), st['iterations']


def check_decision_call(query_fn, x, y, bounds, targeted, starting_points, note=''):
  """Checks the call of a decision-based attack; returns ``starting_points`` cast to x's
  dtype and clipped to the box (None stays None). A targeted attack needs them."""
  common.check_call(x, y, bounds, query_fn)
  if x.ndim < 2:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected a batch [B, ...].')
  if targeted and starting_points is None:
    raise ValueError(f'targeted=True needs starting_points: images classified as the '
                     f'target labels{note}.')
  if starting_points is None:
    return None
  _checks.check_array('starting_points', starting_points, dtype_kind='f')
  if tuple(starting_points.shape) != tuple(x.shape):
    raise ValueError(f'starting_points has shape {tuple(starting_points.shape)}; '
                     f'expected the shape of x {tuple(x.shape)}.')
  _checks.check_in_bounds('starting_points', starting_points, bounds, tol=1e-5)
  return jnp.clip(starting_points.astype(x.dtype), *bounds)


def hop_skip_jump(*, norm: str = 'l2', num_iterations: int = 64, max_queries=None,
                  init_num_evals: int = 100, max_num_evals: int = 10000, gamma: float = 1.0,
                  targeted: bool = False, init_num_tries: int = 100,
                  init_blend_tol: float = 1e-3, eval_batch: int | None = None,
                  bounds=(0.0, 1.0)):
  """HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020), L2 and L_inf.

  Decision-based black box: the returned ``attack(query_fn, x, y, key, *,
  starting_points=None)`` only uses the labels of ``query_fn`` (``x -> labels [N]``; scores
  ``[N, K]`` are reduced to their argmax). See the module docstring for the algorithm, the
  schedules and the points where it departs from the official code.

  Guarantees: every returned example lies in ``[lo, hi]``; an example with
  ``info['success']`` True is adversarial at ``x_adv`` (misclassified, or at its target)
  whenever the model is deterministic (every point the attack can return was queried and
  found adversarial); an example whose initialisation fails is returned unchanged with
  success False; ``info['queries'] <= max_queries`` per example, the clean query included.
  Examples already adversarial at ``x`` are returned unchanged after one query.

  The whole attack is one jitted program (``lax.while_loop`` over iterations, gradient
  chunks, step-size halvings and binary-search steps; static caps, per-example masks).

  Args:
    norm: 'l2' or 'linf' (the distance minimised).
    num_iterations: at most this many HSJA iterations (static); the paper runs until the
      query budget is spent.
    max_queries: query budget per example (>= 1), or None for no budget. May be a traced
      integer (checked only when concrete): one compiled attack then serves every budget.
    init_num_evals: ``B_0``, random vectors of the first gradient estimate (paper: 100).
    max_num_evals: ``B_max``, the cap of ``B_t = B_0 sqrt(t)`` (paper code: 10^4).
    gamma: ``theta = gamma / d^{3/2}`` (L2) or ``gamma / d^2`` (L_inf) (paper: 1.0).
    targeted: ``y`` are target labels; then ``starting_points`` (images classified as the
      targets) must be given.
    init_num_tries: uniform-noise draws tried per example to find an adversarial start
      (used where no adversarial starting point is given).
    init_blend_tol: tolerance of the binary search that blends the noise towards ``x``.
    eval_batch: random vectors per example sent in one query batch (static; default
      ``min(init_num_evals, max_num_evals)``).
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key, *, starting_points=None) -> AttackOutput`` (budget
    'minimal'); ``starting_points`` ``[B, ...]`` are adversarial points to start from
    (examples whose starting point is not adversarial fall back to uniform noise). Info:
    ``success`` (bool [B]), ``queries`` (int32 [B], queries spent, the clean one
    included), ``distance`` (``||x_adv - x||_p`` [B]) and ``iterations`` (int32 [B], HSJA
    iterations run).

  >>> import jax, jax.numpy as jnp
  >>> w = jnp.array([3.0, 4.0])
  >>> f = lambda x: (x @ w - 1.0 > 0).astype(jnp.int32)       # labels only
  >>> atk = hop_skip_jump(num_iterations=20, max_queries=2000, gamma=0.01,
  ...                     bounds=(-2.0, 2.0))
  >>> out = atk(f, jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32), jax.random.key(0))
  >>> round(float(out.info['distance'][0]), 2), bool(out.info['success'][0])  # 1/5
  (0.2, True)
  """
  _checks.check_choice('norm', norm, NORMS)
  bounds = _checks.check_bounds(bounds)
  num_iterations = _checks.check_int('num_iterations', num_iterations, minimum=0)
  if max_queries is not None and _checks.is_concrete(max_queries):
    max_queries = _checks.check_int('max_queries', max_queries, minimum=1,
                                    maximum=_INT_MAX)
  init_num_evals = _checks.check_int('init_num_evals', init_num_evals, minimum=1)
  max_num_evals = _checks.check_int('max_num_evals', max_num_evals, minimum=1)
  gamma = float(_checks.check_float('gamma', gamma, minimum=0.0, strict_min=True,
                                    allow_traced=False))
  init_num_tries = _checks.check_int('init_num_tries', init_num_tries, minimum=0)
  init_blend_tol = float(_checks.check_float('init_blend_tol', init_blend_tol, minimum=0.0,
                                             maximum=1.0, strict_min=True,
                                             allow_traced=False))
  if eval_batch is None:
    eval_batch = min(init_num_evals, max_num_evals)
  eval_batch = _checks.check_int('eval_batch', eval_batch, minimum=1)
  common.check_bool(targeted=targeted)

  def attack(query_fn, x, y, key, *, starting_points=None):
    starting_points = check_decision_call(query_fn, x, y, bounds, targeted, starting_points,
                                          ' (HSJA starts a targeted attack from one)')
    x_adv, succ, queries, dist, iters = run_hsja(
        query_fn, x, y, key, norm=norm, targeted=targeted, num_iterations=num_iterations,
        max_queries=max_queries, init_num_evals=init_num_evals,
        max_num_evals=max_num_evals, gamma=gamma, init_num_tries=init_num_tries,
        init_blend_tol=init_blend_tol, eval_batch=eval_batch, bounds=bounds,
        starting_points=starting_points)
    return AttackOutput(x_adv, {'success': succ, 'queries': queries, 'distance': dist,
                                'iterations': iters}, 'minimal')
  return attack
