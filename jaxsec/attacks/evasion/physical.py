"""Physical-world adversarial examples (survey §2.4): adversarial patches and RP2.

* :func:`adversarial_patch`: the universal adversarial patch of Brown, Mané, Roy, Abadi &
  Gilmer ("Adversarial Patch", 2017). One patch ``p`` (a square or disc covering a given
  fraction of the image) is trained by Expectation over Transformation to maximise
  ``E_{x ~ X, t ~ T} log Pr(y_target | A(p, x, t))`` (their eq. 2), ``A`` placing ``p`` on
  ``x`` after a random location, rotation, scale and brightness ``t``; untargeted, it
  maximises the expected cross-entropy of the true labels.
* :func:`rp2`: Robust Physical Perturbations (Eykholt et al., CVPR 2018, eq. 3): a
  perturbation confined to a user mask ``M`` (sticker regions), minimising
  ``lam * ||M . delta||_p + nps_weight * NPS + E_t J(f(t(x + M . delta)), y*)`` by Adam
  under EOT (:func:`~jaxsec.attacks.evasion.adaptive.eot_logits_fn`) of
  :func:`physical_transform`.

Geometry: one affine resampler; output pixel ``q`` reads the source at ``R(-angle) (q -
center) / scale + c_src`` bilinearly (``map_coordinates``, order 1), so with ``angle = 0``,
``scale = 1`` and an integer offset, patch pixels land exactly on image pixels. Placement is
alpha compositing with a premultiplied mask, ``(1 - m_t) x + (m p)_t``, a convex
combination: every output is inside the bounds and every pixel outside the transformed patch
(``m_t = 0``) equals the input bit for bit. Edges of rotated / scaled / sub-pixel patches
are anti-aliased, so gradients reach every visible patch pixel. Fitting is one compiled
``lax.scan`` (the objective's history comes back); each step draws a minibatch with fresh
transformations.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, cast

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput, FittedAttack
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.adaptive import eot_logits_fn

PATCH_SHAPES = ('square', 'circle')
RP2_NORMS = ('l1', 'l2', 'linf')
_TINY = 1e-12


class PatchTransform(NamedTuple):
  """Per-image placement of a patch (each field has a leading batch axis, or broadcasts).

  Attributes:
    center: ``[B, 2]`` (row, col) image coordinates of the patch centre (pixel centres are
      the integers ``0 .. H-1``).
    angle: ``[B]`` rotation in radians (counter-clockwise in (row, col) coordinates).
    scale: ``[B]`` zoom factor of the patch (its area scales by ``scale**2``).
    brightness: ``[B]`` factor ``b``: patch values become ``lo + b (p - lo)``, clipped to
      the bounds.
  """
  center: jax.Array
  angle: jax.Array
  scale: jax.Array
  brightness: jax.Array


# --------------------------------------------------------------------------- checks


def _check_range(name, value, *, minimum=None, strict_min=False, maximum=None):
  """A pair ``(low, high)`` of floats with ``low <= high`` (and optional limits)."""
  try:
    a, b = value
    a, b = float(a), float(b)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={value!r} must be a pair (low, high) of numbers.') from None
  if not (np.isfinite(a) and np.isfinite(b)) or a > b:
    raise ValueError(f'{name}={value!r} must satisfy low <= high, both finite.')
  if minimum is not None and (a < minimum or (strict_min and a == minimum)):
    op = '>' if strict_min else '>='
    raise ValueError(f'{name}={value!r}: low must be {op} {minimum}.')
  if maximum is not None and b > maximum:
    raise ValueError(f'{name}={value!r}: high must be <= {maximum}.')
  return a, b


def _check_images(name, x):
  _checks.check_array(name, x, dtype_kind='f')
  if x.ndim != 4:
    raise ValueError(f'{name} has shape {tuple(x.shape)}; expected images [B, H, W, C].')


# --------------------------------------------------------------------------- geometry


def _source_coords(height, width, center, angle, scale, src_center):
  """Source coordinates ``[2, H, W]`` read by each output pixel of an ``H x W`` image."""
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]
  dr = rows - center[0]
  dc = cols - center[1]
  c, s = jnp.cos(angle), jnp.sin(angle)
  # Inverse rotation R(-angle) applied to (dr, dc), then inverse scaling.
  sr = (c * dr + s * dc) / scale + src_center[0]
  sc = (-s * dr + c * dc) / scale + src_center[1]
  return jnp.stack([jnp.broadcast_to(sr, (height, width)),
                    jnp.broadcast_to(sc, (height, width))])


# Resamplings with at most this many (output pixel, source pixel) pairs use the dense form.
DENSE_WARP_MAX = 1 << 17


def _warp_gather(img, coords, mode):
  def one(ch):
    return jax.scipy.ndimage.map_coordinates(ch, [coords[0], coords[1]], order=1,
                                             mode=mode, cval=0.0)
  return jax.vmap(one, in_axes=2, out_axes=2)(img)


def _warp_dense(img, coords, mode):
  """The same bilinear resampling as one matmul with the tent-kernel weights.

  Output pixel ``q`` is ``sum_k A[q, k] img[k]`` with ``A[q, (i, j)] = max(0, 1 - |r_q - i|)
  max(0, 1 - |c_q - j|)``: exactly the weights of order-1 ``map_coordinates`` (zero outside
  the grid for mode 'constant'; for 'nearest' the coordinates are first clamped to the
  grid, which reproduces edge replication). At integer coordinates the weights are exactly
  1 and 0, so placement is exact.
  """
  h, w, c = img.shape
  r, q = coords[0].reshape(-1), coords[1].reshape(-1)
  if mode == 'nearest':
    r = jnp.clip(r, 0.0, h - 1.0)
    q = jnp.clip(q, 0.0, w - 1.0)
  tr = jnp.maximum(1.0 - jnp.abs(r[:, None] - jnp.arange(h, dtype=r.dtype)), 0.0)
  tc = jnp.maximum(1.0 - jnp.abs(q[:, None] - jnp.arange(w, dtype=q.dtype)), 0.0)
  a = (tr[:, :, None] * tc[:, None, :]).reshape(r.shape[0], h * w).astype(img.dtype)
  out = jnp.dot(a, img.reshape(h * w, c), precision=lax.Precision.HIGHEST)
  return out.reshape(coords.shape[1:] + (c,))


def _warp(img, coords, mode='constant', dense=None):
  """Bilinear resampling of every channel of ``img [h, w, C]`` at ``coords [2, H, W]``
  (``mode`` 'constant' (zeros outside) or 'nearest' (edge replicated)).

  Small problems (``H W h w <= DENSE_WARP_MAX``, e.g. patches up to 12 x 12 on a 28 x 28
  image) use :func:`_warp_dense`, larger ones ``jax.scipy.ndimage.map_coordinates``
  (order 1): the same numbers, but the gathers of ``map_coordinates`` and their transposes (the gradient
  is a scatter-add) compile ~10x slower on XLA:CPU than the matmul, while the matmul's cost
  grows with ``H W h w`` instead of ``H W``.
  """
  if dense is None:
    dense = coords.shape[1] * coords.shape[2] * img.shape[0] * img.shape[1] <= DENSE_WARP_MAX
  return _warp_dense(img, coords, mode) if dense else _warp_gather(img, coords, mode)


def _brightness(v, b, bounds):
  lo, hi = bounds
  b = jnp.asarray(b, v.dtype)
  # v * b + lo * (1 - b) is exactly v for b == 1.
  return jnp.clip(v * b + lo * (1.0 - b), lo, hi)


def physical_transform(*, max_rotation=10.0, scale=(0.9, 1.1), max_translation=0.1,
                       brightness=(0.8, 1.2), bounds=(0.0, 1.0)
                       ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Random physical-world transformations of images ``[B, H, W, C]``: ``(x, key) -> x'``.

  Each image independently gets a rotation about its centre by ``U[-max_rotation,
  max_rotation]`` degrees, a zoom by ``U[scale]``, a shift by ``U[-max_translation,
  max_translation]`` times its height / width, bilinear resampling (border pixels
  replicated outside the image), then a brightness change ``lo + b (x - lo)``, ``b ~
  U[brightness]``, clipped to ``bounds``. Differentiable in ``x``; pure and jittable. The
  synthetic transformations used for EOT by Athalye et al. (2018) and for RP2's
  augmented image set (Eykholt et al. 2018).
  """
  _checks.check_float('max_rotation', max_rotation, minimum=0.0, maximum=180.0,
                      allow_traced=False)
  s_lo, s_hi = _check_range('scale', scale, minimum=0.0, strict_min=True)
  _checks.check_float('max_translation', max_translation, minimum=0.0, maximum=1.0,
                      allow_traced=False)
  b_lo, b_hi = _check_range('brightness', brightness, minimum=0.0)
  bounds = _checks.check_bounds(bounds)
  max_rad = math.radians(float(max_rotation))
  max_translation = float(max_translation)

  def transform(x, key):
    _check_images('x', x)
    n, h, w, _ = x.shape
    u = jax.random.uniform(key, (n, 5), jnp.float32)    # one draw: cheaper to compile
    ang = max_rad * (2.0 * u[:, 0] - 1.0)
    sc = s_lo + (s_hi - s_lo) * u[:, 1]
    sh = max_translation * (2.0 * u[:, 2:4] - 1.0)
    br = b_lo + (b_hi - b_lo) * u[:, 4]
    mid = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
    centers = mid + sh * jnp.array([h, w], jnp.float32)

    def one(img, c, a, s, b):
      coords = _source_coords(h, w, c, a, s, mid)
      out = _warp(img, coords, mode='nearest')
      return _brightness(out, b, bounds)
    return jax.vmap(one)(x, centers, ang, sc, br).astype(x.dtype)

  # Jitted (one compilation per input shape) so that eager calls are not op by op;
  # inside an outer jit / grad / vmap it inlines as usual.
  jitted = jax.jit(transform)

  def checked(x, key):
    _check_images('x', x)
    return jitted(x, key)
  return checked


