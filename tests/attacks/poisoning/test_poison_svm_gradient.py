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


def _paper_gradient(x_all, y_all, sol, x_val, y_val, gamma):
  """Biggio et al. (2012) eqs. (7)-(10) for the RBF kernel, transcribed in numpy: the
  attack point c (last row) an error vector (alpha_c fixed), S the margin vectors,
  dL/du = -sum_{k: g_k < 0} (M_k dQ_sc/du + dQ_kc/du) alpha_c / m with
  M_k = -(Q_ks (zeta Q_ss^-1 - v v^T) + y_k v^T) / zeta, v = Q_ss^-1 y_s, zeta = y_s^T v
  and dK(x_i, x_c)/dx_c = 2 gamma (x_i - x_c) K(x_i, x_c) (mean instead of the paper's
  sum over the m validation points)."""
  x_all, x_val = np.asarray(x_all), np.asarray(x_val)
  s, sv = 2.0 * np.asarray(y_all) - 1, 2.0 * np.asarray(y_val) - 1
  alpha, b = np.asarray(sol.alpha), float(sol.b)
  rbf = lambda a, c: np.exp(-gamma * ((a[:, None] - c[None]) ** 2).sum(-1))  # noqa: E731
  xc, yc, ac = x_all[-1], s[-1], alpha[-1]
  S = np.asarray(learners.svm_margin_mask(sol))
  q_ss = np.outer(s[S], s[S]) * rbf(x_all[S], x_all[S])
  inv = np.linalg.inv(q_ss)
  v = inv @ s[S]
  zeta = s[S] @ v
  k_val = rbf(x_val, x_all)
  g = sv * (k_val @ (alpha * s) + b) - 1.0
  q_ks = np.outer(sv, s[S]) * k_val[:, S]
  m_k = -(q_ks @ (zeta * inv - np.outer(v, v)) + np.outer(sv, v)) / zeta
  dq_sc = (s[S] * yc)[:, None] * 2 * gamma * (x_all[S] - xc) * rbf(x_all[S], xc[None])
  dq_kc = (sv * yc)[:, None] * 2 * gamma * (x_val - xc) * k_val[:, -1:]
  active = g < 0
  return -((m_k[active] @ dq_sc + dq_kc[active]).sum(0)) * ac / len(sv)


def test_rbf_gradient_matches_paper_closed_form_and_finite_differences():
  x, y = _data(n=30, d=4)
  xv, yv = _data(60, d=4, seed=1)
  gamma, C = 4.0, 1.0
  with jax.enable_x64(True):
    x64, xv64 = jnp.asarray(x, jnp.float64), jnp.asarray(xv, jnp.float64)
    kw = dict(C=C, tol=1e-12, kernel='rbf', gamma=gamma)
    grad_fn = jax.jit(lambda p, c: poisoning.svm_poisoning_gradient(
        x64, jnp.asarray(y), p, c, xv64, jnp.asarray(yv), **kw))
    xc, yc = x64[3], 1 - int(y[3])
    loss, g, sol = grad_fn(xc, yc)
    assert abs(float(sol.alpha[-1]) - C) < 1e-9   # an error vector: the paper's alpha_c fixed
    assert float(jnp.linalg.norm(g)) > 1e-3
    np.testing.assert_allclose(np.asarray(g), _paper_gradient(
        jnp.concatenate([x64, xc[None]]), np.append(y, yc), sol, xv64, yv, gamma),
        rtol=1e-4, atol=1e-5 * float(jnp.linalg.norm(g)))  # ridge 1e-6 in Q_SS
    h = 1e-6
    for j in range(x.shape[1]):
      e = jnp.zeros_like(xc).at[j].set(h)
      fd = (grad_fn(xc + e, yc)[0] - grad_fn(xc - e, yc)[0]) / (2 * h)
      np.testing.assert_allclose(float(g[j]), float(fd), rtol=1e-4, atol=1e-8)


def test_rbf_attack_path_losses_are_retrained_losses_and_ascend():
  x, y = _data(n=30, d=4)
  xv, yv = _data(40, d=4, seed=2)
  atk = poisoning.svm_poisoning(num_points=1, C=1.0, step_size=0.1, num_steps=6,
                                kernel='rbf', gamma=1.0, tol=1e-7)
  out = atk(jnp.asarray(x), jnp.asarray(y), jax.random.key(3), x_val=jnp.asarray(xv),
            y_val=jnp.asarray(yv))
  path, hist = np.asarray(out.info['path']), np.asarray(out.info['val_loss'])
  assert path.shape == (1, 7, 4) and hist.shape == (1, 7)
  assert float(out.x.min()) >= 0 and float(out.x.max()) <= 1
  np.testing.assert_array_equal(np.asarray(out.x[:30]), x)
  start = int(np.flatnonzero((x == path[0, 0]).all(1))[0])   # a flipped copy of a point
  assert int(out.y[-1]) == 1 - y[start]
  assert hist[0].max() > hist[0, 0] + 1e-4
  np.testing.assert_allclose(np.asarray(out.x[-1]), path[0, np.argmax(hist[0])])

  @jax.jit
  def retrained(p):
    xa = jnp.concatenate([jnp.asarray(x), p[None]])
    ya = out.y
    s = learners.svm_dual(xa, ya, C=1.0, tol=1e-7, kernel='rbf', gamma=1.0)
    f = learners.svm_decision(s.alpha, s.b, xa, ya, jnp.asarray(xv), kernel='rbf', gamma=1.0)
    return jnp.mean(jax.nn.relu(1.0 - (2.0 * jnp.asarray(yv) - 1) * f))
  for t in range(7):
    np.testing.assert_allclose(float(retrained(jnp.asarray(path[0, t]))), hist[0, t],
                               rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='gamma=None'):
    poisoning.svm_poisoning(num_points=1, kernel='rbf')
  with pytest.raises(ValueError, match="kernel='sigmoid'"):
    poisoning.svm_poisoning(num_points=1, kernel='sigmoid')
