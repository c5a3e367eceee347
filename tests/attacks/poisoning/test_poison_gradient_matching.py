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
  got = jax.jit(poisoning.alignment_loss, static_argnums=0)(_linear, params, xp, yp, xt, yt)
  np.testing.assert_allclose(float(got), expect, rtol=1e-5, atol=1e-6)
  g = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)}
  assert abs(float(poisoning.gradient_matching_loss(g, g))) < 1e-6          # aligned: 0
  neg = jax.tree.map(lambda a: -3.0 * a, g)
  np.testing.assert_allclose(float(poisoning.gradient_matching_loss(g, neg)), 2.0, rtol=1e-6)


def test_schedule_is_the_authors_multistep():
  # torch MultiStepLR(milestones=[250 // 2.667, 250 // 1.6, 250 // 1.142], gamma=0.1)
  steps = jnp.array([0, 92, 93, 155, 156, 217, 218, 249])
  got = np.asarray(gm.step_size_at(steps, 0.1, 250))
  np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)


def _reference_brew(params, xb, yb, xt, yt, key, eps, lr, num_steps, restarts):
  """A transcription of the authors' loop (signAdam, randn init, MultiStepLR, projection;
  torch.optim.Adam's update written out), restarts ranked by the final alignment loss."""
  proj = lambda d: jnp.clip(jnp.clip(d, -eps, eps), -xb, 1.0 - xb)
  loss = jax.jit(lambda d: poisoning.alignment_loss(_linear, params, xb + d, yb, xt, yt))
  grad = jax.jit(jax.grad(lambda d: poisoning.alignment_loss(_linear, params, xb + d, yb, xt,
                                                             yt)))
  milestones = [int(num_steps // 2.667), int(num_steps // 1.6), int(num_steps // 1.142)]
  runs = []
  for k in jax.random.split(key, restarts):
    k_init, _ = jax.random.split(k)
    d = proj(jnp.clip(eps * jax.random.normal(k_init, xb.shape), -eps, eps))
    m = v = jnp.zeros_like(d)
    for i in range(num_steps):
      s = jnp.sign(grad(d))
      m, v = 0.9 * m + 0.1 * s, 0.999 * v + 0.001 * s * s
      mhat, vhat = m / (1 - 0.9 ** (i + 1)), v / (1 - 0.999 ** (i + 1))
      step = lr * 0.1 ** sum(i >= ms for ms in milestones if ms > 0)
      d = proj(d - step * mhat / (jnp.sqrt(vhat) + 1e-8))
    runs.append((float(loss(d)), d))
  return min(runs, key=lambda r: r[0])


def test_witches_brew_contract_and_transcription():
  params = _params(16, 3)
  x, y = _images(n=30)
  eps, lr = 0.05, 0.03
  atk = poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                               adversarial_label=2, num_classes=3, fraction=0.2, eps=eps,
                               step_size=lr, num_steps=4, restarts=2)
  key = jax.random.key(0)
  out = atk(x, y, key)
  mask = np.asarray(out.info['poison_mask'])
  x0, x2 = np.asarray(x), np.asarray(out.x)
  assert out.x.shape == x.shape and mask.sum() == 6
  np.testing.assert_array_equal(np.asarray(out.y), np.asarray(y))          # clean-label
  assert np.all(np.asarray(y)[mask] == 2)                                  # base class
  np.testing.assert_array_equal(x2[~mask], x0[~mask])
  assert np.abs(x2 - x0).max() <= eps + 1e-6
  assert x2.min() >= 0.0 and x2.max() <= 1.0
  idx = np.asarray(out.info['base_index'])
  np.testing.assert_array_equal(np.sort(np.flatnonzero(mask)), np.sort(idx))
  losses = np.asarray(out.info['restart_losses'])
  assert losses.shape == (2,) and float(out.info['passenger_loss']) == losses.min()
  # the same poisons from the transcribed reference loop (the attack's key split: pick, brew)
  xt, yt = x[1:2], jnp.array([2], jnp.int32)
  best, d = _reference_brew(params, x[idx], y[idx], xt, yt, jax.random.split(key)[1], eps, lr,
                            4, 2)
  np.testing.assert_allclose(x2[idx] - x0[idx], np.asarray(d), atol=1e-5)
  np.testing.assert_allclose(float(out.info['passenger_loss']), best, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(out.info['initial_loss']),
                             1.0 - _cosine(_np_grads(params, x[idx], y[idx]),
                                           _np_grads(params, xt, yt)), rtol=1e-5)
  with pytest.raises(ValueError, match='fraction'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                           adversarial_label=2, num_classes=3, fraction=0.5)(x, y, key)
  with pytest.raises(ValueError, match='target_x'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1, :2],
                           adversarial_label=2, num_classes=3, fraction=0.1)(x, y, key)
  with pytest.raises(ValueError, match='eps'):
    poisoning.witches_brew(apply_fn=_linear, params=params, target_x=x[1],
                           adversarial_label=2, num_classes=3, fraction=0.1, eps=-1.0)


def test_augmentation_is_differentiable_shift_and_flip():
  x, _ = _images(n=6)
  flip = poisoning.random_translate_flip(max_shift=0.0)
  shift = poisoning.random_translate_flip(max_shift=1.5)
  both = jax.jit(lambda z, k: (flip(z, k), jax.grad(lambda w: jnp.sum(shift(w, k) ** 2))(z)))
  flipped, g = both(x, jax.random.key(1))
  for a, b in zip(np.asarray(flipped), np.asarray(x), strict=True):
    assert np.allclose(a, b, atol=1e-6) or np.allclose(a, b[:, ::-1], atol=1e-6)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


def test_cpu_host_loop_equals_one_program():
  """The CPU form (a host loop over compiled steps, for models with convolutions) runs the
  same iterations as the one-program form."""
  from jaxsec import models
  m = models.get('cnn', features=(2,), dense=4, num_classes=3)
  p = models.init(m, jax.random.key(0), (1, 6, 6, 1))
  x, y = _images(n=6)
  x = jnp.asarray(np.random.RandomState(2).rand(6, 6, 6, 1).astype(np.float32))
  tg = gm._target_gradient(m.apply, p, x[:1], jnp.array([2], jnp.int32), loss=cross_entropy)
  kw = dict(num_steps=2, restarts=2, loss=cross_entropy, augment=None, bounds=(0.0, 1.0))
  args = (m.apply, p, x[1:], y[1:], tg, jax.random.key(5), 0.1, 0.03)
  assert gm._host_loop_pays(m.apply, p, x) == (jax.default_backend() == 'cpu')
  for a, b in zip(gm._brew_program(*args, **kw), gm._brew_host_loop(*args, **kw),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
