"""Activation clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy &
Srivastava, "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
SafeAI @ AAAI 2019, arXiv:1811.03728).

A backdoored model learns the trigger as its own reason to predict the target class, so the
penultimate activations of the poisoned points of that class form a separate group from the
clean ones. Per class (by the training label): reduce the activations to ``num_dims``
dimensions (ICA as in the paper, or PCA), split them with 2-means, and call a cluster
poisonous by one of the paper's criteria:

* ``'relative_size'`` (paper Sec. 4, ART's default threshold): a cluster holding less than
  ``size_threshold`` (0.35) of its class is poison;
* ``'silhouette'``: as ``'relative_size'``, and only where the 2-means split fits the class
  (``silhouette_score >= silhouette_threshold``, ART's 0.1); a clean class splits poorly;
* ``'smaller'``: the smaller cluster of every class is poison (ART's ``'smaller'``).

:func:`activation_clusters` returns the clusters, the poison call and a per-point *score*
(one minus the relative size of the point's cluster in its class) for ROC curves;
:func:`activation_clustering` is the data defense, ``(features, y) -> keep-mask``.

Follows ART's ``ActivationDefence`` (``art/defences/detector/poison/activation_defence.py``
with ``clustering_analyzer.py``): FastICA to 10 components, ``KMeans(n_clusters=2)``, the
analyzers above with ART's thresholds and rounding of the relative sizes to two decimals.
Deviations: the paper's and ART's exclusionary reclassification (retrain without a
cluster and see where its points go) is not offered; activations are centred and scaled to
unit variance per class before the reduction (sklearn's ``FastICA`` whitens; PCA here gets
the same standardisation, so large-magnitude units do not dominate); a class too small to
reduce (fewer than ``num_dims + 2`` points) is left unflagged. Clustering, ICA / PCA and
the silhouette come from scikit-learn, seeded by ``seed``: the result is deterministic.
"""
from __future__ import annotations

import numpy as np

from jaxsec import _checks

_CRITERIA = ('relative_size', 'silhouette', 'smaller')
_REDUCTIONS = ('ica', 'pca')


def _reduce(a, num_dims, reduce, seed):
  from sklearn.decomposition import PCA, FastICA  # pylint: disable=import-outside-toplevel
  a = (a - a.mean(0)) / (a.std(0) + 1e-8)
  k = min(num_dims, a.shape[1])
  if reduce == 'pca':
    return PCA(n_components=k, random_state=seed).fit_transform(a)
  return FastICA(n_components=k, max_iter=1000, tol=0.005, whiten='unit-variance',
                 random_state=seed).fit_transform(a)


def activation_clusters(features, y, *, num_classes: int, num_dims: int = 10,
                        reduce: str = 'ica', criterion: str = 'relative_size',
                        size_threshold: float = 0.35, silhouette_threshold: float = 0.1,
                        seed: int = 0) -> dict:
  """Per-class 2-means on reduced activations; see the module docstring for the method.

  Args:
    features: ``[n, d]`` (or ``[n, ...]``, flattened) penultimate activations of the
      training points under the model trained on them (``models.feature_fn``).
    y: ``[n]`` training labels (the possibly poisoned ones).
    num_classes: number of classes ``K``.
    num_dims: components kept by the reduction (paper and ART: 10).
    reduce: ``'ica'`` (paper) or ``'pca'``.
    criterion: ``'relative_size'``, ``'silhouette'`` or ``'smaller'``.
    size_threshold, silhouette_threshold: the criteria's thresholds (ART's 0.35 and 0.1).
    seed: seeds FastICA / PCA and KMeans.

  Returns:
    dict with ``poison`` (bool ``[n]``, the points of the clusters called poisonous),
    ``score`` (float ``[n]``: ``1 - relative size`` of the point's cluster within its class,
    so a point of a small cluster scores high; a ranking for ROC curves that does not depend
    on the criterion), ``cluster`` (int ``[n]``, 0 or 1 within the class), and per class
    ``relative_size`` (``[K, 2]``), ``silhouette`` (``[K]``, NaN where not computed) and
    ``flagged`` (bool ``[K]``, a cluster of that class was called poisonous).
  """
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
  from sklearn.metrics import silhouette_score  # pylint: disable=import-outside-toplevel
  num_classes = _checks.check_int('num_classes', num_classes, minimum=1)
  num_dims = _checks.check_int('num_dims', num_dims, minimum=1)
  seed = _checks.check_int('seed', seed, minimum=0)
  _checks.check_choice('reduce', reduce, _REDUCTIONS)
  _checks.check_choice('criterion', criterion, _CRITERIA)
  size_threshold = float(_checks.check_float('size_threshold', size_threshold, minimum=0.0,
                                             maximum=1.0, allow_traced=False))
  silhouette_threshold = float(_checks.check_float(
      'silhouette_threshold', silhouette_threshold, minimum=-1.0, maximum=1.0,
      allow_traced=False))
  a = np.asarray(features, np.float64)
  if a.ndim < 2 or a.shape[0] == 0:
    raise ValueError(f'features has shape {a.shape}; expected [n, d] with n > 0.')
  a = a.reshape(a.shape[0], -1)
  if not np.all(np.isfinite(a)):
    raise ValueError('features has non-finite values.')
  _checks.check_labels('y', y, num_classes=num_classes, batch=a.shape[0])
  y = np.asarray(y)
  n = a.shape[0]
  poison = np.zeros(n, bool)
  score = np.zeros(n)
  cluster = np.zeros(n, np.int32)
  rel = np.zeros((num_classes, 2))
  sil = np.full(num_classes, np.nan)
  flagged = np.zeros(num_classes, bool)
  for k in range(num_classes):
    idx = np.flatnonzero(y == k)
    if idx.size < num_dims + 2:
      rel[k] = (1.0, 0.0) if idx.size else (0.0, 0.0)
      continue
    red = _reduce(a[idx], num_dims, reduce, seed)
    lab = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(red)
    sizes = np.bincount(lab, minlength=2) / idx.size
    rel[k] = sizes
    cluster[idx] = lab
    score[idx] = 1.0 - sizes[lab]
    if criterion == 'smaller':
      bad = np.array([sizes[0] < sizes[1], sizes[1] <= sizes[0]])
    else:
      bad = np.round(sizes, 2) < round(size_threshold, 2)     # ART's rounding
      if criterion == 'silhouette':
        s = float(silhouette_score(red, lab)) if np.all(sizes > 0) else -1.0
        sil[k] = s
        bad = bad & (round(s, 4) >= round(silhouette_threshold, 4))
    poison[idx] = bad[lab]
    flagged[k] = bool(bad.any())
  return {'poison': poison, 'score': score, 'cluster': cluster, 'relative_size': rel,
          'silhouette': sil, 'flagged': flagged}


def activation_clustering(features, y, *, num_classes: int, num_dims: int = 10,
                          reduce: str = 'ica', criterion: str = 'relative_size',
                          size_threshold: float = 0.35, silhouette_threshold: float = 0.1,
                          seed: int = 0) -> np.ndarray:
  """The data defense: keep-mask ``[n]`` (``True`` = keep) dropping the points of the
  clusters that :func:`activation_clusters` (same arguments) calls poisonous."""
  return ~activation_clusters(features, y, num_classes=num_classes, num_dims=num_dims,
                              reduce=reduce, criterion=criterion,
                              size_threshold=size_threshold,
                              silhouette_threshold=silhouette_threshold, seed=seed)['poison']
