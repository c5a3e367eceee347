"""Per-example losses ``loss(logits, labels) -> [batch]`` and their mean versions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy per example; for one logit, binary (sigmoid) cross-entropy."""
  if logits.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(logits[..., 0], labels.astype(logits.dtype))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def soft_cross_entropy(logits: jax.Array, probs: jax.Array) -> jax.Array:
  """Cross-entropy against soft labels (distillation, PATE students)."""
  return optax.softmax_cross_entropy(logits, probs)


def hinge(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """SVM hinge loss. One score: max(0, 1 - s f(x)) with s = 2y - 1. Several scores:
  Crammer-Singer multiclass hinge max(0, 1 + max_{j != y} f_j - f_y)."""
  if logits.shape[-1] == 1:
    s = 2.0 * labels.astype(logits.dtype) - 1.0
    return jax.nn.relu(1.0 - s * logits[..., 0])
  num_classes = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  correct = jnp.sum(logits * onehot, axis=-1)
  other = jnp.max(logits - 1e9 * onehot, axis=-1)
  return jax.nn.relu(1.0 + other - correct)


def predict(logits: jax.Array) -> jax.Array:
  """Predicted class: argmax, or (logit > 0) for a single-logit binary model."""
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(predict(logits) == labels)


_LOSSES = {'cross_entropy': cross_entropy, 'hinge': hinge}


def get(name: str):
  if name not in _LOSSES:
    raise ValueError(f'Unknown loss name={name!r}; expected one of {tuple(_LOSSES)}.')
  return _LOSSES[name]
