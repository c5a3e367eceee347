"""Backdoors: BadNets (Gu, Dolan-Gavitt, Garg 2017) and clean-label feature collision
(Shafahi et al., "Poison Frogs!", NeurIPS 2018)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, num_poison

_LOCATIONS = ('bottom_right', 'bottom_left', 'top_right', 'top_left')


def apply_trigger(x: jax.Array, *, size: int = 3, value: float = 1.0,
                  location: str = 'bottom_right') -> jax.Array:
  """Stamps a ``size x size`` square of ``value`` into the corner of images.

  Args:
    x: images ``[n, H, W]`` or ``[n, H, W, C]`` (all channels get the patch).
  """
  if x.ndim not in (3, 4):
    raise ValueError(f'x has shape {tuple(x.shape)}; expected images [n, H, W(, C)].')
  h, w = x.shape[1], x.shape[2]
  if not 1 <= size <= min(h, w):
    raise ValueError(f'size={size} must be in [1, {min(h, w)}] for {h}x{w} images.')
  _checks.check_choice('location', location, _LOCATIONS)
  r0 = h - size if location.startswith('bottom') else 0
  c0 = w - size if location.endswith('right') else 0
  return x.at[:, r0:r0 + size, c0:c0 + size].set(jnp.asarray(value, x.dtype))


def badnets(*, fraction: float, target_label: int, num_classes: int, size: int = 3,
            value: float = 1.0, location: str = 'bottom_right', source_label: int | None = None,
            mode: str = 'replace') -> Callable:
  """BadNets backdoor: a trigger patch plus the target label on a poisoned fraction.

  ``round(fraction * n)`` training images, drawn uniformly from the classes other than
  ``target_label`` (or only from ``source_label``), get the trigger (:func:`apply_trigger`)
  and the label ``target_label``. ``mode='replace'`` edits them in place (size ``n``);
  ``mode='inject'`` appends the triggered copies (size ``n + n_poison``, as in Gu et al.).
  At test time ``apply_trigger`` with the same arguments activates the backdoor.

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x', y', info)``; ``info``: ``poison_mask``.
  """
  fraction = check_fraction('fraction', fraction)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  target_label = _checks.check_int('target_label', target_label, minimum=0,
                                   maximum=num_classes - 1)
  if source_label is not None:
    source_label = _checks.check_int('source_label', source_label, minimum=0,
                                     maximum=num_classes - 1)
    if source_label == target_label:
      raise ValueError(f'source_label={source_label} must differ from target_label.')
  size = _checks.check_int('size', size, minimum=1)
  value = float(_checks.check_float('value', value, allow_traced=False))
  _checks.check_choice('location', location, _LOCATIONS)
  _checks.check_choice('mode', mode, ('replace', 'inject'))

  def trigger(x):
    return apply_trigger(x, size=size, value=value, location=location)

  def attack(x, y, key):
    check_dataset(x, y, num_classes=num_classes)
    if x.ndim not in (3, 4):
      raise ValueError(f'x has shape {tuple(x.shape)}; expected images [n, H, W(, C)].')
    n = x.shape[0]
    n_p = num_poison(fraction, n)
    cand = (y != target_label) if source_label is None else (y == source_label)
    if _checks.is_concrete(cand):
      available = int(np.sum(np.asarray(cand)))
      if n_p > available:
        raise ValueError(f'fraction={fraction} asks for {n_p} poison images but only '
                         f'{available} candidates (labels other than the target) exist.')
    scores = jnp.where(cand, jax.random.uniform(key, (n,)), -1.0)
    _, idx = jax.lax.top_k(scores, n_p)
    if mode == 'replace':
      mask = jnp.zeros((n,), bool).at[idx].set(True)
      xt = trigger(x)
      x2 = jnp.where(mask.reshape((n,) + (1,) * (x.ndim - 1)), xt, x)
      y2 = jnp.where(mask, target_label, y).astype(y.dtype)
    else:
      x2 = jnp.concatenate([x, trigger(x[idx])])
      y2 = jnp.concatenate([y, jnp.full((n_p,), target_label, y.dtype)])
      mask = jnp.arange(n + n_p) >= n
    return PoisonOutput(x2, y2, {'poison_mask': mask})
  return attack


def feature_collision_point(feature_fn: Callable[[jax.Array], jax.Array], base: jax.Array,
                            target: jax.Array, *, beta: float, step_size: float,
                            num_steps: int, bounds: tuple[float, float] | None = None
                            ) -> jax.Array:
  """One Poison-Frogs poison: ``argmin_p ||f(p) - f(t)||^2 + beta ||p - b||^2``.

  Shafahi et al.'s Algorithm 1, forward-backward splitting: a gradient (forward) step on
  the feature-collision term, ``p' = p - lr * grad ||f(p) - f(t)||^2``, then the exact proximal
  (backward) step of ``beta ||p - b||^2``, ``p = (p' + 2 lr beta b) / (1 + 2 lr beta)``; we
  then project on ``bounds`` (a valid image; the paper does not clip). The paper's
  Algorithm 1 writes the backward step as ``(p' + lr beta b) / (1 + lr beta)``, the prox of
  ``beta / 2 ||p - b||^2``: we follow its objective, eq. (1), so the paper's algorithm with
  ``beta`` equals ours with ``beta / 2``. For a linear ``f(p) = A p`` the iterates converge
  to the minimiser ``(A^T A + beta I)^{-1} (A^T A t + beta b)``.

  Args:
    feature_fn: ``f(x[None]) -> features [1, k]`` (the victim's feature extractor).
    base, target: single examples (no batch axis).
  """
  ft = feature_fn(target[None])

  def collide(p):
    return jnp.sum((feature_fn(p[None]) - ft) ** 2)

  def step(p, _):
    p = p - step_size * jax.grad(collide)(p)
    p = (p + 2.0 * step_size * beta * base) / (1.0 + 2.0 * step_size * beta)
    if bounds is not None:
      p = jnp.clip(p, bounds[0], bounds[1])
    return p, None

  p, _ = jax.lax.scan(step, base, None, length=num_steps)
  return p


def feature_collision(*, feature_fn: Callable[[jax.Array], jax.Array], target_x: jax.Array,
                      base_label: int, num_classes: int, num_points: int = 1,
                      beta: float = 0.25, step_size: float = 0.01, num_steps: int = 200,
                      opacity: float = 0.0, bounds: tuple[float, float] | None = (0.0, 1.0)) -> Callable:
  """Clean-label feature-collision poisoning (Shafahi et al. 2018), injection.

  ``num_points`` base images of class ``base_label`` are drawn from the training set; each
  is optionally blended with the target (``opacity``, the paper's watermarking for
  end-to-end training), then moved by :func:`feature_collision_point` so that its features
  collide with ``target_x``'s while it stays close to the base in input space. The poisons
  keep the (correct) label ``base_label`` and are appended: size ``n + num_points``.
  The paper scales ``beta = beta0 * 2048^2 / dim_b^2`` with ``beta0 = 0.25``; pass the value
  you want.

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x', y', info)``; ``info``: ``poison_mask``,
    ``feature_distance`` (``||f(p) - f(t)||`` per poison) and ``base_index``.
  """
  if not callable(feature_fn):
    raise ValueError('feature_fn must be callable.')
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  base_label = _checks.check_int('base_label', base_label, minimum=0, maximum=num_classes - 1)
  num_points = _checks.check_int('num_points', num_points, minimum=1)
  beta = _checks.check_positive('beta', beta, allow_zero=True)
  step_size = _checks.check_positive('step_size', step_size)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  opacity = _checks.check_probability('opacity', opacity)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)

  def attack(x, y, key):
    check_dataset(x, y, num_classes=num_classes)
    if target_x.shape != x.shape[1:]:
      raise ValueError(f'target_x has shape {tuple(target_x.shape)}; expected '
                       f'{tuple(x.shape[1:])} (one example like the rows of x).')
    cand = y == base_label
    if _checks.is_concrete(cand) and int(np.sum(np.asarray(cand))) < num_points:
      raise ValueError(f'num_points={num_points} exceeds the {int(np.sum(np.asarray(cand)))}'
                       f' training examples of base_label={base_label}.')
    scores = jnp.where(cand, jax.random.uniform(key, (x.shape[0],)), -1.0)
    _, idx = jax.lax.top_k(scores, num_points)
    bases = (1.0 - opacity) * x[idx] + opacity * target_x[None]
    craft = lambda b: feature_collision_point(feature_fn, b, target_x, beta=beta,
                                              step_size=step_size, num_steps=num_steps,
                                              bounds=bounds)
    poisons = jax.jit(jax.vmap(craft))(bases)
    x2 = jnp.concatenate([x, poisons])
    y2 = jnp.concatenate([y, jnp.full((num_points,), base_label, y.dtype)])
    dist = jnp.linalg.norm((feature_fn(poisons) - feature_fn(target_x[None])).reshape(
        (num_points, -1)), axis=1)
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(x2.shape[0]) >= x.shape[0],
                                 'feature_distance': dist, 'base_index': idx})
  return attack