# --------------------------------------------------------------------------- patch


def _as_attack(fit, apply, bounds, targeted):
  """Standard-signature attack: fit the patch on the batch, apply it to the same batch."""
  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    k_fit, k_apply = jax.random.split(key)
    patch, finfo = fit(logits_fn, x, y, k_fit)
    x_adv, m_t, t = apply(x, patch, k_apply, return_mask=True, return_transform=True)
    succ = common.success(logits_fn(x_adv), y, targeted)
    info = {'success': succ, 'patch': patch, 'mask': m_t, 'transform': t, **finfo}
    return AttackOutput(x_adv, info, 'fixed')
  return attack


def _check_patch(size, shape):
  _checks.check_float('size', size, minimum=0.0, maximum=1.0, strict_min=True,
                      allow_traced=False)
  _checks.check_choice('shape', shape, PATCH_SHAPES)
  return float(size)


def _patch_side(image_shape, size, shape):
  h, w = int(image_shape[0]), int(image_shape[1])
  area = size * h * w
  side = math.sqrt(area) if shape == 'square' else math.sqrt(4.0 * area / math.pi)
  side = max(1, int(round(side)))
  if side > min(h, w):
    raise ValueError(f'size={size} gives a {shape} patch of side {side}, larger than the '
                     f'{h}x{w} image.')
  return side


