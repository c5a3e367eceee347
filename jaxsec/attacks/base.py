"""Shared types and helpers for attacks (no Flax here, by contract)."""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax

LogitsFn = Callable[[jax.Array], jax.Array]

FIXED = 'fixed'
MINIMAL = 'minimal'


@dataclasses.dataclass(frozen=True)
class AttackOutput:
  """What every evasion and black-box attack returns.

  A pytree whose leaves are ``x_adv`` and the arrays of ``info``; ``budget`` is static
  metadata (pytree aux data, not a leaf), so ``jax.jit``, ``jax.vmap`` and ``lax.map``
  accept an ``AttackOutput`` as an output and keep ``budget``.

  Attributes:
    x_adv: the adversarial batch, same shape and dtype as the input, inside the bounds.
    info: a dict of per-example arrays and scalars; always ``success`` (bool [B], computed
      on ``x_adv``), plus the extras each attack documents (``queries``, ``steps``, ...).
    budget: ``'fixed'``: ``x_adv`` stays within a given radius ``eps`` (FGSM, PGD, APGD,
      Square, AutoAttack; Foolbox's ``FixedEpsilonAttack``); ``'minimal'``: the attack
      searches for the smallest perturbation that succeeds and has no radius (C&W,
      DeepFool, FAB, JSMA, L-BFGS, HopSkipJump; Foolbox's ``MinimizationAttack``).
  """
  x_adv: jax.Array
  info: dict
  budget: str

  def __post_init__(self):
    if self.budget not in (FIXED, MINIMAL):
      raise ValueError(f"budget={self.budget!r}: expected 'fixed' or 'minimal'.")


jax.tree_util.register_dataclass(AttackOutput, data_fields=['x_adv', 'info'],
                                 meta_fields=['budget'])

Attack = Callable[[LogitsFn, jax.Array, jax.Array, jax.Array], AttackOutput]


class FittedAttack(NamedTuple):
  """An attack that fits one state (a perturbation, a patch) on a set of inputs and applies
  it to any inputs: pure functions in a named tuple, as optax's ``GradientTransformation``.

  Attributes:
    fit: ``fit(logits_fn, x, ..., key) -> (state, info)``; each factory documents its
      arguments and ``info``.
    apply: ``apply(x, state, ...) -> x_adv``: the fitted state on any inputs (fit on a
      training set, apply to a test set).
    attack: the standard ``attack(logits_fn, x, y, key) -> AttackOutput`` on one batch (fit
      on it and apply to it, unless the factory says otherwise). ``jax.jit`` takes the
      fields, not the tuple: ``jax.jit(fitted.attack, static_argnums=0)``.
  """
  fit: Callable
  apply: Callable
  attack: Attack
