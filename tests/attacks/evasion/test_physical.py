"""Adversarial patch (Brown et al. 2017) and RP2 (Eykholt et al. 2018): placement closed
forms, exact locality, bounds, a trigger model the fitted patch must find, RP2's objective."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.base import FittedAttack
from jaxsec.attacks.evasion import adversarial_patch
from jaxsec.attacks.evasion import eot_logits_fn
from jaxsec.attacks.evasion import physical
from jaxsec.attacks.evasion import rp2
from jaxsec.attacks.evasion.physical import PatchTransform

KEY = jax.random.key(0)


def _uniform(seed, shape, lo=0.0, hi=1.0):
  """Test data from NumPy (no eager JAX ops to compile)."""
  return jnp.asarray(np.random.default_rng(seed).uniform(lo, hi, shape), jnp.float32)


def _linear(W, b):
  return lambda x: x.reshape((x.shape[0], -1)) @ W + b


def _trigger_model(h=8, w=8, bias=9.0):
  """Three classes on [h, w, 3] images in [0, 1]. Classes 0 / 1 are a random linear split;
  class 2 (the target) scores ``sum(red - green) - bias``: a location-invariant 'trigger'
  that a red patch (R = 1, G = 0) anywhere raises by ~ its area, a random patch by ~ 0."""
  d = h * w * 3
  u = np.random.default_rng(11).normal(size=d) * 0.1
  trig = np.zeros((h, w, 3))
  trig[..., 0], trig[..., 1] = 1.0, -1.0
  W = np.stack([np.zeros(d), u, trig.reshape(-1)], axis=1)
  b = np.array([0.0, -0.5 * u.sum(), -bias])
  return _linear(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))


# ------------------------------------------------------------------------------ patch


@pytest.mark.parametrize('shape', ['square', 'circle'])
def test_patch_in_bounds_and_only_transformed_mask_changes(shape):
  lo, hi = -1.0, 2.0
  x = _uniform(1, (6, 12, 10, 3), lo, hi)
  atk = adversarial_patch(size=0.2, shape=shape, brightness=(0.5, 1.5), scale=(0.7, 1.3),
                          bounds=(lo, hi))
  s = physical.patch_side((12, 10), size=0.2, shape=shape)
  patch = _uniform(2, (s, s, 3), lo, hi)
  x_adv, m_t, t = atk.apply(x, patch, jax.random.key(3), return_mask=True,
                            return_transform=True)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert float(x_adv.min()) >= lo and float(x_adv.max()) <= hi
  assert float(m_t.min()) >= 0.0 and float(m_t.max()) <= 1.0
  outside = np.broadcast_to(np.asarray(m_t) == 0, x.shape)
  np.testing.assert_array_equal(np.asarray(x_adv)[outside], np.asarray(x)[outside])
  changed = np.any(np.asarray(x_adv) != np.asarray(x), axis=-1)
  assert changed.sum(axis=(1, 2)).min() > 0                # every image got its patch
  assert not np.any(changed & (np.asarray(m_t)[..., 0] == 0))
  # The transformed mask covers about scale^2 times the patch's area (bilinear edges
  # cut by the border account for the slack).
  area = physical.patch_mask((12, 10), size=0.2, shape=shape).sum()
  got = np.asarray(m_t).sum(axis=(1, 2, 3))
  want = area * np.asarray(t.scale) ** 2
  np.testing.assert_allclose(got, want, rtol=0.25)
  # Centres keep the patch inside the image.
  c = np.asarray(t.center)
  assert np.all((c[:, 0] >= 0) & (c[:, 0] <= 11) & (c[:, 1] >= 0) & (c[:, 1] <= 9))


@pytest.mark.parametrize('shape', ['square', 'circle'])
def test_patch_exact_placement_closed_form(shape):
  h, w, ch = 11, 13, 2
  x = _uniform(4, (3, h, w, ch))
  atk = adversarial_patch(size=0.15, shape=shape)
  s = physical.patch_side((h, w), size=0.15, shape=shape)
  mask = physical.patch_mask((h, w), size=0.15, shape=shape)
  patch = _uniform(5, (s, s, ch))
  offs = np.array([[0, 0], [2, 5], [h - s, w - s]])          # top-left corners
  t = PatchTransform(center=jnp.asarray(offs + (s - 1) / 2.0, jnp.float32), angle=0.0,
                     scale=1.0, brightness=1.0)
  x_adv, m_t = jax.jit(lambda a, p: atk.apply(a, p, transform=t, return_mask=True))(x, patch)
  want = np.array(x)
  want_m = np.zeros((3, h, w, 1), np.float32)
  for i, (r, c) in enumerate(offs):
    region = want[i, r:r + s, c:c + s]
    want[i, r:r + s, c:c + s] = np.where(mask[..., None] > 0, np.asarray(patch), region)
    want_m[i, r:r + s, c:c + s, 0] = mask
  np.testing.assert_array_equal(np.asarray(x_adv), want)       # bit-exact
  np.testing.assert_array_equal(np.asarray(m_t), want_m)
  if shape == 'circle':
    assert 0 < mask.sum() < s * s
  # Brightness b maps patch values to clip(b p), and a quarter turn is np.rot90.
  t2 = t._replace(brightness=1.5)
  xb = atk.apply(x, patch, transform=t2)
  r, c = offs[1]
  np.testing.assert_allclose(np.asarray(xb)[1, r:r + s, c:c + s][mask > 0],
                             np.clip(1.5 * np.asarray(patch), 0, 1)[mask > 0], atol=1e-6)
  t3 = t._replace(angle=np.pi / 2)
  xr = atk.apply(x, patch, transform=t3)
  rot = np.rot90(np.asarray(patch), 1, axes=(0, 1))
  rmask = np.rot90(mask, 1)
  np.testing.assert_allclose(np.asarray(xr)[1, r:r + s, c:c + s][rmask > 0],
                             rot[rmask > 0], atol=1e-5)


def test_patch_side_and_area():
  assert physical.patch_side((28, 28), size=0.09) == 8           # round(sqrt(70.56))
  assert physical.patch_area_fraction((28, 28), size=0.09) == pytest.approx(64 / 784)
  disc = dict(size=0.09, shape='circle')
  assert physical.patch_side((28, 28), **disc) == 9              # round(sqrt(4 * 70.56 / pi))
  assert abs(physical.patch_area_fraction((28, 28), **disc) - 0.09) < 0.02
  with pytest.raises(ValueError, match='larger than'):
    physical.patch_side((8, 8), size=1.0, shape='circle')
  with pytest.raises(ValueError, match='triangle'):
    physical.patch_mask((8, 8), size=0.1, shape='triangle')


def test_patch_and_rp2_are_fitted_attacks():
  """Named tuples of pure functions (optax's pattern), not closures with attributes."""
  for atk in (adversarial_patch(size=0.25), rp2(mask=np.ones((4, 4)))):
    assert isinstance(atk, FittedAttack) and atk._fields == ('fit', 'apply', 'attack')
    assert not hasattr(atk.attack, 'fit')


def test_targeted_patch_finds_trigger_far_above_random_patch():
  f = _trigger_model()
  x_fit = _uniform(6, (128, 8, 8, 3))
  x_test = _uniform(7, (256, 8, 8, 3))
  target = 2
  atk = adversarial_patch(size=0.25, num_steps=150, batch_size=16, learning_rate=0.05)
  patch, info = jax.jit(atk.fit, static_argnums=0)(
      f, x_fit, jnp.full((128,), target), jax.random.key(8))
  assert info['objective'].shape == (150,)
  assert float(jnp.mean(info['objective'][-10:])) > float(jnp.mean(info['objective'][:10]))

  def target_rate(p, k):
    return float(jnp.mean(jnp.argmax(f(atk.apply(x_test, p, k)), -1) == target))

  clean = float(jnp.mean(jnp.argmax(f(x_test), -1) == target))
  noise = _uniform(9, patch.shape)
  fitted = target_rate(patch, jax.random.key(10))
  rand = target_rate(noise, jax.random.key(10))
  print(f'target rate: clean {clean:.3f}, random patch {rand:.3f}, fitted {fitted:.3f}')
  assert clean < 0.05 and rand < 0.1
  assert fitted > 0.9
  # The optimum is red: R -> 1, G -> 0 (blue is irrelevant).
  assert float(jnp.mean(patch[..., 0])) > 0.85 and float(jnp.mean(patch[..., 1])) < 0.15


def test_patch_fit_in_bounds_standard_signature_jit_untargeted():
  lo, hi = -1.0, 2.0
  x = _uniform(12, (16, 8, 8, 3), lo, hi)
  W = jnp.asarray(np.random.default_rng(2).normal(size=(192, 4)), jnp.float32)
  f = _linear(W, jnp.zeros(4))
  y = jnp.argmax(f(x), -1)
  # A huge step drives the patch into the box's faces; it must stay inside.
  atk = adversarial_patch(size=0.25, targeted=False, num_steps=5, batch_size=8,
                          learning_rate=10.0, bounds=(lo, hi))
  out = jax.jit(atk.attack, static_argnums=0)(f, x, y, KEY)
  patch = out.info['patch']
  assert patch.shape == (4, 4, 3)
  assert float(patch.min()) >= lo and float(patch.max()) <= hi
  assert np.mean((np.asarray(patch) == lo) | (np.asarray(patch) == hi)) > 0.5
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(out.x_adv), -1) != y)
  assert out.info['objective'].shape == (5,)
  outside = np.broadcast_to(np.asarray(out.info['mask']) == 0, x.shape)
  np.testing.assert_array_equal(np.asarray(out.x_adv)[outside], np.asarray(x)[outside])
  # The returned images are the patch applied with the returned transformations.
  again = atk.apply(x, patch, transform=out.info['transform'])
  np.testing.assert_allclose(again, out.x_adv, atol=1e-6)
  # Any batch size, including one image.
  one = atk.apply(x[:1], patch, KEY)
  assert one.shape == (1, 8, 8, 3)


