"""STRIP: input-level backdoor detection by superimposition (Gao, Xu, Wang, Chen, Ranasinghe
& Nepal, "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019,
arXiv:1902.06531).

A trigger dominates the prediction: an input that carries it stays in the target class
however it is perturbed, while a clean input's prediction wanders. STRIP superimposes the
input on ``N`` clean images drawn from a held-out set and measures the Shannon entropy
(base 2) of each perturbed prediction; the score is the mean over the draws (the paper's
normalised entropy ``H = (1/N) sum_n -sum_i p_ni log2 p_ni``, its eqs. 1-3). Low entropy =
trojaned.

* :func:`strip_entropy` -- the normalised entropy per input.
* :func:`strip_score` -- the detector in this package's convention (a score function
  ``x -> [B]``, larger = more suspicious): ``-strip_entropy``, so :func:`threshold_at_fpr`,
  :func:`defended` and :func:`detection_report` of :mod:`detectors` take it unchanged.
* :func:`strip_threshold` -- the paper's threshold: fit a normal distribution to the clean
  inputs' entropies and take its ``frr`` quantile (the false rejection rate: the share of
  clean inputs the detector rejects); returned in score units (detect iff score > t).

Superimposition: the paper adds the two images and saturates (``cv2.addWeighted(x, 1, o,
1, 0)`` on uint8), so ``weights=(1, 1)`` with clipping to ``bounds`` is the default; ART's
``STRIPMixin`` blends ``0.5 x + 0.5 o`` (``weights=(0.5, 0.5)``). ART sums ``scipy``'s
entropy along the draw axis (an entropy over draws per class, not per prediction); we follow
the paper. Deviation: the overlays are drawn with replacement from a fixed ``key`` on each
call (the score function is deterministic; ART draws from numpy's global state), and the
frr-quantile may also be taken empirically with :func:`threshold_at_fpr` (``fpr=frr``).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxsec import _checks


def _entropy_bits(logits):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1) / jnp.log(2.0)


def strip_entropy(logits_fn: Callable, x_clean, *, num_samples: int = 20, key,
                  weights: tuple[float, float] = (1.0, 1.0),
                  bounds: tuple[float, float] | None = (0.0, 1.0),
                  batch_size: int = 256) -> Callable:
  """``entropy_fn(x) -> [B]``: STRIP's normalised entropy (bits) of each input.

  Args:
    logits_fn: the (possibly trojaned) model, ``x -> [B, K]``.
    x_clean: ``[M, ...]`` held-out clean inputs to superimpose (the paper: test images).
    num_samples: draws ``N`` per input (paper: 100 is ample, 20 works; ART: 20).
    key: draws the overlay indices (the same draws on every call).
    weights: ``(a, b)``: the perturbed input is ``clip(a x + b overlay)``.
    bounds: the clip box, or None.
    batch_size: inputs per forward pass of ``B * N`` perturbed images (``batch_size * N``).
  """
  if not callable(logits_fn):
    raise ValueError(f'logits_fn={logits_fn!r} must be a function.')
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  if len(weights) != 2:
    raise ValueError(f'weights={weights!r} must be a pair (a, b).')
  a, b = (float(_checks.check_float('weights', w, allow_traced=False)) for w in weights)
  xc = jnp.asarray(x_clean)
  _checks.check_array('x_clean', xc, dtype_kind='f', finite=True)
  if xc.ndim < 2 or xc.shape[0] == 0:
    raise ValueError(f'x_clean has shape {tuple(xc.shape)}; expected [M, ...] with M > 0.')
  if bounds is not None and not bounds[0] < bounds[1]:
    raise ValueError(f'bounds={bounds!r} must satisfy lo < hi.')

  @jax.jit
  def block(x, k):
    idx = jax.random.randint(k, (x.shape[0], num_samples), 0, xc.shape[0])
    xp = a * x[:, None] + b * xc[idx]
    if bounds is not None:
      xp = jnp.clip(xp, bounds[0], bounds[1])
    z = logits_fn(xp.reshape((-1,) + x.shape[1:]))
    return _entropy_bits(z).reshape(x.shape[0], num_samples).mean(-1)

  def entropy_fn(x):
    x = jnp.asarray(x)
    if x.shape[1:] != xc.shape[1:]:
      raise ValueError(f'x has shape {tuple(x.shape)}; its images must match x_clean '
                       f'{tuple(xc.shape[1:])}.')
    out = [block(x[i:i + batch_size], jax.random.fold_in(key, i))
           for i in range(0, x.shape[0], batch_size)]
    return jnp.concatenate(out) if out else jnp.zeros((0,), jnp.float32)
  return entropy_fn


def strip_score(logits_fn: Callable, x_clean, *, num_samples: int = 20, key,
                weights: tuple[float, float] = (1.0, 1.0),
                bounds: tuple[float, float] | None = (0.0, 1.0),
                batch_size: int = 256) -> Callable:
  """STRIP as a detector score ``x -> [B]``: ``-strip_entropy`` (same arguments), larger =
  more likely trojaned."""
  entropy_fn = strip_entropy(logits_fn, x_clean, num_samples=num_samples, key=key,
                             weights=weights, bounds=bounds, batch_size=batch_size)
  return lambda x: -entropy_fn(x)


def strip_threshold(clean_scores, frr: float = 0.01) -> float:
  """The paper's detection boundary in score units: ``-q`` with ``q`` the ``frr`` quantile of
  the normal distribution fitted (``scipy.stats.norm.fit``, maximum likelihood) to the clean
  entropies ``-clean_scores``; detect iff ``score > threshold``, i.e. entropy ``< q``.

  Args:
    clean_scores: :func:`strip_score` on held-out clean inputs (at least two).
    frr: the false rejection rate aimed at, in ``(0, 1)`` (paper: 1%; ART's
      ``false_acceptance_rate=0.01`` plays the same role).
  """
  frr = float(_checks.check_float('frr', frr, minimum=0.0, maximum=1.0, strict_min=True,
                                  strict_max=True, allow_traced=False))
  h = -np.asarray(clean_scores, np.float64).ravel()
  if h.size < 2 or not np.all(np.isfinite(h)):
    raise ValueError(f'clean_scores has {h.size} values (finite: {bool(np.all(np.isfinite(h)))}); '
                     'need at least two finite scores.')
  mu, sd = stats.norm.fit(h)
  if sd == 0.0:
    return float(-mu)
  return float(-stats.norm.ppf(frr, loc=mu, scale=sd))
