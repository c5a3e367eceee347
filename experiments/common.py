"""Small helpers shared by the experiment apps (flags live only in experiments/ and launch/)."""
from __future__ import annotations

import ast
import math
from typing import Iterable

import jax
import ml_collections


def apply_overrides(cfg: ml_collections.ConfigDict, items: Iterable[str]
                    ) -> ml_collections.ConfigDict:
  """Applies ``key=value`` overrides (``--set model_kwargs.dense=256``) to ``cfg``.

  Values are parsed as Python literals when possible (numbers, tuples, booleans), else
  kept as strings. Unknown keys raise ``ValueError`` naming them: a typo in a sweep must
  not silently run the default config.
  """
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for item in items:
    if '=' not in item:
      raise ValueError(f'override {item!r} must look like key=value.')
    key, raw = item.split('=', 1)
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = cfg
    parts = key.split('.')
    for p in parts[:-1]:
      if p not in node:
        raise ValueError(f'override key {key!r}: {p!r} is not in the config.')
      node = node[p]
    if parts[-1] not in node:
      raise ValueError(f'override key {key!r} is not in the config; known keys: '
                       f'{sorted(node.keys())}.')
    old = node[parts[-1]]
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[parts[-1]] = value
  return cfg


def device_info() -> dict:
  """What ran the experiment (stored in results JSON next to wall times)."""
  d = jax.devices()
  return {'platform': d[0].platform, 'device_kind': d[0].device_kind,
          'num_devices': len(d), 'jax': jax.__version__}


def pct(v) -> str:
  """A fraction as a percentage for the docs tables ('n/a' for None / inf / nan)."""
  return 'n/a' if v is None or not math.isfinite(v) else f'{100 * v:.1f}%'


def num(v, d: int = 3) -> str:
  """A number with ``d`` decimals for the docs tables ('n/a' for None / inf / nan)."""
  return 'n/a' if v is None or not math.isfinite(v) else f'{v:.{d}f}'
