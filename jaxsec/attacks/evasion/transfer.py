"""Transfer-oriented iterative L_inf attacks: DI, TI, NI, SI and VMI over one MI-FGSM loop.

One factory, :func:`transfer_ifgsm`, composes the pieces the way the papers do:

* **DI** (Xie et al., "Improving Transferability of Adversarial Examples with Input
  Diversity", CVPR 2019) is an *input transformation of the gradient's forward pass*: with
  probability ``diversity_prob`` the model sees a randomly resized and zero-padded copy
  of its input (:func:`diverse_input`);
* **SI** (Lin et al., "Nesterov Accelerated Gradient and Scale Invariance for Adversarial
  Attacks", ICLR 2020) is an *averaged objective*: the gradient is the sum over the
  copies ``x / 2^i``, ``i < si_copies``, of ``grad_x J(x / 2^i)`` (chain factor
  ``2^-i`` included, as in the reference code);
* **TI** (Dong et al., "Evading Defenses to Transferable Adversarial Examples by
  Translation-Invariant Attacks", CVPR 2019) is a *gradient transformation*: the gradient
  is convolved per channel with a Gaussian kernel (:func:`gaussian_kernel`, 'SAME' zero
  padding) before the momentum update;
* **NI** (Lin et al. 2020) and **VMI** (Wang & He, "Enhancing the Transferability of
  Adversarial Attacks through Variance Tuning", CVPR 2021) change the *update rule*: NI
  takes the gradient at the look-ahead point ``x_t + alpha mu m_t``; VMI adds to it the
  variance ``v_t = mean_j grad(x_{t-1} + u_j) - grad(x_{t-1})`` of the previous step,
  ``u_j ~ U[-beta eps, beta eps]^d``, ``j < vmi_neighbours``.

So DI-TI-MI, NI-SI, VMI-DI-TI-SI (and VNI-...) are each one call; with every option off
the attack is exactly :func:`jaxsec.attacks.evasion.gradient.mi_fgsm` (L_inf).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

# The papers' ImageNet settings: DI resizes 299 px images to [299, 330) and pads to 330;
# TI's kernel is 15 px (nsig 3) at 299 px.
DI_RESIZE = 330 / 299
TI_KERNEL_SIZE, TI_IMAGE_SIZE = 15, 299


def gaussian_kernel(size: int, nsig: float = 3.0) -> np.ndarray:
  """The TI kernel: ``gkern`` of Dong et al.'s code, a ``size x size`` outer product of
  the standard normal pdf at ``linspace(-nsig, nsig, size)``, normalised to sum 1."""
  size = _checks.check_int('size', size, minimum=1)
  _checks.check_float('nsig', nsig, minimum=0.0, strict_min=True)
  k1 = stats.norm.pdf(np.linspace(-nsig, nsig, size))
  k = np.outer(k1, k1)
  return (k / k.sum()).astype(np.float32)


def scaled_kernel_size(image_size: int) -> int:
  """TI's kernel size scaled to the image: the odd integer nearest to
  ``15 * image_size / 299`` (Dong et al.: 15 px at 299 px), at least 3.

  At 28 px this is 3; with nsig = 3 the 3 x 3 kernel puts weight ~1% on each edge
  neighbour, so scaled TI is a mild smoothing on small images.
  """
  image_size = _checks.check_int('image_size', image_size, minimum=1)
  s = TI_KERNEL_SIZE * image_size / TI_IMAGE_SIZE
  return max(3, 2 * int(np.floor(s / 2)) + 1)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
  """Source rows of a nearest-neighbour resize ``n_in -> n_out`` as TF1's
  ``resize_images(..., NEAREST_NEIGHBOR)`` (no corner alignment, no half-pixel centres):
  ``min(floor(i * (n_in / n_out)), n_in - 1)`` in float32."""
  scale = np.float32(n_in) / np.float32(n_out)
  return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int32),
                    n_in - 1)


def diversity_pad(height: int, width: int, resize: float = DI_RESIZE) -> int:
  """Pixels of padding DI adds on each axis: ``max(1, round(max(h, w) * (resize - 1)))``
  (31 at 299 px with Xie et al.'s 330/299; 3 at 28 px)."""
  return max(1, round(max(height, width) * (resize - 1.0)))


def _di_axis(n: int, grow, offset, pad: int):
  """For one axis of DI: the source index of each output pixel and whether it lies on
  the resized image (else on the zero padding)."""
  canvas = jnp.asarray(_nearest_index(n + pad, n))          # output -> canvas (static)
  pos = canvas - offset                                     # canvas -> resized image
  scale = jnp.float32(n) / (n + grow).astype(jnp.float32)   # resized -> input, as TF
  src = jnp.minimum(jnp.floor(pos.astype(jnp.float32) * scale).astype(jnp.int32), n - 1)
  return jnp.clip(src, 0, n - 1), (pos >= 0) & (pos < n + grow)


def diverse_input(img: jax.Array, grow: jax.Array, top: jax.Array, left: jax.Array,
                  pad: int) -> jax.Array:
  """DI's transform of one image ``[H, W, C]``: nearest resize to ``(H + grow, W + grow)``,
  zero padding to ``(H + pad, W + pad)`` with the resized image at ``(top, left)``, and
  nearest resize back to ``(H, W)``.

  This is the fixed-output-size form of the VT authors' ``input_diversity`` (Wang & He's
  code resizes back to 299 after padding to 331); Xie et al. feed the 330 px canvas to the
  network, which a fixed-input model cannot take. The three steps are composed into one
  gather, so ``grow``, ``top``, ``left`` may be traced (``0 <= grow < pad``,
  ``0 <= top, left < pad - grow``).
  """
  rows, in_r = _di_axis(img.shape[0], grow, top, pad)
  cols, in_c = _di_axis(img.shape[1], grow, left, pad)
  mask = (in_r[:, None] & in_c[None, :]).reshape(in_r.shape + in_c.shape
                                                 + (1,) * (img.ndim - 2))
  return jnp.where(mask, img[rows][:, cols], jnp.zeros((), img.dtype))


def diversity_draws(key: jax.Array, batch: int, prob, pad: int):
  """DI's random draws for ``batch`` images, one set per image: ``(apply [B] bool, grow,
  top, left [B] int32)`` with ``apply ~ Bernoulli(prob)``, ``grow ~ U{0..pad-1}`` and
  ``top, left ~ U{0..pad-grow-1}`` (the reference's ``rnd``, ``pad_top``, ``pad_left``)."""
  ka, kg, kt, kl = jax.random.split(key, 4)
  grow = jax.random.randint(kg, (batch,), 0, pad)
  top = jax.random.randint(kt, (batch,), 0, pad - grow)
  left = jax.random.randint(kl, (batch,), 0, pad - grow)
  return jax.random.uniform(ka, (batch,)) < prob, grow, top, left


def _as_nhwc(x: jax.Array) -> jax.Array:
  return x[..., None] if x.ndim == 3 else x


def translate_smooth(g: jax.Array, kernel) -> jax.Array:
  """TI's gradient transformation: per-channel ('depthwise') cross-correlation of ``g``
  ``[B, H, W, C]`` (or ``[B, H, W]``) with ``kernel`` ``[k, k]``, 'SAME' zero padding, as
  ``tf.nn.depthwise_conv2d`` in Dong et al.'s code."""
  z = _as_nhwc(g)
  c = z.shape[-1]
  k = jnp.asarray(kernel, g.dtype)
  w = jnp.broadcast_to(k[:, :, None, None], k.shape + (1, c))
  out = jax.lax.conv_general_dilated(z, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     feature_group_count=c,
                                     precision=jax.lax.Precision.HIGHEST)
  return out.reshape(g.shape)


def _check_kernel(ti_kernel):
  if ti_kernel is None:
    return None
  if isinstance(ti_kernel, (int, np.integer)) and not isinstance(ti_kernel, bool):
    size = _checks.check_int('ti_kernel', ti_kernel, minimum=1)
    if size % 2 == 0:
      raise ValueError(f'ti_kernel={size} must be odd (a centred kernel).')
    return gaussian_kernel(size)
  k = np.asarray(ti_kernel)
  if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.issubdtype(
      k.dtype, np.number) or not np.all(np.isfinite(k)):
    raise ValueError(f'ti_kernel with shape {k.shape} must be an odd int (a Gaussian '
                     f'kernel size) or a finite 2-D array of odd sizes.')
  return k.astype(np.float32)


def transfer_ifgsm(*, eps, num_steps: int = 10, step_size=None, decay: float = 1.0,
                   diversity_prob: float = 0.0, diversity_resize: float = DI_RESIZE,
                   ti_kernel=None, si_copies: int = 1, nesterov: bool = False,
                   vmi_neighbours: int = 0, vmi_beta: float = 1.5, loss: str = 'ce',
                   targeted: bool = False, bounds=(0.0, 1.0)):
  """MI-FGSM with the transferability add-ons DI, TI, SI, NI and VMI (L_inf, fixed budget).

  One step, from ``x_0 = x``, ``m_0 = v_0 = 0``, ``alpha = step_size`` (default
  ``eps / num_steps``, the papers' choice), ``mu = decay``::

    z_t  = x_t + alpha * mu * D * m_t                 (NI; else z_t = x_t)
    g_t  = sum_{i < si_copies} grad_x J(DI(z_t / 2^i), y)        (SI, DI)
    c_t  = TI(g_t + v_t)                              (VMI adds v_t; TI convolves)
    m_{t+1} = mu * m_t + c_t / ||c_t||_1
    v_{t+1} = mean_j [sum_i grad_x J(DI(n_j / 2^i))] - g_t,  n_j = x_t + U[-beta eps, beta eps]
    x_{t+1} = Clip_{x, eps}(x_t + alpha * sign(m_{t+1}))   (ball and box)

  ``D`` is the number of input values per example: the authors' code normalises by the
  *mean* absolute value, so its momentum is ``D m``; the look-ahead uses that scale (the
  step's sign is the same either way). The last iterate is returned.

  Papers' methods as calls (``mu = 1`` throughout):

  ==================  =============================================================
  MI-FGSM              all options off (equals :func:`mi_fgsm`)
  DI2-FGSM / M-DI2     ``diversity_prob=0.5`` with ``decay=0`` / ``decay=1``
  TI-MI / DI-TI-MI     ``ti_kernel=k`` (+ ``diversity_prob=0.5``)
  NI-FGSM / SI-NI      ``nesterov=True`` (+ ``si_copies=5``)
  VMI / VNI            ``vmi_neighbours=20, vmi_beta=1.5`` (+ ``nesterov=True``)
  VMI-DI-TI-SI         ``vmi_neighbours=20, diversity_prob=0.5, ti_kernel=k, si_copies=5``
  ==================  =============================================================

  DI and TI need images ``[B, H, W, C]`` or ``[B, H, W]``; the other options take any
  shape. ``key`` is needed when DI or VMI is on. Per gradient point (``z_t`` or a
  neighbour) one DI draw per example is shared by its SI copies (the VT code transforms
  the stack of copies with one draw).

  Scaling to small images (the papers use 299 px ImageNet): DI enlarges by
  ``grow ~ U{0..pad-1}`` pixels and pads to ``+pad`` with ``pad =
  round(H * (diversity_resize - 1))`` (Xie et al.: 299 -> [299, 330), pad to 330: ratio
  330/299; at 28 px, pad = 3); TI's kernel is given explicitly: an odd int is
  :func:`gaussian_kernel` of that size with nsig = 3, :func:`scaled_kernel_size` scales
  Dong et al.'s 15 px at 299 px to the image (3 at 28 px), an array is used as is.

  Deviations from the reference code (each noted where it matters): DI draws per example
  (the code: one draw per batch), so an example's result does not depend on its batch
  companions; DI outputs the input size (VT's form, see :func:`diverse_input`); padding
  and SI's scaling act on the model's input values (the code's inputs are in [-1, 1], so
  its zero padding is mid-grey and ``x / 2^i`` shrinks towards grey; on [0, 1] images they
  are black); with DI or SI on, the gradient is autodiff through ``logits_fn`` (a
  ``logits_fn`` with its own ``attack_value_and_grad``, e.g. EOT's, is used only with
  both off); the labels are the given ``y`` (the VT code uses the model's first
  prediction); VMI's neighbours are not clipped to the box (as in the code).

  Args:
    eps: L_inf radius (may be traced).
    num_steps: iterations ``T``.
    step_size: ``alpha`` (default ``eps / num_steps``).
    decay: momentum ``mu`` (>= 0).
    diversity_prob: DI's probability ``p`` of transforming (0: DI off; paper 0.5).
    diversity_resize: DI's canvas-to-image ratio (> 1; default 330/299).
    ti_kernel: None (TI off), an odd int, or an odd-sized 2-D array.
    si_copies: SI's number of scale copies ``m`` (1: SI off; paper 5).
    nesterov: NI's look-ahead.
    vmi_neighbours: VMI's ``N`` (0: VMI off; paper 20).
    vmi_beta: VMI's radius factor ``beta`` (paper 1.5).
    loss: 'ce', 'cw' or 'dlr' (:func:`common.objective`; the papers use 'ce').
    targeted: ``y`` are target labels.
    bounds: input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed'); info ``success``,
    ``loss`` (at ``x_adv``) and ``gradients`` (``T * si_copies * (1 + N)``) per example.
  """
  bounds = common.check_common(eps=eps, loss=loss, bounds=bounds)
  common.check_bool(targeted=targeted, nesterov=nesterov)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  if step_size is not None:
    _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  _checks.check_float('decay', decay, minimum=0.0)
  _checks.check_float('diversity_prob', diversity_prob, minimum=0.0, maximum=1.0,
                      allow_traced=False)
  _checks.check_float('diversity_resize', diversity_resize, minimum=1.0, strict_min=True,
                      allow_traced=False)
  kernel = _check_kernel(ti_kernel)
  si_copies = _checks.check_int('si_copies', si_copies, minimum=1)
  vmi_neighbours = _checks.check_int('vmi_neighbours', vmi_neighbours, minimum=0)
  _checks.check_float('vmi_beta', vmi_beta, minimum=0.0, strict_min=True)
  obj = common.objective(loss, targeted)
  use_di = float(diversity_prob) > 0.0
  use_vmi = vmi_neighbours > 0
  grads_per_step = si_copies * (1 + vmi_neighbours)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    if (use_di or kernel is not None) and x.ndim not in (3, 4):
      raise ValueError(f'x has shape {tuple(x.shape)}; DI and TI need images [B, H, W, C] '
                       f'or [B, H, W].')
    if (use_di or use_vmi) and key is None:
      raise ValueError('key=None; DI (diversity_prob > 0) and VMI (vmi_neighbours > 0) '
                       'draw random numbers and need a key.')
    base_key = jax.random.key(0) if key is None else key    # unused without DI / VMI
    e = jnp.asarray(eps, x.dtype)
    step = e / num_steps if step_size is None else jnp.asarray(step_size, x.dtype)
    size = int(np.prod(x.shape[1:]))
    pad = diversity_pad(x.shape[1], x.shape[2], diversity_resize) if use_di else 0

    def point_grad(z, k):
      """``sum_i grad_z J(DI(z / 2^i))``: SI copies sharing one DI draw per example, as
      one forward / backward pass over the stacked copies (as the reference code)."""
      if not use_di and si_copies == 1:
        return common.value_and_grad(logits_fn, obj)(z, y)[2]   # custom estimators too
      if use_di:
        apply, grow, top, left = diversity_draws(k, z.shape[0], diversity_prob, pad)

      def total(u):
        if use_di:   # DI(u / 2^i) = DI(u) / 2^i: DI only moves and zeroes pixels
          nh = _as_nhwc(u)
          t = jax.vmap(lambda im, g, a, b: diverse_input(im, g, a, b, pad))(nh, grow, top,
                                                                            left)
          u = common.select(apply, t, nh).reshape(u.shape)
        scales = jnp.asarray([0.5 ** i for i in range(si_copies)], u.dtype)
        stack = (scales.reshape((-1,) + (1,) * u.ndim) * u[None]).reshape(
            (si_copies * u.shape[0],) + u.shape[1:])
        return jnp.sum(obj(logits_fn(stack), jnp.tile(y, si_copies)))
      return jax.grad(total)(z)

    def body(t, carry):
      x_adv, m, v = carry
      kt = jax.random.fold_in(base_key, t)
      z = x_adv + (decay * step * size) * m if nesterov else x_adv
      g = point_grad(z, jax.random.fold_in(kt, 0))
      c = g + v if use_vmi else g
      if kernel is not None:
        c = translate_smooth(c, kernel)
      m = decay * m + common.normalize(c, 'l1')
      if use_vmi:
        def nb(j, acc):
          kn, kd = jax.random.split(jax.random.fold_in(kt, j + 1))
          u = jax.random.uniform(kn, x.shape, x.dtype, -vmi_beta * e, vmi_beta * e)
          return acc + point_grad(x_adv + u, kd)
        tot = jax.lax.fori_loop(0, vmi_neighbours, nb, jnp.zeros_like(x))
        v = tot / vmi_neighbours - g
      x_adv = common.project(x_adv + step * jnp.sign(m), x, e, 'linf', bounds)
      return x_adv, m, v

    zeros = jnp.zeros_like(x)
    x_adv, _, _ = common.fori_loop(0, num_steps, body, (x, zeros, zeros))
    logits = logits_fn(x_adv)
    return AttackOutput(x_adv, {
        'success': common.success(logits, y, targeted), 'loss': obj(logits, y),
        'gradients': jnp.full((x.shape[0],), num_steps * grads_per_step, jnp.int32)},
        'fixed')
  return attack
