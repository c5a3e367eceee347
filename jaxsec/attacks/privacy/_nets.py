"""A hand-written MLP (no Flax: ``jaxsec.attacks`` must not import it) for attack models,
meta-classifiers and extraction substitutes on feature vectors."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def mlp_init(key: jax.Array, sizes: Sequence[int]) -> dict:
  """LeCun-normal weights, zero biases; ``sizes = (in, hidden..., out)``."""
  keys = jax.random.split(key, len(sizes) - 1)
  params = {}
  for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
    params[f'w{i}'] = jax.random.normal(k, (a, b), jnp.float32) / jnp.sqrt(a)
    params[f'b{i}'] = jnp.zeros((b,), jnp.float32)
  return params


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
  """ReLU MLP on ``[B, ...]`` inputs (flattened) -> ``[B, out]``."""
  h = x.reshape((x.shape[0], -1))
  n = len(params) // 2
  for i in range(n):
    h = h @ params[f'w{i}'] + params[f'b{i}']
    if i < n - 1:
      h = jax.nn.relu(h)
  return h
