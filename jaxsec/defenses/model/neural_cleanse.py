"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse:
Identifying and Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019).

A backdoored label is one that a *small* patch sends every input to. For each label ``t``
Neural Cleanse reverse-engineers the smallest trigger: a mask ``m`` (``[H, W]``, in [0, 1])
and a pattern ``p`` (``[H, W, C]``, in the input box) with

    x' = (1 - m) * x + m * p,   min_{m, p}  CE(f(x'), t) + lambda * |m|_1

over clean inputs (paper eqs. 2-3). The L1 norms of the reversed masks are then compared
by the median absolute deviation (paper Sec. IV-B): with ``med = median(norms)`` and
``MAD = 1.4826 * median(|norms - med|)`` (the consistency constant for a normal), the
anomaly index of label ``t`` is ``(med - norm_t) / MAD``; a label whose index exceeds 2 (a
small-norm outlier, > 95% confidence under the normal) is flagged as infected. Repair by
unlearning (paper Sec. VI-C): fine-tune on clean data of which a share (20%) carries the
reversed trigger *with its true label*.

* :func:`reverse_triggers` -- all labels at once (one ``vmap`` over targets, one jitted
  step), with bolunwang/backdoor's schedule for ``lambda``.
* :func:`anomaly_index` -- the MAD index (signed: positive = smaller than the median).
* :func:`detect` -- both, the flagged labels and the infected label.
* :func:`stamp` -- ``(1 - m) * x + m * p``.
* :func:`unlearn` -- the repair.

Follows the authors' code (github.com/bolunwang/backdoor, ``visualizer.py`` and
``mad_outlier_detection.py``) and ART's ``NeuralCleanseMixin``: ``tanh``-parametrised mask
and pattern (``m = tanh(w) / (2 - eps) + 0.5``), Adam (lr 0.1, betas 0.5 / 0.9), initial
``lambda = 1e-3``, ``lambda`` multiplied by 2 after ``patience`` (5) epochs with attack
success >= ``success_threshold`` (0.99) and divided by ``2 ** 1.5`` after ``patience``
epochs below it, and the reported trigger the smallest-norm one among the epochs that
reached the threshold (the last one if none did). Deviations: the labels are optimised
jointly (vectorised), each with its own ``lambda`` schedule, rather than one after the
other; an "epoch" is ``steps_per_epoch`` mini-batches drawn with replacement from
``x_clean`` (the authors pass over a generator of the clean set); the early-stopping rule
(no improvement of the best norm for ``2 * patience`` epochs at the threshold) is replaced
by a fixed number of epochs, so the program has a fixed cost; the first cost-setting phase
for ``init_cost = 0`` is not offered (``init_cost > 0``). The unlearning repair follows the
paper's recipe (20% of the clean data stamped with the reversed trigger, one epoch by
default) with this package's trainer (``train.fit``); the paper fine-tunes at its training
learning rate.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import train

_EPS = 1e-7
MAD_CONSTANT = 1.4826   # consistency constant of the MAD for a normal distribution


class ReversedTriggers(NamedTuple):
  """``mask [K, H, W]`` in [0, 1], ``pattern [K, H, W, C]`` in the box, ``l1 [K]`` the
  masks' L1 norms, ``success [K]`` the attack success of each reversed trigger on
  ``x_clean``, ``cost [K]`` the final ``lambda``."""
  mask: Any
  pattern: Any
  l1: Any
  success: Any
  cost: Any


def stamp(x, mask, pattern):
  """``(1 - m) * x + m * p`` for images ``x [B, H, W, C]``, ``mask [H, W]``,
  ``pattern [H, W, C]``."""
  m = mask[..., None]
  return (1.0 - m) * x + m * pattern


def anomaly_index(norms) -> np.ndarray:
  """Signed MAD anomaly index ``(median - norm) / (1.4826 * MAD)`` per label (``[K]``):
  positive for norms below the median; Neural Cleanse flags labels with index > 2. A MAD
  of zero gives ``+inf`` / ``-inf`` for norms below / above the median and 0 at it."""
  v = np.asarray(norms, np.float64)
  if v.ndim != 1 or v.size < 3 or not np.all(np.isfinite(v)):
    raise ValueError(f'norms has shape {v.shape}; expected at least 3 finite values (one '
                     'per label).')
  med = np.median(v)
  mad = MAD_CONSTANT * np.median(np.abs(v - med))
  d = med - v
  if mad == 0.0:
    return np.where(d > 0, np.inf, np.where(d < 0, -np.inf, 0.0))
  return d / mad


