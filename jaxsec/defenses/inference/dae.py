"""Denoising autoencoder preprocessor (Gu & Rigazio, ICLR 2015 workshop; survey §3.1).

A pure-JAX MLP autoencoder (no Flax, by the package contract): :func:`init` and
:func:`apply` are the ``(init, apply_fn)`` pair, trained with ``jaxsec.train.fit`` on the
:func:`denoising_objective` (reconstruct the clean ``x`` from ``x + N(0, sigma^2)``,
clipped to the box). The defended model is
``jaxsec.defenses.inference.preprocessors.preprocessed(logits_fn, lambda x: apply(params, x))``, as
for any other denoiser ``apply_fn(params, x) -> x'``.

Gu & Rigazio found that a DAE trained on adversarial noise removes much of it, and that
the stacked DAE + classifier is again vulnerable to attacks through the whole stack: the
adaptive evaluation attacks the preprocessed model end to end (it is differentiable),
and with BPDA (identity backward) as a second opinion.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxsec import _checks


def init(key: jax.Array, input_shape: Sequence[int], hidden: Sequence[int] = (512,)
         ) -> dict:
  """Parameters of the MLP autoencoder for inputs of ``input_shape`` (no batch axis)."""
  d = 1
  for s in input_shape:
    d *= int(s)
  sizes = [d] + [int(h) for h in hidden] + [d]
  if any(s < 1 for s in sizes):
    raise ValueError(f'hidden={tuple(hidden)} must be positive layer widths.')
  layers = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    k = jax.random.fold_in(key, i)
    layers.append({'w': jax.random.normal(k, (a, b), jnp.float32) * jnp.sqrt(2.0 / a),
                   'b': jnp.zeros((b,), jnp.float32)})
  return {'layers': layers}


def apply(params: dict, x: jax.Array, bounds=(0.0, 1.0)) -> jax.Array:
  """Reconstruction in the box: ReLU hidden layers, sigmoid output scaled to ``bounds``."""
  lo, hi = bounds
  h = x.reshape((x.shape[0], -1))
  layers = params['layers']
  for layer in layers[:-1]:
    h = jax.nn.relu(h @ layer['w'] + layer['b'])
  h = h @ layers[-1]['w'] + layers[-1]['b']
  return (lo + (hi - lo) * jax.nn.sigmoid(h)).reshape(x.shape)


def denoising_objective(*, noise_std, bounds=(0.0, 1.0)):
  """Per-example mean squared error ``||D(clip(x + sigma z)) - x||^2 / d``; labels unused."""
  _checks.check_float('noise_std', noise_std, minimum=0.0)
  lo, hi = _checks.check_bounds(bounds)

  def objective(apply_fn, params, x, y, key):
    del y
    noisy = jnp.clip(x + noise_std * jax.random.normal(key, x.shape, x.dtype), lo, hi)
    r = apply_fn(params, noisy) - x
    return jnp.mean(r.reshape((x.shape[0], -1)) ** 2, axis=-1)
  return objective

