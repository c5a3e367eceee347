"""Witches' Brew gradient matching (Geiping et al. 2021) on tiny linear softmax models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import gradient_matching as gm
from jaxsec.losses import cross_entropy


def _linear(params, x):
  return x.reshape((x.shape[0], -1)) @ params['w'] + params['b']


def _params(d, k, seed=0):
  rng = np.random.RandomState(seed)
  return {'w': jnp.asarray(rng.randn(d, k).astype(np.float32)),
          'b': jnp.asarray(rng.randn(k).astype(np.float32) * 0.1)}


def _np_grads(params, x, y):
  """Closed-form gradient of the mean softmax cross-entropy of a linear model."""
  w, b = np.asarray(params['w'], np.float64), np.asarray(params['b'], np.float64)
  x = np.asarray(x, np.float64).reshape((x.shape[0], -1))
  z = x @ w + b
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  e = p - np.eye(w.shape[1])[np.asarray(y)]
  return np.concatenate([(x.T @ e / x.shape[0]).ravel(), e.mean(0)])


def _cosine(a, b):
  return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def _images(n=24, k=3, seed=1):
  rng = np.random.RandomState(seed)
  x = rng.rand(n, 4, 4, 1).astype(np.float32)
  x[:, 0, 0] = 0.0                       # pixels on the box's faces
  x[:, 3, 3] = 1.0
  return jnp.asarray(x), jnp.asarray((np.arange(n) % k).astype(np.int32))


def test_matching_loss_is_hand_computed_cosine():
  params = _params(16, 3)
  x, y = _images()
  xp, yp, xt = x[:5], y[:5], x[7:9]
  yt = jnp.array([2, 2], jnp.int32)
  expect = 1.0 - _cosine(_np_grads(params, xp, yp), _np_grads(params, xt, yt))
  got = poisoning.alignment_loss(_linear, params, xp, yp, xt, yt)
  np.testing.assert_allclose(float(got), expect, rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda p: jnp.mean(cross_entropy(_linear(p, xp), yp)))(params)
  assert abs(float(poisoning.gradient_matching_loss(g, g))) < 1e-6          # aligned: 0
  neg = jax.tree.map(lambda a: -3.0 * a, g)
  np.testing.assert_allclose(float(poisoning.gradient_matching_loss(g, neg)), 2.0, rtol=1e-6)


def test_schedule_is_the_authors_multistep():
  # torch MultiStepLR(milestones=[250 // 2.667, 250 // 1.6, 250 // 1.142], gamma=0.1)
  steps = jnp.array([0, 92, 93, 155, 156, 217, 218, 249])
  got = np.asarray(gm.step_size_at(steps, 0.1, 250))
  np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)


def test_first_step_is_signed_adam_transcription():
  params = _params(16, 3)
  x, y = _images()
  xb, yb, xt, yt = x[:4], y[:4], x[5:6], jnp.array([1], jnp.int32)
  key = jax.random.key(3)
  eps, lr = 0.1, 0.03
  delta, info = gm.brew(_linear, params, xb, yb, xt, yt, key, eps=eps, step_size=lr,
                        num_steps=1, restarts=1, loss=cross_entropy, augment=None,
                        bounds=(0.0, 1.0))
  # the reference: randn init clipped to eps and the box, one step of Adam on sign(grad)
  # (Adam's first bias-corrected step is sign(g) / (1 + 1e-8)), projection
  k_init, _ = jax.random.split(jax.random.split(key, 1)[0])
  proj = lambda d: jnp.clip(jnp.clip(d, -eps, eps), -xb, 1.0 - xb)
  d0 = proj(jnp.clip(eps * jax.random.normal(k_init, xb.shape), -eps, eps))
  gt = _np_grads(params, xt, yt)

  def loss(d):
    return poisoning.alignment_loss(_linear, params, xb + d, yb, xt, yt)
  g = jax.grad(loss)(d0)
  np.testing.assert_allclose(np.asarray(delta), np.asarray(proj(d0 - lr * jnp.sign(g))),
                             atol=1e-6)
  np.testing.assert_allclose(float(info['loss_trace'][0, 0]), float(loss(d0)), rtol=1e-5)
  np.testing.assert_allclose(float(info['initial_loss']),
                             1.0 - _cosine(_np_grads(params, xb, yb), gt), rtol=1e-5)


def test_witches_brew_contract_budget_and_labels():
  params = _params(16, 3)
  x, y = _images(n=30)
  eps = 0.05
  atk = poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                               adversarial_label=2, num_classes=3, fraction=0.2, eps=eps,
                               num_steps=30, restarts=2)
  out = atk(x, y, jax.random.key(0))
  mask = np.asarray(out.info['poison_mask'])
  x0, x2 = np.asarray(x), np.asarray(out.x)
  assert out.x.shape == x.shape and mask.sum() == 6
  np.testing.assert_array_equal(np.asarray(out.y), np.asarray(y))          # clean-label
  assert np.all(np.asarray(y)[mask] == 2)                                  # base class
  np.testing.assert_array_equal(x2[~mask], x0[~mask])
  assert np.abs(x2 - x0).max() <= eps + 1e-6
  assert x2.min() >= 0.0 and x2.max() <= 1.0
  assert np.abs(x2 - x0)[mask].max() > 0.9 * eps                           # it moved
  np.testing.assert_array_equal(np.sort(np.flatnonzero(mask)),
                                np.sort(np.asarray(out.info['base_index'])))
  losses = np.asarray(out.info['restart_losses'])
  assert losses.shape == (2,) and float(out.info['passenger_loss']) == losses.min()
  # the kept loss is the alignment of the returned poisons
  idx = np.asarray(out.info['base_index'])
  np.testing.assert_allclose(
      float(poisoning.alignment_loss(_linear, params, out.x[idx], y[idx], x[1:2],
                                     jnp.array([2], jnp.int32))),
      float(out.info['passenger_loss']), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match='fraction'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                           adversarial_label=2, num_classes=3, fraction=0.5)(
                               x, y, jax.random.key(0))
  with pytest.raises(ValueError, match='target_x'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1, :2],
                           adversarial_label=2, num_classes=3, fraction=0.1)(
                               x, y, jax.random.key(0))
  with pytest.raises(ValueError, match='eps'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                           adversarial_label=2, num_classes=3, fraction=0.1, eps=-1.0)


def test_augmentation_is_differentiable_shift_and_flip():
  x, _ = _images(n=6)
  same = poisoning.random_translate_flip(max_shift=0.0, flip=False)(x, jax.random.key(0))
  np.testing.assert_allclose(np.asarray(same), np.asarray(x), atol=1e-6)
  flipped = np.asarray(poisoning.random_translate_flip(max_shift=0.0)(x, jax.random.key(1)))
  for a, b in zip(flipped, np.asarray(x), strict=True):
    assert np.allclose(a, b, atol=1e-6) or np.allclose(a, b[:, ::-1], atol=1e-6)
  aug = poisoning.random_translate_flip(max_shift=1.5)
  g = jax.grad(lambda z: jnp.sum(aug(z, jax.random.key(2)) ** 2))(x)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