# ------------------------------------------------------------------------------ RP2


def _sticker_mask(h=8, w=8):
  m = np.zeros((h, w), np.float32)
  m[1:3, 1:5] = 1.0
  m[5:7, 4:7] = 1.0
  return m


def test_rp2_changes_only_mask_and_objective_decreases():
  f = _trigger_model(bias=6.0)
  x = _uniform(13, (4, 8, 8, 3))
  y = jnp.full((4,), 2)
  mask = _sticker_mask()
  atk = rp2(mask=mask, lam=0.05, norm='l2', num_steps=60, learning_rate=0.05,
            num_samples=4)
  out = jax.jit(atk.attack, static_argnums=0)(f, x, y, KEY)
  xa = np.asarray(out.x_adv)
  outside = np.broadcast_to(mask[..., None] == 0, x.shape)
  np.testing.assert_array_equal(xa[outside], np.asarray(x)[outside])
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  assert np.any(xa[~outside] != np.asarray(x)[~outside])
  # The objective (lam ||M delta||_2 + the target cross-entropy under one fixed set of
  # transformations) is lower at the result than at delta = 0, and the training trace falls.
  eot = jax.jit(eot_logits_fn(f, physical.physical_transform(), num_samples=4,
                              key=jax.random.key(14), average='log_probs', resample='fixed'))
  before = -eot(x)[:, 2]
  after = -eot(out.x_adv)[:, 2] + 0.05 * out.info['norm']
  print('objective before', before, 'after', after)
  assert float(jnp.min(before)) > 1.0                 # no image starts as the target
  assert np.all(np.asarray(after) < 0.5 * np.asarray(before))
  hist = np.asarray(out.info['objective'])
  assert hist.shape == (60,) and hist[-5:].mean() < hist[:5].mean() - 0.5
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(out.x_adv), -1) == 2)
  # The norm term is what the paper says: ||M delta||_2 of the returned perturbation.
  d = (out.x_adv - x).reshape(4, -1)
  np.testing.assert_allclose(out.info['norm'], jnp.linalg.norm(d, axis=1), rtol=1e-5,
                             atol=1e-6)


