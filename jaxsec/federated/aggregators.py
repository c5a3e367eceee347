"""Byzantine-robust aggregation of federated client updates (survey §3, distributed learning).

An aggregator maps stacked client updates (a pytree with leading client axis ``[K, ...]``) to
one update shaped like a single client's. Every rule is pure and jittable, hyperparameters
keyword-only and static (``max_norm`` and ``eps`` may be traced); ``K``-dependent checks run
at trace time.

* :func:`mean` -- FedAvg; one Byzantine client moves it arbitrarily far.
* :func:`coordinate_median`, :func:`trimmed_mean` -- Yin et al., ICML 2018.
* :func:`krum` (and multi-Krum), :func:`krum_scores` -- Blanchard et al., NeurIPS 2017.
* :func:`bulyan`, :func:`bulyan_selection` -- El Mhamdi, Guerraoui, Rouault, ICML 2018.
* :func:`norm_bounding` -- Sun, Kairouz, Suresh, McMahan 2019.
* :func:`geometric_median` -- RFA, smoothed Weiszfeld (Pillutla et al., IEEE TSP 2022).
* :func:`fltrust` -- Cao, Fang, Liu, Gong, NDSS 2021 (needs the server's root-data update).
* :func:`centered_clipping`, :func:`bucketing` -- Karimireddy, He, Jaggi, ICML 2021 / ICLR 2022.
* :func:`flame` -- Nguyen et al., USENIX Security 2022 (HDBSCAN step on the host).
* :func:`foolsgold`, :func:`centered_clipping_momentum` -- stateful rules, an explicit
  ``StatefulAggregator(init, update)`` pair (per-client history / previous aggregate).
* :func:`aggregator` -- ``aggregator(name, **hyperparameters) -> fn(updates)`` for sweeps.

Inputs beyond the updates are keyword arguments the rule names: ``server_update=``
(FLTrust), ``key=`` (bucketing, FLAME); :func:`jaxsec.federated.fedavg.make_fedavg` passes
each one an aggregator's signature asks for.

Distances are Euclidean between whole flattened updates, summed leaf by leaf in at least
float32. Non-finite updates: sort-based rules sort NaN after +inf (trimmed as an outlier);
Krum / Bulyan treat a non-finite distance as infinite (never selected while enough finite
clients remain); the geometric median gives such a client weight 0; :func:`mean` and
:func:`norm_bounding` propagate them.

>>> import jax.numpy as jnp
>>> updates = {'w': jnp.array([[1.0], [2.0], [3.0], [1e9]])}
>>> float(coordinate_median(updates)['w'][0])
2.5
"""
from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks

__all__ = ['mean', 'coordinate_median', 'trimmed_mean', 'krum', 'krum_scores', 'bulyan',
           'bulyan_selection', 'norm_bounding', 'geometric_median', 'aggregator',
           'trim_count', 'pairwise_sq_distances', 'fltrust', 'centered_clipping', 'bucketing',
           'flame', 'flame_admitted', 'foolsgold', 'foolsgold_weights',
           'centered_clipping_momentum', 'StatefulAggregator', 'call_inputs']


# ------------------------------------------------------------------------------ helpers

def _num_clients(updates: Any) -> int:
  """Checks the stacked updates and returns the number of clients K (static)."""
  leaves = jax.tree_util.tree_leaves_with_path(updates)
  if not leaves:
    raise ValueError('updates has no array leaves; expected a pytree of arrays with a '
                     'leading client axis [K, ...].')
  k, first = None, None
  for path, leaf in leaves:
    name = 'updates' + jax.tree_util.keystr(path)
    _checks.check_array(name, leaf)
    # jnp.issubdtype, not _checks' np.issubdtype, so that bfloat16 counts as floating.
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      raise ValueError(f'{name} has dtype {leaf.dtype}; expected a floating dtype.')
    if leaf.ndim < 1:
      raise ValueError(f'{name} is a scalar; expected a leading client axis [K, ...].')
    if k is None:
      k, first = leaf.shape[0], name
    elif leaf.shape[0] != k:
      raise ValueError(f'{name} has {leaf.shape[0]} clients on its leading axis but {first} '
                       f'has {k}; every leaf must have the same leading client axis.')
  if k is None or k < 1:
    raise ValueError('updates has K=0 clients on its leading axis; expected at least one.')
  return k


