"""Adversarial-example detectors; classifier + detector as one ``logits_fn`` (survey §3.3).

A detector is a *score function* ``score_fn: x -> [B]`` (larger = more likely
adversarial) with a threshold picked on clean data at a false-positive budget
(:func:`threshold_at_fpr`, Xu et al. use 5%). :func:`defended` wraps a classifier and a
detector into one ``logits_fn`` with a reject class (index ``K``), so every attack runs
against the defended system. Detection quality: :func:`detection_report`.

* :func:`feature_squeezing_score` -- Xu, Evans & Qi (NDSS 2018): the L1 distance between
  the softmax of the model on ``x`` and on each squeezed ``x``; the max over squeezers.
* Learned detector (Metzen, Genewein, Fischer & Bischoff, ICLR 2017): a binary classifier
  ``detector(params, x) -> one logit`` trained to tell clean inputs from adversarial ones
  (:func:`detector_training_set`, :func:`learned_score`). Metzen et al. attach it to an
  intermediate feature map; here it sees the *input* (the classifier is a black-box
  ``logits_fn``): a documented deviation.
* :func:`detector_aware_pgd` -- the untargeted adaptive attack on classifier + detector
  (Carlini & Wagner, AISec 2017): one combined loss, misclassify *and* stay below the
  threshold; success means both. :func:`defended_success` scores any attack's output.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec import metrics
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common


def defended(logits_fn: Callable, score_fn: Callable, threshold, *, scale=1.0) -> Callable:
  """Classifier + detector as one ``logits_fn`` with a reject class: logits ``[..., K + 1]``.

  ``z'_k = z_k`` for the classifier's ``K`` classes and the reject logit
  ``z'_K = max_k z_k + scale * (s(x) - threshold)`` (``s = score_fn``): Carlini & Wagner's
  combined model G (AISec 2017, §"perfect-knowledge attack"; ART's ``DetectorClassifier``
  scales instead of adding). Guarantee: ``argmax z' == K`` exactly when the detector fires
  (``s(x) > threshold``, the convention of :func:`threshold_at_fpr`); where float rounding
  would absorb a tiny positive ``s - threshold`` into ``max_k z_k``, the reject logit is
  raised to the next representable value above it. Differentiable wherever ``z`` and ``s``
  are (``max`` has the usual subgradient); ``scale > 0`` weighs the detector's gradient
  against the classifier's.

  Attacks take ``defended(...)`` like any model, with the true labels ``y < K``. Success
  against the system means predicting neither ``y`` nor ``K`` (:func:`evasion_success`).
  Targeted attacks (target ``!= y, K``) aim at exactly that. Untargeted attacks whose
  loss is symmetric in the wrong classes (CE, C&W margin, DLR) count the reject class as
  one more wrong class: their ``success`` flag over-reports and they may steer into
  rejection. For them, attack targeted (e.g. at the classifier's runner-up class), or use
  :func:`detector_aware_pgd`, and score with :func:`evasion_success`.
  """
  if not callable(logits_fn) or not callable(score_fn):
    raise ValueError(f'logits_fn={logits_fn!r} and score_fn={score_fn!r} must be functions.')
  _checks.check_float('threshold', threshold)
  _checks.check_float('scale', scale, minimum=0.0, strict_min=True)

  def defended_logits(x):
    z = common.as_multiclass(logits_fn(x))
    s = jnp.asarray(score_fn(x), z.dtype)
    if s.shape != z.shape[:-1]:
      raise ValueError(f'score_fn(x) has shape {s.shape}; expected {z.shape[:-1]} (one '
                       f'score per example of logits {z.shape}).')
    m = jnp.max(z, axis=-1)
    fires = s > threshold
    reject = m + scale * (s - threshold)
    fi = jnp.finfo(z.dtype)
    above = m + jnp.maximum(jnp.abs(m) * fi.eps, fi.tiny)   # > m in this dtype
    reject = jnp.where(fires & (reject <= m), above, reject)
    return jnp.concatenate([z, reject[..., None]], axis=-1)
  return defended_logits


def evasion_success(defended_logits, y):
  """Success against classifier + detector: the prediction of :func:`defended`'s logits is
  neither the true class ``y`` nor the reject class (the last one). Bool ``[B]``."""
  pred = jnp.argmax(defended_logits, axis=-1)
  return (pred != y) & (pred != defended_logits.shape[-1] - 1)


def feature_squeezing_score(logits_fn: Callable, squeezers: Sequence[Callable]) -> Callable:
  """``x -> max_k ||softmax(f(x)) - softmax(f(squeeze_k(x)))||_1`` (Xu et al. 2018, §3).

  Compose the squeezers with ``jaxsec.attacks.evasion.bpda`` first to make the score
  attackable by gradients (identity backward pass).
  """
  squeezers = tuple(squeezers)
  if not squeezers or not all(callable(s) for s in squeezers):
    raise ValueError(f'squeezers={squeezers!r} must be a non-empty sequence of functions.')

  def score(x):
    p = jax.nn.softmax(common.as_multiclass(logits_fn(x)), axis=-1)
    d = [jnp.sum(jnp.abs(p - jax.nn.softmax(common.as_multiclass(logits_fn(s(x))), axis=-1)),
                 axis=-1) for s in squeezers]
    return jnp.max(jnp.stack(d), axis=0)
  return score


def learned_score(detector_apply_fn: Callable, params) -> Callable:
  """``x -> detector_apply_fn(params, x)[:, 0]``: the detector's logit as the score."""
  return lambda x: detector_apply_fn(params, x)[:, 0]


def detector_training_set(attack: Callable, logits_fn: Callable, x, y, key, *,
                          batch_size: int = 256):
  """Clean and adversarial inputs with labels 0 / 1 for training a detector (Metzen et al.).

  ``attack(logits_fn, x, y, key)`` crafts one adversarial example per clean one (Metzen
  et al. use the same attack family the detector should catch). Returns ``(x_all,
  labels)`` as NumPy arrays, clean first.
  """
  _checks.check_int('batch_size', batch_size, minimum=1)
  f = jax.jit(lambda xx, yy, kk: attack(logits_fn, xx, yy, kk).x_adv)
  advs = [np.asarray(f(jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size]),
                       jax.random.fold_in(key, i)))
          for i in range(0, x.shape[0], batch_size)]
  x_adv = np.concatenate(advs)
  x_all = np.concatenate([np.asarray(x), x_adv])
  labels = np.concatenate([np.zeros(x.shape[0], np.int32), np.ones(x.shape[0], np.int32)])
  return x_all, labels