def test_rp2_lambda_sweep_is_one_vmap_and_shared_fit():
  f = _trigger_model(bias=6.0)
  x = _uniform(15, (4, 8, 8, 3))
  y = jnp.full((4,), 2)
  mask = _sticker_mask()

  @jax.jit
  def sweep(lams):
    def one(lam):
      out = rp2(mask=mask, lam=lam, norm='l1', num_steps=40, learning_rate=0.05,
                transform=None).attack(f, x, y, KEY)
      return out.info['norm'], out.x_adv
    return jax.vmap(one)(lams)

  norms, xs = sweep(jnp.array([0.0, 0.5]))
  assert float(norms[1].mean()) < 0.5 * float(norms[0].mean())
  np.testing.assert_allclose(norms, jnp.sum(jnp.abs(xs - x[None]), axis=(2, 3, 4)),
                             rtol=1e-5)
  # One delta shared by all images (the paper's X^V), fitted and applied.
  atk = rp2(mask=mask[..., None], num_steps=40, learning_rate=0.05, num_samples=2)
  delta, finfo = jax.jit(atk.fit, static_argnums=0)(f, x, y, KEY)
  assert finfo['objective'].shape == (40,)
  assert delta.shape == (8, 8, 3)
  assert np.all(np.asarray(delta)[mask == 0] == 0)
  xa = atk.apply(x, delta)
  outside = np.broadcast_to(mask[..., None] == 0, x.shape)
  np.testing.assert_array_equal(np.asarray(xa)[outside], np.asarray(x)[outside])
  assert float(jnp.mean(jnp.argmax(f(xa), -1) == 2)) > float(jnp.mean(jnp.argmax(f(x), -1) == 2))


