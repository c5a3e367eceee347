"""Bilevel data poisoning for any differentiable learner.

The attacker solves ``max_{x_p} L_val(theta*(D u D_p))`` with ``theta* = train_fn(D u D_p)``
(Mei and Zhu, AAAI 2015; Munoz-Gonzalez et al., AISec 2017) by projected gradient ascent on
the poison features, labels fixed. The gradient ``dL_val/dx_p`` flows through the learner:

* an *unrolled* learner (``learners.unrolled_gd``: ``lax.scan`` of training steps) gives the
  back-gradient of Munoz-Gonzalez et al. (reverse-mode through the training trajectory);
* an *implicit* learner (``learners.implicit_train_fn``, e.g. ``learners.logreg_train_fn``)
  gives the KKT / implicit-function gradient of Mei and Zhu for strongly convex learners.

The attack injects ``round(fraction * n)`` points (budget 1-10% in the studies); the result
has ``n + n_poison`` rows with the poison appended last.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec import train as train_lib
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, check_validation, flip_budget


def _flip_labels(key, y, num_classes):
  if num_classes == 2:
    return (1 - y).astype(y.dtype)
  shift = jax.random.randint(key, y.shape, 1, num_classes)
  return ((y + shift) % num_classes).astype(y.dtype)


def flipped_copies(*, fraction: float, num_classes: int = 2) -> Callable:
  """Injects copies of ``round(fraction * n)`` random training points with flipped labels.

  The random-label-noise baseline at the same (injection) budget as
  :func:`bilevel_poisoning`, and exactly its starting point for the same key.
  ``attack(x, y, key) -> PoisonOutput(x', y', info)`` with ``n + n_poison`` rows;
  ``info``: ``poison_mask``.
  """
  fraction = check_fraction('fraction', fraction)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)

  def attack(x, y, key):
    n, n_p, k_idx, k_lab = flip_budget(x, y, key, fraction, num_classes)
    idx = jax.random.randint(k_idx, (n_p,), 0, n)
    xp, yp = x[idx], _flip_labels(k_lab, y[idx], num_classes)
    x2, y2 = jnp.concatenate([x, xp]), jnp.concatenate([y, yp])
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(n + n_p) >= n})
  return attack


def bilevel_poisoning(*, train_fn: Callable[[jax.Array, jax.Array, jax.Array], Any],
                      apply_fn: train_lib.ApplyFn, fraction: float,
                      num_classes: int = 2, num_steps: int = 20, step_size: float = 0.5,
                      bounds: tuple[float, float] | None = None,
                      loss: Callable[[jax.Array, jax.Array], jax.Array] = losses_lib.cross_entropy) -> Callable:
  """Gradient-based bilevel poisoning (injection) through a differentiable learner.

  The ``n_poison = round(fraction * n)`` poison points start as copies of random training
  points with flipped labels (:func:`flipped_copies`, same key) and take ``num_steps``
  steps ``x_p <- Proj(x_p + step_size * g_p / ||g_p||)`` (each point's gradient normalised
  separately, all points moved jointly) on the validation loss
  ``mean(loss(apply_fn(train_fn(x u x_p, y u y_p, k), x_val), y_val))``. The learner's key
  ``k`` is fixed during the attack so the objective is deterministic. The iterate with the
  highest validation loss is returned.

  Args:
    train_fn: ``train_fn(x, y, key) -> params``, differentiable in ``x`` (unrolled or
      implicit; see ``learners``).
    apply_fn: ``apply_fn(params, x) -> logits``.
    fraction: injection budget as a fraction of the clean training set.
    num_classes: label count (binary flips ``1 - y``; otherwise a random other class).
    num_steps, step_size: outer projected-gradient ascent (``step_size`` in input units).
    bounds: input box for the poison (``None``: unconstrained).
    loss: per-example validation loss ``loss(logits, y)``.

  Returns:
    ``attack(x, y, key, *, x_val=None, y_val=None) -> PoisonOutput(x', y', info)``, ``info``:
    ``poison_mask`` and ``objective`` ([num_steps + 1] validation loss per step) (validation defaults to
    the training set).
  """
  if not callable(train_fn) or not callable(apply_fn):
    raise ValueError('train_fn and apply_fn must be callables.')
  fraction = check_fraction('fraction', fraction)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)
  step_size = _checks.check_positive('step_size', step_size)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)
  init = flipped_copies(fraction=fraction, num_classes=num_classes)

  def proj(v):
    return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])

  @jax.jit
  def run(x, y, key, x_val, y_val):
    n = x.shape[0]
    k_init, k_train = jax.random.split(key)
    x2, y2, _ = init(x, y, k_init)
    xp0 = proj(x2[n:])

    def objective(xp):
      params = train_fn(jnp.concatenate([x, xp]), y2, k_train)
      return jnp.mean(loss(apply_fn(params, x_val), y_val))

    def step(carry, _):
      xp, best_x, best_v = carry
      v, g = jax.value_and_grad(objective)(xp)
      better = v > best_v
      best_x = jnp.where(better, xp, best_x)
      best_v = jnp.where(better, v, best_v)
      gf = g.reshape((g.shape[0], -1))
      norm = jnp.maximum(jnp.linalg.norm(gf, axis=1), 1e-12)
      xp = proj(xp + step_size * (gf / norm[:, None]).reshape(g.shape))
      return (xp, best_x, best_v), v

    (xp, best_x, best_v), hist = jax.lax.scan(
        step, (xp0, xp0, jnp.asarray(-jnp.inf, x.dtype)), None, length=num_steps)
    last = objective(xp)
    best_x = jnp.where(last > best_v, xp, best_x)
    return jnp.concatenate([x, best_x]), y2, jnp.concatenate([hist, last[None]])

  def attack(x, y, key, *, x_val=None, y_val=None):
    check_dataset(x, y, num_classes=num_classes)
    x_val, y_val = check_validation(x, y, x_val, y_val, num_classes=num_classes,
                                    bounds=bounds)
    x2, y2, hist = run(x, y, key, x_val, y_val)
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(x2.shape[0]) >= x.shape[0],
                                 'objective': hist})
  return attack
