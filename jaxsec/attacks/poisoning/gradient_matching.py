"""Witches' Brew: clean-label targeted poisoning by gradient matching (Geiping, Fowl, Huang,
Czaja, Taylor, Moeller & Goldstein, "Witches' Brew: Industrial Scale Data Poisoning via
Gradient Matching", ICLR 2021; the authors' code: JonasGeiping/poisoning-gradient-matching).

A budget of training images of the adversarial class get perturbations ``Delta`` inside an
L_inf ball, chosen so that the training gradient of the poisons aligns with the gradient that
would move the target image to the adversarial label (the paper's eq. 3):

    B(Delta) = 1 - <g_t, g_p(Delta)> / (||g_t|| ||g_p(Delta)||),
    g_t = grad_theta L(f(x_t; theta), y_adv),  g_p = grad_theta sum_i L(f(x_i + Delta_i; theta), y_i)

over all parameters of a model trained on clean data. Their labels stay correct; a victim
trained from scratch on the poisoned set then tends to put the target in the adversarial class.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, num_poison

# the authors' step-size decay (torch MultiStepLR, gamma 0.1): milestones num_steps // these
_MILESTONE_DIVISORS = (2.667, 1.6, 1.142)


def gradient_matching_loss(poison_grad: Any, target_grad: Any) -> jax.Array:
  """``1 - cos(poison_grad, target_grad)``, the cosine over all leaves of the two gradient
  pytrees flattened into one vector (the paper's eq. 3; the authors' ``loss='similarity'``)."""
  gp, gt = jax.tree.leaves(poison_grad), jax.tree.leaves(target_grad)
  dot = sum(jnp.vdot(a, b) for a, b in zip(gp, gt, strict=True))
  norm_p = jnp.sqrt(sum(jnp.vdot(a, a) for a in gp))
  norm_t = jnp.sqrt(sum(jnp.vdot(b, b) for b in gt))
  return 1.0 - dot / jnp.maximum(norm_p * norm_t, 1e-30)


def _mean_loss_grad(apply_fn, params, x, y, loss):
  return jax.grad(lambda p: jnp.mean(loss(apply_fn(p, x), y)))(params)


def alignment_loss(apply_fn: Callable, params: Any, x_poison: jax.Array, y_poison: jax.Array,
                   x_target: jax.Array, y_adversarial: jax.Array, *,
                   loss: Callable | None = None) -> jax.Array:
  """:func:`gradient_matching_loss` of the poisons' training gradient and the targets'
  adversarial gradient under ``params`` (both of the mean ``loss``, default cross-entropy)."""
  loss = losses_lib.cross_entropy if loss is None else loss
  return gradient_matching_loss(_mean_loss_grad(apply_fn, params, x_poison, y_poison, loss),
                                _mean_loss_grad(apply_fn, params, x_target, y_adversarial, loss))


def step_size_at(step: jax.Array, step_size, num_steps: int) -> jax.Array:
  """The authors' schedule: ``step_size`` times 0.1 at each milestone ``num_steps // 2.667``,
  ``// 1.6``, ``// 1.142`` passed (step counted from 0; a milestone 0, for fewer than 3
  steps, is left out rather than shrinking the first step)."""
  milestones = [int(num_steps // d) for d in _MILESTONE_DIVISORS]
  drops = sum((step >= m).astype(jnp.float32) for m in milestones if m > 0)
  return step_size * 0.1 ** drops


_STATIC = ('apply_fn', 'loss', 'augment', 'num_steps', 'bounds')


def _pieces(apply_fn, params, x_base, y_base, target_grad, eps, step_size, *, num_steps, loss,
            augment, bounds):
  """The parts of one crafting run: ``init(key) -> (delta, adam_state)``,
  ``step(delta, state, i, key) -> (delta, state, loss)``, ``final(delta) -> loss``."""
  lo, hi = bounds
  adam = optax.scale_by_adam()

  def matching(delta, k):
    xp = x_base + delta
    if augment is not None:
      xp = augment(xp, k)
    return gradient_matching_loss(_mean_loss_grad(apply_fn, params, xp, y_base, loss),
                                  target_grad)

  def project(delta):
    delta = jnp.clip(delta, -eps, eps)
    return jnp.clip(delta, lo - x_base, hi - x_base)

  def init(k_init):
    delta = project(jnp.clip(eps * jax.random.normal(k_init, x_base.shape, x_base.dtype),
                             -eps, eps))
    return delta, adam.init(delta)

  def step(delta, state, i, k_aug):
    value, g = jax.value_and_grad(matching)(delta, jax.random.fold_in(k_aug, i))
    direction, state = adam.update(jnp.sign(g), state)
    delta = delta - step_size_at(i, step_size, num_steps) * jnp.asarray(direction)
    return project(delta), state, value

  def final(delta):
    return gradient_matching_loss(_mean_loss_grad(apply_fn, params, x_base + delta, y_base,
                                                  loss), target_grad)
  return init, step, final


@functools.partial(jax.jit, static_argnames=_STATIC + ('restarts',))
def _brew_program(apply_fn, params, x_base, y_base, target_grad, key, eps, step_size, *,
                  num_steps, restarts, loss, augment, bounds):
  """Every restart and step in one compiled program (``lax.map`` over restarts, ``lax.scan``
  over steps)."""
  init, step, final = _pieces(apply_fn, params, x_base, y_base, target_grad, eps, step_size,
                              num_steps=num_steps, loss=loss, augment=augment, bounds=bounds)

  def run(k):
    k_init, k_aug = jax.random.split(k)

    def body(carry, i):
      delta, state, value = step(carry[0], carry[1], i, k_aug)
      return (delta, state), value
    (delta, _), trace = jax.lax.scan(body, init(k_init), jnp.arange(num_steps))
    return delta, final(delta), trace
  return jax.lax.map(run, jax.random.split(key, restarts))


@functools.partial(jax.jit, static_argnames=_STATIC + ('part',))
def _brew_part(apply_fn, params, x_base, y_base, target_grad, eps, step_size, *args,
               num_steps, loss, augment, bounds, part):
  """One piece of :func:`_pieces` as its own compiled call (the CPU host loop)."""
  init, step, final = _pieces(apply_fn, params, x_base, y_base, target_grad, eps, step_size,
                              num_steps=num_steps, loss=loss, augment=augment, bounds=bounds)
  return {'init': init, 'step': step, 'final': final}[part](*args)


def _brew_host_loop(apply_fn, params, x_base, y_base, target_grad, key, eps, step_size, *,
                    num_steps, restarts, loss, augment, bounds):
  """The iterations of :func:`_brew_program`, each step its own compiled call."""
  static = dict(num_steps=num_steps, loss=loss, augment=augment, bounds=bounds)
  part = functools.partial(_brew_part, apply_fn, params, x_base, y_base, target_grad, eps,
                           step_size, **static)
  deltas, finals, traces = [], [], []
  for k in jax.random.split(key, restarts):
    k_init, k_aug = jax.random.split(k)
    delta, state = part(k_init, part='init')
    trace = []
    for i in range(num_steps):
      delta, state, value = part(delta, state, jnp.asarray(i, jnp.int32), k_aug, part='step')
      trace.append(value)
    deltas.append(delta)
    finals.append(part(delta, part='final'))
    traces.append(jnp.stack(trace))
  return jnp.stack(deltas), jnp.stack(finals), jnp.stack(traces)


def _host_loop_pays(apply_fn, params, x_base) -> bool:
  """True on the CPU backend for a model with convolutions: XLA:CPU runs convolutions inside
  loop bodies several times slower (jax-ml/jax#12868; about 2.7x for this loop)."""
  if jax.default_backend() != 'cpu':
    return False
  jaxpr = jax.make_jaxpr(apply_fn)(params, jax.ShapeDtypeStruct((1,) + x_base.shape[1:],
                                                                 x_base.dtype))
  return 'conv_general_dilated' in str(jaxpr)


def brew(apply_fn: Callable, params: Any, x_base: jax.Array, y_base: jax.Array,
         x_target: jax.Array, y_adversarial: jax.Array, key: jax.Array, *, eps, step_size,
         num_steps: int, restarts: int, loss: Callable, augment: Callable | None,
         bounds: tuple[float, float]) -> tuple[jax.Array, dict]:
  """The crafting loop of Witches' Brew: ``restarts`` runs of ``num_steps`` signed-Adam steps
  on ``Delta`` (all poisons as one batch), each step the exact projection onto
  ``|Delta| <= eps`` and the box ``bounds``; the run with the lowest final
  :func:`gradient_matching_loss` is kept.

  As the authors' default (``attackoptim='signAdam'``, ``init='randn'``, scheduling on):
  ``Delta_0 = clip(eps * N(0, I), -eps, eps)`` (here also projected on the box), Adam
  (betas 0.9 / 0.999) on ``sign(grad)``, :func:`step_size_at`. ``augment(x, key)``, if given,
  is a differentiable augmentation drawn afresh at every step (their ``paugment``). The loss
  that ranks the restarts is evaluated at each run's final ``Delta`` without augmentation
  (the authors: the last step's loss, before its update).

  One compiled program (``lax.map`` over restarts, ``lax.scan`` over steps); on the CPU
  backend, for a model with convolutions, the same steps run as a host loop over compiled
  steps instead (jax-ml/jax#12868), with the same result.

  Returns:
    ``(delta, info)``: ``delta`` like ``x_base``; ``info``: ``passenger_loss`` (the kept
    run's final loss), ``restart_losses`` [restarts], ``initial_loss`` (at ``Delta = 0``),
    ``loss_trace`` [restarts, num_steps] (the loss at each step, before its update).
  """
  _checks.check_hashable('it is a static argument of the compiled crafting loop',
                         apply_fn=apply_fn, loss=loss, augment=augment, bounds=bounds)
  target_grad = _target_gradient(apply_fn, params, x_target, y_adversarial, loss=loss)
  form = (_brew_host_loop if _host_loop_pays(apply_fn, params, x_base) else _brew_program)
  deltas, finals, traces = form(apply_fn, params, x_base, y_base, target_grad, key, eps,
                                step_size, num_steps=num_steps, restarts=restarts, loss=loss,
                                augment=augment, bounds=bounds)
  best = jnp.argmin(finals)
  initial = _initial_loss(apply_fn, params, x_base, y_base, target_grad, loss=loss)
  return deltas[best], {'passenger_loss': finals[best], 'restart_losses': finals,
                        'initial_loss': initial, 'loss_trace': traces}


@functools.partial(jax.jit, static_argnames=('apply_fn', 'loss'))
def _target_gradient(apply_fn, params, x_target, y_adversarial, *, loss):
  return _mean_loss_grad(apply_fn, params, x_target, y_adversarial, loss)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'loss'))
