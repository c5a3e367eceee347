"""Label-consistent (clean-label) backdoor (Turner, Tsipras & Madry, "Label-Consistent
Backdoor Attacks", arXiv:1912.02771, 2019; the authors' code:
MadryLab/label-consistent-backdoor-code).

Images of the target class are first made hard to classify from their content, by an
adversarial perturbation against a separately trained model or by interpolation towards an
image of another class, then stamped with the trigger; their labels stay the (correct) target
label. A model trained on them learns to lean on the trigger, which at test time sends images
of other classes to the target.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.poisoning.backdoor import apply_trigger
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, num_poison

# The authors' 3x3 bottom-right trigger (+1 white, -1 black); the right corners of the
# four-corner trigger use it as is, the left corners mirrored left-right, so that a
# horizontal flip of a triggered image is triggered again.
_PATTERN = np.array([[-1., -1., 1.], [-1., 1., -1.], [1., -1., 1.]], np.float32)


def pattern_trigger(x: jax.Array, *, amplitude: float = 1.0, all_corners: bool = False,
                    bounds: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
  """Stamps the authors' 3x3 black-and-white trigger into the bottom-right corner (or all four
  corners) of images ``x`` [n, H, W(, C)]: ``clip(x + amplitude * (hi - lo) * pattern)`` on the
  trigger pixels (every channel). ``amplitude=1`` sets them to ``hi`` / ``lo`` (the authors'
  full trigger); a smaller one is their reduced-amplitude trigger (e.g. 16/255)."""
  if x.ndim not in (3, 4):
    raise ValueError(f'x has shape {tuple(x.shape)}; expected images [n, H, W(, C)].')
  if min(x.shape[1], x.shape[2]) < 3:
    raise ValueError(f'x has {x.shape[1]}x{x.shape[2]} images; the trigger needs 3x3.')
  amplitude = _checks.check_float('amplitude', amplitude, minimum=0.0, maximum=1.0)
  if not isinstance(all_corners, bool):
    raise ValueError(f'all_corners={all_corners!r} must be a bool.')
  lo, hi = _checks.check_bounds(bounds)
  h, w = x.shape[1], x.shape[2]
  p = np.zeros((h, w), np.float32)
  p[h - 3:, w - 3:] = _PATTERN
  if all_corners:
    p[:3, w - 3:] = _PATTERN
    p[:3, :3] = p[h - 3:, :3] = _PATTERN[:, ::-1]
  p = jnp.asarray(p, x.dtype).reshape((1, h, w) + (1,) * (x.ndim - 3))
  stamped = jnp.clip(x + amplitude * (hi - lo) * p, lo, hi)
  return jnp.where(p != 0, stamped, x)


def clean_label_backdoor(*, fraction: float, target_label: int, num_classes: int,
                         trigger: Callable[[jax.Array], jax.Array] | None = None,
                         attack: Callable | None = None, logits_fn: Callable | None = None,
                         interpolation: float | None = None,
                         latent: tuple[Callable, Callable] | None = None,
                         bounds: tuple[float, float] = (0.0, 1.0),
                         mode: str = 'replace') -> Callable:
  """Turner et al.'s label-consistent backdoor.

  ``round(fraction * n)`` training images of class ``target_label`` (drawn by ``key``) are
  made hard, then passed through ``trigger`` (default: BadNets' 3x3 white patch,
  :func:`apply_trigger`; the authors' own is :func:`pattern_trigger`, with a reduced
  amplitude and in all four corners as options). Their labels stay ``target_label``.
  ``mode='replace'`` edits them in place (size ``n``, as the authors), ``'inject'`` appends
  the poisoned copies (size ``n + n_poison``). At test time the same ``trigger`` activates
  the backdoor. (The authors poison a proportion ``p`` of the target class: ``fraction`` is
  ``p`` times the target class's share of ``n``.)

  Hardening, at most one (neither: the trigger alone, the paper's weak baseline):

  * ``attack`` with ``logits_fn``: an evasion attack ``attack(logits_fn, x, y, key) ->
    AttackOutput`` (e.g. ``jaxsec.attacks.pgd(eps=..., norm='l2')``), run untargeted with the
    true label against ``logits_fn``, a model trained separately (the authors: an
    adversarially trained one, L2 or L_inf PGD);
  * ``interpolation=tau`` in (0, 1): ``(1 - tau) * x + tau * x_other`` towards a random
    training image of another class, in pixel space, or ``decode((1 - tau) encode(x) +
    tau encode(x_other))`` with ``latent=(encode, decode)`` (the authors: a GAN's latent
    space), clipped to ``bounds``.

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x', y', info)`` with ``y'`` the input labels
    (``y'[mask] == target_label``); ``info``: ``poison_mask``, ``base_index`` [n_poison],
    ``hardened`` (the hardened images before the trigger) and, with an ``attack``,
    ``hardening_success`` (bool [n_poison], misclassified by ``logits_fn``).
  """
  fraction = check_fraction('fraction', fraction)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  target_label = _checks.check_int('target_label', target_label, minimum=0,
                                   maximum=num_classes - 1)
  if trigger is None:
    trigger = apply_trigger
  if not callable(trigger):
    raise ValueError(f'trigger={trigger!r} must be a callable trigger(x) -> x.')
  if attack is not None and interpolation is not None:
    raise ValueError('Give at most one hardening: attack= or interpolation=, not both.')
  if attack is not None and not (callable(attack) and callable(logits_fn)):
    raise ValueError('attack= needs a callable attack(logits_fn, x, y, key) and a callable '
                     'logits_fn (the separately trained model).')
  if attack is None and logits_fn is not None:
    raise ValueError('logits_fn is only used with attack=; give both or neither.')
  if interpolation is not None:
    interpolation = float(_checks.check_float('interpolation', interpolation, minimum=0.0,
                                              maximum=1.0, strict_min=True, strict_max=True,
                                              allow_traced=False))
  if latent is not None:
    if interpolation is None:
      raise ValueError('latent=(encode, decode) is only used with interpolation=.')
    if len(latent) != 2 or not all(callable(f) for f in latent):
      raise ValueError(f'latent={latent!r} must be a pair (encode, decode) of callables.')
  lo, hi = _checks.check_bounds(bounds)
  _checks.check_choice('mode', mode, ('replace', 'inject'))

  def run(x, y, key):
    check_dataset(x, y, num_classes=num_classes)
    if x.ndim not in (3, 4):
      raise ValueError(f'x has shape {tuple(x.shape)}; expected images [n, H, W(, C)].')
    _checks.check_in_bounds('x', x, (lo, hi))
    x, y = jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    n_p = num_poison(fraction, n)
    cand = y == target_label
    if _checks.is_concrete(cand):
      available = int(np.sum(np.asarray(cand)))
      if n_p > available:
        raise ValueError(f'fraction={fraction} asks for {n_p} poison images but only '
                         f'{available} images of target_label={target_label} exist.')
    k_pick, k_hard = jax.random.split(key)
    scores = jnp.where(cand, jax.random.uniform(k_pick, (n,)), -1.0)
    _, idx = jax.lax.top_k(scores, n_p)
    base, info = x[idx], {}
    if attack is not None:
      out = attack(logits_fn, base, y[idx], k_hard)
      hard = out.x_adv
      info['hardening_success'] = out.info['success']
    elif interpolation is not None:
      other = jnp.where(cand, -1.0, jax.random.uniform(k_hard, (n,)))
      _, oidx = jax.lax.top_k(other, n_p)
      if latent is None:
        hard = (1.0 - interpolation) * base + interpolation * x[oidx]
      else:
        encode, decode = latent
        hard = decode((1.0 - interpolation) * encode(base) + interpolation * encode(x[oidx]))
      hard = jnp.clip(hard, lo, hi).astype(x.dtype)
    else:
      hard = base
    poisons = trigger(hard)
    if poisons.shape != base.shape:
      raise ValueError(f'trigger returned shape {tuple(poisons.shape)}; expected '
                       f'{tuple(base.shape)}.')
    info.update(base_index=idx, hardened=hard)
    if mode == 'replace':
      x2 = x.at[idx].set(poisons.astype(x.dtype))
      mask = jnp.zeros((n,), bool).at[idx].set(True)
      return PoisonOutput(x2, y, {'poison_mask': mask, **info})
    x2 = jnp.concatenate([x, poisons.astype(x.dtype)])
    y2 = jnp.concatenate([y, y[idx]])
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(n + n_p) >= n, **info})
  return run