def _acc_dtype(dtype):
  """Accumulation dtype for distances and norms: the leaf dtype, at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _median0(x: jax.Array) -> jax.Array:
  """Median along axis 0 by sorting (NaN sorts last, so it acts as an extreme value)."""
  k = x.shape[0]
  s = jnp.sort(x, axis=0)
  if k % 2:
    return s[k // 2]
  acc = _acc_dtype(x.dtype)
  return ((s[k // 2 - 1].astype(acc) + s[k // 2].astype(acc)) / 2).astype(x.dtype)


def _mean_of(updates: Any, idx: jax.Array) -> Any:
  """Mean over the clients ``idx`` (a static-length index vector) of every leaf."""
  return jax.tree_util.tree_map(lambda l: jnp.mean(l[idx], axis=0), updates)


def pairwise_sq_distances(updates: Any) -> jax.Array:
  """``[K, K]`` squared Euclidean distances between clients' flattened updates.

  Computed with the Gram identity on the client vectors centred at their coordinate-wise
  median (centring does not change distances but keeps the identity free of cancellation
  when all updates share a large common component), with ``Precision.HIGHEST`` so that
  accelerators do not use reduced-precision matmuls. The diagonal is exactly 0; a pair
  involving a non-finite update has distance ``+inf``.
  """
  k = _num_clients(updates)
  total = jnp.zeros((k, k), jnp.float32)
  for leaf in jax.tree_util.tree_leaves(updates):
    acc = _acc_dtype(leaf.dtype)
    x = leaf.reshape((k, -1)).astype(acc)
    x = x - _median0(x)
    sq = jnp.sum(x * x, axis=1)
    gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    total = total + (sq[:, None] + sq[None, :] - 2 * gram)
  total = jnp.maximum(total, 0.0)
  total = jnp.where(jnp.isfinite(total), total, jnp.inf)
  return jnp.where(jnp.eye(k, dtype=bool), 0.0, total)


# ----------------------------------------------------------------- hyperparameter checks

def _check_trim(trim: Any) -> Any:
  if isinstance(trim, bool) or not isinstance(trim, (numbers.Integral, numbers.Real)):
    raise ValueError(f'trim={trim!r} must be an int (values removed from each end) or a '
                     f'float fraction in [0, 0.5).')
  if isinstance(trim, numbers.Integral):
    return _checks.check_int('trim', trim, minimum=0)
  trim = float(_checks.check_float('trim', trim, allow_traced=False))
  if not 0.0 <= trim < 0.5:
    raise ValueError(f'trim={trim} is a float, so it is the fraction removed from each end '
                     f'and must lie in [0, 0.5); pass an int to give a count.')
  return trim


def trim_count(trim: Any, num_clients: int) -> int:
  """Values removed from *each* end per coordinate: ``trim`` itself if it is an int, else
  ``floor(trim * K)`` (conservative, as ``scipy.stats.trim_mean``; a 1e-9 tolerance absorbs
  float error, so ``0.3 * 10`` trims 3). Raises if ``2 * count >= K``."""
  trim = _check_trim(trim)
  b = trim if isinstance(trim, int) else int(np.floor(trim * num_clients + 1e-9))
  if 2 * b >= num_clients:
    raise ValueError(f'trim={trim!r} removes {b} values from each end of K={num_clients} '
                     f'clients; need 2 * {b} < {num_clients} so that some value is left.')
  return b


def _check_f(num_byzantine: Any) -> int:
  return _checks.check_int('num_byzantine', num_byzantine, minimum=0)


def _check_multi(multi: Any) -> int:
  return _checks.check_int('multi', multi, minimum=1)


def _check_max_norm(max_norm: Any) -> Any:
  return _checks.check_float('max_norm', max_norm, minimum=0.0, strict_min=True)


def _check_weiszfeld(iters: Any, eps: Any) -> tuple[int, Any]:
  return (_checks.check_int('iters', iters, minimum=1),
          _checks.check_float('eps', eps, minimum=0.0, strict_min=True))


# ---------------------------------------------------------------------------- the rules

def mean(updates: Any) -> Any:
  """Coordinate-wise mean over clients (FedAvg with equal weights); not robust."""
  _num_clients(updates)
  return jax.tree_util.tree_map(lambda l: jnp.mean(l, axis=0), updates)


def coordinate_median(updates: Any) -> Any:
  """Coordinate-wise median (Yin et al. 2018); the mean of the two middle values when K is
  even. Breakdown point 1/2: fewer than K/2 Byzantine clients cannot move a coordinate
  outside the range of the honest values."""
  _num_clients(updates)
  return jax.tree_util.tree_map(_median0, updates)


def trimmed_mean(updates: Any, *, trim: Any) -> Any:
  """Coordinate-wise trimmed mean (Yin et al. 2018).

  For every coordinate, removes the ``b`` largest and ``b`` smallest of the K client
  values and averages the remaining ``K - 2b``. With at most ``b`` Byzantine clients every
  kept value lies within the honest range, and so does the result.

  Args:
    updates: stacked client updates, leaves ``[K, ...]``.
    trim: ``b`` as an int, or a fraction in [0, 0.5) giving ``b = floor(trim * K)``
      (see :func:`trim_count`). Requires ``2b < K``.
  """
  k = _num_clients(updates)
  b = trim_count(trim, k)
  return jax.tree_util.tree_map(lambda l: jnp.mean(jnp.sort(l, axis=0)[b:k - b], axis=0),
                                updates)


def _check_krum(k: int, f: int) -> int:
  if not k > 2 * f + 2:
    raise ValueError(f'Krum with num_byzantine={f} needs K > 2 * {f} + 2 = {2 * f + 2} '
                     f'clients; got K={k}.')
  return k - f - 2


def _scores(d: jax.Array, num_neighbors) -> jax.Array:
  k = d.shape[0]
  d = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, d)
  return jnp.sum(jnp.sort(d, axis=1)[:, :num_neighbors], axis=1)


def krum_scores(updates: Any, *, num_byzantine: int) -> jax.Array:
  """``[K]`` Krum scores: ``score_i = sum`` of the squared distances from client ``i`` to
  its ``K - f - 2`` nearest other clients (Blanchard et al. 2017). Requires
  ``K > 2f + 2``. A client with a non-finite update scores ``+inf``."""
  f = _check_f(num_byzantine)
  k = _num_clients(updates)
  return _scores(pairwise_sq_distances(updates), _check_krum(k, f))


def krum(updates: Any, *, num_byzantine: int, multi: int = 1) -> Any:
  """Krum / multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017).

  Returns the update of the client with the lowest :func:`krum_scores` (``multi=1``), or the
  mean of the ``multi`` lowest-scoring updates (multi-Krum). Ties go to the lower client
  index. Blanchard et al. prove (alpha, f)-Byzantine resilience for ``K > 2f + 2``.

  Args:
    updates: stacked client updates, leaves ``[K, ...]``.
    num_byzantine: f, the number of Byzantine clients tolerated; requires ``K > 2f + 2``.
    multi: m, how many of the best-scored updates to average, ``1 <= m <= K - f``.
  """
  f, m = _check_f(num_byzantine), _check_multi(multi)
  k = _num_clients(updates)
  nn = _check_krum(k, f)
  if m > k - f:
    raise ValueError(f'multi={m} must be <= K - num_byzantine = {k} - {f} = {k - f}: more '
                     f'would necessarily average in Byzantine updates.')
  order = jnp.argsort(_scores(pairwise_sq_distances(updates), nn), stable=True)
  return _mean_of(updates, order[:m])


def _check_bulyan(k: int, f: int) -> tuple[int, int]:
  if not k >= 4 * f + 3:
    raise ValueError(f'Bulyan with num_byzantine={f} needs K >= 4 * {f} + 3 = {4 * f + 3} '
                     f'clients; got K={k}.')
  theta = k - 2 * f
  return theta, theta - 2 * f


def bulyan_selection(updates: Any, *, num_byzantine: int) -> jax.Array:
  """The ``theta = K - 2f`` client indices Bulyan selects, in selection order.

  Iterated Krum: at each step, Krum scores are recomputed *within the clients not yet
  selected* (``R`` of them) with ``max(R - f - 2, 1)`` neighbours -- the last steps have
  fewer than ``2f + 3`` candidates left, where Krum's own condition no longer holds, and
  fall back to the nearest-neighbour distance -- and the best-scored client is moved to
  the selection. Ties go to the lower index. Requires ``K >= 4f + 3``.
  """
  f = _check_f(num_byzantine)
  k = _num_clients(updates)
  theta, _ = _check_bulyan(k, f)
  d = pairwise_sq_distances(updates)
  off_diag = ~jnp.eye(k, dtype=bool)
  big = jnp.finfo(d.dtype).max

  def step(t, carry):
    remaining, order = carry
    nn = jnp.maximum(k - t - f - 2, 1)
    dm = jnp.where(remaining[None, :] & remaining[:, None] & off_diag, d, jnp.inf)
    s = jnp.sort(dm, axis=1)
    score = jnp.sum(jnp.where(jnp.arange(k)[None, :] < nn, s, 0.0), axis=1)
    # Remaining clients with an infinite score (non-finite updates) still beat selected ones.
    score = jnp.where(remaining, jnp.minimum(score, big), jnp.inf)
    i = jnp.argmin(score)
    return remaining.at[i].set(False), order.at[t].set(i)

  _, order = jax.lax.fori_loop(0, theta, step, (jnp.ones((k,), bool),
                                                jnp.zeros((theta,), jnp.int32)))
  return order


def bulyan(updates: Any, *, num_byzantine: int) -> Any:
  """Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018).

  Selects ``theta = K - 2f`` updates by iterated Krum (:func:`bulyan_selection`), then for
  every coordinate averages the ``beta = theta - 2f`` selected values closest to their
  coordinate-wise median. Requires ``K >= 4f + 3`` (so ``beta >= 3``). At most ``f`` of the
  ``theta`` selected values are Byzantine, so the median lies in the honest range, and a
  Byzantine value is averaged only if it is closer to that median than the honest values
  left out: far outliers never are (the result then stays in the honest coordinate range);
  close-in ones can be, with the deviation bounded in the paper's Proposition 2.
  """
  f = _check_f(num_byzantine)
  k = _num_clients(updates)
  _, beta = _check_bulyan(k, f)
  order = bulyan_selection(updates, num_byzantine=f)

  def leaf_rule(l):
    sel = l[order]
    dist = jnp.abs(sel - _median0(sel))
    idx = jnp.argsort(dist, axis=0, stable=True)[:beta]
    return jnp.mean(jnp.take_along_axis(sel, idx, axis=0), axis=0)

  return jax.tree_util.tree_map(leaf_rule, updates)


def _client_norms(updates: Any, k: int) -> jax.Array:
  """``[K]`` l2 norms of the flattened client updates, scaled by the largest entry first so
  that squaring a huge (finite) Byzantine entry does not overflow."""
  leaves = [l.reshape((k, -1)).astype(_acc_dtype(l.dtype))
            for l in jax.tree_util.tree_leaves(updates)]
  amax = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x), axis=1, initial=0.0)
                                        for x in leaves])
  safe = jnp.where(amax > 0, amax, 1.0)
  sq = sum(jnp.sum(jnp.square(x / safe[:, None]), axis=1) for x in leaves)
  return amax * jnp.sqrt(sq)


def norm_bounding(updates: Any, *, max_norm: Any) -> Any:
  """Norm bounding (Sun, Kairouz, Suresh, McMahan 2019): every client update is scaled by
  ``min(1, max_norm / ||update||)`` (l2 norm of the whole flattened update), then the
  scaled updates are averaged. A single client moves the aggregate by at most
  ``max_norm / K``. ``max_norm`` may be traced (a swept value)."""
  _check_max_norm(max_norm)
  k = _num_clients(updates)
  norms = _client_norms(updates, k)
  scale = jnp.where(norms > max_norm, max_norm / jnp.where(norms > 0, norms, 1.0), 1.0)

  def leaf_rule(l):
    s = scale.reshape((k,) + (1,) * (l.ndim - 1))
    return jnp.mean((l.astype(s.dtype) * s), axis=0).astype(l.dtype)

  return jax.tree_util.tree_map(leaf_rule, updates)


def geometric_median(updates: Any, *, iters: int = 50, eps: Any = 1e-6) -> Any:
  """Geometric median by the smoothed Weiszfeld algorithm (RFA, Pillutla et al. 2022).

  Approximately minimises ``sum_i ||z - u_i||`` over ``z`` (the flattened updates) with
  ``iters`` iterations of ``z <- sum_i w_i u_i / sum_i w_i``, ``w_i = 1 / max(eps,
  ||z - u_i||)``, started from the coordinate-wise median (a robust start; RFA starts from
  the mean -- the fixed point is the same). Breakdown point 1/2. The smoothing ``eps``
  keeps the step defined when ``z`` meets a client's update; ``eps`` may be traced.
  Clients whose update has a non-finite entry get weight 0.
  """
  iters, eps = _check_weiszfeld(iters, eps)
  k = _num_clients(updates)
  leaves, treedef = jax.tree_util.tree_flatten(updates)
  xs = [l.reshape((k, -1)).astype(_acc_dtype(l.dtype)) for l in leaves]
  finite = functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x), axis=1) for x in xs])
  xs = [jnp.where(finite[:, None], x, 0.0) for x in xs]
  z0 = [_median0(jnp.where(finite[:, None], x, jnp.nan)) for x in xs]
  z0 = [jnp.where(jnp.isfinite(z), z, 0.0) for z in z0]

  def step(_, z):
    dist = jnp.sqrt(sum(jnp.sum(jnp.square(x - zz), axis=1) for x, zz in zip(xs, z, strict=True)))
    w = jnp.where(finite, 1.0 / jnp.maximum(dist, eps), 0.0)
    w = w / jnp.sum(w)
    return [jnp.tensordot(w.astype(x.dtype), x, (0, 0)) for x in xs]

  z = jax.lax.fori_loop(0, iters, step, z0)
  return jax.tree_util.tree_unflatten(
      treedef, [zz.reshape(l.shape[1:]).astype(l.dtype) for zz, l in zip(z, leaves, strict=True)])


# ------------------------------------------------------------- rules after Krum (2020-22)

def _flat(updates: Any, k: int) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
  """``[K, D]`` float32+ matrix of the flattened updates and ``unflat(v [D]) -> tree``."""
  leaves, treedef = jax.tree_util.tree_flatten(updates)
  acc = functools.reduce(jnp.promote_types, [_acc_dtype(l.dtype) for l in leaves])
  x = jnp.concatenate([l.reshape((k, -1)).astype(acc) for l in leaves], axis=1)
  sizes = [int(np.prod(l.shape[1:])) for l in leaves]

  def unflat(v):
    out, start = [], 0
    for l, size in zip(leaves, sizes, strict=True):
      out.append(v[start:start + size].reshape(l.shape[1:]).astype(l.dtype))
      start += size
    return jax.tree_util.tree_unflatten(treedef, out)
  return x, unflat


def _flat_one(update: Any, like: Any, name: str) -> jax.Array:
  """Flattens one client-shaped update (``like``'s leaves without the client axis)."""
  if jax.tree_util.tree_structure(update) != jax.tree_util.tree_structure(like):
    raise ValueError(f'{name} has tree structure {jax.tree_util.tree_structure(update)}; '
                     f'expected that of one client update, {jax.tree_util.tree_structure(like)}.')
  out = []
  for u, l in zip(jax.tree_util.tree_leaves(update), jax.tree_util.tree_leaves(like),
                  strict=True):
    if tuple(jnp.shape(u)) != tuple(l.shape[1:]):
      raise ValueError(f'{name} has a leaf of shape {tuple(jnp.shape(u))}; expected '
                       f'{tuple(l.shape[1:])} (one client update, no client axis).')
    out.append(jnp.reshape(u, (-1,)).astype(_acc_dtype(l.dtype)))
  return jnp.concatenate(out)


def fltrust(updates: Any, *, server_update: Any) -> Any:
  """FLTrust (Cao, Fang, Liu, Gong, NDSS 2021).

  The server trains on its own small clean root data set to get ``g0`` (``server_update``,
  one client-shaped update). Client ``i`` gets the trust score ``TS_i = ReLU(cos(g_i,
  g0))``, its update is rescaled to ``||g0||``, and the aggregate is ``sum_i TS_i
  (||g0|| / ||g_i||) g_i / sum_j TS_j`` (zero when every score is 0). An update pointing
  away from ``g0`` (or orthogonal to it) gets weight 0, and no client moves the aggregate
  by more than ``||g0||``.
  """
  k = _num_clients(updates)
  x, unflat = _flat(updates, k)
  g0 = _flat_one(server_update, updates, 'server_update').astype(x.dtype)
  n0 = jnp.linalg.norm(g0)
  nx = jnp.linalg.norm(x, axis=1)
  cos = (x @ g0) / jnp.maximum(nx * n0, jnp.finfo(x.dtype).tiny)
  ts = jnp.where(jnp.isfinite(cos), jax.nn.relu(cos), 0.0)
  scaled = jnp.where(ts[:, None] > 0, x * (n0 / jnp.where(nx > 0, nx, 1.0))[:, None], 0.0)
  total = jnp.sum(ts)
  return unflat(jnp.where(total > 0, ts @ scaled / jnp.where(total > 0, total, 1.0), 0.0))


def _check_tau(tau: Any) -> Any:
  """``tau > 0``, ``+inf`` allowed (no clipping); a traced value passes."""
  if _checks.is_concrete(tau):
    try:
      v = float(tau)
    except (TypeError, ValueError):
      v = float('nan')
    if not v > 0:
      raise ValueError(f'tau={tau!r} must be a positive number (inf: no clipping).')
  return tau


def centered_clipping(updates: Any, *, tau: Any, iters: int = 1, center: Any = None) -> Any:
  """Centered clipping (Karimireddy, He, Jaggi, ICML 2021, eq. CC).

  ``iters`` iterations of ``v <- v + (1/K) sum_i clip_tau(x_i - v)`` from ``v = center``
  (a client-shaped update, typically the previous round's aggregate; ``None``: zero), with
  ``clip_tau(z) = z min(1, tau / ||z||)``. ``tau = inf`` gives the mean after one
  iteration; a Byzantine client moves each iteration by at most ``tau / K``. ``tau`` may
  be traced.
  """
  _check_tau(tau)
  iters = _checks.check_int('iters', iters, minimum=1)
  k = _num_clients(updates)
  x, unflat = _flat(updates, k)
  v0 = (jnp.zeros(x.shape[1:], x.dtype) if center is None
        else _flat_one(center, updates, 'center').astype(x.dtype))

  def step(_, v):
    z = x - v
    nz = jnp.linalg.norm(z, axis=1)
    scale = jnp.minimum(1.0, tau / jnp.where(nz > 0, nz, 1.0))
    return v + jnp.mean(z * scale[:, None], axis=0)
  return unflat(jax.lax.fori_loop(0, iters, step, v0))


def _accepts(fn: Callable, name: str) -> bool:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.kind == p.VAR_KEYWORD or (p.name == name and p.kind in (
      p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) for p in params)


def _requires(fn: Callable, name: str) -> bool:
  try:
    p = inspect.signature(fn).parameters.get(name)
  except (TypeError, ValueError):
    return False
  return p is not None and p.default is inspect.Parameter.empty


def call_inputs(fn: Callable) -> dict[str, bool]:
  """Which of the extra round inputs ``key``, ``server_update`` the aggregator ``fn``
  takes as keywords, read from its signature: ``{name: required}``."""
  return {n: _requires(fn, n) for n in ('key', 'server_update') if _accepts(fn, n)}


def bucketing(updates: Any, *, key: jax.Array, bucket_size: int,
              base: str | Callable = 'coordinate_median', server_update: Any = None) -> Any:
  """Bucketing (Karimireddy, He, Jaggi, ICLR 2022, Algorithm 1) around any rule.

  The K updates are randomly permuted (``key``) and cut into ``ceil(K / s)`` buckets of
  ``s = bucket_size`` (the last one smaller when ``s`` does not divide K); each bucket is
  averaged and ``base`` (a rule name of :func:`aggregator` or ``fn(updates)``) aggregates
  the bucket means. Averaging shrinks the heterogeneity of honest updates that robust rules
  mistake for attacks; ``s = 1`` is ``base`` on a permutation of the updates.
  ``server_update`` (if given) is passed on to ``base`` (FLTrust).
  """
  s = _checks.check_int('bucket_size', bucket_size, minimum=1)
  base_fn = aggregator(base) if isinstance(base, str) else base
  if not callable(base_fn):
    raise ValueError(f'base={base!r} must be a rule name or a callable updates -> update.')
  k = _num_clients(updates)
  nb = -(-k // s)
  perm = jax.random.permutation(key, k)
  member = jnp.arange(nb * s).reshape(nb, s)
  valid = (member < k).astype(jnp.float32)
  idx = perm[jnp.minimum(member, k - 1)]

  def leaf(l):
    acc = _acc_dtype(l.dtype)
    g = l[idx].astype(acc)                       # [nb, s, ...]
    w = valid.reshape(valid.shape + (1,) * (l.ndim - 1)).astype(acc)
    return (jnp.sum(g * w, axis=1) / jnp.sum(w, axis=1)).astype(l.dtype)
  means = jax.tree_util.tree_map(leaf, updates)
  if server_update is None:
    return base_fn(means)
  return base_fn(means, server_update=server_update)


def _check_flame(noise_lambda: Any, min_cluster_size: Any) -> None:
  _checks.check_float('noise_lambda', noise_lambda, minimum=0.0)
  if min_cluster_size is not None:
    _checks.check_int('min_cluster_size', min_cluster_size, minimum=2)


def flame_admitted(flat_updates: Any, min_cluster_size: int | None = None) -> np.ndarray:
  """FLAME's filtering on the host (NumPy / scikit-learn, not jittable): HDBSCAN with
  ``min_cluster_size = K // 2 + 1`` (default), ``min_samples = 1`` and single clusters
  allowed, on the ``[K, K]`` cosine distances ``1 - cos(u_i, u_j)`` of the flattened
  updates ``[K, D]``; returns the ``[K]`` bool mask of the largest cluster. When HDBSCAN
  finds no cluster (every point noise), every client is admitted."""
  from sklearn.cluster import HDBSCAN  # pyrefly: ignore[missing-module-attribute]
  x = np.asarray(flat_updates, np.float64)
  k = x.shape[0]
  if k < 2:
    return np.ones((k,), bool)
  n = np.linalg.norm(x, axis=1)
  u = x / np.where(n > 0, n, 1.0)[:, None]
  d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
  d = (d + d.T) / 2
  np.fill_diagonal(d, 0.0)
  mcs = k // 2 + 1 if min_cluster_size is None else min(int(min_cluster_size), k)
  labels = HDBSCAN(min_cluster_size=max(mcs, 2), min_samples=1, metric='precomputed',
                   allow_single_cluster=True, copy=True).fit_predict(d)
  if np.all(labels < 0):
    return np.ones((k,), bool)
  counts = np.bincount(labels[labels >= 0])
  return labels == int(np.argmax(counts))


def flame(updates: Any, *, key: jax.Array, noise_lambda: Any = 0.001,
          min_cluster_size: int | None = None) -> Any:
  """FLAME (Nguyen et al., USENIX Security 2022): clustering, clipping, noise.

  1. Clients outside the majority HDBSCAN cluster of the cosine distances between updates
     are dropped (:func:`flame_admitted`). **This step runs on the host** (scikit-learn,
     through ``jax.pure_callback``): it is not compiled by XLA, not differentiable, and
     under ``jax.vmap`` runs once per lane; the rest is jittable.
  2. ``S = median_i ||u_i||`` over all clients (the median distance of the local models to
     the global one); every admitted update is clipped to l2 norm ``S``.
  3. The mean of the clipped admitted updates plus ``N(0, (noise_lambda S)^2 I)`` (the
     paper's ``sigma = lambda S_t``, ``lambda = 0.001`` for image classification) is returned:
     the noise the paper adds to the new global model, here to the aggregate update (the
     same with ``server_lr = 1``).
  """
  _check_flame(noise_lambda, min_cluster_size)
  k = _num_clients(updates)
  x, unflat = _flat(updates, k)
  admitted = jax.pure_callback(
      functools.partial(flame_admitted, min_cluster_size=min_cluster_size),
      jax.ShapeDtypeStruct((k,), jnp.bool_), x, vmap_method='sequential')
  norms = jnp.linalg.norm(x, axis=1)
  s = jnp.median(norms)
  clipped = x * jnp.minimum(1.0, s / jnp.where(norms > 0, norms, 1.0))[:, None]
  w = admitted.astype(x.dtype)
  agg = (w @ clipped) / jnp.maximum(jnp.sum(w), 1.0)
  noise = noise_lambda * s * jax.random.normal(key, agg.shape, agg.dtype)
  return unflat(agg + noise)


# ---------------------------------------------------------------------- stateful rules

class StatefulAggregator(NamedTuple):
  """A rule with explicit state, as optax's ``GradientTransformation``: ``init(params,
  num_clients) -> state``; ``update(updates, state, *, clients) -> (aggregate, state)``,
  ``clients [K]`` the ids of the rows of ``updates`` (for per-client state)."""
  init: Callable[..., Any]
  update: Callable[..., Any]


def foolsgold_weights(history: jax.Array, *, eps: float = 1e-5) -> jax.Array:
  """FoolsGold's ``[K]`` client weights (Fung, Yoon, Beschastnikh, RAID 2020, Algorithm 1;
  the authors' code) from the ``[K, D]`` aggregated historical updates: cosine similarities
  ``cs`` (diagonal removed), ``v_i = max_j cs_ij``; pardoning ``cs_ij *= v_i / v_j`` where
  ``v_i < v_j``; ``alpha_i = clip(1 - max_j cs_ij, 0, 1)``, divided by its max (1 becomes
  0.99), then the logit ``ln(alpha / (1 - alpha)) + 0.5`` (kappa = 1) clipped to [0, 1]."""
  k = history.shape[0]
  h = history.astype(jnp.promote_types(history.dtype, jnp.float32))
  n = jnp.linalg.norm(h, axis=1)
  u = h / jnp.where(n > 0, n, 1.0)[:, None]
  cs = u @ u.T - jnp.eye(k, dtype=h.dtype)
  maxcs = jnp.max(cs, axis=1) + eps
  pardon = maxcs[:, None] < maxcs[None, :]
  cs = jnp.where(pardon & ~jnp.eye(k, dtype=bool), cs * maxcs[:, None] / maxcs[None, :], cs)
  wv = jnp.clip(1.0 - jnp.max(cs, axis=1), 0.0, 1.0)
  wv = wv / jnp.maximum(jnp.max(wv), jnp.finfo(h.dtype).tiny)
  wv = jnp.where(wv == 1.0, 0.99, wv)
  wv = jnp.log(wv / (1.0 - wv) + eps) + 0.5
  wv = jnp.where(jnp.isinf(wv) | (wv > 1.0), 1.0, wv)
  return jnp.clip(jnp.where(jnp.isnan(wv), 0.0, wv), 0.0, 1.0)


def foolsgold(*, eps: float = 1e-5) -> StatefulAggregator:
  """FoolsGold (Fung, Yoon, Beschastnikh, RAID 2020): clients whose *historical* updates
  are too similar (Sybils pushing one poisoning goal) are down-weighted.

  State: ``[N, D]`` sum of each client's past updates (``init(params, num_clients)``).
  ``update(updates, state, *, clients)`` adds this round's updates to the ``clients``'
  histories, computes :func:`foolsgold_weights` over those histories and returns the
  weighted mean ``sum_i alpha_i u_i / sum_i alpha_i`` (zero if every weight is 0). The
  paper's Algorithm 1 returns the weighted *sum*; the mean keeps the update's scale
  independent of K (a server learning rate absorbs the difference). The optional
  feature-importance weighting of the output layer is not implemented.
  """
  eps = float(_checks.check_float('eps', eps, minimum=0.0, allow_traced=False))

  def init(params, num_clients):
    num_clients = _checks.check_int('num_clients', num_clients, minimum=1)
    d = sum(int(np.prod(jnp.shape(l))) for l in jax.tree_util.tree_leaves(params))
    return jnp.zeros((num_clients, d), jnp.float32)

  def update(updates, state, *, clients):
    k = _num_clients(updates)
    x, unflat = _flat(updates, k)
    clients = jnp.asarray(clients)
    if clients.shape != (k,):
      raise ValueError(f'clients has shape {tuple(clients.shape)}; expected [{k}] (the id '
                       'of each row of updates).')
    if state.shape[1] != x.shape[1]:
      raise ValueError(f'FoolsGold state has {state.shape[1]} coordinates per client; the '
                       f'updates have {x.shape[1]}: init it with the same params.')
    state = state.at[clients].add(x.astype(state.dtype))
    wv = foolsgold_weights(state[clients], eps=eps).astype(x.dtype)
    total = jnp.sum(wv)
    agg = jnp.where(total > 0, wv @ x / jnp.where(total > 0, total, 1.0), 0.0)
    return unflat(agg), state
  return StatefulAggregator(init, update)


def centered_clipping_momentum(*, tau: Any, iters: int = 1) -> StatefulAggregator:
  """:func:`centered_clipping` around the previous round's aggregate (Karimireddy et al.'s
  server rule: the state is the last aggregate, zero at ``init``)."""
  _check_tau(tau)
  iters = _checks.check_int('iters', iters, minimum=1)

  def init(params, num_clients):
    del num_clients
    return jax.tree_util.tree_map(jnp.zeros_like, params)

  def update(updates, state, *, clients=None):
    del clients
    agg = centered_clipping(updates, tau=tau, iters=iters, center=state)
    return agg, agg
  return StatefulAggregator(init, update)


# ------------------------------------------------------------------------------ factory

# name -> (rule, required hyperparameters, optional hyperparameters, checker)
_RULES: dict[str, tuple[Callable, tuple[str, ...], tuple[str, ...], Callable]] = {
    'mean': (mean, (), (), lambda: None),
    'coordinate_median': (coordinate_median, (), (), lambda: None),
    'trimmed_mean': (trimmed_mean, ('trim',), (), lambda trim: _check_trim(trim)),
    'krum': (krum, ('num_byzantine',), ('multi',),
             lambda num_byzantine, multi=1: (_check_f(num_byzantine), _check_multi(multi))),
    'bulyan': (bulyan, ('num_byzantine',), (), lambda num_byzantine: _check_f(num_byzantine)),
    'norm_bounding': (norm_bounding, ('max_norm',), (),
                      lambda max_norm: _check_max_norm(max_norm)),
    'geometric_median': (geometric_median, (), ('iters', 'eps'),
                         lambda iters=50, eps=1e-6: _check_weiszfeld(iters, eps)),
    'fltrust': (fltrust, (), (), lambda: None),
    'centered_clipping': (centered_clipping, ('tau',), ('iters',),
                          lambda tau, iters=1: (_check_tau(tau),
                                                _checks.check_int('iters', iters, minimum=1))),
    'bucketing': (bucketing, ('bucket_size',), ('base',),
                  lambda bucket_size, base='coordinate_median': _check_bucketing(bucket_size,
                                                                                 base)),
    'flame': (flame, (), ('noise_lambda', 'min_cluster_size'),
              lambda noise_lambda=0.001, min_cluster_size=None: _check_flame(
                  noise_lambda, min_cluster_size)),
}

_STATEFUL: dict[str, Callable[..., StatefulAggregator]] = {
    'foolsgold': foolsgold, 'centered_clipping_momentum': centered_clipping_momentum}


def _check_bucketing(bucket_size, base):
  _checks.check_int('bucket_size', bucket_size, minimum=1)
  if isinstance(base, str):
    _checks.check_choice('base', base, _RULES)
  elif not callable(base):
    raise ValueError(f'base={base!r} must be a rule name or a callable updates -> update.')


def aggregator(name: str, **hyperparameters: Any) -> Any:
  """Builds ``fn(updates) -> aggregate`` for the rule ``name``, for sweeps and configs.

  ``name`` is one of ``'mean'``, ``'coordinate_median'``, ``'trimmed_mean'`` (``trim``),
  ``'krum'`` (``num_byzantine``, optional ``multi``), ``'bulyan'`` (``num_byzantine``),
  ``'norm_bounding'`` (``max_norm``), ``'geometric_median'`` (optional ``iters``, ``eps``),
  ``'fltrust'`` (called with ``server_update=``), ``'centered_clipping'`` (``tau``, optional
  ``iters``), ``'bucketing'`` (``bucket_size``, optional ``base``; called with ``key=``),
  ``'flame'`` (optional ``noise_lambda``, ``min_cluster_size``; called with ``key=``).
  ``'foolsgold'`` and ``'centered_clipping_momentum'`` return a :class:`StatefulAggregator`.
  Hyperparameters are checked now; the checks that need the number of clients K (e.g.
  ``K > 2f + 2`` for Krum) run when ``fn`` is first traced. ``fn`` is pure and jittable.

  >>> agg = aggregator('trimmed_mean', trim=1)
  >>> import jax.numpy as jnp
  >>> float(agg({'w': jnp.array([0.0, 1.0, 2.0, 100.0])})['w'])
  1.5
  """
  if name in _STATEFUL:
    return _STATEFUL[name](**hyperparameters)
  _checks.check_choice('name', name, tuple(_RULES) + tuple(_STATEFUL))
  rule, required, optional, checker = _RULES[name]
  unknown = sorted(set(hyperparameters) - set(required) - set(optional))
  if unknown:
    raise ValueError(f'aggregator {name!r} got unknown hyperparameter(s) {unknown}; it takes '
                     f'{list(required + optional) or "none"}.')
  missing = [p for p in required if p not in hyperparameters]
  if missing:
    raise ValueError(f'aggregator {name!r} needs hyperparameter(s) {missing}.')
  checker(**hyperparameters)
  return functools.partial(rule, **hyperparameters)
