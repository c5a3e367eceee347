"""Metrics for privacy attacks: membership ROC / AUC / TPR at fixed FPR, agreement, PSNR, SSIM.

Membership-inference conventions (the same as the LiRA code, Carlini et al. 2022):

* A *score* is larger for examples the attack believes are members; an attack with threshold
  ``t`` predicts "member" iff ``score >= t``. ``labels`` is True (1) for members.
* :func:`roc_curve` returns EVERY operating point of the deterministic threshold rule, one per
  distinct score (no point is dropped, unlike ``sklearn.metrics.roc_curve`` whose default
  ``drop_intermediate=True`` removes collinear points), starting at ``(0, 0)`` with threshold
  ``+inf``. Tied scores move FPR and TPR together (a diagonal segment), so the trapezoidal
  :func:`auc` equals the Mann-Whitney probability ``P[s_member > s_non] + P[=] / 2``.
* :func:`tpr_at_fpr` with the default ``convention='le'`` is the TPR of the *lowest threshold
  whose FPR is <= the target*: the best TPR a deterministic threshold reaches without
  exceeding the FPR budget. ``convention='lt'`` reproduces the LiRA code exactly
  (``tpr[np.where(fpr < target)[0][-1]]``: strictly below the target), and
  ``'interpolate'`` linearly interpolates the ROC curve (the TPR of a randomised threshold
  that spends the budget exactly; never below ``'le'``).
* Balanced accuracy of an attack is ``max_t (TPR(t) + 1 - FPR(t)) / 2`` (the LiRA code's
  ``acc``); membership advantage (Yeom et al. 2018) is ``max_t TPR(t) - FPR(t)``
  ``= 2 * balanced_accuracy - 1``.

Image metrics: :func:`psnr` and :func:`ssim` (Wang, Bovik, Sheikh, Simoncelli 2004: an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over 'valid' windows, mean
of the SSIM map; for several channels the mean over channels), used to score gradient
inversion and model inversion against the original images.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks


class RocCurve(NamedTuple):
  """All operating points of the rule ``score >= threshold`` (see the module doc)."""
  fpr: np.ndarray
  tpr: np.ndarray
  thresholds: np.ndarray


def _scores_labels(scores, labels):
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f'scores has {scores.size} entries but labels has {labels.size}; '
                     'expected one label per score.')
  if labels.dtype != bool:
    if not np.all((labels == 0) | (labels == 1)):
      raise ValueError(f'labels has values {np.unique(labels)[:5]}; expected booleans or '
                       '0/1 (1 = member).')
    labels = labels.astype(bool)
  if np.isnan(scores).any():
    raise ValueError(f'scores contains {int(np.isnan(scores).sum())} NaN values.')
  num_pos, num_neg = int(labels.sum()), int((~labels).sum())
  if num_pos == 0 or num_neg == 0:
    raise ValueError(f'labels has {num_pos} members and {num_neg} non-members; expected '
                     'at least one of each.')
  return scores, labels


def roc_curve(scores, labels) -> RocCurve:
  """Every (FPR, TPR) operating point of ``member iff score >= threshold``.

  Args:
    scores: [N] attack scores, larger = more likely a member (+/-inf allowed).
    labels: [N] True / 1 for members, False / 0 for non-members.

  Returns:
    RocCurve(fpr, tpr, thresholds), each of length ``1 + #distinct scores``; ``thresholds``
    decreases from ``+inf`` (nothing predicted a member: (0, 0)) to the smallest score
    (everything predicted a member: (1, 1)).
  """
  scores, labels = _scores_labels(scores, labels)
  order = np.argsort(-scores, kind='stable')
  s, l = scores[order], labels[order]
  # Last position of each run of equal scores: the operating point after all ties enter.
  last = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]
  tp = np.cumsum(l)[last]
  fp = np.cumsum(~l)[last]
  fpr = np.r_[0.0, fp / (~labels).sum()]
  tpr = np.r_[0.0, tp / labels.sum()]
  thresholds = np.r_[np.inf, s[last]]
  return RocCurve(fpr, tpr, thresholds)


def auc(scores, labels) -> float:
  """Area under the ROC curve (trapezoidal over all points; ties count 1/2)."""
  c = roc_curve(scores, labels)
  return float(np.sum(np.diff(c.fpr) * (c.tpr[1:] + c.tpr[:-1]) / 2))


TPR_CONVENTIONS = ('le', 'lt', 'interpolate')


def tpr_at_fpr(scores, labels, target_fpr: float, *, convention: str = 'le') -> float:
  """TPR at a fixed FPR (see the module doc for the three conventions).

  Args:
    scores, labels: as in :func:`roc_curve`.
    target_fpr: in [0, 1], e.g. 0.001 for "TPR at 0.1% FPR".
    convention: 'le' (default): the largest TPR over operating points with FPR <= target,
      i.e. the lowest threshold that keeps FPR <= target; 'lt': FPR strictly < target (the
      LiRA code); 'interpolate': linear interpolation of the ROC curve at the target.

  With ``n`` non-members the smallest non-zero FPR is ``1/n``: a target below it measures
  only the attack's zero-false-positive TPR.
  """
  _checks.check_probability('target_fpr', target_fpr)
  _checks.check_choice('convention', convention, TPR_CONVENTIONS)
  c = roc_curve(scores, labels)
  return _tpr_at(c, float(target_fpr), convention)


def _tpr_at(c: RocCurve, target: float, convention: str) -> float:
  if convention == 'interpolate':
    # fpr is non-decreasing; np.interp on duplicates takes the rightmost (largest TPR) run.
    idx = np.searchsorted(c.fpr, target, side='right') - 1
    if idx >= c.fpr.size - 1:
      return float(c.tpr[-1])
    f0, f1 = c.fpr[idx], c.fpr[idx + 1]
    t0, t1 = c.tpr[idx], c.tpr[idx + 1]
    return float(t0 + (t1 - t0) * (target - f0) / (f1 - f0))
  ok = c.fpr <= target if convention == 'le' else c.fpr < target
  if not ok.any():  # only possible with 'lt' and target 0
    return 0.0
  return float(c.tpr[np.nonzero(ok)[0][-1]])


def balanced_accuracy(scores, labels) -> float:
  """Best balanced accuracy over thresholds: ``max_t (TPR + 1 - FPR) / 2``."""
  c = roc_curve(scores, labels)
  return float(np.max((c.tpr + 1 - c.fpr) / 2))


def membership_advantage(scores, labels) -> float:
  """Yeom et al. 2018's advantage ``max_t TPR(t) - FPR(t)`` (>= 0: threshold +inf gives 0)."""
  c = roc_curve(scores, labels)
  return float(np.max(c.tpr - c.fpr))