def test_non_printability_score_closed_form_and_term():
  colors = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
  x = jnp.zeros((1, 1, 2, 3)).at[0, 0, 1].set(jnp.array([0.5, 0.5, 0.5]))
  # pixel 0 is printable (black): 0; pixel 1: two distances of sqrt(.75) -> .75; mean over
  # the two masked pixels.
  nps = physical.non_printability_score(x, jnp.ones((1, 2)), colors)
  np.testing.assert_allclose(nps, [0.375], rtol=1e-6)
  f = _trigger_model(bias=6.0)
  xs = _uniform(16, (2, 8, 8, 3), 0.3, 0.7)
  y = jnp.full((2,), 2)
  mask = _sticker_mask()
  pix = jnp.asarray(mask > 0)

  @jax.jit
  def sweep(weights):
    def one(wgt):
      atk = rp2(mask=mask, lam=0.0, num_steps=40, learning_rate=0.05, transform=None,
                printable_colors=colors, nps_weight=wgt)
      return jnp.mean(physical.non_printability_score(atk.attack(f, xs, y, KEY).x_adv, pix,
                                                       colors))
    return jax.vmap(one)(weights)

  res = sweep(jnp.array([0.0, 20.0]))
  assert float(res[1]) < 0.5 * float(res[0])


@pytest.mark.parametrize('mode', ['constant', 'nearest'])
def test_dense_resampler_matches_map_coordinates(mode):
  img = _uniform(20, (5, 6, 2))
  coords = physical._source_coords(9, 7, jnp.array([3.2, 2.7]), 0.7, 0.8,
                                   jnp.array([2.0, 2.5]))
  coords = coords.at[0, 0, 0].set(-0.5).at[1, 0, 1].set(7.25)   # off the grid
  dense = physical._warp(img, coords, mode, dense=True)
  gather = physical._warp(img, coords, mode, dense=False)
  np.testing.assert_allclose(dense, gather, atol=1e-6)
  assert float(jnp.abs(dense).max()) > 0


