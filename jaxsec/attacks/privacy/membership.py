"""Membership-inference scores from a model's outputs, threshold attacks, label-only attacks.

Every score follows one convention: LARGER = more likely a member (see ``jaxsec.metrics``).
All scores are computed from logits in log space (log-sum-exp), never from rounded
probabilities, so a confident model's members do not collapse into ties at ``p = 1.0``.

* Yeom et al. 2018 (CSF), "Privacy risk in machine learning": the loss threshold attack,
  member iff ``loss(x, y) <= tau`` with ``tau`` the mean training loss (:func:`yeom_threshold`).
* Salem et al. 2019 (NDSS), "ML-Leaks": label-free top-1 confidence and prediction entropy.
* Song & Mittal 2021 (USENIX Security), "Systematic evaluation of privacy risks of machine
  learning models": the modified entropy
  ``Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``.
* Choquette-Choo et al. 2021 (ICML), "Label-only membership inference attacks": robustness of
  the predicted label to data augmentations (translations, flips) and to Gaussian noise,
  from label queries only (:func:`augmentation_robustness_scores`,
  :func:`noise_robustness_scores`), and the gap attack (correct or not).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks


def _check_logits(logits, y):
  _checks.check_array('logits', logits, ndim=2, dtype_kind='f')
  if logits.shape[-1] < 2:
    raise ValueError(f'logits has {logits.shape[-1]} column(s); membership scores need a '
                     'softmax over >= 2 classes (give a binary model as [-z/2, z/2]).')
  _checks.check_labels('y', y, num_classes=logits.shape[-1], batch=logits.shape[0])


def _logsumexp_others(logits: jax.Array) -> jax.Array:
  """``[..., C]``: entry i is ``log sum_{j != i} exp(z_j)`` (exact, no cancellation)."""
  c = logits.shape[-1]
  masked = jnp.where(jnp.eye(c, dtype=bool), -jnp.inf, logits[..., None, :])
  return jax.nn.logsumexp(masked, axis=-1)


def logit_confidence(logits: jax.Array, y: jax.Array) -> jax.Array:
  """LiRA's logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` per example.

  Computed as ``z_y - logsumexp_{j != y} z_j`` (identical in exact arithmetic, and exact in
  floating point where the probability form rounds ``p_y`` to 1 and returns +inf).
  Works for any leading batch shape ``[..., C]`` with labels ``[...]``.
  """
  z = jnp.asarray(logits)
  onehot = jax.nn.one_hot(y, z.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
  others = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, z), axis=-1)
  return z_y - others


def loss_score(logits: jax.Array, y: jax.Array) -> jax.Array:
  """``-cross_entropy(x, y)``: Yeom's loss attack score (= ``-softplus(-phi)``, exact)."""
  _check_logits(logits, y)
  return -jax.nn.softplus(-logit_confidence(logits, y))


def cross_entropy_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example cross-entropy ``softplus(-phi)`` (accurate down to ~1e-38 for members)."""
  _check_logits(logits, y)
  return jax.nn.softplus(-logit_confidence(logits, y))


def confidence_score(logits: jax.Array, y: jax.Array | None = None) -> jax.Array:
  """Top-1 confidence (Salem 2019), as ``log(p_max / (1 - p_max))`` (same order as p_max).

  ``y`` is ignored (label-free attack); accepted so every score has one signature.
  """
  del y
  _checks.check_array('logits', logits, ndim=2, dtype_kind='f')
  top = jnp.argmax(logits, axis=-1)
  return logit_confidence(logits, top)


def true_class_confidence_score(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Confidence in the true class, as ``phi_y`` (same ranking as ``p_y`` and the loss)."""
  _check_logits(logits, y)
  return logit_confidence(logits, y)


def _log_softplus(t: jax.Array) -> jax.Array:
  """``log(softplus(t)) = log(log(1 + e^t))`` without underflow for very negative ``t``."""
  safe = jnp.where(t < -20.0, 0.0, t)
  return jnp.where(t < -20.0, t, jnp.log(jax.nn.softplus(safe)))


def _class_logits(logits: jax.Array) -> jax.Array:
  """``phi_i = log(p_i / (1 - p_i)) = z_i - logsumexp_{j != i} z_j`` for every class."""
  return logits - _logsumexp_others(logits)