def threshold_metrics(predictions, labels) -> dict:
  """TPR, FPR, accuracy, balanced accuracy, precision, advantage of hard member decisions."""
  pred = np.asarray(predictions).astype(bool).reshape(-1)
  _, labels = _scores_labels(pred.astype(np.float64), labels)
  tpr = float(np.mean(pred[labels]))
  fpr = float(np.mean(pred[~labels]))
  num_pred = int(pred.sum())
  return {'tpr': tpr, 'fpr': fpr, 'accuracy': float(np.mean(pred == labels)),
          'balanced_accuracy': (tpr + 1 - fpr) / 2, 'advantage': tpr - fpr,
          'precision': float(np.mean(labels[pred])) if num_pred else float('nan')}


def membership_report(scores, labels, fprs: Sequence[float] = (0.001, 0.01), *,
                      convention: str = 'le') -> dict:
  """AUC, balanced accuracy, advantage and TPR at each FPR in ``fprs`` (one ROC pass)."""
  _checks.check_choice('convention', convention, TPR_CONVENTIONS)
  c = roc_curve(scores, labels)
  out = {
      'auc': float(np.sum(np.diff(c.fpr) * (c.tpr[1:] + c.tpr[:-1]) / 2)),
      'balanced_accuracy': float(np.max((c.tpr + 1 - c.fpr) / 2)),
      'advantage': float(np.max(c.tpr - c.fpr)),
      'num_members': int(np.sum(np.asarray(labels).astype(bool))),
      'num_nonmembers': int(np.sum(~np.asarray(labels).astype(bool))),
  }
  for f in fprs:
    _checks.check_probability('fprs[i]', f)
    out[f'tpr_at_{f:g}_fpr'] = _tpr_at(c, float(f), convention)
  return out