def test_physical_transform_properties():
  t = physical.physical_transform(max_rotation=0.0, scale=(1.0, 1.0), max_translation=0.0,
                                  brightness=(1.0, 1.0))
  x = _uniform(17, (3, 6, 7, 2))
  np.testing.assert_allclose(t(x, KEY), x, atol=1e-6)             # identity
  t = physical.physical_transform(bounds=(-1.0, 1.0), brightness=(0.5, 2.0))
  xr = _uniform(18, (5, 6, 7, 2), -1.0, 1.0)
  out = jax.jit(t)(xr, KEY)
  assert out.shape == xr.shape and float(out.min()) >= -1 and float(out.max()) <= 1
  assert not np.allclose(out, xr)


# ------------------------------------------------------------------------------ checks


@pytest.mark.parametrize('factory,kw,match', [
    (adversarial_patch, dict(size=0.0), 'size=0.0'),
    (adversarial_patch, dict(size=1.5), 'size=1.5'),
    (adversarial_patch, dict(shape='triangle'), 'triangle'),
    (adversarial_patch, dict(num_steps=0), 'num_steps=0'),
    (adversarial_patch, dict(batch_size=0), 'batch_size=0'),
    (adversarial_patch, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (adversarial_patch, dict(max_rotation=200.0), 'max_rotation=200.0'),
    (adversarial_patch, dict(scale=(1.2, 0.8)), r'scale=\(1.2, 0.8\)'),
    (adversarial_patch, dict(scale=(0.0, 1.0)), r'scale=\(0.0, 1.0\)'),
    (adversarial_patch, dict(brightness=(-0.1, 1.0)), r'brightness=\(-0.1, 1.0\)'),
    (adversarial_patch, dict(targeted=1), 'targeted=1'),
    (adversarial_patch, dict(loss='hinge'), 'hinge'),
    (adversarial_patch, dict(bounds=(1.0, 0.0)), 'bounds'),
    (rp2, dict(mask=np.zeros((4, 4))), 'all zero'),
    (rp2, dict(mask=np.full((4, 4), 2.0)), r'\[2, 2\]'),
    (rp2, dict(mask=np.ones((4, 4)), lam=-1.0), 'lam=-1.0'),
    (rp2, dict(mask=np.ones((4, 4)), norm='l0'), 'l0'),
    (rp2, dict(mask=np.ones((4, 4)), num_steps=0), 'num_steps=0'),
    (rp2, dict(mask=np.ones((4, 4)), learning_rate=0.0), 'learning_rate=0.0'),
    (rp2, dict(mask=np.ones((4, 4)), num_samples=0), 'num_samples=0'),
    (rp2, dict(mask=np.ones((4, 4)), transform='blur'), 'blur'),
    (rp2, dict(mask=np.ones((4, 4)), nps_weight=-1.0), 'nps_weight=-1.0'),
    (rp2, dict(mask=np.ones((4, 4)), printable_colors=[[2.0, 0.0, 0.0]]), 'outside'),
    (physical.physical_transform, dict(max_translation=2.0), 'max_translation=2.0'),
])
def test_bad_hyperparameters(factory, kw, match):
  with pytest.raises(ValueError, match=match):
    factory(**kw)


def test_bad_call_arguments():
  atk = adversarial_patch(size=0.25)
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match='patch has shape'):
    atk.apply(x, jnp.zeros((3, 3, 1)), KEY)
  with pytest.raises(ValueError, match='key'):
    atk.apply(x, jnp.zeros((4, 4, 1)))
  with pytest.raises(ValueError, match='expected images'):
    atk.fit(lambda a: a, jnp.zeros((2, 8)), jnp.zeros(2, jnp.int32), KEY)
  r = rp2(mask=np.ones((5, 5)))
  with pytest.raises(ValueError, match='does not broadcast'):
    r.attack(lambda a: a.reshape(2, -1), x, jnp.zeros(2, jnp.int32), KEY)
