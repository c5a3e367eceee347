"""Bandits (Ilyas, Engstrom & Madry, ICLR 2019): score-based black box with gradient priors.

"Prior Convictions: Black-Box Adversarial Attacks with Bandits and Priors", Algorithm 1 /
2 as the authors' code (MadryLab/blackbox-bandits, ``make_adversarial_examples``): a latent
vector ``v`` (the prior; its gradient is the bandit's action) is carried across steps (the
*time prior*) and, with ``tile_size > 1``, lives on a coarse grid that is upsampled to the
image by nearest-neighbour tiling (the *data prior*). One step, per example:

    u = exploration * N(0, I) / sqrt(dim v)                      (exploration noise)
    q± = up(v ± u);  l± = L(x + fd_eta q± / ||q±||_2)             (2 queries)
    v <- prior_step(v, (l+ - l-) / (fd_eta * exploration) * u, online_lr)
    x <- clip(proj_eps(image_step(x, up(v), image_lr)))           (then 1 query of x)

``L`` is the loss the attacker *maximises* (the authors' cross-entropy of the true label;
with ``loss='margin'`` minus the margin). L_inf: ``prior_step`` is the exponentiated-gradient
step on ``v in [-1, 1]`` and ``image_step = x + lr sign(up(v))``; L2: ``prior_step = v + lr
g`` and ``image_step = x + lr up(v) / ||up(v)||_2``. Defaults are the authors' configs
(``linf.json`` / ``l2.json``, chosen by ``norm`` when left ``None``): L_inf ``fd_eta=0.1,
image_lr=0.01, online_lr=100, exploration=1.0`` (paper eps 0.05); L2 ``fd_eta=0.01,
image_lr=0.5, online_lr=0.1, exploration=0.01`` (paper eps 5). ``num_steps=5000`` is
their 10,000-query budget at 2 queries per step.

Deliberate differences from the authors' code:

* Query count: 1 (the clean input) + 3 per step: the two finite-difference points and the
  query of the new iterate that decides success (the authors count 2 per step and check
  success with an uncounted query). ``info['queries']`` is what a real API would see.
* Batched with a per-example early stop: an example stops (its iterate and prior freeze) at
  its first success; the authors keep moving successful images (their returned image may
  no longer be adversarial; their success flag is sticky). Examples misclassified at the
  start are returned unchanged.
* ``tile_size`` is the side of a tile in pixels (the paper's meaning): the prior of an
  ``[B, H, W, C]`` input is ``[B, ceil(H / t), ceil(W / t), C]``, upsampled with
  PyTorch's ``nearest`` rule (source index ``floor(i * P / H)``). The authors' flag
  ``tile_size=50`` is the prior's side instead (tiles of about 6 pixels on 299 x 299
  ImageNet). Tiling needs image inputs; ``tile_size=1`` (no data prior) takes any shape.
* The exponentiated-gradient step is computed in the equivalent, overflow-free form
  ``v <- tanh(artanh(v) + online_lr g)`` (the authors' ``pos / (pos + neg)`` with
  ``exp(±lr g)`` overflows to NaN in float32 for large ``online_lr g``).
* Randomness is per example (``fold_in`` of the key by example and step).
* ``targeted=True`` (not in the authors' code) maximises minus the target's loss.

Query cost per example: at most ``1 + 3 * num_steps``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common

NORMS = ('linf', 'l2')
# The authors' configs (src/configs/linf.json, l2.json).
DEFAULTS = {
    'linf': dict(fd_eta=0.1, image_lr=0.01, online_lr=100.0, exploration=1.0),
    'l2': dict(fd_eta=0.01, image_lr=0.5, online_lr=0.1, exploration=0.01),
}
_NORM_FLOOR = 1e-8          # the authors' norm(): a zero norm counts as 1e-8


def prior_shape(shape: tuple[int, ...], tile_size: int) -> tuple[int, ...]:
  """The prior's shape for an input of ``shape`` ``[B, ...]`` (``[B, H, W, C]`` tiled)."""
  if tile_size == 1:
    return tuple(shape)
  b, h, w, c = shape
  return (b, -(-h // tile_size), -(-w // tile_size), c)


def upsample(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Nearest-neighbour upsampling of a prior ``v`` to ``shape`` (PyTorch's ``Upsample(mode=
  'nearest')``: output pixel ``i`` reads ``floor(i * P / H)``); the identity when equal."""
  if tuple(v.shape) == tuple(shape):
    return v
  ih = (jnp.arange(shape[1]) * v.shape[1]) // shape[1]
  iw = (jnp.arange(shape[2]) * v.shape[2]) // shape[2]
  return v[:, ih][:, :, iw]


def _l2(a: jax.Array) -> jax.Array:
  n = common.norm(a, 'l2')
  n = n + (n == 0).astype(a.dtype) * _NORM_FLOOR
  return n.reshape((-1,) + (1,) * (a.ndim - 1))


def bandit_step(gain_fn, x_cur, x0, v, u, *, norm, eps, fd_eta, exploration, online_lr,
                image_lr, bounds):
  """One Bandits step for every example: ``(x_new, v_new)``.

  ``gain_fn: points [B, 2, ...] -> [B, 2]`` is the loss to maximise (2 queries per
  example); ``u`` is standard normal noise of the prior's shape; ``x0`` the clean batch
  (the centre of the ball).
  """
  dim = math.prod(v.shape[1:])
  dt = x_cur.dtype
  noise = jnp.asarray(exploration, dt) * u / jnp.sqrt(jnp.asarray(dim, dt))
  fd = jnp.asarray(fd_eta, dt)
  q1 = upsample(v + noise, x_cur.shape)
  q2 = upsample(v - noise, x_cur.shape)
  pts = jnp.stack([x_cur + fd * q1 / _l2(q1), x_cur + fd * q2 / _l2(q2)], axis=1)
  losses = gain_fn(pts)                                                 # [B, 2]
  deriv = (losses[:, 0] - losses[:, 1]) / (fd * jnp.asarray(exploration, dt))
  g = deriv.reshape((-1,) + (1,) * (v.ndim - 1)) * noise
  lr_v = jnp.asarray(online_lr, dt)
  if norm == 'linf':
    # Exponentiated gradients on [-1, 1]: (v + 1) / 2 = r, r' = r e^{lr g} / (r e^{lr g} +
    # (1 - r) e^{-lr g}), i.e. v' = tanh(artanh(v) + lr g).
    v_new = jnp.tanh(jnp.arctanh(jnp.clip(v, -1.0, 1.0)) + lr_v * g)
    step = jnp.sign(upsample(v_new, x_cur.shape))
  else:
    v_new = v + lr_v * g
    d = upsample(v_new, x_cur.shape)
    step = d / _l2(d)
  x_new = common.project(x_cur + jnp.asarray(image_lr, dt) * step, x0, eps, norm, bounds)
  return x_new.astype(dt), v_new.astype(v.dtype)


def exploration_noise(keys: jax.Array, i, shape: tuple[int, ...], dtype) -> jax.Array:
  """The standard normal draw of step ``i``: ``normal(fold_in(keys[b], i), shape[1:])`` for
  every example ``b`` (``keys`` from :func:`estimators.example_keys`)."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), shape[1:], dtype))(
      keys)


def run_bandits(query_fn, x, y, key, *, eps, norm, num_steps, image_lr, online_lr, fd_eta,
                exploration, tile_size, targeted, loss, bounds):
  """The Bandits engine: ``(x_adv, success [B], queries [B], loss [B])``; ``loss`` is the
  minimised attack loss (:func:`estimators.attack_loss`) at ``x_adv``."""
  b = x.shape[0]
  loss_fn = estimators.attack_loss(loss, targeted)
  gain_fn = estimators.sample_losses(query_fn, lambda z, t: -loss_fn(z, t), y)
  scores_of = lambda z: common.as_multiclass(query_fn(z))
  pshape = prior_shape(x.shape, tile_size)
  keys = estimators.example_keys(key, b)

  scores = scores_of(x)
  done = common.success(scores, y, targeted)
  loss_cur = loss_fn(scores, y)
  queries = jnp.ones((b,), jnp.int32)

  def body(st):
    i, x_cur, v, done, queries, loss_cur = st
    active = ~done
    u = exploration_noise(keys, i, pshape, x.dtype)
    x_new, v_new = bandit_step(gain_fn, x_cur, x, v, u, norm=norm, eps=eps, fd_eta=fd_eta,
                               exploration=exploration, online_lr=online_lr,
                               image_lr=image_lr, bounds=bounds)
    scores = scores_of(x_new)
    x_cur = common.select(active, x_new, x_cur)
    v = common.select(active, v_new, v)
    loss_cur = jnp.where(active, loss_fn(scores, y), loss_cur)
    done = done | (active & common.success(scores, y, targeted))
    queries = queries + 3 * active.astype(jnp.int32)
    return i + 1, x_cur, v, done, queries, loss_cur

  def cond(st):
    return (st[0] < num_steps) & jnp.any(~st[3])

  init = (jnp.asarray(0, jnp.int32), x, jnp.zeros(pshape, x.dtype), done, queries, loss_cur)
  _, x_adv, _, done, queries, loss_cur = lax.while_loop(cond, body, init)
  return x_adv, done, queries, loss_cur


def bandits(*, eps, norm: str = 'linf', num_steps: int = 5000, image_lr=None,
            online_lr=None, fd_eta=None, exploration=None, tile_size: int = 1,
            targeted: bool = False, loss: str = 'ce', bounds=(0.0, 1.0)):
  """Bandits_T / Bandits_TD (Ilyas, Engstrom & Madry, ICLR 2019); see the module docstring.

  ``attack(query_fn, x, y, key)`` queries ``query_fn: x -> scores`` on the clean batch, the
  two finite-difference points ``x + fd_eta q± / ||q±||`` per step (not clipped to the box,
  as the authors') and the iterates. It keeps ``x_adv`` in the eps-ball and the box.

  Args:
    eps: radius of the threat model (may be traced).
    norm: 'linf' or 'l2'; picks the prior and image steps and the defaults below.
    num_steps: bandit steps (3 queries each).
    image_lr: the image step ``h`` (None: 0.01 linf, 0.5 l2; may be traced).
    online_lr: the prior's step ``eta`` (None: 100 linf, 0.1 l2; may be traced).
    fd_eta: the finite-difference scale ``delta`` of the paper (None: 0.1 linf, 0.01 l2).
    exploration: the exploration scale ``zeta`` (None: 1.0 linf, 0.01 l2).
    tile_size: side of a prior tile in pixels (1: no data prior; > 1 needs ``[B, H, W, C]``).
    targeted: ``y`` are target labels.
    loss: 'ce' (the authors') or 'margin'; see :func:`estimators.attack_loss`.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'fixed'), info: ``success``
    (bool [B], at ``x_adv``), ``queries`` (int32 [B]) and ``loss`` ([B], at ``x_adv``).
  """
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=NORMS)
  _checks.check_counts(num_steps=num_steps, tile_size=tile_size)
  hyper = dict(image_lr=image_lr, online_lr=online_lr, fd_eta=fd_eta,
               exploration=exploration)
  for name, value in hyper.items():
    if value is None:
      hyper[name] = DEFAULTS[norm][name]
    else:
      _checks.check_float(name, value, minimum=0.0, strict_min=True)
  _checks.check_choice('loss', loss, estimators.LOSSES)
  common.check_bool(targeted=targeted)

  def check(x):
    if tile_size > 1 and x.ndim != 4:
      raise ValueError(f'tile_size={tile_size} needs images [B, H, W, C]; x has shape '
                       f'{tuple(x.shape)} (use tile_size=1).')

  return estimators.score_attack(run_bandits, bounds, check, eps=eps, norm=norm,
      num_steps=num_steps, tile_size=tile_size, targeted=targeted, loss=loss, **hyper)