def _patch_mask(image_shape, size, shape):
  s = _patch_side(image_shape, size, shape)
  if shape == 'square':
    return np.ones((s, s), np.float32)
  r = np.arange(s, dtype=np.float64) - (s - 1) / 2.0
  return ((r[:, None] ** 2 + r[None, :] ** 2) <= (s / 2.0) ** 2).astype(np.float32)


def patch_side(image_shape, *, size, shape: str = 'square') -> int:
  """Side ``s`` of the :func:`adversarial_patch` of this ``size`` / ``shape`` on images
  ``[H, W]``: ``round(sqrt(size H W))`` (square) or ``round(sqrt(4 size H W / pi))`` (disc)."""
  return _patch_side(image_shape, _check_patch(size, shape), shape)


def patch_mask(image_shape, *, size, shape: str = 'square') -> np.ndarray:
  """The ``[s, s]`` 0/1 mask of the patch: all ones, or the pixel centres within ``s / 2``
  of the patch centre (disc)."""
  return _patch_mask(image_shape, _check_patch(size, shape), shape)


def patch_area_fraction(image_shape, *, size, shape: str = 'square') -> float:
  """The exact fraction of the ``[H, W]`` image the unscaled patch covers (after rounding)."""
  m = patch_mask(image_shape, size=size, shape=shape)
  return float(m.sum()) / (int(image_shape[0]) * int(image_shape[1]))