def agreement(pred_a, pred_b) -> float:
  """Fraction of inputs on which two models predict the same label (extraction fidelity).

  Accepts labels [N] or logits / probabilities [N, C] (argmax; one column: ``> 0``).
  """
  def labels_of(p):
    p = np.asarray(p)
    if p.ndim == 1:
      return p
    if p.shape[-1] == 1:
      return (p[..., 0] > 0).astype(np.int64)
    return np.argmax(p, -1)
  a, b = labels_of(pred_a), labels_of(pred_b)
  if a.shape != b.shape:
    raise ValueError(f'pred_a has {a.shape[0]} predictions and pred_b {b.shape[0]}; expected '
                     'the same number.')
  return float(np.mean(a == b))


# ---------------------------------------------------------------------------- images


def psnr(x, y, *, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image.

  Args:
    x, y: images of the same shape ``[..., H, W, C]``; the last three axes are one image.
    data_range: ``max - min`` of the pixel domain (1 for [0, 1] images).

  Returns:
    ``[...]`` PSNR in dB (``+inf`` for identical images).
  """
  _checks.check_positive('data_range', data_range)
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'x has shape {x.shape} and y {y.shape}; expected equal shapes '
                     '[..., H, W, C].')
  mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """The normalised 1-D Gaussian of MATLAB's ``fspecial('gaussian')`` (outer product = 2-D)."""
  size = _checks.check_int('size', size, minimum=1)
  _checks.check_positive('sigma', sigma)
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-r ** 2 / (2 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(img, g):
  """Separable 'valid' filtering of [N, H, W] images with the 1-D window ``g``."""
  k = g.shape[0]
  h, w = img.shape[1], img.shape[2]
  # Rows then columns: sums of shifted slices (exact, small windows).
  rows = g[0] * img[:, 0:h - k + 1, :]
  for i in range(1, k):
    rows = rows + g[i] * img[:, i:h - k + 1 + i, :]
  out = g[0] * rows[:, :, 0:w - k + 1]
  for j in range(1, k):
    out = out + g[j] * rows[:, :, j:w - k + 1 + j]
  return out


def ssim(x, y, *, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Structural similarity (Wang et al. 2004), mean of the SSIM map, per image.

  ``SSIM = ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
  with Gaussian-weighted local statistics (11x11, sigma 1.5, normalised to sum 1; the
  weighted, biased covariances of the paper's reference code ``ssim_index.m``) over every
  'valid' window position, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``; ``L = data_range``.
  For several channels, the mean over channels (as ``skimage.metrics.structural_similarity``
  with ``gaussian_weights=True, use_sample_covariance=False``).

  Args:
    x, y: ``[..., H, W, C]`` with ``H, W >= window_size``.

  Returns:
    ``[...]`` SSIM values in [-1, 1]; 1 iff the images are equal (up to C1, C2).
  """
  _checks.check_positive('data_range', data_range)
  g = jnp.asarray(gaussian_window(window_size, sigma))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'x has shape {x.shape} and y {y.shape}; expected equal shapes '
                     '[..., H, W, C].')
  h, w, ch = x.shape[-3:]
  if h < window_size or w < window_size:
    raise ValueError(f'images are {h}x{w}; expected at least window_size={window_size} '
                     'in both dimensions.')
  batch = x.shape[:-3]
  # [..., H, W, C] -> [N * C, H, W]
  def flat(a):
    return jnp.moveaxis(a.reshape((-1, h, w, ch)), -1, 1).reshape((-1, h, w))
  a, b = flat(x), flat(y)
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
  s_aa = _filter_valid(a * a, g) - mu_a ** 2
  s_bb = _filter_valid(b * b, g) - mu_b ** 2
  s_ab = _filter_valid(a * b, g) - mu_a * mu_b
  smap = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / (
      (mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
  per_channel = jnp.mean(smap, axis=(1, 2)).reshape((-1, ch))
  return jnp.mean(per_channel, axis=-1).reshape(batch)
