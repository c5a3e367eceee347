"""Exact learners: SMO SVM against scikit-learn, KKT implicit function, implicit gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.svm import SVC

from jaxsec.attacks.poisoning import learners


def _blobs(n=60, d=5, seed=0, shift=1.0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = rng.randn(n, d).astype(np.float32) + shift * (2 * y[:, None] - 1)
  return x, y


def test_svm_dual_matches_sklearn_and_kkt():
  x, y = _blobs()
  with jax.enable_x64(True):
    sol = jax.jit(lambda a, b: learners.svm_dual(a, b, C=0.5, tol=1e-10))(
        jnp.asarray(x, jnp.float64), jnp.asarray(y))
    assert float(sol.gap) <= 1e-10
    clf = SVC(kernel='linear', C=0.5, tol=1e-12).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(np.asarray(sol.w), clf.coef_[0], atol=1e-6)
    np.testing.assert_allclose(float(sol.b), clf.intercept_[0], atol=1e-6)
    # dual feasibility and complementary slackness
    s = 2.0 * y - 1
    assert abs(float(jnp.sum(sol.alpha * s))) < 1e-9
    assert float(sol.alpha.min()) >= 0 and float(sol.alpha.max()) <= 0.5 + 1e-12
    margin = learners.svm_margin_mask(sol)
    f = x @ np.asarray(sol.w) + float(sol.b)
    np.testing.assert_allclose(s[np.asarray(margin)] * f[np.asarray(margin)], 1.0, atol=1e-6)
    # the frozen-active-set KKT solution reproduces the solver
    w, b = learners.svm_kkt_solution(jnp.asarray(x, jnp.float64), jnp.asarray(y), sol,
                                     ridge=0.0)
    np.testing.assert_allclose(np.asarray(w), np.asarray(sol.w), atol=1e-7)
    np.testing.assert_allclose(float(b), float(sol.b), atol=1e-7)
    w, b = learners.svm_kkt_solution(jnp.asarray(x, jnp.float64), jnp.asarray(y), sol)
    np.testing.assert_allclose(np.asarray(w), np.asarray(sol.w), atol=1e-4)


def test_svm_sample_weight_zero_removes_point_and_params_layout():
  x, y = _blobs(n=40)
  w = np.ones(40, np.float32)
  w[-1] = 0.0
  solve = jax.jit(lambda a, b, w: learners.svm_dual(a, b, C=1.0, tol=1e-5, sample_weight=w))
  a = solve(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))
  b = solve(jnp.asarray(x[:-1]), jnp.asarray(y[:-1]), jnp.ones(39, jnp.float32))
  np.testing.assert_allclose(np.asarray(a.w), np.asarray(b.w), atol=1e-3)
  logits = learners.linear_apply(a.params, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(logits[:, 0]), x @ np.asarray(a.w) + float(a.b),
                             rtol=1e-5, atol=1e-5)


def test_logreg_newton_is_stationary_and_implicit_grad_matches_finite_differences():
  x, y = _blobs(n=30, d=3)
  with jax.enable_x64(True):
    xj = jnp.asarray(x, jnp.float64)
    yj = jnp.asarray(y)
    p = jax.jit(lambda a, b: learners.logreg_newton(a, b, num_classes=2, l2=0.1))(xj, yj)
    g = jax.grad(lambda q: learners.logreg_objective(q, xj, yj, l2=0.1))(p)
    assert max(float(jnp.abs(v).max()) for v in jax.tree_util.tree_leaves(g)) < 1e-10
    imp = learners.logreg_train_fn(num_classes=2, l2=0.1, implicit=True)
    xv = xj[:7]
    val = jax.jit(lambda xx: jnp.sum(jnp.tanh(learners.linear_apply(imp(xx, yj, None), xv))))
    grad = jax.jit(jax.grad(val))(xj)
    # The forward Newton value carries ~1e-10 of rounding: at h=1e-4 that is 1e-6 of noise in
    # the difference quotient, at h=1e-3 1e-7 (seen: 9.8e-8 under XLA -O0), while the O(h^2)
    # truncation stays below 1e-8. The gradients are ~6e-3, so atol 3e-7 still fails any
    # gradient that is wrong by more than 5e-5 relative.
    h = 1e-3
    for i, j in [(3, 1), (0, 0), (17, 2)]:
      e = jnp.zeros_like(xj).at[i, j].set(h)
      fd = (val(xj + e) - val(xj - e)) / (2 * h)   # finite difference of the true argmin
      np.testing.assert_allclose(float(grad[i, j]), float(fd), rtol=1e-6, atol=3e-7)


def test_multiclass_logreg_and_unrolled_gd_reach_same_optimum():
  rng = np.random.RandomState(1)
  x = rng.randn(45, 4).astype(np.float32)
  y = (np.arange(45) % 3).astype(np.int32)
  x[np.arange(45), y] += 2.0
  p = learners.logreg_newton(jnp.asarray(x), jnp.asarray(y), num_classes=3, l2=0.05)
  init = lambda k: learners.linear_params(jnp.zeros((4, 3)), jnp.zeros(3))
  tf = learners.unrolled_gd(learners.linear_apply, init, num_steps=300, learning_rate=1.0,
                            momentum=0.5, l2=0.05)
  q = tf(jnp.asarray(x), jnp.asarray(y), jax.random.key(0))
  for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3)


def test_learner_factories_reject_bad_values():
  with pytest.raises(ValueError, match='C='):
    learners.svm_train_fn(C=-1.0)
  with pytest.raises(ValueError, match='num_steps'):
    learners.unrolled_gd(learners.linear_apply, lambda k: None, num_steps=0,
                         learning_rate=0.1)
  with pytest.raises(ValueError, match='momentum'):
    learners.unrolled_gd(learners.linear_apply, lambda k: None, num_steps=3,
                         learning_rate=0.1, momentum=1.0)


def test_svm_dual_rbf_matches_sklearn_and_kkt_dual():
  """The RBF SVM (SMO on the Gram matrix) against scikit-learn's SVC(kernel='rbf'): dual
  coefficients, intercept and decision function; the frozen-active-set KKT solution
  reproduces the solver's alpha and b."""
  x, y = _blobs(n=40, d=3, shift=0.6)
  xt, _ = _blobs(n=25, d=3, seed=3, shift=0.6)
  with jax.enable_x64(True):
    x64, y32 = jnp.asarray(x, jnp.float64), jnp.asarray(y)
    sol = jax.jit(lambda a, b: learners.svm_dual(a, b, C=2.0, tol=1e-11, kernel='rbf',
                                                 gamma=0.4))(x64, y32)
    assert float(sol.gap) <= 1e-11 and bool(jnp.all(jnp.isnan(sol.w)))
    clf = SVC(kernel='rbf', gamma=0.4, C=2.0, tol=1e-12).fit(x.astype(np.float64), y)
    coef = np.zeros(40)
    coef[clf.support_] = clf.dual_coef_[0]
    s = 2.0 * y - 1
    np.testing.assert_allclose(np.asarray(sol.alpha) * s, coef, atol=1e-6)  # LIBSVM: float32 Q
    np.testing.assert_allclose(float(sol.b), clf.intercept_[0], atol=1e-6)
    f = learners.svm_decision(sol.alpha, sol.b, x64, y32, jnp.asarray(xt, jnp.float64),
                              kernel='rbf', gamma=0.4)
    np.testing.assert_allclose(np.asarray(f), clf.decision_function(xt.astype(np.float64)),
                               atol=1e-6)
    k = learners.kernel_matrix(x64[:3], x64[:4], kernel='rbf', gamma=0.4)
    np.testing.assert_allclose(
        np.asarray(k), np.exp(-0.4 * ((x[:3, None] - x[None, :4]) ** 2).sum(-1)), rtol=1e-12)
    margin = np.asarray(learners.svm_margin_mask(sol))
    assert 0 < margin.sum() < 40
    alpha, b = learners.svm_kkt_dual(x64, y32, sol, ridge=0.0, kernel='rbf', gamma=0.4)
    np.testing.assert_allclose(np.asarray(alpha), np.asarray(sol.alpha), atol=1e-9)
    np.testing.assert_allclose(float(b), float(sol.b), atol=1e-9)


def test_svm_kernel_validation():
  x, y = _blobs(n=10)
  with pytest.raises(ValueError, match="kernel='poly'"):
    learners.svm_dual(x, y, kernel='poly')
  with pytest.raises(ValueError, match='gamma=None'):
    learners.svm_dual(x, y, kernel='rbf')
  with pytest.raises(ValueError, match='gamma=-1.0'):
    learners.svm_dual(x, y, kernel='rbf', gamma=-1.0)