def adversarial_patch(*, size=0.1, shape: str = 'square', targeted: bool = True,
                      loss: str = 'ce', num_steps: int = 500, batch_size: int = 32,
                      learning_rate=0.05, max_rotation=22.5, scale=(0.9, 1.1),
                      brightness=(0.9, 1.1), bounds=(0.0, 1.0)):
  """Universal adversarial patch trained by EOT (Brown, Mané, Roy, Abadi & Gilmer 2017).

  The patch ``p`` (shape ``[s, s, C]``; only its square / disc mask is ever shown) is
  trained to maximise ``E_{x, t} obj(f(A(p, x, t)), y)`` -- for ``targeted=True`` and
  ``loss='ce'`` this is Brown et al.'s ``E log Pr(y_target | A(p, x, t))`` -- with Adam
  (``learning_rate``) on minibatches of ``batch_size`` examples drawn with replacement
  from the fit data, each with its own random transformation ``t``: the patch centre
  uniform over the positions that keep the whole rotated, scaled patch inside the image,
  rotation ``U[-max_rotation, max_rotation]`` degrees, zoom ``U[scale]``, brightness
  ``U[brightness]`` (see :class:`PatchTransform`). After each step ``p`` is clipped to the
  bounds.

  Size. ``size`` is the fraction of the image area the (unscaled) patch covers: a square
  of side ``s = round(sqrt(size H W))`` or a disc of diameter ``s = round(sqrt(4 size H W /
  pi))`` (pixel centres within ``s / 2`` of the patch centre); :func:`patch_side`,
  :func:`patch_mask` and :func:`patch_area_fraction` give the geometry after rounding.

  Guarantees: the patch is inside ``[lo, hi]``; ``apply`` returns images inside the bounds
  that equal the input exactly wherever the transformed mask is 0.

  Returns a :class:`~jaxsec.attacks.base.FittedAttack`:

  * ``fit(logits_fn, x, y, key) -> (patch, info)``: ``info['objective']`` and
    ``info['success_rate']`` are the minibatch objective and success rate at each step,
    ``[num_steps]``; ``y`` are the target labels (targeted) or the true labels.
  * ``apply(x, patch, key=None, *, transform=None, return_mask=False,
    return_transform=False)``: place the patch on each image of ``x``, with random
    transformations drawn from ``key`` or the given :class:`PatchTransform`.
  * ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed': the patch area):
    fit the patch on the batch and apply it with random transformations to the same
    batch; info: ``success`` [B], ``patch``, ``mask`` (transformed mask [B, H, W, 1]),
    ``transform``, ``objective``, ``success_rate``.

  Args:
    size: fraction of the image area, in (0, 1].
    shape: 'square' or 'circle'.
    targeted: maximise the target class (``y`` = targets) or the loss of ``y``.
    loss: attack objective, see :func:`common.objective` ('ce' is the paper's).
    num_steps: Adam steps (static), >= 1.
    batch_size: images per step, >= 1.
    learning_rate: Adam step size (> 0; may be traced).
    max_rotation: maximum absolute rotation in degrees, in [0, 180].
    scale: ``(min, max)`` zoom, ``0 < min <= max``.
    brightness: ``(min, max)`` brightness factor, ``0 <= min <= max``.
    bounds: the input box ``(lo, hi)``.

  >>> import jax, jax.numpy as jnp
  >>> atk = adversarial_patch(size=0.25, num_steps=2)
  >>> f = lambda x: x.reshape(x.shape[0], -1)[:, :3]
  >>> x = jnp.zeros((4, 8, 8, 1)); t = jnp.full((4,), 2)
  >>> atk.fit(f, x, t, jax.random.key(0))[0].shape
  (4, 4, 1)
  """
  size = _check_patch(size, shape)
  common.check_bool(targeted=targeted)
  _checks.check_choice('loss', loss, common.LOSSES)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0, strict_min=True)
  _checks.check_float('max_rotation', max_rotation, minimum=0.0, maximum=180.0,
                      allow_traced=False)
  s_lo, s_hi = _check_range('scale', scale, minimum=0.0, strict_min=True)
  b_lo, b_hi = _check_range('brightness', brightness, minimum=0.0)
  bounds = _checks.check_bounds(bounds)
  lo, hi = bounds
  max_rad = math.radians(float(max_rotation))
  obj = common.objective(loss, targeted)

  side_of = lambda image_shape: _patch_side(image_shape, size, shape)
  mask_of = lambda image_shape: _patch_mask(image_shape, size, shape)

  def _half_extent(s, ang, sc):
    """Half the extent, along rows / cols, of the rotated scaled patch's pixel centres."""
    half = (s - 1) / 2.0
    if shape == 'circle':
      return sc * half, sc * half
    e = sc * half * (jnp.abs(jnp.cos(ang)) + jnp.abs(jnp.sin(ang)))
    return e, e

  def _transform_from_uniform(u, image_shape):
    """A PatchTransform per row of ``u`` [B, 5] (i.i.d. U[0, 1))."""
    h, w = image_shape
    s = side_of(image_shape)
    ang = max_rad * (2.0 * u[:, 0] - 1.0)
    sc = s_lo + (s_hi - s_lo) * u[:, 1]
    br = b_lo + (b_hi - b_lo) * u[:, 2]
    er, ec = _half_extent(s, ang, sc)
    span_r = jnp.maximum(h - 1 - 2 * er, 0.0)
    span_c = jnp.maximum(w - 1 - 2 * ec, 0.0)
    # When the patch cannot fit (span 0), it is centred.
    cr = jnp.where(h - 1 - 2 * er > 0, er + u[:, 3] * span_r, (h - 1) / 2.0)
    cc = jnp.where(w - 1 - 2 * ec > 0, ec + u[:, 4] * span_c, (w - 1) / 2.0)
    return PatchTransform(jnp.stack([cr, cc], axis=1), ang, sc, br)

  def _sample(key, image_shape, batch):
    return _transform_from_uniform(jax.random.uniform(key, (batch, 5), jnp.float32),
                                   image_shape)

  _sample_jit = jax.jit(_sample, static_argnums=(1, 2))

  def sample_transform(key, image_shape, batch):
    return _sample_jit(key, (int(image_shape[0]), int(image_shape[1])), int(batch))

  def _broadcast_transform(t, batch):
    t = PatchTransform(*(jnp.asarray(v, jnp.float32) for v in t))
    return PatchTransform(jnp.broadcast_to(t.center, (batch, 2)),
                          jnp.broadcast_to(t.angle, (batch,)),
                          jnp.broadcast_to(t.scale, (batch,)),
                          jnp.broadcast_to(t.brightness, (batch,)))

  def _place(x, patch, mask, t):
    """(x_adv, m_t) for images x [B, H, W, C] and per-image transforms t."""
    _, h, w, _ = x.shape
    s = patch.shape[0]
    src_c = jnp.array([(s - 1) / 2.0, (s - 1) / 2.0], jnp.float32)
    mk = jnp.asarray(mask, x.dtype)[..., None]

    def one(img, c, a, sc, b):
      pb = _brightness(patch, b, bounds)
      stack = jnp.concatenate([mk * pb, mk], axis=-1)          # premultiplied alpha
      warped = _warp(stack, _source_coords(h, w, c, a, sc, src_c))
      pm, m = warped[..., :-1], jnp.clip(warped[..., -1:], 0.0, 1.0)
      out = jnp.clip((1.0 - m) * img + pm, lo, hi)
      return jnp.where(m > 0, out, img), m

    return jax.vmap(one)(x, t.center, t.angle, t.scale, t.brightness)

  _place_jit = jax.jit(_place)   # one compilation per shape for eager calls

  def apply(x, patch, key=None, *, transform=None, return_mask=False,
            return_transform=False):
    _check_images('x', x)
    s = side_of(x.shape[1:3])
    if patch.shape != (s, s, x.shape[3]):
      raise ValueError(f'patch has shape {tuple(patch.shape)}; expected {(s, s, x.shape[3])} '
                       f'for images of shape {tuple(x.shape[1:])} and size={size}.')
    if transform is None:
      if key is None:
        raise ValueError('apply needs a key (random placement) or a transform.')
      transform = sample_transform(key, x.shape[1:3], x.shape[0])
    t = _broadcast_transform(transform, x.shape[0])
    x_adv, m_t = _place_jit(x, patch.astype(x.dtype), mask_of(x.shape[1:3]), t)
    x_adv = x_adv.astype(x.dtype)
    out = (x_adv,)
    if return_mask:
      out += (m_t,)
    if return_transform:
      out += (t,)
    return out[0] if len(out) == 1 else out

  def fit(logits_fn, x, y, key):
    _check_images('x', x)
    common.check_call(x, y, bounds, logits_fn)
    n, h, w, ch = x.shape
    s = side_of((h, w))
    mask = mask_of((h, w))
    k_init, k_run = jax.random.split(key)
    patch0 = jax.random.uniform(k_init, (s, s, ch), x.dtype, lo, hi)
    opt = optax.adam(learning_rate)

    def loss_fn(patch, xb, yb, t):
      x_adv, _ = _place(xb, patch, mask, t)
      logits = logits_fn(x_adv)
      v = obj(logits, yb)
      return -jnp.mean(v), (jnp.mean(v), jnp.mean(common.success(logits, yb, targeted)))

    grad = jax.grad(loss_fn, has_aux=True)

    def step(carry, k):
      patch, state = carry
      u = jax.random.uniform(k, (batch_size, 6), jnp.float32)   # one draw per step
      idx = jnp.minimum((u[:, 5] * n).astype(jnp.int32), n - 1)  # with replacement
      t = _transform_from_uniform(u[:, :5], (h, w))
      g, (v, sr) = grad(patch, x[idx], y[idx], t)
      upd, state = opt.update(g, state, patch)
      # apply_updates of an array is an array (optax types it as any pytree).
      patch = jnp.clip(cast(jax.Array, optax.apply_updates(patch, upd)), lo, hi)
      return (patch, state), (v, sr)

    keys = jax.random.split(k_run, num_steps)
    (patch, _), (hist, rate) = lax.scan(step, (patch0, opt.init(patch0)), keys)
    return patch, {'objective': hist, 'success_rate': rate}

  return FittedAttack(fit, apply, _as_attack(fit, apply, bounds, targeted))


