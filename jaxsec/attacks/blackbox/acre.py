"""ACRE learning (Lowd & Meek, KDD 2005): minimal-cost evasion of a linear classifier
from membership queries only.

"Adversarial Learning": the adversary has an instance ``x_a`` the classifier labels
positive (1, e.g. spam), one instance ``x_neg`` it labels negative (0), and a cost
``a(x) = sum_i a_i |x_i - x_a_i|``. The *minimal adversarial cost* (MAC) is the least
cost of a negative instance. A classifier family is ACRE k-learnable when a negative
instance of cost ``<= k MAC`` can be found with polynomially many queries ``query_fn(X [m,
n]) -> labels [m]`` (each row counts as one query). For a linear classifier
``c(x) = [w.x + b > 0]`` with ``m = w.x_a + b > 0``:

* Continuous features, L1 cost (:func:`acre_continuous`; their Theorem: ACRE
  (1+eps)-learnable): ``MAC = m min_i a_i / |w_i|``, reached by moving the one feature of
  largest ``|w_i| / a_i``. (1) FIND-WITNESS: a binary search on the path from ``x_a`` to
  ``x_neg`` that changes one feature at a time gives two instances of different labels
  that differ in one feature ``f`` (a sign witness); a bisection along ``f`` brings the pair
  within ``delta * scale`` of each other across the boundary. (2) Signs: moving feature
  ``i`` by ``scale`` from the positive / negative member of the pair flips one of them
  unless ``|w_i| <= delta |w_f|`` (then ``i`` counts as irrelevant). (3) Weights and MAC:
  for every relevant ``i`` a line search from ``x_a`` along ``-sign(w_i) e_i`` (doubling or
  halving from ``scale``, then geometric bisection until ``hi <= (1 + eps) lo``) brackets
  the crossing distance ``d_i = m / |w_i|``; ``1 / d_i`` are the weights ``w_i / m`` up to
  ``(1 + eps)`` (Lowd & Meek's relative weights), and the cheapest ``a_i hi_i`` is the answer,
  of cost ``<= (1 + eps) MAC``.
* Boolean features, uniform cost (Hamming distance; :func:`acre_boolean`; their Theorem:
  ACRE 2-learnable): FIND-WITNESS as above gives a negative instance ``y``; then
  FIND-ADVERSARIAL repeats, until nothing changes, (a) undo each single change of ``y``
  (relative to ``x_a``) that keeps ``y`` negative and (b) replace two changes by one other
  change that keeps ``y`` negative. The local optimum costs ``<= 2 MAC``.

Why host (NumPy) code and not a jitted ``lax`` loop: these are sequential query
algorithms whose next query depends on every previous answer, with data-dependent lengths
(binary searches, improvement passes), run on one instance; the oracle is an arbitrary
black box (an sklearn model in the study). Independent queries (the per-feature line
searches, a pass of candidate moves) are sent as one batch, and the count is that of the
sequential algorithm (a pass is charged up to its first accepted move).

Deliberate differences from the paper:

* Continuous: the weights are bracketed by line searches from ``x_a`` along each feature
  (the crossing distance is ``m / |w_i|``) instead of by line searches along the witness
  feature from points moved along ``i``; the same relative weights, and the MAC feature's
  line search is one of them. ``scale`` (the unit of a feature move) and ``delta`` (the
  smallest relevant weight, relative to ``|w_f|``) are explicit; features are unbounded.
* Boolean: after an accepted replacement, the pass restarts at (a); removals in (a) take
  effect immediately (a pass continues with the updated instance).

Query counts (``ACREResult.queries``, all rows sent, the two checks of ``x_a`` and
``x_neg`` included): continuous ``<= 2 + ceil(log2 n) + ceil(log2(|x_neg_f - x_a_f| /
(delta scale))) + 2 (n - 1) + sum_i (2 + ceil(|log2(d_i / scale)|) +
ceil(log2(ln 2 / ln(1 + eps))))``; boolean ``<= 2 + ceil(log2 n) + (k0 + 1)(k0 +
C(k0, 2)(n - k0))`` for a witness of cost ``k0 <= n``: polynomial in ``n``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxsec import _checks

_CHUNK = 8192          # candidate rows per oracle call in a pass


@dataclasses.dataclass(frozen=True)
class ACREResult:
  """A negative instance ``x`` (label 0), its ``cost`` from ``x_a``, the ``queries`` spent,
  and ``info`` (algorithm-specific)."""
  x: np.ndarray
  cost: float
  queries: int
  info: dict


class _Oracle:
  """Counts the rows sent to ``query_fn`` and checks its answers are 0 / 1 labels."""

  def __init__(self, query_fn: Callable, n: int):
    self.fn, self.n, self.count = query_fn, n, 0

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(rows)
    self.count += rows.shape[0]
    lab = np.asarray(self.fn(rows)).reshape(-1)
    if lab.shape[0] != rows.shape[0] or not np.all((lab == 0) | (lab == 1)):
      raise ValueError(f'query_fn must return one 0/1 label per row; got {lab!r} for '
                       f'{rows.shape[0]} rows.')
    return lab.astype(np.int64)

  def first_negative(self, rows: np.ndarray) -> int | None:
    """Sends ``rows`` in order, charging up to and including the first negative one (its
    index; None if none: all charged)."""
    for s in range(0, rows.shape[0], _CHUNK):
      lab = np.asarray(self.fn(rows[s:s + _CHUNK])).reshape(-1)
      hit = np.flatnonzero(lab == 0)
      if hit.size:
        self.count += int(hit[0]) + 1
        return s + int(hit[0])
      self.count += lab.shape[0]
    return None


def _check_pair(x_a, x_neg, boolean: bool):
  x_a = _checks.check_array('x_a', np.asarray(x_a, np.float64), ndim=1, finite=True)
  x_neg = _checks.check_array('x_neg', np.asarray(x_neg, np.float64), ndim=1, finite=True)
  if x_a.shape != x_neg.shape or x_a.size == 0:
    raise ValueError(f'x_a has shape {x_a.shape} and x_neg {x_neg.shape}; expected equal, '
                     'non-empty [n].')
  if boolean:
    for name, v in (('x_a', x_a), ('x_neg', x_neg)):
      if not np.all((v == 0) | (v == 1)):
        raise ValueError(f'{name} has values {np.unique(v)[:5]}; boolean features are 0 / 1.')
  return x_a, x_neg


def _start(oracle, x_a, x_neg):
  lab = oracle(np.stack([x_a, x_neg]))
  if lab[0] != 1 or lab[1] != 0:
    raise ValueError(f'query_fn labels x_a {lab[0]} and x_neg {lab[1]}; ACRE needs x_a '
                     'positive (1) and x_neg negative (0).')


def find_witness(oracle: Callable, x_a: np.ndarray, x_neg: np.ndarray):
  """FIND-WITNESS by binary search on the path ``z_k`` (``x_a`` with its first ``k``
  differing features set to ``x_neg``'s): ``(z_pos, z_neg, f)``, adjacent instances of
  labels 1 and 0 that differ in feature ``f`` only (``ceil(log2 n)`` queries at most)."""
  diff = np.flatnonzero(x_a != x_neg)
  lo, hi = 0, diff.size                         # label(z_lo) = 1, label(z_hi) = 0

  def z(k):
    out = x_a.copy()
    out[diff[:k]] = x_neg[diff[:k]]
    return out
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if oracle(z(mid)[None])[0] == 1:
      lo = mid
    else:
      hi = mid
  return z(lo), z(hi), int(diff[hi - 1])


def acre_continuous(query_fn: Callable, x_a, x_neg, *, cost_weights=None, eps=0.1,
                    delta=1e-6, scale=1.0, max_halvings: int = 200) -> ACREResult:
  """(1 + eps)-approximate minimal L1-cost evasion of a linear classifier, continuous
  features (Lowd & Meek 2005); see the module docstring.

  Args:
    query_fn: membership oracle ``X [m, n] -> labels [m]`` (1 positive, 0 negative).
    x_a: the adversary's instance ``[n]`` (labelled 1).
    x_neg: any instance labelled 0 ``[n]``.
    cost_weights: ``a_i > 0`` ``[n]`` of the cost ``sum_i a_i |x_i - x_a_i|`` (None: 1).
    eps: approximation slack (> 0): the cost found is ``<= (1 + eps) MAC``.
    delta: weights ``|w_i| <= delta |w_f|`` (``f`` the witness feature) count as zero.
    scale: the unit of a feature move (> 0): the sign probes move by it, the line searches
      start at it.
    max_halvings: cap on doublings / halvings of one line search (a feature whose search
      hits it is dropped).

  Returns:
    ``ACREResult``; info: ``feature`` (the one moved), ``witness_feature``,
    ``weights`` (``w / (w.x_a + b)`` estimated, 0 for irrelevant features; exact up to
    ``(1 + eps)``), ``distance_bracket`` (``[n, 2]``, the brackets of ``d_i``), ``signs``.
  """
  x_a, x_neg = _check_pair(x_a, x_neg, boolean=False)
  n = x_a.size
  a = np.ones(n) if cost_weights is None else np.asarray(cost_weights, np.float64)
  if a.shape != (n,) or not np.all(np.isfinite(a)) or not np.all(a > 0):
    raise ValueError(f'cost_weights={cost_weights!r} must be {n} finite values > 0.')
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  _checks.check_float('delta', delta, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  _checks.check_float('scale', scale, minimum=0.0, strict_min=True)
  _checks.check_counts(max_halvings=max_halvings)
  oracle = _Oracle(query_fn, n)
  _start(oracle, x_a, x_neg)

  # (1) Sign witness, then bisection along f to a gap <= delta * scale.
  p1, p0, f = find_witness(oracle, x_a, x_neg)
  lo_f, hi_f = p1[f], p0[f]
  while abs(hi_f - lo_f) > delta * scale:
    mid = 0.5 * (lo_f + hi_f)
    z = p1.copy()
    z[f] = mid
    if oracle(z[None])[0] == 1:
      lo_f = mid
    else:
      hi_f = mid
  p1[f], p0[f] = lo_f, hi_f
  # (2) Signs of the weights: sigma_i = the direction of feature i that lowers w.x.
  sigma = np.zeros(n)
  sigma[f] = np.sign(hi_f - lo_f)
  others = np.array([i for i in range(n) if i != f], dtype=np.int64)
  if others.size:
    e = np.eye(n)[others] * scale
    lab = oracle(np.concatenate([p1[None] + e, p0[None] + e]))
    pos_flip, neg_flip = lab[:others.size] == 0, lab[others.size:] == 1
    sigma[others] = np.where(pos_flip, 1.0, np.where(neg_flip, -1.0, 0.0))
  # (3) Line searches from x_a along sigma_i e_i for every relevant feature, in parallel.
  rel = np.flatnonzero(sigma != 0)
  k = rel.size
  eye = np.eye(n)[rel]
  probe = lambda d: oracle(x_a[None] + (sigma[rel] * d)[:, None] * eye)  # noqa: E731
  d = np.full(k, float(scale))
  first = probe(d)
  lo = np.where(first == 1, d, 0.0)
  hi = np.where(first == 0, d, np.inf)
  alive = np.ones(k, bool)
  for _ in range(max_halvings):
    todo = alive & ((lo == 0) | np.isinf(hi))
    if not todo.any():
      break
    idx = np.flatnonzero(todo)
    dd = np.where(np.isinf(hi[idx]), 2 * lo[idx], 0.5 * hi[idx])
    lab = oracle(x_a[None] + (sigma[rel[idx]] * dd)[:, None] * eye[idx])
    lo[idx] = np.where(lab == 1, dd, lo[idx])
    hi[idx] = np.where(lab == 0, dd, hi[idx])
  alive &= (lo > 0) & np.isfinite(hi)
  while True:
    todo = alive & (hi > (1 + eps) * lo)
    if not todo.any():
      break
    idx = np.flatnonzero(todo)
    dd = np.sqrt(lo[idx] * hi[idx])
    lab = oracle(x_a[None] + (sigma[rel[idx]] * dd)[:, None] * eye[idx])
    lo[idx] = np.where(lab == 1, dd, lo[idx])
    hi[idx] = np.where(lab == 0, dd, hi[idx])
  if not alive.any():
    raise ValueError('no feature moves x_a across the boundary within '
                     f'max_halvings={max_halvings} doublings of scale={scale}.')
  costs = np.where(alive, a[rel] * hi, np.inf)
  j = int(np.argmin(costs))
  x = x_a.copy()
  x[rel[j]] += sigma[rel[j]] * hi[j]
  weights = np.zeros(n)
  weights[rel[alive]] = -sigma[rel[alive]] / np.sqrt(lo[alive] * hi[alive])
  bracket = np.full((n, 2), np.nan)
  bracket[rel, 0], bracket[rel, 1] = lo, hi
  return ACREResult(x, float(costs[j]), oracle.count,
                    {'feature': int(rel[j]), 'witness_feature': f, 'weights': weights,
                     'distance_bracket': bracket, 'signs': sigma})


def acre_boolean(query_fn: Callable, x_a, x_neg, *, max_rounds: int | None = None
                 ) -> ACREResult:
  """2-approximate minimal Hamming-cost evasion of a linear classifier on boolean features
  (Lowd & Meek 2005, FIND-WITNESS + FIND-ADVERSARIAL); see the module docstring.

  Args:
    query_fn: membership oracle ``X [m, n] -> labels [m]`` (1 positive, 0 negative).
    x_a: the adversary's 0/1 instance ``[n]`` (labelled 1).
    x_neg: any 0/1 instance labelled 0.
    max_rounds: cap on improvement rounds (None: ``n + 1``, which a local search that lowers
      the cost by one per round cannot exceed).

  Returns:
    ``ACREResult`` (``cost`` = features changed); info: ``initial_cost`` (of the witness),
    ``rounds``, ``removals``, ``replacements``, ``changed`` (the changed features).
  """
  x_a, x_neg = _check_pair(x_a, x_neg, boolean=True)
  n = x_a.size
  if max_rounds is None:
    max_rounds = n + 1
  _checks.check_counts(max_rounds=max_rounds)
  oracle = _Oracle(query_fn, n)
  _start(oracle, x_a, x_neg)
  _, y, _ = find_witness(oracle, x_a, x_neg)
  k0 = int(np.sum(y != x_a))
  removals = replacements = rounds = 0
  while rounds < max_rounds:
    rounds += 1
    changed = False
    # (a) Undo single changes, in order, each on the current y.
    start = 0
    while True:
      c = np.flatnonzero(y != x_a)
      c = c[c >= start]
      if c.size == 0:
        break
      cand = np.repeat(y[None], c.size, axis=0)
      cand[np.arange(c.size), c] = x_a[c]
      hit = oracle.first_negative(cand)
      if hit is None:
        break
      y = cand[hit]
      removals += 1
      changed = True
      start = int(c[hit]) + 1
    # (b) Replace two changes f1 < f2 by one unchanged g (first in lexicographic order).
    c = np.flatnonzero(y != x_a)
    u = np.flatnonzero(y == x_a)
    if c.size >= 2 and u.size:
      f1, f2 = np.triu_indices(c.size, 1)
      pairs = np.stack([c[f1], c[f2]], 1)
      for s in range(0, pairs.shape[0], max(1, _CHUNK // u.size)):
        blk = pairs[s:s + max(1, _CHUNK // u.size)]
        m = blk.shape[0] * u.size
        cand = np.repeat(y[None], m, axis=0)
        rows = np.arange(m)
        p = np.repeat(blk, u.size, axis=0)
        g = np.tile(u, blk.shape[0])
        cand[rows, p[:, 0]] = x_a[p[:, 0]]
        cand[rows, p[:, 1]] = x_a[p[:, 1]]
        cand[rows, g] = 1 - x_a[g]
        hit = oracle.first_negative(cand)
        if hit is not None:
          y = cand[hit]
          replacements += 1
          changed = True
          break
    if not changed:
      break
  changed_f = np.flatnonzero(y != x_a)
  return ACREResult(y, float(changed_f.size), oracle.count,
                    {'initial_cost': k0, 'rounds': rounds, 'removals': removals,
                     'replacements': replacements, 'changed': changed_f.tolist()})


def minimal_cost_continuous(w, b, x_a, cost_weights=None) -> float:
  """Closed form: ``(w.x_a + b) min_i a_i / |w_i|`` (unbounded continuous features)."""
  w = np.asarray(w, np.float64)
  a = np.ones_like(w) if cost_weights is None else np.asarray(cost_weights, np.float64)
  m = float(w @ np.asarray(x_a, np.float64) + b)
  with np.errstate(divide='ignore'):
    return m * float(np.min(np.where(w != 0, a / np.abs(w), np.inf)))


def minimal_cost_boolean(w, b, x_a) -> int:
  """Closed form: flip the features of most negative score change ``w_i (1 - 2 x_a_i)``
  in order until ``w.x + b <= 0`` (each feature flips at most once; a greedy prefix is
  optimal). Returns the number of flips (``-1``: no flip set reaches the boundary)."""
  w, x_a = np.asarray(w, np.float64), np.asarray(x_a, np.float64)
  m = float(w @ x_a + b)
  gains = np.sort(w * (1 - 2 * x_a))
  if m <= 0:
    return 0
  total = m + np.cumsum(gains)
  hit = np.flatnonzero(total <= 0)
  return int(hit[0]) + 1 if hit.size else -1
