"""Biggio et al. (2012): the KKT gradient against finite differences; the attack's contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import learners


def _data(n=50, d=6, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.clip(0.5 + 0.15 * rng.randn(n, d) + 0.12 * (2 * y[:, None] - 1), 0, 1)
  return x.astype(np.float32), y


def test_gradient_matches_finite_differences_of_retrained_svm():
  x, y = _data()
  xv, yv = _data(80, seed=1)
  with jax.enable_x64(True):
    x64, xv64 = jnp.asarray(x, jnp.float64), jnp.asarray(xv, jnp.float64)
    xc, yc = x64[0], 1 - int(y[0])

    @jax.jit
    def loss_at(p):
      return poisoning.svm_poisoning_gradient(x64, jnp.asarray(y), p, yc, xv64,
                                              jnp.asarray(yv), C=1.0, tol=1e-11)[0]
    loss, g, sol = jax.jit(lambda p: poisoning.svm_poisoning_gradient(
        x64, jnp.asarray(y), p, yc, xv64, jnp.asarray(yv), C=1.0, tol=1e-11))(xc)
    assert float(sol.alpha[-1]) > 0  # the flipped copy is a support vector
    assert float(jnp.linalg.norm(g)) > 1e-4
    h = 1e-6
    for j in range(x.shape[1]):
      e = jnp.zeros_like(xc).at[j].set(h)
      fd = (loss_at(xc + e) - loss_at(xc - e)) / (2 * h)
      np.testing.assert_allclose(float(g[j]), float(fd), rtol=1e-4, atol=1e-8)


def test_attack_keeps_clean_rows_appends_budget_and_raises_val_loss():
  x, y = _data()
  xv, yv = _data(60, seed=2)
  atk = poisoning.svm_poisoning(fraction=0.04, C=1.0, step_size=0.2, num_steps=8)   # round(0.04 * 50) = 2 points
  out = atk(jnp.asarray(x), jnp.asarray(y), jax.random.key(0), x_val=jnp.asarray(xv),
            y_val=jnp.asarray(yv))
  assert out.x.shape == (52, 6) and out.y.shape == (52,)
  np.testing.assert_array_equal(np.asarray(out.x[:50]), x)
  np.testing.assert_array_equal(np.asarray(out.y[:50]), y)
  assert np.asarray(out.info['poison_mask']).sum() == 2
  assert float(out.x.min()) >= 0 and float(out.x.max()) <= 1
  hist = np.asarray(out.info['val_loss'])
  assert hist.shape == (2, 9)
  assert hist[0].max() > hist[0, 0] + 1e-4  # ascent increased the validation loss

  @jax.jit
  def val_hinge(xx, yy):
    s = learners.svm_dual(xx, yy, C=1.0, tol=1e-5)
    return poisoning.validation_hinge(s.w, s.b, jnp.asarray(xv), jnp.asarray(yv))
  assert float(val_hinge(out.x, out.y)) > float(val_hinge(jnp.asarray(x), jnp.asarray(y)))
  again = atk(jnp.asarray(x), jnp.asarray(y), jax.random.key(0), x_val=jnp.asarray(xv),
              y_val=jnp.asarray(yv))
  np.testing.assert_array_equal(np.asarray(again.x), np.asarray(out.x))


def test_errors():
  x, y = _data(40)
  atk = poisoning.svm_poisoning(fraction=0.05, num_steps=1)
  with pytest.raises(ValueError, match='exactly one'):
    poisoning.svm_poisoning(fraction=0.1, num_points=2)
  with pytest.raises(ValueError, match='fraction'):
    poisoning.svm_poisoning(fraction=1.5)
  with pytest.raises(ValueError, match='step_size'):
    poisoning.svm_poisoning(num_points=1, step_size=0.0)
  with pytest.raises(ValueError, match='y contains label 2'):
    atk(jnp.asarray(x), jnp.asarray(y) * 2, jax.random.key(1))
  with pytest.raises(ValueError, match='outside bounds'):
    atk(jnp.asarray(x) + 2.0, jnp.asarray(y), jax.random.key(1))