def _initial_loss(apply_fn, params, x_base, y_base, target_grad, *, loss):
  return gradient_matching_loss(_mean_loss_grad(apply_fn, params, x_base, y_base, loss),
                                target_grad)


def random_translate_flip(*, max_shift: float = 4.0, flip: bool = True) -> Callable:
  """A differentiable augmentation ``augment(x, key)`` for :func:`witches_brew`: every image
  of ``x`` [B, H, W(, C)] is shifted by a uniform random (sub-pixel) offset in
  ``[-max_shift, max_shift]`` per axis with bilinear interpolation and zero padding, and
  mirrored left-right with probability 1/2 (``flip``); the authors' ``RandomTransform``
  (shift 4 pixels on 28x28 MNIST images, flips on)."""
  max_shift = float(_checks.check_positive('max_shift', max_shift, allow_zero=True))
  if not isinstance(flip, bool):
    raise ValueError(f'flip={flip!r} must be a bool.')

  def one(img, shift, mirror):
    h, w = img.shape[0], img.shape[1]
    rows = jnp.arange(h, dtype=img.dtype)[:, None] - shift[0]
    cols = jnp.arange(w, dtype=img.dtype)[None, :] - shift[1]
    cols = jnp.where(mirror, (w - 1) - cols, cols)
    rows, cols = jnp.broadcast_arrays(rows, cols)
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [rows, cols], order=1,
                                                          mode='constant', cval=0.0)
    if img.ndim == 2:
      return sample(img)
    return jnp.stack([sample(img[..., c]) for c in range(img.shape[-1])], axis=-1)

  def augment(x, key):
    if x.ndim not in (3, 4):
      raise ValueError(f'x has shape {tuple(x.shape)}; expected images [B, H, W(, C)].')
    k_shift, k_flip = jax.random.split(key)
    shifts = jax.random.uniform(k_shift, (x.shape[0], 2), x.dtype, -max_shift, max_shift)
    mirror = (jax.random.bernoulli(k_flip, 0.5, (x.shape[0],)) if flip
              else jnp.zeros((x.shape[0],), bool))
    return jax.vmap(one)(x, shifts, mirror)
  return augment