# --------------------------------------------------------------------------- RP2


def _safe_norm(d, p):
  """Per-example ``||d||_p`` with a zero (sub)gradient at ``d = 0`` (no NaN for L2)."""
  f = d.reshape((d.shape[0], -1))
  if p == 'l1':
    return jnp.sum(jnp.abs(f), axis=-1)
  if p == 'linf':
    return jnp.max(jnp.abs(f), axis=-1)
  sq = jnp.sum(f * f, axis=-1)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def non_printability_score(x, pixel_mask, colors):
  """Non-printability score (Sharif, Bhagavatula, Bauer & Reiter, CCS 2016), per example.

  ``NPS(x) = sum_p m_p prod_{c in colors} ||x_p - c||_2 / sum_p m_p``: for each pixel ``p``
  of the printed region (weights ``pixel_mask [H, W]``) the product of its distances to
  the printable colours ``colors [K, C]``; it is 0 where a pixel is exactly printable.
  Normalised by the region's area (Sharif et al. sum over pixels; the mean makes the
  weight independent of the sticker size).
  """
  diff = x[..., None, :] - colors                              # [B, H, W, K, C]
  sq = jnp.sum(diff * diff, axis=-1)
  pos = sq > 0
  dist = jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)
  prod = jnp.prod(dist, axis=-1)                               # [B, H, W]
  m = jnp.asarray(pixel_mask, x.dtype)
  return jnp.sum(prod * m, axis=(1, 2)) / jnp.maximum(jnp.sum(m), _TINY)


