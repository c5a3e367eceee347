"""The Likelihood Ratio Attack (LiRA), Carlini, Chien, Nasr, Song, Terzis, Tramer,
"Membership inference attacks from first principles" (IEEE S&P 2022).

For each candidate ``(x, y)`` LiRA compares the target's logit-scaled confidence
``phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j`` (:func:`logit_confidence`)
with per-example Gaussians over shadow models that did (IN) and did not (OUT) train on it:

* online: ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``;
* offline (no IN models): the paper's one-sided ``log Pr[Z <= phi]``,
  ``Z ~ N(mu_out, s_out^2)`` (Algorithm 1); ``offline_test='two_sided'`` gives the official
  code's ``-log N(phi; mu_out, s_out^2)``;
* several queries per example (augmentations, ``[..., A]``): one Gaussian per query, the
  scores averaged (the official ``score.mean(1)``).

Options: ``location='median'`` (official code) or ``'mean'`` (paper); ``fix_variance=True``
uses ONE global standard deviation for IN and OUT (``fixed_std=s`` gives it). Deviation: that
value is the pooled spread around each example's own location, ``sqrt(mean (phi_mi -
mu_i)^2)`` over all IN and OUT observations (OUT only offline), the paper's "global
variance"; the official ``np.std(dat_in)`` also adds the spread of the locations.
``per_example=False`` fits one Gaussian pair to all examples (a global test, ranking like
the loss threshold attack). Online shadow models should have each example IN for half of
them (``jaxsec.data.balanced_membership``), as in the official code. Statistics are
computed on the host in float64.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from scipy import stats as sps

from jaxsec import _checks
from jaxsec.attacks.privacy.membership import logit_confidence

LOCATIONS = ('median', 'mean')
OFFLINE_TESTS = ('one_sided', 'two_sided')


class LiraStats(NamedTuple):
  """Per-example (``[N, A]``) or global Gaussian parameters of IN / OUT confidences.

  ``mean_in`` / ``std_in`` are NaN when fitted with ``online=False``.
  """
  mean_in: np.ndarray
  std_in: np.ndarray
  mean_out: np.ndarray
  std_out: np.ndarray


def _as_3d(phi, name):
  phi = np.asarray(phi, np.float64)
  if phi.ndim == 2:
    phi = phi[..., None]
  if phi.ndim != 3:
    raise ValueError(f'{name} has shape {phi.shape}; expected [M, N] or [M, N, A].')
  if not np.all(np.isfinite(phi)):
    raise ValueError(f'{name} contains non-finite values; compute it with '
                     'logit_confidence(logits, y) from logits, not from probabilities.')
  return phi


def _location(vals, location, axis):
  f = np.nanmedian if location == 'median' else np.nanmean
  return f(vals, axis=axis)


def _fit_side(phi, mask, location, per_example, name):
  """Location and per-example scale of ``phi[m, i]`` over models with ``mask[m, i]``, and
  the squared residuals around the location (for a pooled, global scale)."""
  vals = np.where(mask[..., None], phi, np.nan)            # [M, N, A]
  counts = mask.sum(0)
  if per_example:
    if (counts == 0).any():
      raise ValueError(f'example {int(np.argmin(counts))} is {name} for no shadow model; '
                       f'every example needs >= 1 {name} model (use balanced_membership).')
    mu = _location(vals, location, axis=0)                 # [N, A]
  else:
    mu = np.broadcast_to(_location(vals.reshape(-1, vals.shape[-1]), location, 0),
                         vals.shape[1:])
  sq_resid = ((vals - mu[None]) ** 2).reshape(-1, vals.shape[-1])   # NaN where not in side
  sd = np.nanstd(vals, axis=0) if per_example else np.sqrt(np.nanmean(sq_resid, 0))
  return np.asarray(mu, np.float64), np.broadcast_to(sd, mu.shape), sq_resid


def lira_fit(shadow_phi, in_mask, *, online: bool = True, location: str = 'median',
             fix_variance: bool = False, per_example: bool = True,
             fixed_std: float | None = None) -> LiraStats:
  """Fits LiRA's Gaussians from shadow-model confidences.

  Args:
    shadow_phi: ``[M, N]`` (or ``[M, N, A]`` with ``A`` queries per example) logit-scaled
      confidences of ``M`` shadow models on the ``N`` candidate examples.
    in_mask: bool ``[M, N]``: ``in_mask[m, i]`` iff shadow ``m`` trained on example ``i``.
    online: fit IN Gaussians too (each example needs >= 1 IN and >= 1 OUT model; with one
      observation a per-example standard deviation is 0: use ``fix_variance``).
    location, fix_variance, per_example: see the module doc.
    fixed_std: a GIVEN standard deviation for every Gaussian (instead of estimating one;
      with a single shadow model the pooled estimate around each example's own value is 0).
  """
  _checks.check_choice('location', location, LOCATIONS)
  if fixed_std is not None:
    _checks.check_positive('fixed_std', fixed_std)
  phi = _as_3d(shadow_phi, 'shadow_phi')
  in_mask = np.asarray(in_mask)
  if in_mask.dtype != bool or in_mask.shape != phi.shape[:2]:
    raise ValueError(f'in_mask has shape {in_mask.shape} and dtype {in_mask.dtype}; '
                     f'expected bool {phi.shape[:2]}.')
  mu_out, sd_out, r_out = _fit_side(phi, ~in_mask, location, per_example, 'OUT')
  if online:
    mu_in, sd_in, r_in = _fit_side(phi, in_mask, location, per_example, 'IN')
  else:
    mu_in, sd_in, r_in = np.full_like(mu_out, np.nan), np.full_like(sd_out, np.nan), None
  if fixed_std is not None:
    sd_in = sd_out = np.full(mu_out.shape, float(fixed_std))
  elif fix_variance or not per_example:
    # ONE global scale shared by the IN and OUT Gaussians (the official code uses one value
    # for both too): the pooled residual spread over every observation used.
    pooled = r_out if r_in is None else np.concatenate([r_in, r_out])
    sd = np.broadcast_to(np.sqrt(np.nanmean(pooled, axis=0)), mu_out.shape)
    sd_out = sd
    sd_in = sd if online else sd_in
  return LiraStats(mu_in, sd_in, mu_out, sd_out)


def _target(target_phi, stats):
  t = np.asarray(target_phi, np.float64)
  if t.ndim == 1:
    t = t[:, None]
  if t.shape != stats.mean_out.shape:
    raise ValueError(f'target_phi has shape {np.asarray(target_phi).shape}; expected '
                     f'[N] or [N, A] = {stats.mean_out.shape}.')
  return t


def lira_online_scores(target_phi, stats: LiraStats, *, min_std: float = 1e-30
                       ) -> np.ndarray:
  """``mean_A [log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)]`` per example."""
  t = _target(target_phi, stats)
  if np.isnan(stats.mean_in).any():
    raise ValueError('stats has no IN Gaussians; fit with lira_fit(..., online=True).')
  lin = sps.norm.logpdf(t, stats.mean_in, stats.std_in + min_std)
  lout = sps.norm.logpdf(t, stats.mean_out, stats.std_out + min_std)
  return np.mean(lin - lout, axis=1)


def lira_offline_scores(target_phi, stats: LiraStats, *, offline_test: str = 'one_sided',
                        min_std: float = 1e-30) -> np.ndarray:
  """Offline LiRA score per example (larger = member).

  ``'one_sided'`` (paper): ``log Pr[Z <= phi]``, ``Z ~ N(mu_out, s_out^2)``; monotone
  increasing in ``phi`` for every example. ``'two_sided'`` (official code):
  ``-log N(phi; mu_out, s_out^2)``.
  """
  _checks.check_choice('offline_test', offline_test, OFFLINE_TESTS)
  t = _target(target_phi, stats)
  sd = stats.std_out + min_std
  if offline_test == 'one_sided':
    s = sps.norm.logcdf(t, stats.mean_out, sd)
  else:
    s = -sps.norm.logpdf(t, stats.mean_out, sd)
  return np.mean(s, axis=1)


def lira_scores(shadow_phi, in_mask, target_phi, *, online: bool = True,
                location: str = 'median', fix_variance: bool = False,
                per_example: bool = True, offline_test: str = 'one_sided',
                fixed_std: float | None = None) -> np.ndarray:
  """Fits :func:`lira_fit` and scores the target's confidences in one call."""
  st = lira_fit(shadow_phi, in_mask, online=online, location=location,
                fix_variance=fix_variance, per_example=per_example, fixed_std=fixed_std)
  if online:
    return lira_online_scores(target_phi, st)
  return lira_offline_scores(target_phi, st, offline_test=offline_test)


def shadow_confidences(logits_many, y) -> np.ndarray:
  """``[M, N, C]`` logits of ``M`` models (``train.predict_logits_many``) -> ``phi [M, N]``."""
  logits_many = np.asarray(logits_many)
  if logits_many.ndim != 3:
    raise ValueError(f'logits_many has shape {logits_many.shape}; expected [M, N, C].')
  _checks.check_labels('y', np.asarray(y), num_classes=logits_many.shape[-1],
                       batch=logits_many.shape[1])
  return np.asarray(jax.jit(logit_confidence)(logits_many, np.asarray(y)[None]),
                    np.float64)


__all__ = ('LiraStats', 'lira_fit', 'lira_online_scores', 'lira_offline_scores',
           'lira_scores', 'shadow_confidences', 'logit_confidence')
