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
  atk = poisoning.random_label_flip(fraction=0.25)
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

  out = poisoning.alfa(fraction=0.2, C=1.0, num_iters=5)(x, y)
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


def test_distance_flips_hand_computed_sets():
  # 1-D, separable: the SVM is f(x) = x (margin vectors -1 and 1, alpha = 1/2 < C), so the
  # distances are |x| = 4, 2, 1, 1, 2.5, 3.
  x = jnp.asarray([[-4.0], [-2.0], [-1.0], [1.0], [2.5], [3.0]])
  y = jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32)
  far = poisoning.distance_label_flip(fraction=1 / 3, order='farthest', C=10.0, tol=1e-6)(x, y)
  np.testing.assert_array_equal(np.asarray(far.info['poison_mask']),
                                [True, False, False, False, False, True])
  np.testing.assert_array_equal(np.asarray(far.y), [1, 0, 0, 1, 1, 0])
  assert far.x is x
  near = poisoning.distance_label_flip(fraction=0.5, order='nearest', C=10.0, tol=1e-6)(x, y)
  np.testing.assert_array_equal(np.asarray(near.info['poison_mask']),
                                [False, True, True, True, False, False])
  with pytest.raises(ValueError, match='order'):
    poisoning.distance_label_flip(fraction=0.1, order='middle')


def test_alfa_stops_at_a_fixed_point_of_its_lp_qp_alternation():
  x, y = _data()
  out = poisoning.alfa(fraction=0.25, C=1.0, num_iters=50)(x, y)
  iters = int(out.info['iterations'])
  assert 1 <= iters < 50                          # converged before the cap
  mask = np.asarray(out.info['poison_mask'])
  assert mask.sum() == 20
  # fixed point: the LP of ALFA at the SVM trained on the returned flips picks them again
  s = 2.0 * np.asarray(y, np.float64) - 1.0
  hinge = lambda z: np.maximum(0.0, 1.0 - z)
  scores = lambda sol: np.asarray(x @ sol.w + sol.b, np.float64)
  f_s = scores(learners.svm_dual(x, y, C=1.0, tol=1e-3))
  f = scores(learners.svm_dual(x, out.y, C=1.0, tol=1e-3))
  d = (hinge(-s * f) - hinge(-s * f_s)) - (hinge(s * f) - hinge(s * f_s))
  np.testing.assert_array_equal(mask, np.isin(np.arange(80), np.argsort(d)[:20]))
  one = poisoning.alfa(fraction=0.25, C=1.0, num_iters=1)(x, y)
  assert int(one.info['iterations']) == 1
