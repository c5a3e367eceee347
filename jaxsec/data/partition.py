"""Deterministic, disjoint partitions of a data set from a key.

Membership inference (member / non-member / shadow), PATE (teachers / public), poisoning
(train / validation) and federated learning (client shards) all draw their index sets
here, so the same key always gives the same, provably disjoint, sets.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxsec import _checks


def _perm(key: jax.Array, n: int) -> np.ndarray:
  return np.asarray(jax.random.permutation(key, n))


def partition(key: jax.Array, n: int, sizes: Sequence[int]) -> tuple[np.ndarray, ...]:
  """Splits ``range(n)`` into disjoint random index sets of the given ``sizes``.

  ``sum(sizes)`` may be below ``n`` (the rest is unused); above ``n`` is an error.
  Each returned index array is sorted.
  """
  n = _checks.check_int('n', n, minimum=1)
  sizes = [_checks.check_int('sizes[i]', s, minimum=0) for s in sizes]
  if sum(sizes) > n:
    raise ValueError(f'sizes={list(sizes)} add up to {sum(sizes)} > n={n}.')
  perm = _perm(key, n)
  out, start = [], 0
  for s in sizes:
    out.append(np.sort(perm[start:start + s]))
    start += s
  return tuple(out)


def shards(key: jax.Array, n: int, num_shards: int, *, drop_remainder: bool = True
           ) -> list[np.ndarray]:
  """``num_shards`` disjoint equal shards (PATE teachers, federated clients).

  With ``drop_remainder=False`` the first ``n % num_shards`` shards get one extra example.
  """
  n = _checks.check_int('n', n, minimum=1)
  num_shards = _checks.check_int('num_shards', num_shards, minimum=1, maximum=n)
  perm = _perm(key, n)
  if drop_remainder:
    size = n // num_shards
    return [np.sort(perm[i * size:(i + 1) * size]) for i in range(num_shards)]
  return [np.sort(s) for s in np.array_split(perm, num_shards)]


def masks_from_indices(indices: Sequence[np.ndarray], n: int) -> np.ndarray:
  """Stacks index sets into a boolean [len(indices), n] mask (input of ``fit_many``)."""
  m = np.zeros((len(indices), n), bool)
  for i, idx in enumerate(indices):
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      raise ValueError(f'indices[{i}] has values outside [0, {n}).')
    m[i, idx] = True
  return m


def random_membership(key: jax.Array, num_models: int, n: int, p: float = 0.5
                      ) -> np.ndarray:
  """Bool [num_models, n]: each example IN for each model independently with prob ``p``.

  With ``p=0.5`` and ``balanced=True`` semantics of LiRA (Carlini 2022) use
  :func:`balanced_membership` instead, which makes every example IN for exactly half.
  """
  _checks.check_probability('p', p)
  return np.asarray(jax.random.bernoulli(key, p, (num_models, n)))


def balanced_membership(key: jax.Array, num_models: int, n: int) -> np.ndarray:
  """Bool [num_models, n] where every example is IN for exactly half of the models
  (``num_models`` even), as in LiRA's official code."""
  num_models = _checks.check_int('num_models', num_models, minimum=2)
  if num_models % 2:
    raise ValueError(f'num_models={num_models} must be even for balanced membership.')
  keys = jax.random.split(key, n)
  order = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, num_models))(keys))
  return (order < num_models // 2).T.copy()
