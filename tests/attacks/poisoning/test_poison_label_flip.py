"""Random flips and ALFA: budget, size, determinism, and ALFA beats random on a linear SVM."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import learners


def _data(n=80, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = rng.randn(n, 4).astype(np.float32) + 1.2 * (2 * y[:, None] - 1)
  return jnp.asarray(x), jnp.asarray(y)


def test_random_flip_budget_size_determinism():
  x, y = _data()
  atk = poisoning.random_label_flip(fraction=0.25, return_info=True)
  out = atk(x, y, jax.random.key(3))
  assert out.x is x and out.y.shape == y.shape
  changed = np.asarray(out.y != y)
  assert changed.sum() == 20
  np.testing.assert_array_equal(changed, np.asarray(out.info['poison_mask']))
  np.testing.assert_array_equal(np.asarray(atk(x, y, jax.random.key(3)).y), np.asarray(out.y))
  assert not np.array_equal(np.asarray(atk(x, y, jax.random.key(4)).y), np.asarray(out.y))
  y10 = jnp.asarray(np.arange(80) % 10, jnp.int32)
  out10 = poisoning.random_label_flip(fraction=0.5, num_classes=10)(x, y10, jax.random.key(0))
  assert int(jnp.sum(out10[1] != y10)) == 40  # a flip always lands on another class


def test_alfa_flips_exact_budget_and_hurts_more_than_random():
  x, y = _data()
  xt, yt = _data(400, seed=1)

  @jax.jit
  def test_acc(yy):
    s = learners.svm_dual(x, yy, C=1.0, tol=1e-4)
    return jnp.mean(((xt @ s.w + s.b) > 0).astype(jnp.int32) == yt)

  out = poisoning.alfa(fraction=0.2, C=1.0, num_iters=5, return_info=True)(x, y)
  assert int(jnp.sum(out.y != y)) == 16 and out.x is x
  rand = [float(test_acc(poisoning.random_label_flip(fraction=0.2)(x, y, k)[1]))
          for k in jax.random.split(jax.random.key(0), 3)]
  clean, adv = float(test_acc(y)), float(test_acc(out.y))
  assert clean > 0.9
  assert adv < min(rand) - 0.05, (clean, adv, rand)
  lr = poisoning.alfa(fraction=0.2, learner='logreg', l2=0.01, num_iters=3)(x, y)
  assert int(jnp.sum(lr[1] != y)) == 16
  none = poisoning.alfa(fraction=0.0, C=1.0, num_iters=5)(x, y)   # same program
  np.testing.assert_array_equal(np.asarray(none[1]), np.asarray(y))


def test_label_flip_errors():
  x, y = _data(20)
  with pytest.raises(ValueError, match='fraction'):
    poisoning.random_label_flip(fraction=-0.1)
  with pytest.raises(ValueError, match='learner'):
    poisoning.alfa(fraction=0.1, learner='tree')
  with pytest.raises(ValueError, match='label 2'):
    poisoning.alfa(fraction=0.1)(x, y + 1)
  with pytest.raises(ValueError, match='dtype'):
    poisoning.random_label_flip(fraction=0.1)(x, y.astype(jnp.float32), jax.random.key(0))