def threshold_at_fpr(clean_scores, fpr: float = 0.05) -> float:
  """The smallest threshold ``t`` with ``mean(clean_scores > t) <= fpr`` (detect iff
  ``score > t``): the ``(1 - fpr)`` empirical quantile of the clean scores."""
  _checks.check_float('fpr', fpr, minimum=0.0, maximum=1.0)
  s = np.sort(np.asarray(clean_scores, np.float64))
  if s.size == 0:
    raise ValueError('clean_scores is empty.')
  k = int(np.floor(fpr * s.size))          # at most k clean scores may exceed t
  return float(s[s.size - 1 - k]) if k < s.size else float(s[0] - 1.0)


def detection_report(clean_scores, adv_scores, fpr: float = 0.05) -> dict:
  """ROC AUC and TPR at ``fpr`` FPR of a detector (adversarial = positive), using
  :mod:`jaxsec.metrics` (every operating point; ties counted half in the AUC)."""
  clean_scores = np.asarray(clean_scores, np.float64)
  adv_scores = np.asarray(adv_scores, np.float64)
  scores = np.concatenate([clean_scores, adv_scores])
  labels = np.concatenate([np.zeros(clean_scores.size, bool), np.ones(adv_scores.size, bool)])
  return {'auc': float(metrics.auc(scores, labels)),
          f'tpr_at_{fpr:g}_fpr': float(metrics.tpr_at_fpr(scores, labels, fpr)),
          'n_clean': int(clean_scores.size), 'n_adv': int(adv_scores.size)}