def entropy_score(logits: jax.Array, y: jax.Array | None = None) -> jax.Array:
  """``-log H(softmax(z))``: low prediction entropy = member (Salem 2019). ``y`` is ignored.

  Returned as ``-log H`` (the same ranking as ``-H``): ``H`` of a confident prediction is
  below float32's range (``~(1 - p)^2``) and would tie at 0; ``log H`` is computed as
  ``logsumexp_i [log p_i + log(-log p_i)]`` with ``-log p_i = softplus(-phi_i)``.
  """
  del y
  _checks.check_array('logits', logits, ndim=2, dtype_kind='f')
  phi = _class_logits(jnp.asarray(logits))
  log_terms = -jax.nn.softplus(-phi) + _log_softplus(-phi)
  return -jax.nn.logsumexp(log_terms, axis=-1)


def modified_entropy_score(logits: jax.Array, y: jax.Array) -> jax.Array:
  """``-log Mentr(p, y)`` (Song & Mittal 2021), computed in log space.

  ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)`` is 0 for a confident correct
  prediction and grows both with uncertainty and with confident mistakes, unlike entropy.
  Returned as ``-log Mentr`` (the same ranking as ``-Mentr``, the paper's score), since
  ``Mentr`` of a confident prediction underflows float32 and would tie at 0. With
  ``phi_i = log(p_i / (1 - p_i))``: ``log((1 - p_y)(-log p_y)) = -softplus(phi_y) +
  log softplus(-phi_y)`` and ``log(p_i (-log(1 - p_i))) = -softplus(-phi_i) +
  log softplus(phi_i)``.
  """
  _check_logits(logits, y)
  phi = _class_logits(jnp.asarray(logits))
  onehot = jax.nn.one_hot(y, phi.shape[-1], dtype=bool)
  term_y = -jax.nn.softplus(phi) + _log_softplus(-phi)
  term_o = -jax.nn.softplus(-phi) + _log_softplus(phi)
  return -jax.nn.logsumexp(jnp.where(onehot, term_y, term_o), axis=-1)


SCORES: dict[str, Callable] = {
    'loss': loss_score,
    'confidence': confidence_score,
    'true_confidence': true_class_confidence_score,
    'entropy': entropy_score,
    'modified_entropy': modified_entropy_score,
}


def score(name: str, logits: jax.Array, y: jax.Array) -> jax.Array:
  """Looks up and applies a threshold-attack score by name (one of ``SCORES``)."""
  _checks.check_choice('name', name, tuple(SCORES))
  return SCORES[name](logits, y)


def yeom_threshold(train_losses) -> float:
  """Yeom et al. 2018's threshold: the mean training loss ``tau``.

  Member iff ``loss <= tau``, i.e. ``loss_score >= -tau`` (use :func:`threshold_predict`
  with ``-yeom_threshold(...)``). The attacker needs the expected training loss (the paper's
  assumption); a shadow model's training loss estimates it.
  """
  train_losses = np.asarray(train_losses, np.float64)
  if train_losses.size == 0 or not np.all(np.isfinite(train_losses)):
    raise ValueError('train_losses must be a non-empty array of finite losses.')
  return float(np.mean(train_losses))


def threshold_predict(scores, threshold: float) -> jax.Array:
  """Hard decisions ``score >= threshold`` (the convention of ``jaxsec.metrics``)."""
  return jnp.asarray(scores) >= threshold


def calibrate_threshold(nonmember_scores, target_fpr: float) -> float:
  """The lowest threshold whose FPR on reference non-member scores is <= ``target_fpr``.

  E.g. from a shadow model's held-out examples: the attacker picks its operating point
  without touching the target's membership labels.
  """
  _checks.check_probability('target_fpr', target_fpr)
  s = np.sort(np.asarray(nonmember_scores, np.float64).reshape(-1))[::-1]
  if s.size == 0:
    raise ValueError('nonmember_scores is empty.')
  allowed = int(np.floor(target_fpr * s.size + 1e-9))  # false positives allowed
  if allowed >= s.size:
    return float(s[-1])
  # member iff score >= t: t must exceed s[allowed], the (allowed+1)-th largest score.
  return float(np.nextafter(s[allowed], np.inf))


# --------------------------------------------------------------------- label-only (2021)


