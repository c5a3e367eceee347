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
* :func:`aggregator` -- ``aggregator(name, **hyperparameters) -> fn(updates)`` for sweeps.

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
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks

__all__ = ['mean', 'coordinate_median', 'trimmed_mean', 'krum', 'krum_scores', 'bulyan',
           'bulyan_selection', 'norm_bounding', 'geometric_median', 'aggregator',
           'trim_count', 'pairwise_sq_distances']


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
}


def aggregator(name: str, **hyperparameters: Any) -> Callable[[Any], Any]:
  """Builds ``fn(updates) -> aggregate`` for the rule ``name``, for sweeps and configs.

  ``name`` is one of ``'mean'``, ``'coordinate_median'``, ``'trimmed_mean'`` (``trim``),
  ``'krum'`` (``num_byzantine``, optional ``multi``), ``'bulyan'`` (``num_byzantine``),
  ``'norm_bounding'`` (``max_norm``), ``'geometric_median'`` (optional ``iters``, ``eps``).
  Hyperparameters are checked now; the checks that need the number of clients K (e.g.
  ``K > 2f + 2`` for Krum) run when ``fn`` is first traced. ``fn`` is pure and jittable.

  >>> agg = aggregator('trimmed_mean', trim=1)
  >>> import jax.numpy as jnp
  >>> float(agg({'w': jnp.array([0.0, 1.0, 2.0, 100.0])})['w'])
  1.5
  """
  _checks.check_choice('name', name, _RULES)
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