def rp2(*, mask, lam=0.01, norm: str = 'l2', num_steps: int = 300, learning_rate=0.01,
        transform='physical', num_samples: int = 8, targeted: bool = True,
        printable_colors=None, nps_weight=0.0, bounds=(0.0, 1.0)):
  """Robust Physical Perturbations, RP2 (Eykholt et al., CVPR 2018, eq. 3).

  Minimises over ``delta`` (Adam, ``num_steps`` steps in one ``lax.scan``)::

      lam * ||M . delta||_p  +  nps_weight * NPS(x_adv)  +  E_t J(f(t(x_adv)), y*)
      x_adv = clip(x + M . delta, lo, hi)

  with ``J`` the cross-entropy to the target ``y*`` (``targeted=True``; untargeted: minus
  the cross-entropy of the true label) and the expectation estimated, as in the paper, by
  ``num_samples`` random transformations drawn afresh at every step (Expectation over
  Transformation, via :func:`~jaxsec.attacks.evasion.adaptive.eot_logits_fn` with
  ``average='log_probs'``, whose negated target entry is exactly the mean cross-entropy
  of the draws). Eykholt et al. write the expectation as ``J(f(x_i + T_i(M . delta)),
  y*)`` over photographs ``x_i`` of the object and an alignment ``T_i`` of the sticker to
  each photo; for synthetic transformations ``t`` of an image ``x`` (``x_i = t(x)``,
  ``T_i = t``) that is ``t(x) + t(M . delta) = t(x + M . delta)`` (the resampling and a
  brightness change are linear), which is what is computed (the clip aside).

  Non-printability. With ``printable_colors`` (``[K, C]``) and ``nps_weight > 0`` the term
  :func:`non_printability_score` of the masked pixels of ``x_adv`` is added (Sharif et al.
  2016, used by Eykholt et al.); it is omitted by default (``printable_colors=None``), as
  in Eykholt et al.'s digital experiments, since a printer's colour gamut is a property of
  the physical setup.

  The mask is the paper's ``M_x`` (after their L1-mask search, here given by the user):
  values in [0, 1], shape ``x.shape[1:]`` or ``[H, W]`` (broadcast over channels) or
  anything broadcastable to ``x.shape[1:]``.

  Guarantees: ``lo <= x_adv <= hi``, and ``x_adv == x`` exactly wherever the mask is 0.

  Returns a :class:`~jaxsec.attacks.base.FittedAttack`:

  * ``attack(logits_fn, x, y, key) -> AttackOutput`` optimises one ``delta`` per example
    (independent problems, ``delta_i`` kept within ``[lo - x_i, hi - x_i]`` so the clip
    is inactive); budget 'minimal' (the norm is penalised, not bounded); info:
    ``success`` [B] on the untransformed ``x_adv``, ``norm`` [B] = ``||M . delta||_p``,
    ``objective`` [num_steps] (the batch-mean EOT estimate at each step) and ``delta``;
  * ``fit(logits_fn, x, y, key) -> (delta, info)``: one perturbation shared by all images
    of ``x`` (the paper's setting: ``x`` holds views of one object, the objective averages
    over them); ``info['objective']`` [num_steps];
  * ``apply(x, delta) -> x_adv`` (``where(M != 0, clip(x + M . delta), x)``).

  Args:
    mask: the sticker mask ``M`` (array, values in [0, 1], not all 0).
    lam: weight of the norm term, >= 0 (may be traced).
    norm: 'l1', 'l2' or 'linf' (the ``p`` of ``||M . delta||_p``).
    num_steps: Adam steps (static), >= 1.
    learning_rate: Adam step size, > 0 (may be traced).
    transform: 'physical' (default: :func:`physical_transform` with its defaults and
      these bounds), a callable ``(x, key) -> x'`` on batches, or None (no
      transformation: a plain masked attack; ``num_samples`` is then 1).
    num_samples: transformations per step, >= 1.
    targeted: ``y`` are the targets ``y*`` (the paper's setting) or the true labels.
    printable_colors: optional ``[K, C]`` printable colours in the bounds.
    nps_weight: weight of the NPS term, >= 0.
    bounds: the input box ``(lo, hi)``.
  """
  try:
    m = np.asarray(mask, dtype=np.float32)
  except (TypeError, ValueError):
    raise ValueError(f'mask must be a numeric array, got {mask!r:.80}.') from None
  if m.ndim < 1:
    raise ValueError(f'mask has shape {m.shape}; expected an array like [H, W] or '
                     '[H, W, C].')
  if not np.all(np.isfinite(m)) or m.min() < 0 or m.max() > 1:
    raise ValueError(f'mask has values in [{m.min():g}, {m.max():g}]; expected values in '
                     '[0, 1].')
  if not np.any(m > 0):
    raise ValueError('mask is all zero: there is no region to perturb.')
  _checks.check_float('lam', lam, minimum=0.0)
  _checks.check_choice('norm', norm, RP2_NORMS)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0, strict_min=True)
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  common.check_bool(targeted=targeted)
  _checks.check_float('nps_weight', nps_weight, minimum=0.0)
  bounds = _checks.check_bounds(bounds)
  lo, hi = bounds
  if isinstance(transform, str):
    if transform != 'physical':
      raise ValueError(f"transform={transform!r} must be 'physical', a callable or None.")
    transform = physical_transform(bounds=bounds)
  elif transform is None:
    num_samples = 1
    transform = lambda x, k: x
  elif not callable(transform):
    raise ValueError(f"transform={transform!r} must be 'physical', a callable or None.")
  colors = None
  if printable_colors is not None:
    colors = np.asarray(printable_colors, np.float32)
    if colors.ndim != 2 or colors.shape[0] < 1:
      raise ValueError(f'printable_colors has shape {colors.shape}; expected [K, C].')
    if colors.min() < lo or colors.max() > hi:
      raise ValueError(f'printable_colors has values in [{colors.min():g}, '
                       f'{colors.max():g}], outside bounds {bounds}.')

  def _mask_for(x):
    mm = m[..., None] if (m.ndim == 2 and x.ndim == 4) else m
    try:
      mm = np.broadcast_to(mm, x.shape[1:])
    except ValueError:
      raise ValueError(f'mask has shape {m.shape}, which does not broadcast to the inputs '
                       f'{tuple(x.shape[1:])}.') from None
    return jnp.asarray(mm, x.dtype)

  def apply(x, delta):
    mm = _mask_for(x)
    return jnp.where(mm != 0, jnp.clip(x + mm * delta, lo, hi), x).astype(x.dtype)

  def _terms(logits_fn, x, y, delta, eot_key, resample):
    """Per-example objective and its parts for delta [B or 1, ...]."""
    mm = _mask_for(x)
    x_adv = apply(x, delta)
    f = eot_logits_fn(logits_fn, transform, num_samples=num_samples, key=eot_key,
                      average='log_probs', resample=resample)
    logp = f(x_adv)                                       # mean_s log softmax
    ce = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]   # = mean_s CE_s
    j = ce if targeted else -ce
    nrm = _safe_norm(jnp.broadcast_to(mm * delta, x.shape), norm)
    total = lam * nrm + j
    if colors is not None and x.ndim == 4 and colors.shape[1] == x.shape[3]:
      pix = jnp.max(mm, axis=-1) != 0
      total = total + nps_weight * non_printability_score(x_adv, pix, colors)
    elif colors is not None:
      raise ValueError(f'printable_colors has shape {colors.shape}; expected [K, '
                       f'{x.shape[-1]}] for images of shape {tuple(x.shape[1:])}.')
    return total, nrm

  def _optimize(logits_fn, x, y, key, shared):
    common.check_call(x, y, bounds, logits_fn)
    mm = _mask_for(x)
    dshape = (1,) + x.shape[1:] if shared else x.shape
    delta0 = jnp.zeros(dshape, x.dtype)
    opt = optax.adam(learning_rate)
    if shared:
      dlo, dhi = lo - hi, hi - lo
    else:
      dlo, dhi = lo - x, hi - x

    def loss_fn(delta):
      tot, _ = _terms(logits_fn, x, y, delta, key, 'per_input')
      return jnp.mean(tot) if shared else jnp.sum(tot), jnp.mean(tot)

    grad = jax.grad(loss_fn, has_aux=True)

    def step(carry, _):
      delta, state = carry
      g, v = grad(delta)
      upd, state = opt.update(g, state, delta)
      delta = jnp.clip(cast(jax.Array, optax.apply_updates(delta, upd)), dlo, dhi)
      delta = jnp.where(jnp.broadcast_to(mm, dshape) != 0, delta, 0.0)
      return (delta, state), v

    (delta, _), hist = lax.scan(step, (delta0, opt.init(delta0)), None, length=num_steps)
    return delta, hist

  def fit(logits_fn, x, y, key):
    delta, hist = _optimize(logits_fn, x, y, key, shared=True)
    return delta[0], {'objective': hist}

  def attack(logits_fn, x, y, key):
    delta, hist = _optimize(logits_fn, x, y, key, shared=False)
    x_adv = apply(x, delta)
    mm = _mask_for(x)
    info = {'success': common.success(logits_fn(x_adv), y, targeted),
            'norm': _safe_norm(mm * delta, norm), 'objective': hist, 'delta': delta}
    return AttackOutput(x_adv, info, 'minimal')

  return FittedAttack(fit, apply, attack)