def _shift(x: jax.Array, dy: int, dx: int) -> jax.Array:
  """Translates NHWC images by (dy, dx) pixels, filling with zeros."""
  p = max(abs(dy), abs(dx))
  if p == 0:
    return x
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return jax.lax.dynamic_slice(xp, (0, p - dy, p - dx, 0), x.shape)


def translations(max_shift: int) -> list[tuple[int, int]]:
  """All shifts ``(dy, dx)`` with ``|dy| + |dx| <= max_shift`` (Choquette-Choo 2021's set)."""
  max_shift = _checks.check_int('max_shift', max_shift, minimum=0)
  return [(dy, dx) for dy in range(-max_shift, max_shift + 1)
          for dx in range(-max_shift, max_shift + 1) if abs(dy) + abs(dx) <= max_shift]


def augmentation_robustness_scores(label_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                                   y: jax.Array, *, max_shift: int = 1, flip: bool = True,
                                   return_matrix: bool = False):
  """Choquette-Choo et al. 2021's data-augmentation attack, from label queries only.

  Queries the label of every translation (``|dy| + |dx| <= max_shift``, zero fill) of each
  image, and of its horizontal flip's translations when ``flip``; the score is the fraction
  of augmented queries labelled correctly (members, seen with augmentations in training,
  stay correct more often). ``max_shift=0, flip=False`` is the gap attack (correct or not).

  Args:
    label_fn: ``x -> labels [B]`` (a decision-based oracle).
    x: ``[B, H, W, C]`` images; y: ``[B]`` true labels.
    return_matrix: also return the bool ``[B, num_augmentations]`` correctness matrix (the
      paper's attack model can be trained on it).

  Returns:
    scores ``[B]`` (and the matrix); queries used = ``B * num_augmentations``.
  """
  _checks.check_array('x', x, ndim=4, dtype_kind='f')
  _checks.check_labels('y', y, batch=x.shape[0])
  shifts = translations(max_shift)
  views = []
  for flipped in ((False, True) if flip else (False,)):
    base = x[:, :, ::-1, :] if flipped else x
    views += [_shift(base, dy, dx) for dy, dx in shifts]
  correct = jnp.stack([jnp.asarray(label_fn(v)) == y for v in views], axis=1)
  s = jnp.mean(correct.astype(jnp.float32), axis=1)
  return (s, correct) if return_matrix else s


def noise_robustness_scores(label_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                            y: jax.Array, key: jax.Array, *, sigma: float,
                            num_samples: int = 32,
                            bounds: tuple[float, float] | None = (0.0, 1.0)) -> jax.Array:
  """Choquette-Choo et al. 2021's noise-robustness attack: the fraction of ``num_samples``
  Gaussian perturbations ``x + N(0, sigma^2 I)`` (clipped to ``bounds`` when given) that keep
  the true label, a Monte-Carlo proxy of the distance to the decision boundary (members lie
  farther from it). Queries used: ``B * num_samples``.
  """
  _checks.check_array('x', x, dtype_kind='f')
  _checks.check_labels('y', y, batch=x.shape[0])
  _checks.check_positive('sigma', sigma)
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)

  def one(k):
    xn = x + sigma * jax.random.normal(k, x.shape, x.dtype)
    if bounds is not None:
      xn = jnp.clip(xn, *bounds)
    return jnp.asarray(label_fn(xn)) == y
  correct = jnp.stack([one(k) for k in jax.random.split(key, num_samples)], axis=1)
  return jnp.mean(correct.astype(jnp.float32), axis=1)


def gap_scores(label_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array
               ) -> jax.Array:
  """The gap attack (Yeom 2018 / Choquette-Choo 2021 baseline): 1 if correctly labelled."""
  _checks.check_labels('y', y, batch=x.shape[0])
  return (jnp.asarray(label_fn(x)) == y).astype(jnp.float32)


__all__: Sequence[str] = (
    'logit_confidence', 'loss_score', 'cross_entropy_loss', 'confidence_score',
    'true_class_confidence_score', 'entropy_score', 'modified_entropy_score', 'SCORES',
    'score', 'yeom_threshold', 'threshold_predict', 'calibrate_threshold', 'translations',
    'augmentation_robustness_scores', 'noise_robustness_scores', 'gap_scores')
