"""RayS (Chen & Gu, KDD 2020): decision-based, L_inf, by ray search.

"RayS: A Ray Searching Method for Hard-label Adversarial Attack" (arXiv:2006.12792), as the
authors' batched ``RayS.py`` (github.com/uclaml/RayS). Sees labels only (``query_fn: x ->
labels``; scores are reduced to their argmax). The search is over ray directions
``s in {-1, +1}^d``; the point at radius ``r`` on the ray is ``clip(x + r s)``, so its
L_inf distance is ``r``, and ``r_s`` (the radius where the ray first turns adversarial) is
found by binary search:

1. ``s = +1`` everywhere, ``r_best = inf``.
2. Hierarchical search: at level ``l`` the ``d`` coordinates (in their flattened order) are
   cut into ``2^l`` blocks of ``ceil(d / 2^l)``; each iteration flips the signs of the next
   block of the best ``s``. One query at ``clip(x + r_best s')`` tells whether the new ray
   beats the best radius; only then the radius is bisected on ``[0, min(r_best, hi - lo)]``
   until the interval is ``<= tol / sqrt(d)`` wide (the official ``tol = 1e-3`` on the
   unit-L2 ray ``s / sqrt(d)``), and ``s``, ``r_best`` and ``x_adv`` are replaced.
   After the last block of a level the next level starts; from ``2^l >= d`` on, blocks are
   single coordinates (the official code's later levels repeat that one).

Departures from the official code (none changing an iteration): ``max_queries`` per example
is never exceeded (the official binary search may overrun its ``query_limit``; here a search
cut off by the budget keeps the smallest adversarial radius it found); the clean input is
queried first (counted) and examples already adversarial are returned unchanged; the first
query at ``r = inf`` is sent as ``r = hi - lo`` (the same box corner); no early stop at an
``epsilon`` (a minimal-norm attack; ``jaxsec.evaluate`` applies a budget);
``query_checkpoints`` records the best distance at given query counts. RayS is
deterministic: ``key`` is not used.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.blackbox.boundary import check_checkpoints, check_max_queries, record
from jaxsec.attacks.blackbox.hopskipjump import _Phi
from jaxsec.attacks.evasion import common



def block_of(level, index, d: int):
  """``(start, end)`` of block ``index`` at ``level``: blocks of ``ceil(d / 2^level)``
  coordinates (the official ``block_size``)."""
  n = jnp.left_shift(jnp.asarray(1, jnp.int32), level)
  size = (d + n - 1) // n
  start = index * size
  return start, jnp.minimum(start + size, d)


def run_rays(query_fn, x, y, key, *, targeted, max_queries, tol, bounds,
             query_checkpoints=()):
  """The RayS engine: ``(x_adv, success, queries, distance, iterations, dist_at)``.

  Vectorised as a per-example state machine, one query per example per loop step: an
  example either checks a new block's ray (phase 0) or bisects its radius (phase 1), so the
  batch never waits for one example's bisection (each example's query sequence is the
  official one)."""
  del key
  lo, hi = bounds
  b = x.shape[0]
  d = math.prod(x.shape[1:])
  max_level = max(math.ceil(math.log2(d)), 0)   # blocks of one coordinate from here on
  r_tol = tol / math.sqrt(d)
  max_q = jnp.asarray(max_queries).astype(jnp.int32)
  phi = _Phi(query_fn, y, targeted)
  point = lambda r, s: jnp.clip(x + common._bcast(r, x) * s.reshape(x.shape), lo, hi)
  idx = jnp.arange(d)
  box = jnp.asarray(hi - lo, x.dtype)

  already = phi.one(x)
  queries = jnp.ones((b,), jnp.int32)
  best = jnp.where(already, 0.0, jnp.inf).astype(x.dtype)
  dist_at = record(jnp.full((b, len(query_checkpoints)), jnp.inf, x.dtype),
                   query_checkpoints, queries, best)

  def running(st):
    return ~already & (st['q'] < max_q)

  def s_try_of(st):
    start, end = block_of(st['level'], st['ind'], d)
    flip = (idx[None, :] >= start[:, None]) & (idx[None, :] < end[:, None])
    return jnp.where(flip, -st['s'], st['s']), end

  def finish(st, done):
    """Examples ``done`` with a ray: keep it if its radius beats the best."""
    s_try, _ = s_try_of(st)
    better = done & (st['high'] < st['r'])
    r = jnp.where(better, st['high'], st['r'])
    x_new = common.select(better, point(st['high'], s_try), st['x'])
    return {**st, 'r': r, 'x': x_new, 's': jnp.where(better[:, None], s_try, st['s']),
            'best': jnp.where(jnp.isfinite(r), common.norm(x_new - x, 'linf').astype(x.dtype),
                              st['best'])}

  def advance(st, moved):
    """Examples ``moved`` go to their next block (the next level after a level's last)."""
    _, end = s_try_of(st)
    nxt = st['ind'] + 1
    level_done = (nxt == jnp.left_shift(1, st['level'])) | (end == d)
    up = level_done & (st['level'] < max_level)
    return {**st, 'level': jnp.where(moved & up, st['level'] + 1, st['level']),
            'ind': jnp.where(moved, jnp.where(level_done, 0, nxt), st['ind']),
            'it': st['it'] + moved.astype(jnp.int32)}

  def bisecting(low, high):
    mid = 0.5 * (low + high)
    return (high - low > r_tol) & (mid > low) & (mid < high)

  def body(st):
    run = running(st)
    s_try, _ = s_try_of(st)
    check = st['phase'] == 0
    r_chk = jnp.minimum(st['r'], box)
    mid = 0.5 * (st['low'] + st['high'])
    dec = run & phi.one(point(jnp.where(check, r_chk, mid), s_try))
    q = st['q'] + run.astype(jnp.int32)
    # Phase 0: the ray beats the best radius -> bisect [0, min(r, hi - lo)]; else next block.
    hit = run & check & dec
    low = jnp.where(hit, 0.0, st['low'])
    high = jnp.where(hit, r_chk, st['high'])
    # Phase 1: one bisection step.
    bis = run & ~check
    low = jnp.where(bis & ~dec, mid, low)
    high = jnp.where(bis & dec, mid, high)
    searching = (hit | bis) & bisecting(low, high) & (q < max_q)
    done = (hit | bis) & ~searching
    st = {**st, 'q': q, 'low': low, 'high': high,
          'phase': jnp.where(searching, 1, jnp.where(done, 0, st['phase']))}
    st = finish(st, done)
    st = advance(st, done | (run & check & ~dec))
    return {**st, 'dist_at': record(st['dist_at'], query_checkpoints, q, st['best'])}

  zb = jnp.zeros((b,), jnp.int32)
  st = {'level': zb, 'ind': zb, 'phase': zb, 's': jnp.ones((b, d), x.dtype),
        'r': jnp.where(already, 0.0, jnp.inf).astype(x.dtype),
        'low': jnp.zeros((b,), x.dtype), 'high': jnp.zeros((b,), x.dtype),
        'x': x, 'best': best, 'q': queries, 'it': zb, 'dist_at': dist_at}
  st = lax.while_loop(lambda s: jnp.any(running(s)), body, st)
  # A bisection cut off by the budget keeps the smallest adversarial radius it found.
  st = finish(st, st['phase'] == 1)
  dist_at = record(st['dist_at'], query_checkpoints, st['q'], st['best'])
  found = jnp.isfinite(st['r'])
  x_adv = common.select(found, st['x'], x)
  return (x_adv, found, st['q'], common.norm(x_adv - x, 'linf').astype(x.dtype), st['it'],
          dist_at)


def rays(*, max_queries=10000, tol: float = 1e-3, targeted: bool = False,
         query_checkpoints=(), bounds=(0.0, 1.0)):
  """RayS (Chen & Gu, KDD 2020), L_inf; see the module docstring.

  Decision-based black box: ``attack(query_fn, x, y, key)`` only uses the labels of
  ``query_fn``; it runs until every example has spent ``max_queries`` (the official
  ``query_limit``, default 10,000).

  Guarantees: ``x_adv`` lies in the box; ``info['success']`` examples are adversarial at
  ``x_adv`` for a deterministic model (every returned point was queried); the distance never
  increases; ``info['queries'] <= max_queries`` per example, the clean query included. One
  jitted program (``lax.while_loop`` over iterations and bisection steps).

  Args:
    max_queries: query budget per example (>= 1); may be traced.
    tol: bisection tolerance on the unit-L2 ray radius (official 1e-3), i.e.
      ``tol / sqrt(d)`` on the L_inf radius.
    targeted: ``y`` are target labels (the official ``target``).
    query_checkpoints: increasing query counts; ``info['distance_at_queries']`` ``[B, C]``
      is the best L_inf distance found within each (inf: none yet).
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'minimal'); info: ``success``,
    ``queries``, ``distance`` (L_inf at ``x_adv``), ``iterations`` (blocks tried) and
    ``distance_at_queries``.
  """
  bounds = _checks.check_bounds(bounds)
  if max_queries is None:
    raise ValueError('max_queries=None: RayS runs until its query budget is spent; give one.')
  max_queries = check_max_queries(max_queries)
  tol = float(_checks.check_float('tol', tol, minimum=0.0, strict_min=True,
                                  allow_traced=False))
  common.check_bool(targeted=targeted)
  cps = check_checkpoints(query_checkpoints)

  def attack(query_fn, x, y, key):
    common.check_call(x, y, bounds, query_fn)
    if x.ndim < 2:
      raise ValueError(f'x has shape {tuple(x.shape)}; expected a batch [B, ...].')
    x_adv, succ, q, dist, iters, dist_at = run_rays(
        query_fn, x, y, key, targeted=targeted, max_queries=max_queries, tol=tol,
        bounds=bounds, query_checkpoints=cps)
    return AttackOutput(x_adv, {'success': succ, 'queries': q, 'distance': dist,
                                'iterations': iters, 'distance_at_queries': dist_at},
                        'minimal')
  return attack
