"""Shared types and checks for poisoning attacks (dataset -> dataset).

A poisoning attack built by a factory is ``attack(x, y, key) -> PoisonOutput(x', y', info)``.
Each attack documents whether the poisoned set keeps the size ``n`` (label flips, feature edits,
BadNets in ``'replace'`` mode) or grows to ``n + n_poison`` (injection: Biggio, bilevel,
clean-label collision, BadNets ``'inject'``; the poison rows are appended at the end).
The budget is ``n_poison = round(fraction * n)`` of the *clean* training set size ``n``
(:func:`num_poison`). Every attack returns :class:`PoisonOutput` ``(x', y', info)`` (one
return type, no flag): unpack it as ``x2, y2, info = attack(x, y, key)`` or read
``.x`` / ``.y`` / ``.info``. ``info['poison_mask']`` (bool ``[n']``) marks the poisoned
rows, which sanitisers are scored against (``jaxsec.defenses.data.sanitize.precision_recall``);
the other keys are documented by each attack.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxsec import _checks


class PoisonOutput(NamedTuple):
  """``(x, y, info)``: the poisoned set and per-attack extras (``poison_mask`` [n'] always)."""
  x: jax.Array
  y: jax.Array
  info: dict


def check_fraction(name: str, fraction) -> float:
  """A poison budget: a concrete fraction in [0, 1]."""
  return float(_checks.check_float(name, fraction, minimum=0.0, maximum=1.0,
                                   allow_traced=False))


def num_poison(fraction: float, n: int) -> int:
  """``round(fraction * n)`` poison points for a clean set of ``n`` (half rounds to even)."""
  return int(np.round(fraction * n))


def check_dataset(x, y, *, num_classes: int | None = None, min_size: int = 1):
  """Float inputs ``[n, ...]``, int labels ``[n]`` (in ``[0, num_classes)`` if given)."""
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  if x.ndim < 2:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected [n, features...] (rank >= 2).')
  _checks.check_labels('y', y, num_classes=num_classes, batch=x.shape[0])
  if x.shape[0] < min_size:
    raise ValueError(f'x has {x.shape[0]} examples; expected at least {min_size}.')
  return x, y


def flip_budget(x, y, key, fraction: float, num_classes: int):
  """The start of a random label-flipping attack on ``(x, y)`` (checked): ``(n, n_poison,
  index_key, label_key)``, ``n_poison = num_poison(fraction, n)`` and the two halves of
  ``key``, which choose the points and their new labels."""
  check_dataset(x, y, num_classes=num_classes)
  n = x.shape[0]
  k_idx, k_lab = jax.random.split(key)
  return n, num_poison(fraction, n), k_idx, k_lab

def check_validation(x, y, x_val, y_val, *, num_classes: int, bounds):
  """The training inputs within ``bounds`` (None: unchecked) and the attacker's
  validation set ``(x_val, y_val)``: both or neither (neither: the training set itself),
  a data set of ``x``'s feature shape. Returns ``(x_val, y_val)``."""
  if bounds is not None:
    _checks.check_in_bounds('x', x, bounds)
  if (x_val is None) != (y_val is None):
    raise ValueError('Give both x_val and y_val, or neither.')
  if x_val is None:
    x_val, y_val = x, y
  check_dataset(x_val, y_val, num_classes=num_classes)
  if x_val.shape[1:] != x.shape[1:]:
    raise ValueError(f'x_val has shape {tuple(x_val.shape)}; expected [m, '
                     f'{", ".join(map(str, x.shape[1:]))}].')
  return x_val, y_val