def reverse_triggers(logits_fn: Callable, x_clean, *, num_classes: int, key,
                     num_epochs: int = 20, steps_per_epoch: int = 10, batch_size: int = 64,
                     learning_rate: float = 0.1, init_cost: float = 1e-3,
                     cost_multiplier: float = 2.0, patience: int = 5,
                     success_threshold: float = 0.99,
                     bounds: tuple[float, float] = (0.0, 1.0),
                     targets=None) -> ReversedTriggers:
  """Reverse-engineers the minimal trigger of every label (module docstring).

  Args:
    logits_fn: the suspect model, ``x -> [B, K]``, images ``[B, H, W, C]``.
    x_clean: ``[M, H, W, C]`` clean inputs the defender holds.
    num_classes: ``K``.
    key: draws the mini-batches and the initial mask / pattern.
    num_epochs, steps_per_epoch, batch_size: the optimisation's length and batches.
    learning_rate, init_cost, cost_multiplier, patience, success_threshold: the authors'
      settings (0.1, 1e-3, 2, 5, 0.99).
    bounds: the input box the pattern lives in.
    targets: labels to reverse (default all ``K``).
  """
  if not callable(logits_fn):
    raise ValueError(f'logits_fn={logits_fn!r} must be a function.')
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  num_epochs = _checks.check_int('num_epochs', num_epochs, minimum=1)
  steps_per_epoch = _checks.check_int('steps_per_epoch', steps_per_epoch, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  patience = _checks.check_int('patience', patience, minimum=1)
  learning_rate = float(_checks.check_float('learning_rate', learning_rate, minimum=0.0,
                                            strict_min=True, allow_traced=False))
  init_cost = float(_checks.check_float('init_cost', init_cost, minimum=0.0, strict_min=True,
                                        allow_traced=False))
  cost_multiplier = float(_checks.check_float('cost_multiplier', cost_multiplier, minimum=1.0,
                                              strict_min=True, allow_traced=False))
  success_threshold = float(_checks.check_float('success_threshold', success_threshold,
                                                minimum=0.0, maximum=1.0, allow_traced=False))
  xc = jnp.asarray(x_clean)
  _checks.check_array('x_clean', xc, ndim=4, dtype_kind='f', finite=True)
  lo, hi = (float(b) for b in bounds)
  if not lo < hi:
    raise ValueError(f'bounds={bounds!r} must satisfy lo < hi.')
  t = np.arange(num_classes) if targets is None else np.asarray(targets)
  if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer) or \
      t.min() < 0 or t.max() >= num_classes:
    raise ValueError(f'targets={targets!r} must be labels in [0, {num_classes}).')
  t = jnp.asarray(t, jnp.int32)
  h, w, c = xc.shape[1:]
  opt = optax.adam(learning_rate, b1=0.5, b2=0.9)

  def decode(v):
    m = jnp.tanh(v['mask']) / (2.0 - _EPS) + 0.5
    p = (jnp.tanh(v['pattern']) / (2.0 - _EPS) + 0.5) * (hi - lo) + lo
    return m, p

  def loss_one(v, target, cost, xb):
    m, p = decode(v)
    z = logits_fn(stamp(xb, m, p))
    ce = optax.softmax_cross_entropy_with_integer_labels(
        z, jnp.full((xb.shape[0],), target)).mean()
    hit = jnp.mean(jnp.argmax(z, -1) == target)
    return ce + cost * jnp.sum(m), hit

  @jax.jit
  def step(v, s, cost, xb):
    (_, hit), g = jax.vmap(jax.value_and_grad(loss_one, has_aux=True),
                           in_axes=(0, 0, 0, None))(v, t, cost, xb)
    u, s = jax.vmap(opt.update)(g, s)
    return optax.apply_updates(v, u), s, hit

  k_init, k_batch = jax.random.split(key)
  km, kp = jax.random.split(k_init)
  nt = t.shape[0]
  # The authors start from a random mask and pattern in the box (atanh of uniform draws).
  v = {'mask': jnp.arctanh((jax.random.uniform(km, (nt, h, w)) - 0.5) * (2.0 - _EPS)),
       'pattern': jnp.arctanh((jax.random.uniform(kp, (nt, h, w, c)) - 0.5) * (2.0 - _EPS))}
  s = jax.vmap(opt.init)(v)
  cost = np.full(nt, init_cost)
  up = np.zeros(nt, int)
  down = np.zeros(nt, int)
  best_l1 = np.full(nt, np.inf)
  best_m, best_p = decode(v)
  best_m, best_p = np.asarray(best_m), np.asarray(best_p)
  best_succ = np.zeros(nt)
  for e in range(num_epochs):
    hits = []
    for i in range(steps_per_epoch):
      idx = jax.random.randint(jax.random.fold_in(k_batch, e * steps_per_epoch + i),
                               (batch_size,), 0, xc.shape[0])
      v, s, hit = step(v, s, jnp.asarray(cost, jnp.float32), xc[idx])
      hits.append(np.asarray(hit))
    acc = np.mean(hits, axis=0)
    m, p = decode(v)
    l1 = np.asarray(jnp.sum(m, axis=(1, 2)))
    better = (acc >= success_threshold) & (l1 < best_l1)
    last = e == num_epochs - 1
    take = better | (last & ~np.isfinite(best_l1))
    best_m = np.where(take[:, None, None], np.asarray(m), best_m)
    best_p = np.where(take[:, None, None, None], np.asarray(p), best_p)
    best_succ = np.where(take, acc, best_succ)
    best_l1 = np.where(take, l1, best_l1)
    ok = acc >= success_threshold
    up = np.where(ok, up + 1, 0)
    down = np.where(ok, 0, down + 1)
    raise_cost = up >= patience
    lower_cost = ~raise_cost & (down >= patience)
    cost = np.where(raise_cost, cost * cost_multiplier,
                    np.where(lower_cost, cost / cost_multiplier ** 1.5, cost))
    up = np.where(raise_cost, 0, up)
    down = np.where(lower_cost, 0, down)
  return ReversedTriggers(best_m, best_p, best_l1, best_succ, cost)


