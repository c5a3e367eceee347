"""Shared types and helpers for attacks (no Flax here, by contract)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

LogitsFn = Callable[[jax.Array], jax.Array]
Attack = Callable[[LogitsFn, jax.Array, jax.Array, jax.Array], Any]


class AttackOutput(NamedTuple):
  """What an attack built with ``return_info=True`` returns.

  Attributes:
    x_adv: the adversarial batch, same shape and dtype as the input, inside the bounds.
    info: a dict of per-example arrays (e.g. ``success`` bool [B], ``queries`` int [B],
      ``steps`` int [B]) and scalars; each attack documents its keys.
  """
  x_adv: jax.Array
  info: dict
