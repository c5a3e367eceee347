"""BadNets and Poison Frogs feature collision."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning


def _images(n=40, seed=0):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(rng.rand(n, 6, 6, 1).astype(np.float32) * 0.5),
          jnp.asarray((np.arange(n) % 4).astype(np.int32)))


def test_trigger_patch_values():
  x = jnp.zeros((2, 5, 5))
  t = poisoning.apply_trigger(x, size=2, value=0.7, location='top_left')
  expect = np.zeros((2, 5, 5), np.float32)
  expect[:, :2, :2] = 0.7
  np.testing.assert_allclose(np.asarray(t), expect)
  with pytest.raises(ValueError, match='size'):
    poisoning.apply_trigger(x, size=6)


def test_badnets_replace_and_inject():
  x, y = _images()
  atk = poisoning.badnets(fraction=0.25, target_label=0, num_classes=4, size=2)
  out = atk(x, y, jax.random.key(0))
  mask = np.asarray(out.info['poison_mask'])
  assert out.x.shape == x.shape and mask.sum() == 10
  assert np.all(np.asarray(y)[mask] != 0)          # drawn from non-target classes
  assert np.all(np.asarray(out.y)[mask] == 0)
  np.testing.assert_array_equal(np.asarray(out.y)[~mask], np.asarray(y)[~mask])
  diff = np.asarray(out.x != x)
  assert not diff[~mask].any() and not diff[:, :4, :, :].any() and not diff[:, :, :4].any()
  np.testing.assert_allclose(np.asarray(out.x)[mask][:, 4:, 4:], 1.0)
  inj = poisoning.badnets(fraction=0.25, target_label=0, num_classes=4, mode='inject',
                          source_label=2)(x, y, jax.random.key(0))
  assert inj[0].shape == (50, 6, 6, 1) and np.all(np.asarray(inj[1][40:]) == 0)
  np.testing.assert_array_equal(np.asarray(inj[0][:40]), np.asarray(x))
  again = atk(x, y, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(again.x), np.asarray(out.x))
  with pytest.raises(ValueError, match='candidates'):
    poisoning.badnets(fraction=0.9, target_label=0, num_classes=4)(x, y, jax.random.key(0))
  with pytest.raises(ValueError, match='target_label'):
    poisoning.badnets(fraction=0.1, target_label=4, num_classes=4)


def test_feature_collision_linear_closed_form():
  rng = np.random.RandomState(0)
  a = jnp.asarray(rng.randn(3, 5).astype(np.float32))
  f = lambda z: z.reshape((z.shape[0], -1)) @ a.T
  b = jnp.asarray(rng.rand(5).astype(np.float32))
  t = jnp.asarray(rng.rand(5).astype(np.float32))
  beta = 0.5
  p = poisoning.feature_collision_point(f, b, t, beta=beta, step_size=0.02, num_steps=3000)
  ata = np.asarray(a.T @ a)
  expect = np.linalg.solve(ata + beta * np.eye(5), ata @ np.asarray(t) + beta * np.asarray(b))
  np.testing.assert_allclose(np.asarray(p), expect, atol=1e-3)


def test_feature_collision_attack_contract():
  x, y = _images()
  f = lambda z: jnp.mean(z.reshape((z.shape[0], 6, 6)), axis=2)
  atk = poisoning.feature_collision(feature_fn=f, target_x=x[1], base_label=0, num_classes=4,
                                    num_points=2, beta=0.01, step_size=0.5, num_steps=50)
  out = atk(x, y, jax.random.key(0))
  assert out.x.shape == (42, 6, 6, 1) and np.all(np.asarray(out.y[40:]) == 0)
  d0 = np.linalg.norm(np.asarray(f(x[out.info['base_index']]) - f(x[1:2])), axis=1)
  assert np.all(np.asarray(out.info['feature_distance']) < 0.5 * d0)
  assert float(out.x.min()) >= 0 and float(out.x.max()) <= 1
  with pytest.raises(ValueError, match='target_x'):
    poisoning.feature_collision(feature_fn=f, target_x=x[1, :3], base_label=0,
                                num_classes=4)(x, y, jax.random.key(0))
