"""Boundary Attack (Brendel, Rauber & Bethge, ICLR 2018): decision-based, L2.

"Decision-Based Adversarial Attacks: Reliable Attacks Against Black-Box Machine Learning
Models" (arXiv:1712.04248), as Foolbox 3's reference ``BoundaryAttack``. Sees labels only
(``query_fn: x -> labels``; scores are reduced to their argmax). Per example:

1. Start adversarial: a given point, or uniform noise (``init_num_tries`` draws) blended
   towards ``x`` by Foolbox's linear search (``LinearSearchBlendedUniformNoiseAttack``: the
   first of ``init_blend_steps`` blend factors ``j / steps`` that is adversarial).
2. Each step, from the current point ``x~`` at distance ``r = ||x - x~||_2``: an orthogonal
   (spherical) step ``eta ~ N(0, I)`` made orthogonal to ``x - x~`` and scaled to
   ``spherical_step * r``, projected back onto the sphere of radius ``r`` around ``x``
   (divided by ``sqrt(1 + spherical_step^2)``) and clipped to the box; then a step of length
   ``source_step * r`` towards ``x`` (corrected for the distance of the clipped point), clipped.
   The candidate replaces ``x~`` when it is adversarial and closer (1 query).
3. Step-size adaptation (Foolbox): every ``update_stats_every_k`` steps the spherical
   candidate is queried too; over the last 100 such checks (per example), a success rate
   > 0.5 multiplies both step sizes by ``step_adaptation``, < 0.2 divides them; over the
   last 30 checks of the candidate, > 0.25 multiplies ``source_step``, < 0.1 divides it;
   a queue that triggered is emptied. An example stops when ``source_step <
   source_step_convergence``.

Departures from Foolbox (none changing a step): ``max_queries`` per example (clean query
included) is never exceeded; ``eta`` is drawn per example (Foolbox shares one draw across
the batch), randomness ``fold_in(key, example index)``; the noise start stops per example at
its first adversarial draw and blend, and an example whose start fails is returned unchanged
with success False (Foolbox raises); converged examples send no more queries;
``query_checkpoints`` records the best distance at given query counts (one run gives the
distance-vs-queries curve).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.blackbox.hopskipjump import _Phi, check_decision_call
from jaxsec.attacks.evasion import common

SPHERICAL_QUEUE = 100     # Foolbox: ArrayQueue(maxlen=100) of spherical successes
STEP_QUEUE = 30           # Foolbox: ArrayQueue(maxlen=30) of candidate successes
_INT_MAX = np.iinfo(np.int32).max
_TINY = 1e-12


# --------------------------------------------------------------------------- shared pieces


def check_max_queries(max_queries):
  """``max_queries``: an int >= 1 or None; a traced value passes (checked when concrete)."""
  if max_queries is not None and _checks.is_concrete(max_queries):
    return _checks.check_int('max_queries', max_queries, minimum=1, maximum=_INT_MAX)
  return max_queries


def check_checkpoints(query_checkpoints) -> tuple[int, ...]:
  """A static, increasing tuple of query counts >= 1."""
  cps = tuple(query_checkpoints)
  for c in cps:
    _checks.check_int('query_checkpoints entry', c, minimum=1, maximum=_INT_MAX)
  if any(b <= a for a, b in zip(cps, cps[1:], strict=False)):
    raise ValueError(f'query_checkpoints={cps} must be strictly increasing.')
  return tuple(int(c) for c in cps)


def record(dist_at, checkpoints, queries, best):
  """``dist_at [B, C]``: the best distance ``best [B]`` where ``queries <= checkpoint``.

  Called after every query-spending step, so column ``c`` ends as the best distance found
  with at most ``checkpoints[c]`` queries (inf: no adversarial point by then)."""
  if not checkpoints:
    return dist_at
  cp = jnp.asarray(checkpoints, jnp.int32)[None, :]
  return jnp.where(queries[:, None] <= cp, best[:, None].astype(dist_at.dtype), dist_at)


def blended_noise_start(phi, x, ekeys, queries, max_q, run, *, num_tries, blend_steps,
                        bounds):
  """Foolbox's ``LinearSearchBlendedUniformNoiseAttack``, per example: uniform noise until
  adversarial (at most ``num_tries`` draws), then the first adversarial blend
  ``(1 - e) x + e noise`` over ``e = j / blend_steps``, j = 1 .. blend_steps (e = 1 is the
  noise itself, known adversarial: not queried again). One query per try, never past
  ``max_q``. Returns ``(found [B], x_start, queries)``."""
  lo, hi = bounds
  b = x.shape[0]

  def n_run(st):
    return run & ~st[1] & (st[3] < max_q)

  def n_body(st):
    k, found, noise, q = st
    r = n_run(st)
    z = jax.vmap(lambda kk: jax.random.uniform(jax.random.fold_in(kk, k), x.shape[1:],
                                               x.dtype, lo, hi))(ekeys)
    dec = r & phi.one(z)
    return k + 1, found | dec, common.select(dec, z, noise), q + r.astype(jnp.int32)

  _, found, noise, queries = lax.while_loop(
      lambda st: (st[0] < num_tries) & jnp.any(n_run(st)), n_body,
      (jnp.asarray(0, jnp.int32), jnp.zeros((b,), bool), x, queries))

  def l_run(st):
    return found & ~st[1] & (st[3] < max_q)

  def l_body(st):
    j, done, x_s, q = st
    r = l_run(st)
    e = j.astype(x.dtype) / blend_steps
    z = (1 - e) * x + e * noise
    dec = r & phi.one(z)
    return j + 1, done | dec, common.select(dec, z, x_s), q + r.astype(jnp.int32)

  _, _, x_s, queries = lax.while_loop(
      lambda st: (st[0] < blend_steps) & jnp.any(l_run(st)), l_body,
      (jnp.asarray(1, jnp.int32), jnp.zeros((b,), bool), noise, queries))
  return found, common.select(found, x_s, x), queries


def start(phi, x, key, max_q, starting_points, *, num_tries, blend_steps, bounds):
  """The clean query, then the starting point. Returns ``(already, alive, x_start, queries,
  ekeys)``: ``already`` adversarial at ``x`` (returned unchanged), ``alive`` has an
  adversarial start, ``ekeys`` one key per example (``fold_in(key, index)``)."""
  b = x.shape[0]
  ekeys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b, dtype=jnp.uint32))
  already = phi.one(x)
  queries = jnp.ones((b,), jnp.int32)
  have = jnp.zeros((b,), bool)
  x_s = x
  if starting_points is not None:
    r = ~already & (queries < max_q)
    have = r & phi.one(starting_points)
    queries = queries + r.astype(jnp.int32)
    x_s = common.select(have, starting_points, x)
  if num_tries > 0:
    found, x_n, queries = blended_noise_start(
        phi, x, jax.vmap(lambda k: jax.random.fold_in(k, 1))(ekeys), queries, max_q,
        ~already & ~have, num_tries=num_tries, blend_steps=blend_steps, bounds=bounds)
    x_s = common.select(found, x_n, x_s)
    have = have | found
  return already, ~already & have, x_s, queries, ekeys


# --------------------------------------------------------------------------- engine


def _queue_stats(qv):
  """``(full [B], mean [B])`` of a queue ``[L, B]`` with NaN for empty slots."""
  empty = jnp.isnan(qv)
  n = jnp.sum(~empty, axis=0)
  mean = jnp.sum(jnp.where(empty, 0.0, qv), axis=0) / jnp.maximum(n, 1)
  return ~jnp.any(empty, axis=0), mean


def proposals(x, x_cur, noise, spherical_step, source_step, bounds):
  """Foolbox's ``draw_proposals`` for one normal draw ``noise`` per example: returns
  ``(candidates, spherical_candidates)``."""
  lo, hi = bounds
  b = x.shape[0]
  fl = lambda a: a.reshape((b, -1))
  src = fl(x - x_cur)
  src_norm = jnp.linalg.norm(src, axis=1)
  src_dir = src / (src_norm[:, None] + _TINY)
  eta = fl(noise)
  eta = eta - jnp.sum(eta * src_dir, axis=1, keepdims=True) * src_dir
  eta = eta * (spherical_step * src_norm / (jnp.linalg.norm(eta, axis=1) + _TINY))[:, None]
  dist = jnp.sqrt(spherical_step ** 2 + 1)[:, None]
  sph = jnp.clip(fl(x) + (eta - src) / dist, lo, hi)
  new_src = fl(x) - sph
  new_norm = jnp.linalg.norm(new_src, axis=1)
  length = jnp.maximum(source_step * src_norm + new_norm - src_norm, 0.0)
  cand = jnp.clip(sph + (length / (new_norm + _TINY))[:, None] * new_src, lo, hi)
  return cand.reshape(x.shape), sph.reshape(x.shape)


def run_boundary(query_fn, x, y, key, *, targeted, num_steps, max_queries, spherical_step,
                 source_step, source_step_convergence, step_adaptation, update_stats_every_k,
                 init_num_tries, init_blend_steps, bounds, query_checkpoints=(),
                 starting_points=None):
  """The Boundary Attack engine: ``(x_adv, success, queries, distance, steps, dist_at,
  (spherical_step, source_step))``, the step sizes as they ended."""
  b = x.shape[0]
  max_q = jnp.asarray(_INT_MAX if max_queries is None else max_queries).astype(jnp.int32)
  phi = _Phi(query_fn, y, targeted)
  dist = lambda z: common.norm(z - x, 'l2').astype(x.dtype)
  already, alive, x_cur, queries, ekeys = start(
      phi, x, key, max_q, starting_points, num_tries=init_num_tries,
      blend_steps=init_blend_steps, bounds=bounds)
  best = jnp.where(already, 0.0, jnp.where(alive, dist(x_cur), jnp.inf)).astype(x.dtype)
  dist_at = record(jnp.full((b, len(query_checkpoints)), jnp.inf, x.dtype),
                   query_checkpoints, queries, best)
  adapt = jnp.asarray(step_adaptation, x.dtype)

  def running(st):
    return alive & (st['src'] >= source_step_convergence) & (st['q'] < max_q)

  def body(st):
    t = st['t']
    run = running(st)
    q = st['q']
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, t), x.shape[1:],
                                                 x.dtype))(ekeys)
    cand, sph = proposals(x, st['x'], noise, st['sph'], st['src'], bounds)
    is_adv = run & phi.one(cand)
    q = q + run.astype(jnp.int32)
    check = (t % update_stats_every_k) == 0
    # The spherical candidate: queried every k-th step (if a query is left).
    sph_run = run & check & (q < max_q)
    sph_adv = lax.cond(check, lambda: sph_run & phi.one(sph), lambda: jnp.zeros((b,), bool))
    q = q + sph_run.astype(jnp.int32)
    closer = dist(cand) < dist(st['x'])
    take = is_adv & closer
    x_new = common.select(take, cand, st['x'])
    d_new = jnp.where(take, dist(cand), st['best'])

    # Success statistics and step-size adaptation (Foolbox's two ArrayQueues).
    def adapt_steps(a):
      sph_q, stp_q, sph_s, src_s = a
      sph_q = sph_q.at[st['qi_sph']].set(jnp.where(sph_run, sph_adv.astype(x.dtype), jnp.nan))
      stp_q = stp_q.at[st['qi_stp']].set(jnp.where(sph_run, is_adv.astype(x.dtype), jnp.nan))
      full, p = _queue_stats(sph_q)
      up, down = full & (p > 0.5), full & (p < 0.2)
      fac = jnp.where(up, adapt, jnp.where(down, 1 / adapt, 1.0))
      sph_s, src_s = sph_s * fac, src_s * fac
      sph_q = jnp.where((up | down)[None, :], jnp.nan, sph_q)
      full, p = _queue_stats(stp_q)
      up, down = full & (p > 0.25), full & (p < 0.1)
      src_s = src_s * jnp.where(up, adapt, jnp.where(down, 1 / adapt, 1.0))
      stp_q = jnp.where((up | down)[None, :], jnp.nan, stp_q)
      return sph_q, stp_q, sph_s, src_s

    sph_q, stp_q, sph_s, src_s = lax.cond(
        check, adapt_steps, lambda a: a, (st['sph_q'], st['stp_q'], st['sph'], st['src']))
    keep = lambda new, old: jnp.where(sph_run, new, old)
    return {
        't': t + 1, 'x': x_new, 'best': d_new, 'q': q,
        'sph': keep(sph_s, st['sph']), 'src': keep(src_s, st['src']),
        'sph_q': jnp.where(sph_run[None, :], sph_q, st['sph_q']),
        'stp_q': jnp.where(sph_run[None, :], stp_q, st['stp_q']),
        'qi_sph': jnp.where(check, (st['qi_sph'] + 1) % SPHERICAL_QUEUE, st['qi_sph']),
        'qi_stp': jnp.where(check, (st['qi_stp'] + 1) % STEP_QUEUE, st['qi_stp']),
        'steps': st['steps'] + run.astype(jnp.int32),
        'dist_at': record(st['dist_at'], query_checkpoints, q, d_new)}

  st = {'t': jnp.asarray(1, jnp.int32), 'x': x_cur, 'best': best, 'q': queries,
        'sph': jnp.full((b,), spherical_step, x.dtype),
        'src': jnp.full((b,), source_step, x.dtype),
        'sph_q': jnp.full((SPHERICAL_QUEUE, b), jnp.nan, x.dtype),
        'stp_q': jnp.full((STEP_QUEUE, b), jnp.nan, x.dtype),
        'qi_sph': jnp.asarray(0, jnp.int32), 'qi_stp': jnp.asarray(0, jnp.int32),
        'steps': jnp.zeros((b,), jnp.int32), 'dist_at': dist_at}
  if num_steps > 0:
    st = lax.while_loop(lambda s: (s['t'] <= num_steps) & jnp.any(running(s)), body, st)
  x_adv = common.select(alive, st['x'], x)
  return (x_adv, already | alive, st['q'], dist(x_adv), st['steps'], st['dist_at'],
          (st['sph'], st['src']))


def boundary_attack(*, num_steps: int = 25000, max_queries=None, spherical_step: float = 1e-2,
                    source_step: float = 1e-2, source_step_convergence: float = 1e-7,
                    step_adaptation: float = 1.5, update_stats_every_k: int = 10,
                    init_num_tries: int = 1000, init_blend_steps: int = 50,
                    targeted: bool = False, query_checkpoints=(), bounds=(0.0, 1.0)):
  """Boundary Attack (Brendel, Rauber & Bethge, ICLR 2018), L2; see the module docstring.

  Decision-based black box: ``attack(query_fn, x, y, key, *, starting_points=None)`` only
  uses the labels of ``query_fn``. Defaults are Foolbox 3's (``steps=25000``, both step sizes
  1e-2, convergence 1e-7, adaptation 1.5, statistics every 10 steps; its noise start: 1000
  draws, 50 blend steps).

  Guarantees: ``x_adv`` lies in the box; ``info['success']`` examples are adversarial at
  ``x_adv`` for a deterministic model (every returned point was queried); the distance never
  increases; ``info['queries'] <= max_queries`` per example, the clean query included. One
  jitted program (``lax.while_loop`` over steps, per-example masks).

  Args:
    num_steps: at most this many steps (static).
    max_queries: query budget per example, or None; may be traced.
    spherical_step, source_step: initial relative step sizes (Foolbox 1e-2).
    source_step_convergence: an example stops once its ``source_step`` falls below this.
    step_adaptation: the factor of the step-size adaptation (Foolbox 1.5).
    update_stats_every_k: the spherical candidate is queried, and the statistics updated,
      every k-th step (Foolbox 10).
    init_num_tries, init_blend_steps: the uniform-noise start (0 tries: starting points only).
    targeted: ``y`` are target labels; needs ``starting_points`` (classified as the targets).
    query_checkpoints: increasing query counts; ``info['distance_at_queries']`` ``[B, C]``
      is the best L2 distance found within each (inf: none yet).
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(...) -> AttackOutput`` (budget 'minimal'); info: ``success``, ``queries``,
    ``distance`` (L2 at ``x_adv``), ``steps`` (steps run), ``distance_at_queries`` and
    ``spherical_step`` / ``source_step`` (the adapted step sizes at the end).
  """
  bounds = _checks.check_bounds(bounds)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)
  max_queries = check_max_queries(max_queries)
  for name, v in (('spherical_step', spherical_step), ('source_step', source_step),
                  ('source_step_convergence', source_step_convergence)):
    _checks.check_float(name, v, minimum=0.0, strict_min=True, allow_traced=False)
  _checks.check_float('step_adaptation', step_adaptation, minimum=1.0, strict_min=True,
                      allow_traced=False)
  update_stats_every_k = _checks.check_int('update_stats_every_k', update_stats_every_k,
                                           minimum=1)
  init_num_tries = _checks.check_int('init_num_tries', init_num_tries, minimum=0)
  init_blend_steps = _checks.check_int('init_blend_steps', init_blend_steps, minimum=1)
  common.check_bool(targeted=targeted)
  cps = check_checkpoints(query_checkpoints)

  def attack(query_fn, x, y, key, *, starting_points=None):
    starting_points = check_decision_call(query_fn, x, y, bounds, targeted, starting_points)
    x_adv, succ, q, d, steps, dist_at, (sph, src) = run_boundary(
        query_fn, x, y, key, targeted=targeted, num_steps=num_steps, max_queries=max_queries,
        spherical_step=float(spherical_step), source_step=float(source_step),
        source_step_convergence=float(source_step_convergence),
        step_adaptation=float(step_adaptation), update_stats_every_k=update_stats_every_k,
        init_num_tries=init_num_tries, init_blend_steps=init_blend_steps, bounds=bounds,
        query_checkpoints=cps, starting_points=starting_points)
    return AttackOutput(x_adv, {'success': succ, 'queries': q, 'distance': d, 'steps': steps,
                                'distance_at_queries': dist_at, 'spherical_step': sph,
                                'source_step': src}, 'minimal')
  return attack