def detector_aware_pgd(score_fn: Callable, *, threshold, eps, num_steps: int = 100,
                       step_size=None, detector_weight=1.0, confidence=0.0,
                       score_margin=0.0, random_start: bool = True,
                       bounds=(0.0, 1.0)) -> Callable:
  """Untargeted L_inf PGD on the C&W-style combined loss against classifier + detector.

  What it adds to a generic attack on :func:`defended`: it is untargeted yet treats
  rejection as failure (its loss and its best-iterate choice), with the weights of the two
  goals as knobs.

  Minimises per example ``max(z_y - max_{j != y} z_j, -kappa) + c * max(s(x') - tau +
  m, 0)`` over ``||x' - x||_inf <= eps`` in the box (``s = score_fn``, ``tau =
  threshold``, ``m = score_margin``): Carlini & Wagner (AISec 2017) §"Attacking the
  detector jointly". Signed-gradient steps of ``step_size`` (default ``2.5 eps /
  num_steps``); the returned point is, per example, the first iterate that is
  misclassified *and* undetected (``s(x') <= tau``) if any, else the iterate of lowest
  loss. Returns ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed'; info:
  ``success`` [B], misclassified and undetected at ``x_adv``). Use :func:`defended_success`
  to score the result.
  """
  bounds = common.check_common(eps=eps, bounds=bounds)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_float('detector_weight', detector_weight, minimum=0.0)
  _checks.check_float('confidence', confidence, minimum=0.0)
  common.check_bool(random_start=random_start)
  if not callable(score_fn):
    raise ValueError(f'score_fn={score_fn!r} must be a function x -> scores [B].')

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds)
    e = jnp.asarray(eps, x.dtype)
    step = 2.5 * e / num_steps if step_size is None else step_size

    def loss_and_status(xa):
      z = common.as_multiclass(logits_fn(xa))
      m = common.margin(z, y)
      s = score_fn(xa)
      loss = jnp.maximum(m, -confidence) + detector_weight * jnp.maximum(
          s - threshold + score_margin, 0.0)
      ok = (common.predict(z) != y) & (s <= threshold)
      return jnp.sum(loss), (loss, ok)

    vg = jax.value_and_grad(loss_and_status, has_aux=True)
    x0 = x
    if random_start:
      x0 = common.project(x + common.random_in_ball(key, x.shape, e, 'linf', x.dtype), x, e,
                          'linf', bounds)
    (_, (l0, ok0)), g0 = vg(x0)

    def body(_, c):
      xa, g, best, best_l, done = c
      xn = common.project(xa - step * jnp.sign(g), x, e, 'linf', bounds)
      (_, (l, ok)), gn = vg(xn)
      take = (~done) & (ok | (l < best_l))
      best = common.select(take, xn, best)
      best_l = jnp.where(take, l, best_l)
      return xn, gn, best, best_l, done | ok

    _, _, best, _, done = lax.fori_loop(0, num_steps, body, (x0, g0, x0, l0, ok0))
    return AttackOutput(best, {'success': done}, 'fixed')
  return attack


def defended_success(logits_fn: Callable, score_fn: Callable, threshold, x, y, x_adv,
                     batch_size: int = 500) -> dict:
  """Against classifier + detector: the fraction of examples that are misclassified and
  undetected at ``x_adv`` (attack success), and the detection / error rates separately;
  also the clean false-positive rate at this threshold."""
  f = jax.jit(lambda z: (common.predict(logits_fn(z)), score_fn(z)))

  def run(xx):
    ps, ss = [], []
    for i in range(0, xx.shape[0], batch_size):
      p, s = f(jnp.asarray(xx[i:i + batch_size]))
      ps.append(np.asarray(p))
      ss.append(np.asarray(s))
    return np.concatenate(ps), np.concatenate(ss)

  y = np.asarray(y)
  pc, sc = run(x)
  pa, sa = run(x_adv)
  clean_ok = (pc == y) & (sc <= threshold)
  fooled = (pa != y) & (sa <= threshold)
  return {'clean_false_positive_rate': float(np.mean(sc > threshold)),
          'misclassified': float(np.mean(pa != y)),
          'detected': float(np.mean(sa > threshold)),
          'misclassified_and_undetected': float(np.mean(fooled)),
          'success_rate_on_accepted_clean': float(
              np.sum(fooled & clean_ok) / max(int(clean_ok.sum()), 1))}