def witches_brew(*, apply_fn: Callable, params: Any, target_x: jax.Array,
                 adversarial_label: int, num_classes: int, fraction: float,
                 eps: float = 16 / 255, step_size: float | None = None, num_steps: int = 250,
                 restarts: int = 8, loss: Callable | str | None = None,
                 augment: Callable | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0)) -> Callable:
  """Witches' Brew gradient-matching poisoning (Geiping et al. 2021), in place.

  ``round(fraction * n)`` training images of class ``adversarial_label`` (drawn by ``key``)
  are replaced by ``x_i + Delta_i`` from :func:`brew` against the crafting model
  ``apply_fn(params, .)`` (trained on clean data), so that their gradient aligns with
  that of ``target_x`` labelled ``adversarial_label``. Labels are unchanged (clean-label);
  size ``n``. The authors' defaults: ``eps = 16/255``, budget 1%, 250 steps, 8 restarts, and
  step size 0.1 in CIFAR-normalised units (std about 0.25), which is ``0.4 * eps`` here
  (the default ``step_size=None``).

  Guarantee: every poisoned image is within ``eps`` of its clean image in L_inf and inside
  ``bounds``; every other row of ``(x, y)`` is returned unchanged.

  Args:
    target_x: one target image (shape of a row of ``x``) or several ``[T, ...]``, all given
      the adversarial label (their mean loss gives the target gradient).
    loss: per-example ``loss(logits, y)`` or its name (default cross-entropy), for both the
      target and the poison gradients.
    augment: optional differentiable ``augment(x, key)`` (e.g. :func:`random_translate_flip`).

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x', y, info)``; ``info``: ``poison_mask`` [n],
    ``base_index`` [n_poison], and :func:`brew`'s ``passenger_loss``, ``restart_losses``,
    ``initial_loss``, ``loss_trace``.
  """
  if not callable(apply_fn):
    raise ValueError('apply_fn must be callable: apply_fn(params, x) -> logits.')
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  adversarial_label = _checks.check_int('adversarial_label', adversarial_label, minimum=0,
                                        maximum=num_classes - 1)
  fraction = check_fraction('fraction', fraction)
  eps = _checks.check_positive('eps', eps)
  if step_size is None:
    step_size = 0.4 * eps
  step_size = _checks.check_positive('step_size', step_size)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  restarts = _checks.check_int('restarts', restarts, minimum=1)
  loss_fn = losses_lib.cross_entropy if loss is None else (
      losses_lib.get(loss) if isinstance(loss, str) else loss)
  if not callable(loss_fn):
    raise ValueError(f'loss={loss!r} must be a loss name or a callable loss(logits, y).')
  if augment is not None and not callable(augment):
    raise ValueError(f'augment={augment!r} must be None or a callable augment(x, key).')
  bounds = _checks.check_bounds(bounds)
  _checks.check_array('target_x', target_x, dtype_kind='f', finite=True)

  def attack(x, y, key):
    check_dataset(x, y, num_classes=num_classes)
    _checks.check_in_bounds('x', x, bounds)
    x, y = jnp.asarray(x), jnp.asarray(y)
    tx = jnp.asarray(target_x)
    if tx.shape == x.shape[1:]:
      tx = tx[None]
    if tx.shape[1:] != x.shape[1:]:
      raise ValueError(f'target_x has shape {tuple(jnp.shape(target_x))}; expected '
                       f'{tuple(x.shape[1:])} or [T, {", ".join(map(str, x.shape[1:]))}].')
    n = x.shape[0]
    n_p = num_poison(fraction, n)
    cand = y == adversarial_label
    available = int(np.sum(np.asarray(cand))) if _checks.is_concrete(cand) else n
    if not 1 <= n_p <= available:
      raise ValueError(f'fraction={fraction} gives {n_p} poison images for n={n}; expected '
                       f'between 1 and the {available} images of adversarial_label='
                       f'{adversarial_label}.')
    k_pick, k_brew = jax.random.split(key)
    scores = jnp.where(cand, jax.random.uniform(k_pick, (n,)), -1.0)
    _, idx = jax.lax.top_k(scores, n_p)
    y_adv = jnp.full((tx.shape[0],), adversarial_label, y.dtype)
    delta, info = brew(apply_fn, params, x[idx], y[idx], tx, y_adv, k_brew, eps=eps,
                       step_size=step_size, num_steps=num_steps, restarts=restarts,
                       loss=loss_fn, augment=augment, bounds=bounds)
    x2 = x.at[idx].set(x[idx] + delta)
    mask = jnp.zeros((n,), bool).at[idx].set(True)
    return PoisonOutput(x2, y, {'poison_mask': mask, 'base_index': idx, **info})
  return attack
