"""Gradient inversion: reconstruct a training batch from one shared gradient.

* Zhu, Liu, Han 2019 (NeurIPS), "Deep leakage from gradients" (DLG): given the gradient
  ``g* = grad_theta mean_b CE(f(x_b), y_b)`` a client shares (federated learning, gradients in
  transit), optimise dummy inputs ``x'`` and dummy soft labels ``softmax(z')`` so that their
  gradient matches: ``min ||grad_theta CE(f(x'), softmax(z')) - g*||^2`` (summed over all
  parameter tensors), with L-BFGS as in the paper (or Adam).
* Zhao, Mopuri, Bilen 2020, "iDLG: improved deep leakage from gradients": for one example
  with cross-entropy, the last layer's weight gradient for class ``c`` is
  ``(p_c - 1[c = y]) h`` with ``h`` the penultimate activations; when ``h >= 0`` (ReLU,
  sigmoid) the true class's gradient column is the only one that is <= 0, so the label is
  read off its sign (:func:`idlg_labels`, exact); DLG then optimises the input only.
  For batches, :func:`idlg_labels` ranks classes by their most negative gradient entry
  (Yin et al. 2021's heuristic; right only when the batch has distinct labels).

The models of the DLG paper use sigmoid activations (twice differentiable everywhere); with
ReLU networks gradient matching still works but converges worse. Reconstructions are scored
with ``jaxsec.metrics.psnr`` / ``ssim`` after :func:`match_batch` pairs them with the
originals (a batch gradient is invariant to the order of the batch).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import losses


def batch_gradient(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array) -> Any:
  """The shared gradient ``grad_theta mean_b CE(f(x_b), y_b)``; ``y`` are labels ``[B]`` or
  soft labels ``[B, C]``."""
  def loss(p):
    logits = apply_fn(p, x)
    yy = y if y.ndim == 2 else jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return jnp.mean(losses.soft_cross_entropy(logits, yy))
  return jax.grad(loss)(params)


def idlg_labels(last_weight_grad: jax.Array, *, batch_size: int = 1,
                class_axis: int = -1) -> jax.Array:
  """Labels from the sign of the last layer's weight gradient (iDLG).

  Args:
    last_weight_grad: gradient of the last dense layer's weight (Flax ``Dense`` kernel:
      ``[features, C]``, so ``class_axis=-1``).
    batch_size: 1 (exact when the penultimate activations are >= 0: the label is the class
      whose gradient column sums to a negative value, the only such column); > 1: the
      ``batch_size`` classes with the most negative entries (distinct labels assumed).

  Returns:
    int32 labels ``[batch_size]``.
  """
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  g = jnp.moveaxis(jnp.asarray(last_weight_grad), class_axis, -1)
  g = g.reshape((-1, g.shape[-1]))
  if batch_size > g.shape[-1]:
    raise ValueError(f'batch_size={batch_size} exceeds the number of classes {g.shape[-1]}.')
  if batch_size == 1:
    return jnp.argmin(jnp.sum(g, axis=0))[None].astype(jnp.int32)
  return jnp.argsort(jnp.min(g, axis=0))[:batch_size].astype(jnp.int32)


def _sq_distance(a, b):
  return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _cos_distance(a, b):
  dot = sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
  na = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(a)))
  nb = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(b)))
  return 1.0 - dot / (na * nb + 1e-12)


def total_variation(x: jax.Array) -> jax.Array:
  """Anisotropic TV of NHWC images: mean absolute difference of neighbouring pixels."""
  dh = jnp.abs(x[:, 1:, :, :] - x[:, :-1, :, :])
  dw = jnp.abs(x[:, :, 1:, :] - x[:, :, :-1, :])
  return jnp.mean(dh, axis=(1, 2, 3)) + jnp.mean(dw, axis=(1, 2, 3))


class GradientInversionResult(NamedTuple):
  """``x``: reconstructed batch; ``labels``: label probabilities ``[B, C]`` (one-hot when
  given or inferred); ``loss``: gradient distance per optimisation step."""
  x: jax.Array
  labels: jax.Array
  loss: jax.Array


LABEL_MODES = ('joint', 'idlg', 'given')


def dlg(*, num_steps: int = 300, optimizer: str = 'lbfgs', learning_rate: float = 1.0,
        label_mode: str = 'joint', distance: str = 'l2', tv_weight: float = 0.0,
        init: str = 'uniform', bounds: tuple[float, float] | None = (0.0, 1.0)):
  """Deep Leakage from Gradients (Zhu 2019) / iDLG (Zhao 2020) factory.

  Args:
    num_steps: optimiser steps (one L-BFGS iteration = one step, with a zoom line search).
    optimizer: 'lbfgs' (paper; the step length comes from a zoom line search, so
      ``learning_rate`` is unused) or 'adam' (step ``learning_rate``).
    label_mode: 'joint' (DLG: optimise soft labels with the input), 'idlg' (labels from
      :func:`idlg_labels`; needs ``last_weight_grad``), 'given' (labels known, ``y``).
    distance: 'l2' (squared Euclidean distance of gradients, DLG) or 'cosine'.
    tv_weight: optional total-variation prior on the dummy input (0 in DLG).
    init: dummy input start: 'uniform' (U[bounds], default) or 'normal' (N(0, 1), the DLG
      code's ``torch.randn``; far from [0, 1] images it often saturates the softmax, where
      the dummy gradient vanishes and the optimisation stalls at ``||g*||^2``).
    bounds: the reconstruction is clipped to this box at the end (optimisation itself is
      unconstrained, as in the paper); None keeps it unclipped.

  Returns:
    ``reconstruct(apply_fn, params, target_grads, key, *, x_shape, num_classes, y=None,
    last_weight_grad=None) -> GradientInversionResult``; jit-compatible given static shapes.
  """
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_choice('optimizer', optimizer, ('lbfgs', 'adam'))
  _checks.check_choice('label_mode', label_mode, LABEL_MODES)
  _checks.check_choice('distance', distance, ('l2', 'cosine'))
  _checks.check_choice('init', init, ('normal', 'uniform'))
  _checks.check_positive('learning_rate', learning_rate)
  _checks.check_float('tv_weight', tv_weight, minimum=0.0)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)
  dist = _sq_distance if distance == 'l2' else _cos_distance

  def reconstruct(apply_fn, params, target_grads, key, *, x_shape, num_classes, y=None,
                  last_weight_grad=None) -> GradientInversionResult:
    x_shape = tuple(int(s) for s in x_shape)
    b = x_shape[0]
    k_x, k_y = jax.random.split(key)
    if init == 'normal':
      x0 = jax.random.normal(k_x, x_shape, jnp.float32)
    else:
      lo, hi = bounds if bounds is not None else (0.0, 1.0)
      x0 = jax.random.uniform(k_x, x_shape, jnp.float32, lo, hi)
    if label_mode == 'given':
      if y is None:
        raise ValueError("label_mode='given' needs y=labels [B].")
      fixed = jax.nn.one_hot(jnp.asarray(y), num_classes)
    elif label_mode == 'idlg':
      if last_weight_grad is None:
        raise ValueError("label_mode='idlg' needs last_weight_grad= (the last dense layer's "
                         'weight gradient, from target_grads).')
      fixed = jax.nn.one_hot(idlg_labels(last_weight_grad, batch_size=b), num_classes)
    else:
      fixed = None
    v0 = {'x': x0}
    if fixed is None:
      v0['z'] = jax.random.normal(k_y, (b, num_classes), jnp.float32)

    def labels_of(v):
      return jax.nn.softmax(v['z'], -1) if fixed is None else fixed

    def objective(v):
      g = batch_gradient(apply_fn, params, v['x'], labels_of(v))
      val = dist(g, target_grads)
      if tv_weight:
        val = val + tv_weight * jnp.sum(total_variation(v['x']))
      return val

    if optimizer == 'lbfgs':
      opt = optax.lbfgs()  # step length from its zoom line search
      vg = optax.value_and_grad_from_state(objective)
    else:
      opt = optax.adam(learning_rate)
      vg = None
    state = opt.init(v0)

    def body(carry, _):
      v, s = carry
      if vg is not None:
        val, grad = vg(v, state=s)
        upd, s = opt.update(grad, s, v, value=val, grad=grad, value_fn=objective)
      else:
        val, grad = jax.value_and_grad(objective)(v)
        upd, s = opt.update(grad, s, v)
      return (optax.apply_updates(v, upd), s), val

    (v, _), hist = jax.lax.scan(body, (v0, state), None, length=num_steps)
    x = v['x'] if bounds is None else jnp.clip(v['x'], *bounds)
    return GradientInversionResult(x, labels_of(v), hist)

  return reconstruct


def match_batch(x_rec, x_true) -> np.ndarray:
  """The permutation ``perm`` minimising ``sum_b MSE(x_rec[perm[b]], x_true[b])`` (the
  Hungarian algorithm): the order in which to compare a reconstructed batch."""
  from scipy.optimize import linear_sum_assignment  # pylint: disable=g-import-not-at-top
  a = np.asarray(x_rec, np.float64).reshape((np.shape(x_rec)[0], -1))
  t = np.asarray(x_true, np.float64).reshape((np.shape(x_true)[0], -1))
  cost = ((t[:, None, :] - a[None, :, :]) ** 2).mean(-1)   # [true, rec]
  rows, cols = linear_sum_assignment(cost)
  perm = np.empty(t.shape[0], np.int64)
  perm[rows] = cols
  return perm


__all__ = ('batch_gradient', 'idlg_labels', 'total_variation', 'GradientInversionResult',
           'dlg', 'match_batch')
