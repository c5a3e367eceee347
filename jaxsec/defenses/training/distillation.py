"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016).

The procedure of their §IV-B, step by step:

1. Train the teacher ``F`` with the softmax at temperature ``T``:
   ``fit(..., loss=temperature_cross_entropy(T))`` (cross-entropy of ``softmax(z / T)``).
2. Soft labels ``F(x) = softmax(z_F(x) / T)`` on the training set (:func:`soft_labels`).
3. Train the distilled network ``F^d`` (same architecture) at the same ``T`` on the soft
   labels: ``fit(..., objective=distillation(teacher_logits_fn, temperature=T))``, the
   cross-entropy between ``softmax(z_d / T)`` and ``F(x)``; the teacher's outputs are held
   fixed (computed on the fly on each batch, with ``stop_gradient``).
4. Deploy ``F^d`` at temperature 1: its logits ``z_d`` unchanged (:func:`deployed`), i.e.
   the softmax ``softmax(z_d)``. Because training at ``T`` makes the logits about ``T``
   times larger, the deployed softmax saturates and its gradients vanish: the defense's
   effect on FGSM / JSMA. Carlini & Wagner (S&P 2017) attack the logits (their margin loss
   does not go through the softmax) and recover ~100% success.

``temperature = 1`` and a confident teacher reduce step 3 to ordinary training on the
teacher's hard labels (tested).
"""
from __future__ import annotations

from typing import Callable

import jax

from jaxsec import _checks
from jaxsec import losses as losses_lib


def temperature_cross_entropy(temperature) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Per-example ``CE(softmax(z / T), y)``: training at temperature ``T`` (step 1)."""
  _checks.check_float('temperature', temperature, minimum=0.0, strict_min=True)
  return lambda logits, y: losses_lib.cross_entropy(logits / temperature, y)


def soft_labels(teacher_logits_fn: Callable, x: jax.Array, temperature) -> jax.Array:
  """``softmax(z_teacher(x) / T)`` (step 2), gradient-free."""
  _checks.check_float('temperature', temperature, minimum=0.0, strict_min=True)
  z = jax.lax.stop_gradient(teacher_logits_fn(x))
  return jax.nn.softmax(z / temperature, axis=-1)


def distillation(teacher_logits_fn: Callable, *, temperature, hard_label_weight=0.0):
  """The distilled network's objective at temperature ``T`` (step 3).

  ``(1 - a) * CE(softmax(z / T), softmax(z_teacher / T)) + a * CE(softmax(z / T), y)``
  with ``a = hard_label_weight`` (0 in Papernot et al.: soft labels only; ``a > 0`` mixes
  in the true labels, still at ``T``).

  Args:
    teacher_logits_fn: the trained teacher ``x -> logits`` (a closure over its params).
    temperature: ``T > 0`` (Papernot et al.: 100 on MNIST).
    hard_label_weight: ``a`` in [0, 1].
  """
  _checks.check_float('temperature', temperature, minimum=0.0, strict_min=True)
  _checks.check_float('hard_label_weight', hard_label_weight, minimum=0.0, maximum=1.0)
  if not callable(teacher_logits_fn):
    raise ValueError(f'teacher_logits_fn={teacher_logits_fn!r} must be x -> logits.')

  def objective(apply_fn, params, x, y, key):
    del key
    z = apply_fn(params, x) / temperature
    soft = soft_labels(teacher_logits_fn, x, temperature)
    out = losses_lib.soft_cross_entropy(z, soft)
    if not _checks.is_concrete(hard_label_weight) or float(hard_label_weight) > 0:
      out = (1.0 - hard_label_weight) * out + hard_label_weight * losses_lib.cross_entropy(z, y)
    return out
  return objective


def at_temperature(logits_fn: Callable, temperature) -> Callable:
  """``x -> logits_fn(x) / T``: a model evaluated with its softmax at temperature ``T``."""
  _checks.check_float('temperature', temperature, minimum=0.0, strict_min=True)
  return lambda x: logits_fn(x) / temperature


def deployed(apply_fn: Callable, params) -> Callable:
  """The distilled model at test time (step 4, ``T = 1``): ``x -> apply_fn(params, x)``."""
  return lambda x: apply_fn(params, x)
