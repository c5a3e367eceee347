"""C&W-L0 pixel fixing against a numpy transcription of Carlini's official l0_attack.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion import cw


def _official_fix(img, nimg, grad, valid):
  """``CarliniL0.attack_single`` (nn_robust_attacks/l0_attack.py), one image [H, W, C].

  ``grad`` is the official ``outgrad`` (d loss / d modifier), ``valid`` [H, W] the
  modifiable pixels. Returns the new valid map [H, W] (transcribed line by line).
  """
  image_size, _, c = img.shape
  valid = np.repeat(valid[:, :, None], c, axis=2).astype(np.float64)
  equal_count = image_size**2 - np.sum(np.all(np.abs(img - nimg) < .0001, axis=2))
  valid = valid.reshape((image_size**2, c))
  totalchange = abs(np.sum(nimg - img, axis=2)) * np.sum(np.abs(grad), axis=2)
  totalchange = totalchange.flatten()
  did = 0
  for e in np.argsort(totalchange):
    if np.all(valid[e]):
      did += 1
      valid[e] = 0
      if totalchange[e] > .01:
        break
      if did >= .3 * equal_count**.5:
        break
  return valid.reshape((image_size, image_size, c))[:, :, 0] > 0


def _case(rng, h, c):
  """A post-round state: some pixels fixed (no change, zero gradient), some unchanged."""
  valid = rng.random((h, h)) < rng.uniform(0.4, 1.0)
  img = rng.uniform(-0.5, 0.5, (h, h, c))
  mag = 10.0 ** rng.uniform(-3.0, -0.5, (h, h, c))
  delta = rng.choice([-1.0, 1.0], (h, h, c)) * mag
  # A random share of the valid pixels barely moved (< 1e-4: "unchanged", distinct scores).
  still = rng.random((h, h)) < rng.uniform(0.0, 0.9)
  delta = np.where(still[..., None], delta * 1e-3 * rng.random((h, h, c)), delta)
  grad = rng.normal(size=(h, h, c)) * 10.0 ** rng.uniform(-3.0, -0.5, (h, h, c))
  delta = np.where(valid[..., None], delta, 0.0)
  grad = np.where(valid[..., None], grad, 0.0)
  return img, img + delta, grad, valid


@pytest.mark.parametrize('channels', [3, 1])
def test_l0_pixels_to_fix_is_the_official_rule(channels):
  rng = np.random.default_rng(channels)
  h, n = 8, 40                                     # 64 pixels (x 3 channels)
  cases = [_case(rng, h, channels) for _ in range(n)]
  img, nimg, grad, valid = (np.stack(a) for a in zip(*cases, strict=True))
  expected = np.stack([_official_fix(*c) for c in cases]).reshape((n, -1))
  if channels == 3:
    args = (img, nimg, grad)
    image = True
  else:                                            # flat features: one feature = one pixel
    args = tuple(a.reshape((n, -1)) for a in (img, nimg, grad))
    image = False
  fn = jax.jit(lambda v, a, b, g: cw.l0_pixels_to_fix(v, a, b, g, image=image, width=1.0))
  with jax.enable_x64(True):
    got = np.asarray(fn(jnp.asarray(valid.reshape((n, -1))),
                        *(jnp.asarray(a, jnp.float64) for a in args)))
  fixed = valid.reshape((n, -1)) & ~expected
  assert fixed.sum(-1).max() > 1                   # the cap / threshold rule really acts
  np.testing.assert_array_equal(got, fixed)


def test_l0_scores_with_the_tanh_space_gradient():
  # The attack hands the rule the gradient of its loss w.r.t. the tanh variable w (the
  # official outgrad w.r.t. modifier): checked at the accepted iterate of round 1.
  d, c = 12, 3
  wm = jax.random.normal(jax.random.key(3), (d, c))
  f = lambda x: x.reshape(x.shape[0], -1) @ wm
  x = jax.random.uniform(jax.random.key(4), (1, 2, 2, 3), minval=0.05, maxval=0.95)
  y = jnp.argmax(f(x), 1)
  calls = []
  real = cw.l0_pixels_to_fix

  def spy(valid, x_new, x0, grad_w, **kw):
    jax.debug.callback(lambda *a: calls.append([np.asarray(v) for v in a]), valid, x_new,
                       grad_w)
    return real(valid, x_new, x0, grad_w, **kw)

  lo, hi = -1.0, 2.0
  mp = pytest.MonkeyPatch()
  mp.setattr(cw, 'l0_pixels_to_fix', spy)
  try:
    attack = cw.carlini_wagner_l0(num_steps=100, initial_const=1e-2, max_rounds=1,
                                  bounds=(lo, hi))
    out = jax.jit(attack, static_argnums=0)(f, x, y)     # jitted: the one-program form
    jax.effects_barrier()
  finally:
    mp.undo()
  assert bool(out.info['success'][0])
  const = float(out.info['const'][0])
  accepted = [(xn, g) for v, xn, g in calls
              if v.all() and float(cw.cw_margin(f(jnp.asarray(xn)), y, False)[0]) < 0]
  assert len(accepted) == 1
  xn, g_w = accepted[0]
  np.testing.assert_allclose(xn, out.x_adv, atol=1e-6)

  def loss_img(xa):
    m = cw.cw_margin(f(xa), y, False)
    return jnp.sum(const * jax.nn.relu(m) + jnp.sum((xa - x) ** 2))

  u = 2.0 * (xn - lo) / (hi - lo) - 1.0            # tanh(w) at the iterate
  expected = jax.grad(loss_img)(jnp.asarray(xn)) * 0.5 * (hi - lo) * (1.0 - u * u)
  np.testing.assert_allclose(g_w, expected, rtol=1e-3, atol=1e-6)
