"""Fine-pruning (Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks", RAID 2018).

Backdoor behaviour tends to live in units that clean inputs leave dormant. The pruning
defense ranks the units of a late layer by their mean activation on clean data and removes
them in increasing order; fine-pruning then fine-tunes the pruned network on the clean data,
which also moves the weights of the backdoor units that pruning spared (paper Sec. 4-5).

* :func:`dormant_units` -- the ``round(fraction * d)`` units with the lowest mean clean
  activation (a bool mask over units).
* :func:`prune` -- removes units by zeroing the rows of the weight matrix that reads the
  layer (``params`` at ``path``, ``[d, ...]``): the unit's output no longer reaches the
  next layer, exactly as deleting it.
* :func:`fine_prune` -- prune (a fixed fraction, or the paper's rule: the largest prefix of
  the order whose clean accuracy stays within ``max_accuracy_drop`` of the unpruned
  model's), then fine-tune with ``train.fit`` while the pruned rows stay zero (their
  updates are masked out after the optimizer).

Deviations: the paper prunes the channels of the *last convolutional layer* (the layer
before the fully connected ones); here the layer is given by the caller as ``feature_fn``
(activations ``[B, d]`` or ``[B, ..., d]``, averaged over everything but the unit axis)
plus the ``path`` of the weight matrix that reads it, and the study prunes the penultimate
dense units of the reference CNN (``models.feature_fn``). The paper stops pruning when the
validation accuracy drops by 4%; ``max_accuracy_drop=0.04`` is that rule, evaluated on a
grid of ``grid`` prefix sizes rather than unit by unit. The paper fine-tunes at a smaller
learning rate than training for a few epochs; pass the ``optimizer`` you want.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import train


def _mean_activation(feature_fn, x, batch_size):
  total, n = None, 0
  for i in range(0, x.shape[0], batch_size):
    a = np.asarray(feature_fn(x[i:i + batch_size]), np.float64)
    if a.ndim < 2:
      raise ValueError(f'feature_fn returned shape {a.shape}; expected [B, ..., d].')
    s = a.reshape(-1, a.shape[-1]).sum(0)
    total = s if total is None else total + s
    n += a.reshape(-1, a.shape[-1]).shape[0]
  assert total is not None
  return total / n


def activation_order(feature_fn: Callable, x_clean, *, batch_size: int = 1000) -> np.ndarray:
  """Units of the layer ``feature_fn`` returns in increasing mean clean activation (ties:
  lower index first): the order in which the pruning defense removes them."""
  x = jnp.asarray(x_clean)
  if x.shape[0] == 0:
    raise ValueError('x_clean is empty.')
  return np.argsort(_mean_activation(feature_fn, x, batch_size), kind='stable')


def dormant_units(feature_fn: Callable, x_clean, *, fraction: float,
                  batch_size: int = 1000) -> np.ndarray:
  """Bool mask ``[d]``: the ``round(fraction * d)`` units with the lowest mean activation
  on ``x_clean`` (:func:`activation_order`)."""
  fraction = float(_checks.check_float('fraction', fraction, minimum=0.0, maximum=1.0,
                                       allow_traced=False))
  order = activation_order(feature_fn, x_clean, batch_size=batch_size)
  out = np.zeros(order.size, bool)
  out[order[:round(fraction * order.size)]] = True
  return out


def _get(params, path):
  node = params
  for k in path:
    try:
      node = node[k]
    except (KeyError, IndexError, TypeError) as e:
      raise ValueError(f'path={tuple(path)!r} does not lead to a weight in params '
                       f'(failed at {k!r}).') from e
  return node


def _keep_tree(params, path, pruned):
  """A pytree like ``params``: ones everywhere except zero rows ``pruned`` at ``path``."""
  target = _get(params, path)
  if target.shape[0] != pruned.shape[0]:
    raise ValueError(f'the weight at path={tuple(path)!r} has shape {tuple(target.shape)}; '
                     f'expected {pruned.shape[0]} rows (one per unit).')
  rows = jnp.asarray(~pruned, target.dtype).reshape((-1,) + (1,) * (target.ndim - 1))

  def leaf(kp, v):
    keys = tuple(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', None))) for k in kp)
    return jnp.broadcast_to(rows, v.shape) if keys == tuple(path) else jnp.ones_like(v)
  return jax.tree_util.tree_map_with_path(leaf, params)


def prune(params: Any, path: Sequence, pruned) -> Any:
  """``params`` with the rows ``pruned`` (bool ``[d]``) of the weight at ``path`` set to zero.

  ``path`` is the sequence of keys to the matrix that *reads* the pruned layer, e.g.
  ``('params', 'head', 'kernel')`` for the penultimate units of ``models.CNN``."""
  pruned = np.asarray(pruned, bool)
  if pruned.ndim != 1:
    raise ValueError(f'pruned has shape {pruned.shape}; expected [d].')
  keep = _keep_tree(params, path, pruned)
  return jax.tree_util.tree_map(lambda p, k: p * k, params, keep)


def _mask_updates(keep) -> optax.GradientTransformation:
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda u, k: u * k, updates, keep), state
  return optax.GradientTransformation(init, update)


def _accuracy(apply_fn, params, x, y, batch_size):
  return train.evaluate(apply_fn, params, x, y, batch_size=batch_size)


def fine_prune(apply_fn: Callable, params: Any, x, y, *, feature_fn: Callable,
               path: Sequence, key, optimizer: optax.GradientTransformation,
               fraction: float = 0.5, max_accuracy_drop: float | None = None,
               grid: int = 16, num_epochs: int = 1, batch_size: int = 128,
               x_val=None, y_val=None) -> tuple[Any, dict]:
  """Fine-pruning: prune the dormant units of a layer, then fine-tune on clean data.

  Args:
    apply_fn: ``(params, x) -> logits``.
    params: the suspect model's parameters.
    x, y: clean data the defender holds (fine-tuning set, and the validation set unless
      ``x_val`` / ``y_val`` are given).
    feature_fn: ``(params, x) -> activations [B, ..., d]`` of the layer to prune.
    path: keys to the weight matrix ``[d, ...]`` that reads that layer (:func:`prune`).
    key: batch order of the fine-tuning.
    optimizer: the fine-tuning optimizer (the pruned rows' updates are zeroed after it).
    fraction: share of the units to prune (the cap when ``max_accuracy_drop`` is given).
    max_accuracy_drop: if given, prune the largest prefix (of ``grid`` evenly spaced sizes
      up to ``fraction``) whose validation accuracy is at least the unpruned accuracy minus
      this (paper: 0.04).
    num_epochs: fine-tuning epochs (0 = the pruning defense alone).

  Returns:
    ``(params, info)``; ``info``: ``pruned`` (bool ``[d]``), ``num_pruned``,
    ``accuracy_unpruned``, ``accuracy_pruned`` (before fine-tuning), ``accuracy_final``
    (on the validation data), ``order`` (the pruning order), and ``prefix_accuracy`` (the
    grid of ``(units, accuracy)`` when ``max_accuracy_drop`` is given).
  """
  if not callable(apply_fn) or not callable(feature_fn):
    raise ValueError(f'apply_fn={apply_fn!r} and feature_fn={feature_fn!r} must be functions.')
  fraction = float(_checks.check_float('fraction', fraction, minimum=0.0, maximum=1.0,
                                       allow_traced=False))
  grid = _checks.check_int('grid', grid, minimum=1)
  num_epochs = _checks.check_int('num_epochs', num_epochs, minimum=0)
  if max_accuracy_drop is not None:
    max_accuracy_drop = float(_checks.check_float('max_accuracy_drop', max_accuracy_drop,
                                                  minimum=0.0, maximum=1.0,
                                                  allow_traced=False))
  x = jnp.asarray(x)
  _checks.check_labels('y', y, batch=x.shape[0])
  if (x_val is None) != (y_val is None):
    raise ValueError('Give both x_val and y_val, or neither.')
  xv, yv = (x, y) if x_val is None else (jnp.asarray(x_val), y_val)
  order = activation_order(lambda a: feature_fn(params, a), x)
  d = order.size
  acc0 = _accuracy(apply_fn, params, xv, yv, 1000)
  cap = round(fraction * d)
  info: dict = {'accuracy_unpruned': acc0, 'order': order}
  if max_accuracy_drop is None:
    count = cap
  else:
    sizes = sorted({round(cap * (i + 1) / grid) for i in range(grid)})
    count, curve = 0, []
    for s in sizes:
      mask = np.zeros(d, bool)
      mask[order[:s]] = True
      a = _accuracy(apply_fn, prune(params, path, mask), xv, yv, 1000)
      curve.append((s, a))
      if a < acc0 - max_accuracy_drop:
        break
      count = s
    info['prefix_accuracy'] = curve
  pruned = np.zeros(d, bool)
  pruned[order[:count]] = True
  p = prune(params, path, pruned)
  info.update(pruned=pruned, num_pruned=count,
              accuracy_pruned=_accuracy(apply_fn, p, xv, yv, 1000))
  if num_epochs > 0:
    keep = _keep_tree(p, path, pruned)
    opt = optax.chain(optimizer, _mask_updates(keep))
    p = train.fit(apply_fn, p, x, jnp.asarray(y), optimizer=opt, key=key,
                  num_epochs=num_epochs, batch_size=min(batch_size, x.shape[0])).params
  info['accuracy_final'] = _accuracy(apply_fn, p, xv, yv, 1000)
  return p, info
