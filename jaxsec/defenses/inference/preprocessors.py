"""Input preprocessors as wrappers of ``logits_fn`` (survey §3.3: input transformations).

* :func:`bit_depth_reduction` and :func:`median_filter` -- the squeezers of feature
  squeezing (Xu, Evans & Qi, NDSS 2018): reduce each value to ``bits`` bits, and a local
  ``size x size`` median (scipy.ndimage.median_filter semantics: 'reflect' borders, the
  window anchored like scipy's, the upper median for even windows).
* :func:`preprocessed` -- ``x -> logits_fn(preprocess(x))``: the defended model, again a
  ``logits_fn`` that every attack takes.

Adaptive evaluation: the squeezers have zero (bit depth) or undefined gradients, so a
gradient attack on :func:`preprocessed` is meaningless; attack
``jaxsec.attacks.evasion.bpda_logits_fn(logits_fn, squeeze)`` instead (Athalye, Carlini &
Wagner 2018: the identity on the backward pass). A differentiable preprocessor (the DAE of
:mod:`jaxsec.defenses.inference.dae`) is attacked end to end, and with BPDA as a second opinion.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks


def bit_depth_reduction(*, bits: int, bounds=(0.0, 1.0)) -> Callable[[jax.Array], jax.Array]:
  """``x -> lo + round((x - lo) / (hi - lo) * (2^bits - 1)) / (2^bits - 1) * (hi - lo)``.

  Xu et al.'s bit-depth squeezer (1 bit on MNIST, 5 bits on CIFAR-10).
  """
  bits = _checks.check_int('bits', bits, minimum=1, maximum=24)
  lo, hi = _checks.check_bounds(bounds)
  levels = float(2 ** bits - 1)

  def squeeze(x):
    u = jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return lo + jnp.round(u * levels) / levels * (hi - lo)
  return squeeze


def median_filter(*, size: int = 2) -> Callable[[jax.Array], jax.Array]:
  """Per-channel ``size x size`` median of an NHWC batch (Xu et al.: 2x2 on MNIST).

  Matches ``scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode='reflect')``:
  the window covers offsets ``-(size // 2) .. size - 1 - size // 2`` and, for even
  windows, the element of rank ``size^2 // 2`` (the upper median) is taken.
  """
  size = _checks.check_int('size', size, minimum=1)
  before = size // 2
  after = size - 1 - before

  def squeeze(x):
    _checks.check_array('x', x, ndim=4, dtype_kind='f')
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode='symmetric')
    patches = [xp[:, i:i + h, j:j + w, :] for i in range(size) for j in range(size)]
    stack = jnp.sort(jnp.stack(patches, axis=-1), axis=-1)
    return stack[..., (size * size) // 2]
  return squeeze


def preprocessed(logits_fn: Callable, preprocess: Callable) -> Callable:
  """``x -> logits_fn(preprocess(x))`` (the defended model)."""
  if not callable(logits_fn) or not callable(preprocess):
    raise ValueError('logits_fn and preprocess must be callables.')
  return lambda x: logits_fn(preprocess(x))
