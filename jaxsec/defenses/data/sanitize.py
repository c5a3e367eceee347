"""Training-data sanitisation: each defense maps a data set to a boolean *keep-mask*.

* :func:`sphere`, :func:`slab` -- distance to the class centroid and along the direction
  between class centroids (Steinhardt, Koh, Liang, NeurIPS 2017, "Certified defenses for
  data poisoning attacks").
* :func:`knn_label_sanitize` / :func:`knn_relabel` -- k-NN label sanitisation (Paudice,
  Munoz-Gonzalez, Lupu, 2018).
* :func:`roni` -- Reject On Negative Impact (Nelson et al. 2008; Barreno et al. 2010).
* :func:`spectral_signatures` -- Tran, Li, Madry (NeurIPS 2018); :func:`robust_pca` --
  iteratively trimmed PCA residuals, in the spirit of ANTIDOTE (Rubinstein et al. 2009).
* :func:`empirical_mean_test` -- the empirical-mean drift test for online data that Kloft
  and Laskov propose against centroid poisoning (survey section 2.3).
* :func:`noise_augment` -- input-space regularisation by noise-injection augmentation, the
  survey's section 3.1(1) (a data transformation, not a mask).

:func:`precision_recall` scores a keep-mask against the known poison rows
(``PoisonOutput.info['poison_mask']``). Removal fractions are per class where labels are
used: each class of ``n_k`` points loses exactly its ``round(fraction * n_k)`` highest
scores.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxsec import _checks


def _flat(x):
  return x.reshape((x.shape[0], -1))


def _check_xy(x, y, num_classes):
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  if x.ndim < 2:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected [n, features...].')
  _checks.check_labels('y', y, num_classes=num_classes, batch=x.shape[0])


def _check_removal(fraction):
  return float(_checks.check_float('fraction', fraction, minimum=0.0, maximum=1.0,
                                   strict_max=True, allow_traced=False))


def precision_recall(keep_mask, poison_mask) -> dict:
  """Precision and recall of the *removed* set against the known poison.

  Returns a dict: ``precision`` = poison among removed / removed (1.0 if nothing removed),
  ``recall`` = poison removed / poison (1.0 if there is no poison), ``removed``,
  ``poison_removed``, ``clean_removed``, ``num_poison``.
  """
  keep = np.asarray(keep_mask, bool)
  poison = np.asarray(poison_mask, bool)
  if keep.shape != poison.shape or keep.ndim != 1:
    raise ValueError(f'keep_mask {keep.shape} and poison_mask {poison.shape} must be equal '
                     f'1-D shapes.')
  removed = ~keep
  tp = int(np.sum(removed & poison))
  nr, npz = int(removed.sum()), int(poison.sum())
  return {'precision': tp / nr if nr else 1.0, 'recall': tp / npz if npz else 1.0,
          'removed': nr, 'poison_removed': tp, 'clean_removed': nr - tp, 'num_poison': npz}


def class_centroids(x, y, num_classes: int) -> jax.Array:
  """Class means ``[K, d]`` of flattened inputs (zero for an empty class)."""
  xf = _flat(x)
  onehot = jax.nn.one_hot(y, num_classes, dtype=xf.dtype)
  counts = jnp.maximum(onehot.sum(0), 1.0)
  return (onehot.T @ xf) / counts[:, None]


def _keep_by_class_quantile(score, y, num_classes, fraction):
  """Drops, in each class ``k`` of ``n_k`` points, the ``round(fraction * n_k)`` points with
  the highest score (ties: the lower index is dropped first); keeps the rest."""
  if fraction == 0.0:
    return jnp.ones(score.shape, bool)
  n = score.shape[0]
  order = jnp.lexsort((jnp.arange(n), -score, y))   # by class, then score descending
  counts = jnp.bincount(y, length=num_classes)
  starts = jnp.cumsum(counts) - counts
  ys = y[order]
  rank_sorted = jnp.arange(n) - starts[ys]
  drop_sorted = rank_sorted < jnp.round(fraction * counts[ys])
  return ~jnp.zeros((n,), bool).at[order].set(drop_sorted)


def sphere(x, y, *, num_classes: int, fraction: float | None = None,
           radius: float | None = None, centroids=None) -> jax.Array:
  """Sphere defense: drop points far from their class centroid ``||x - mu_y||``.

  Exactly one of ``fraction`` (drop the farthest ``fraction`` of each class) and ``radius``
  (drop points with distance > radius). ``centroids`` [K, d] default to the class means of
  the (possibly poisoned) data; Steinhardt et al.'s oracle defender passes clean ones.
  """
  num_classes = _checks.check_int('num_classes', num_classes, minimum=1)
  _check_xy(x, y, num_classes)
  if (fraction is None) == (radius is None):
    raise ValueError(f'Give exactly one of fraction={fraction!r} and radius={radius!r}.')
  mu = class_centroids(x, y, num_classes) if centroids is None else jnp.asarray(centroids)
  dist = jnp.linalg.norm(_flat(x) - mu[y], axis=1)
  if radius is not None:
    return dist <= _checks.check_positive('radius', radius)
  return _keep_by_class_quantile(dist, y, num_classes, _check_removal(fraction))


def slab(x, y, *, num_classes: int, fraction: float, centroids=None) -> jax.Array:
  """Slab defense: drop points far from the class centroid *along* the class direction.

  Score ``|<x - mu_y, v_y>| / ||v_y||`` with ``v_y = mu_y - mean_{k != y} mu_k`` (for two
  classes, ``+-(mu_1 - mu_0)``: Steinhardt et al.'s slab). The top ``fraction`` of each
  class is dropped.
  """
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  _check_xy(x, y, num_classes)
  fraction = _check_removal(fraction)
  mu = class_centroids(x, y, num_classes) if centroids is None else jnp.asarray(centroids)
  others = (jnp.sum(mu, 0)[None] - mu) / (num_classes - 1)
  v = mu - others
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-12)
  score = jnp.abs(jnp.sum((_flat(x) - mu[y]) * v[y], axis=1))
  return _keep_by_class_quantile(score, y, num_classes, fraction)


def _knn_votes(x, y, k, num_classes, block=256):
  """Label histogram [n, K] of each point's k nearest neighbours (itself excluded)."""
  xf = _flat(x)
  n = xf.shape[0]
  sq = jnp.sum(xf * xf, axis=1)
  pad = (-n) % block
  idx = jnp.arange(n + pad).reshape((-1, block))

  def one_block(rows):
    xr = xf[jnp.minimum(rows, n - 1)]
    d = sq[jnp.minimum(rows, n - 1)][:, None] - 2.0 * xr @ xf.T + sq[None, :]
    d = jnp.where(rows[:, None] == jnp.arange(n)[None, :], jnp.inf, d)
    _, nb = jax.lax.top_k(-d, k)
    return jax.nn.one_hot(y[nb], num_classes).sum(1)

  votes = jax.lax.map(one_block, idx).reshape((-1, num_classes))
  return votes[:n]


def knn_relabel(x, y, *, num_classes: int, k: int = 10, eta: float = 0.5) -> jax.Array:
  """Paudice et al. (2018): relabel a point to its k-NN majority label when that label's
  share of the ``k`` neighbours is ``>= eta``; otherwise keep its label. Returns ``y'``."""
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  _check_xy(x, y, num_classes)
  k = _checks.check_int('k', k, minimum=1, maximum=x.shape[0] - 1)
  eta = _checks.check_probability('eta', eta)
  votes = _knn_votes(x, y, k, num_classes)
  maj = jnp.argmax(votes, axis=1).astype(y.dtype)
  conf = jnp.max(votes, axis=1) / k
  return jnp.where(conf >= eta, maj, y)


def knn_label_sanitize(x, y, *, num_classes: int, k: int = 10, eta: float = 0.5
                       ) -> jax.Array:
  """Keep-mask form of :func:`knn_relabel`: drop the points it would relabel."""
  return knn_relabel(x, y, num_classes=num_classes, k=k, eta=eta) == y


def roni(x, y, *, train_fn: Callable[[jax.Array, jax.Array, jax.Array], Any],
         score_fn: Callable[[Any, jax.Array, jax.Array], jax.Array], x_val, y_val,
         key: jax.Array, base_size: int = 50, num_trials: int = 5,
         threshold: float | None = None, fraction: float | None = None,
         batch_size: int = 64, return_impact: bool = False):
  """Reject On Negative Impact (Nelson et al. 2008).

  For every candidate ``i`` and each of ``num_trials`` random base sets ``T`` of
  ``base_size`` points drawn from the data, the impact is
  ``score(train(T u {i})) - score(train(T))`` on ``(x_val, y_val)`` (higher score =
  better, e.g. accuracy or minus the loss). Candidates whose mean impact is below
  ``-threshold`` (default 0: any negative impact) are rejected, or (with ``fraction``)
  the ``fraction`` most harmful ones.
  All candidates of one trial train in one ``vmap`` (in chunks of ``batch_size``).

  Returns: keep-mask [n] (and the mean impact [n] with ``return_impact``).
  """
  _check_xy(x, y, None)
  base_size = _checks.check_int('base_size', base_size, minimum=1, maximum=x.shape[0])
  num_trials = _checks.check_int('num_trials', num_trials, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  if threshold is not None and fraction is not None:
    raise ValueError(f'Give at most one of threshold={threshold!r} and '
                     f'fraction={fraction!r}.')
  if fraction is None:
    threshold = 0.0 if threshold is None else threshold
    threshold = float(_checks.check_float('threshold', threshold, allow_traced=False))
  else:
    fraction = _check_removal(fraction)
  n = x.shape[0]
  pad = (-n) % batch_size
  cand = jnp.arange(n + pad).reshape((-1, batch_size))

  @jax.jit
  def trial(k):
    k_base, k_train = jax.random.split(k)
    base = jax.random.choice(k_base, n, (base_size,), replace=False)
    xb, yb = x[base], y[base]
    s0 = score_fn(train_fn(xb, yb, k_train), x_val, y_val)

    def with_point(i):
      i = jnp.minimum(i, n - 1)
      xa = jnp.concatenate([xb, x[i][None]])
      ya = jnp.concatenate([yb, y[i][None]])
      return score_fn(train_fn(xa, ya, k_train), x_val, y_val) - s0
    return jax.lax.map(jax.vmap(with_point), cand).reshape(-1)[:n]

  impact = jnp.mean(jnp.stack([trial(k) for k in jax.random.split(key, num_trials)]), 0)
  if threshold is not None:
    keep = impact >= -threshold
  else:
    keep = _keep_by_class_quantile(-impact, jnp.zeros((n,), jnp.int32), 1, fraction)
  return (keep, impact) if return_impact else keep


def _top_direction_scores(r, w):
  """Squared projection on the top principal direction of the rows with weight ``w``."""
  cnt = jnp.maximum(w.sum(), 1.0)
  mu = (w[:, None] * r).sum(0) / cnt
  c = r - mu
  cov = (w[:, None] * c).T @ c / cnt
  _, vecs = jnp.linalg.eigh(cov)
  return (c @ vecs[:, -1]) ** 2


def spectral_signature_scores(features, y, *, num_classes: int) -> jax.Array:
  """Tran, Li, Madry (2018)'s outlier score ``[n]``: per class, ``<r - mu, v>^2`` with ``v``
  the top singular vector of the class's centred representations (larger = more likely
  poison; a ranking for ROC curves). :func:`spectral_signatures` thresholds it per class."""
  num_classes = _checks.check_int('num_classes', num_classes, minimum=1)
  _check_xy(features, y, num_classes)
  r = _flat(features)

  def per_class(k):
    return jnp.where(y == k, _top_direction_scores(r, (y == k).astype(r.dtype)), 0.0)
  return jax.lax.map(per_class, jnp.arange(num_classes)).sum(0)


def spectral_signatures(features, y, *, num_classes: int, fraction: float) -> jax.Array:
  """Tran, Li, Madry (2018): per class, centre the representations, take the top singular
  vector ``v`` and score ``<r - mu, v>^2`` (:func:`spectral_signature_scores`); drop the top
  ``fraction`` of each class (the paper removes ``1.5 eps`` for a poison rate ``eps``).

  Args:
    features: [n, k] learned representations (e.g. a penultimate layer) or raw inputs.
  """
  fraction = _check_removal(fraction)
  score = spectral_signature_scores(features, y, num_classes=num_classes)
  return _keep_by_class_quantile(score, y, num_classes, fraction)


def robust_pca(x, y=None, *, fraction: float, rank: int = 5, num_iters: int = 5,
               num_classes: int | None = None) -> jax.Array:
  """Iteratively trimmed PCA residuals (ANTIDOTE-like, Rubinstein et al. 2009, in spirit).

  Fits a rank-``rank`` PCA subspace, drops the ``fraction`` of points with the largest
  residual ``||(I - U U^T)(x - mu)||``, refits on the rest, ``num_iters`` times; the final
  mask drops the ``fraction`` largest residuals under the robust fit. Done per class when
  ``y`` and ``num_classes`` are given, over all points otherwise. (ANTIDOTE proper uses a
  PCA-GRID projection pursuit with a MAD scale and a Laplace threshold.)
  """
  fraction = _check_removal(fraction)
  rank = _checks.check_int('rank', rank, minimum=1)
  num_iters = _checks.check_int('num_iters', num_iters, minimum=1)
  if y is None:
    y = jnp.zeros((x.shape[0],), jnp.int32)
    num_classes = 1
  if num_classes is None:
    raise ValueError('Give num_classes with y.')
  _check_xy(x, y, num_classes)
  xf = _flat(x)
  if rank >= xf.shape[1]:
    raise ValueError(f'rank={rank} must be below the feature dimension {xf.shape[1]}.')

  def residual(w):
    cnt = jnp.maximum(w.sum(), 1.0)
    mu = (w[:, None] * xf).sum(0) / cnt
    c = xf - mu
    cov = (w[:, None] * c).T @ c / cnt
    _, vecs = jnp.linalg.eigh(cov)
    u = vecs[:, -rank:]
    return jnp.linalg.norm(c - (c @ u) @ u.T, axis=1)

  def per_class(k):
    member = (y == k)
    w = member.astype(xf.dtype)
    for _ in range(num_iters):
      res = residual(w)
      thr = jnp.nanquantile(jnp.where(member, res, jnp.nan), 1.0 - fraction,
                            method='higher')
      w = (member & (res <= thr)).astype(xf.dtype)
    return jnp.where(member, residual(w), 0.0)

  score = jax.lax.map(per_class, jnp.arange(num_classes)).sum(0)
  return _keep_by_class_quantile(score, y, num_classes, fraction)


def empirical_mean_test(x, *, reference_size: int, window: int, alpha: float = 0.01
                        ) -> jax.Array:
  """Empirical-mean drift test for a data stream (Kloft and Laskov's defense, sketched in
  the survey: detect poisoning by the shift it causes in the empirical mean).

  The first ``r = reference_size`` rows are trusted and give the mean ``mu`` and the
  sample covariance ``S`` (``r - 1`` degrees of freedom). For each later row ``t`` the
  window is the ``k_t = min(window, t - r + 1)`` most recent *post-reference* rows, and the
  statistic is the two-sample Hotelling distance of its mean ``m_t`` from ``mu``:

    ``T2_t = (m_t - mu)^T S^{-1} (m_t - mu) / (1/k_t + 1/r)``,

  which accounts for the estimation error of ``mu`` (the ``1/r`` term) and of ``S``. Row
  ``t`` is dropped when ``(r - d) / (d (r - 1)) T2_t`` exceeds the ``1 - alpha`` quantile
  of ``F(d, r - d)`` (``d`` the dimension; scipy gives the quantile).

  Guarantee: for i.i.d. Gaussian data (reference and stream from one distribution) each
  row's statistic is exactly ``F(d, r - d)`` distributed (window and reference are
  disjoint, ``S`` is independent of both means), so each clean row is dropped with
  probability exactly ``alpha``, for every window size. For other distributions the
  level is asymptotic in ``window`` (CLT) and ``r``. Needs ``r > d``; ``alpha`` must be a
  concrete float. The reference rows are kept.
  """
  _checks.check_array('x', x, ndim=2, dtype_kind='f', finite=True)
  n, d = x.shape
  reference_size = _checks.check_int('reference_size', reference_size, minimum=2,
                                     maximum=n)
  if reference_size <= d:
    raise ValueError(f'reference_size={reference_size} must exceed the dimension {d} '
                     '(the test needs an invertible reference covariance).')
  window = _checks.check_int('window', window, minimum=1)
  alpha = _checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0, strict_min=True,
                              strict_max=True, allow_traced=False)
  r = reference_size
  thr = float(stats.f.ppf(1.0 - float(alpha), d, r - d)) * d * (r - 1) / (r - d)
  ref = x[:r]
  mu = jnp.mean(ref, axis=0)
  cov = (ref - mu).T @ (ref - mu) / (r - 1)
  csum = jnp.concatenate([jnp.zeros((1, d), x.dtype), jnp.cumsum(x, axis=0)])
  t = jnp.arange(n)
  lo = jnp.clip(t - window + 1, r, None)
  k = jnp.maximum(t + 1 - lo, 1).astype(x.dtype)
  diff = (csum[jnp.maximum(t + 1, lo)] - csum[lo]) / k[:, None] - mu
  t2 = jnp.sum(diff * jnp.linalg.solve(cov, diff.T).T, axis=1) / (1.0 / k + 1.0 / r)
  return (t < r) | (t2 <= thr)


def noise_augment(x, y, key: jax.Array, *, sigma: float, copies: int = 1,
                  bounds: tuple[float, float] | None = None):
  """Input-space regularisation by noise injection: appends ``copies`` Gaussian-noised
  copies (std ``sigma``) of the data with the same labels; size ``n (1 + copies)``."""
  _check_xy(x, y, None)
  sigma = _checks.check_positive('sigma', sigma, allow_zero=True)
  copies = _checks.check_int('copies', copies, minimum=0)
  noisy = x[None] + sigma * jax.random.normal(key, (copies,) + x.shape, x.dtype)
  if bounds is not None:
    lo, hi = _checks.check_bounds(bounds)
    noisy = jnp.clip(noisy, lo, hi)
  return (jnp.concatenate([x, noisy.reshape((-1,) + x.shape[1:])]),
          jnp.concatenate([y] + [y] * copies))
