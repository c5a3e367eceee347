"""Sweeps as lists of overrides, in the style of big_vision's ``get_hyper``.

A config file (``experiments/configs/<study>.py``) may define ``get_hyper(h)`` returning
``h.product([...])`` / ``h.zip([...])`` of ``h.sweep(name, values)`` and
``h.fixed(name, value)`` and ``h.vectorized(name, values)``; each resulting point is a dict ``{'config.<dotted.field>': value}``
that ``launch.sweep`` applies to the locked config of ``get_config(arg)``.

``h.sweep`` makes one point (one Ray task) per value. ``h.vectorized`` makes ONE point whose
tuple-valued field holds all the values: the study runs them as one compiled program (the
eps grid of an attack through ``jax.vmap``, training seeds through ``jaxsec.train.fit_many``)
and returns one row per value under ``result['vectorized']`` (``launch.points.VECTORIZED``),
which ``launch.points.gather`` spreads into one table row per value, so the tables and
per-axis plots look as if the axis had been swept point by point.

>>> h = Hyper()
>>> points = h.product([h.sweep('config.seed', [0, 1]), h.fixed('config.model', 'mlp')])
>>> [p['config.seed'] for p in points]
[0, 1]
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence


def _merge(parts: Sequence[dict], how: str) -> dict:
  """One sweep point: the union of ``parts``; a key set by two of them is a ``ValueError``."""
  point: dict = {}
  for part in parts:
    overlap = set(point) & set(part)
    if overlap:
      raise ValueError(f'keys {sorted(overlap)} are set twice in one {how}.')
    point.update(part)
  return point


class Hyper:
  """The ``h`` handed to ``get_hyper``."""

  @staticmethod
  def sweep(name: str, values: Sequence[Any]) -> list[dict]:
    if not isinstance(name, str) or not name:
      raise ValueError(f'sweep name={name!r}; expected a non-empty str.')
    values = list(values)
    if not values:
      raise ValueError(f'sweep {name!r} has no values.')
    return [{name: v} for v in values]

  @staticmethod
  def fixed(name: str, value: Any) -> list[dict]:
    return [{name: value}]

  @staticmethod
  def vectorized(name: str, values: Sequence[Any]) -> list[dict]:
    """One point setting the tuple field ``name`` to ``tuple(values)`` (run as one program).

    ``name`` must be a tuple-valued field of the config that the study vectorises over
    (``config.eps`` or ``config.seeds`` of experiments/configs/main.py); a scalar field is
    a ``ValueError`` when the points are checked against the config.
    """
    if not isinstance(name, str) or not name:
      raise ValueError(f'vectorized name={name!r}; expected a non-empty str.')
    values = tuple(values)
    if not values:
      raise ValueError(f'vectorized {name!r} has no values.')
    if len(set(map(repr, values))) != len(values):
      raise ValueError(f'vectorized {name!r} repeats a value: {values!r}.')
    return [{name: values}]

  @staticmethod
  def product(axes: Sequence[list[dict]]) -> list[dict]:
    return [_merge(combo, 'product') for combo in itertools.product(*axes)]

  @staticmethod
  def zip(axes: Sequence[list[dict]]) -> list[dict]:
    lengths = {len(a) for a in axes if len(a) != 1}
    if len(lengths) > 1:
      raise ValueError(f'zip of sweeps with different lengths {sorted(lengths)}.')
    n = lengths.pop() if lengths else 1
    return [_merge([a[0] if len(a) == 1 else a[i] for a in axes], 'zip') for i in range(n)]