class NeuralCleanseResult(NamedTuple):
  """The reversed triggers, the anomaly index per label (``[K]``), the labels flagged
  (index > ``threshold``, ascending), and ``infected``: the flagged label with the largest
  index, or None when none is flagged."""
  triggers: ReversedTriggers
  anomaly_index: Any
  flagged: tuple
  infected: int | None


def detect(logits_fn: Callable, x_clean, *, num_classes: int, key,
                   threshold: float = 2.0, **reverse_kwargs) -> NeuralCleanseResult:
  """Neural Cleanse detection: :func:`reverse_triggers` for every label (``reverse_kwargs``
  go there), then :func:`anomaly_index` of the masks' L1 norms; labels above ``threshold``
  (paper: 2) are infected."""
  threshold = float(_checks.check_float('threshold', threshold, allow_traced=False))
  if 'targets' in reverse_kwargs:
    raise ValueError('detect reverses every label; call reverse_triggers for a '
                     'subset (targets=...).')
  trig = reverse_triggers(logits_fn, x_clean, num_classes=num_classes, key=key,
                          **reverse_kwargs)
  idx = anomaly_index(trig.l1)
  flagged = tuple(int(k) for k in np.flatnonzero(idx > threshold))
  infected = int(np.argmax(idx)) if flagged else None
  return NeuralCleanseResult(trig, idx, flagged, infected)


def unlearn(apply_fn: Callable, params: Any, x, y, mask, pattern, *, key,
            optimizer: optax.GradientTransformation, stamp_fraction: float = 0.2,
            num_epochs: int = 1, batch_size: int = 128) -> tuple[Any, dict]:
  """Neural Cleanse's repair by unlearning: fine-tune ``params`` on the clean ``(x, y)`` of
  which a random ``stamp_fraction`` (paper: 20%) carries the reversed trigger
  (:func:`stamp`) while keeping its true label.

  Returns ``(params, info)``, ``info['stamped']`` the bool mask of the stamped rows.
  """
  stamp_fraction = float(_checks.check_float('stamp_fraction', stamp_fraction, minimum=0.0,
                                             maximum=1.0, allow_traced=False))
  num_epochs = _checks.check_int('num_epochs', num_epochs, minimum=1)
  x = jnp.asarray(x)
  _checks.check_array('x', x, ndim=4, dtype_kind='f', finite=True)
  _checks.check_labels('y', y, batch=x.shape[0])
  mask, pattern = jnp.asarray(mask), jnp.asarray(pattern)
  if mask.shape != x.shape[1:3] or pattern.shape != x.shape[1:]:
    raise ValueError(f'mask {tuple(mask.shape)} / pattern {tuple(pattern.shape)} do not fit '
                     f'images {tuple(x.shape[1:])}.')
  k_pick, k_fit = jax.random.split(key)
  n = x.shape[0]
  n_s = round(stamp_fraction * n)
  stamped = np.zeros(n, bool)
  stamped[np.asarray(jax.random.permutation(k_pick, n))[:n_s]] = True
  xs = jnp.where(jnp.asarray(stamped)[:, None, None, None], stamp(x, mask, pattern), x)
  res = train.fit(apply_fn, params, xs, jnp.asarray(y), optimizer=optimizer, key=k_fit,
                  num_epochs=num_epochs, batch_size=min(batch_size, n))
  return res.params, {'stamped': stamped, 'loss': np.asarray(res.history['loss'])}
