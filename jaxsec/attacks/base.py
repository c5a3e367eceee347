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


class FittedAttack(NamedTuple):
  """An attack that fits one state (a perturbation, a patch) on a set of inputs and applies
  it to any inputs: pure functions in a named tuple, as optax's ``GradientTransformation``.

  Attributes:
    fit: ``fit(logits_fn, x, ..., key) -> state`` (``(state, info)`` where the factory
      says so); each factory documents its arguments.
    apply: ``apply(x, state, ...) -> x_adv``: the fitted state on any inputs (fit on a
      training set, apply to a test set).
    attack: the standard ``attack(logits_fn, x, y, key)`` on one batch (fit on it and
      apply to it, unless the factory says otherwise). ``jax.jit`` takes the fields, not
      the tuple: ``jax.jit(fitted.attack, static_argnums=0)``.
  """
  fit: Callable
  apply: Callable
  attack: Attack
