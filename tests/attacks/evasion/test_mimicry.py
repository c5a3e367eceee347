"""Gradient-descent evasion with the mimicry term (Biggio et al., ECML PKDD 2013): the closed
form on a linear SVM (lam = 0, L2), the density term's gradient against finite differences,
the dual-form SVM discriminant against scikit-learn, the direction of the lam effect, the
budget / box / add-only guarantees and the exact projections."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion import mimicry

D = 8
_RNG = np.random.default_rng(0)
_W = _RNG.normal(size=D).astype(np.float32)
_B = 0.2


def _linear(x):
  return (x.reshape((x.shape[0], -1)) @ _W + _B)[:, None]


def _batch(b=5, lo=0.35, hi=0.65, seed=1):
  return jnp.asarray(np.random.default_rng(seed).uniform(lo, hi, (b, D)), jnp.float32)


def test_linear_svm_l2_without_mimicry_is_the_closed_form_minimiser():
  # min_x w.x + b over ||x - x0||_2 <= d_max is x0 - d_max w / ||w|| (box inactive: x0 in
  # [0.35, 0.65], d_max <= 0.3); swept over a traced grid of d_max in one vmap.
  x = _batch()
  y = jnp.ones(x.shape[0], jnp.int32)
  grid = jnp.asarray([0.05, 0.17, 0.3], jnp.float32)

  def run(d):
    return mimicry.mimicry_evasion(d_max=d, norm='l2', step_size=0.04, max_steps=60)(
        _linear, x, y)
  out = jax.jit(jax.vmap(run))(grid)
  assert out.budget == 'fixed'
  for k, d in enumerate(np.asarray(grid)):
    want = mimicry.linear_l2_minimiser(_W, np.asarray(x), d)
    np.testing.assert_allclose(np.asarray(out.x_adv[k]), want, atol=2e-6)
    g_want = np.asarray(_linear(x))[:, 0] - d * np.linalg.norm(_W)
    np.testing.assert_allclose(out.info['discriminant'][k], g_want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.info['distance'][k], d, rtol=1e-5)
    np.testing.assert_array_equal(out.info['success'][k], g_want < 0)
  assert np.all(np.asarray(out.info['density']) == 0)


@pytest.mark.parametrize('kernel', ['gaussian', 'laplacian'])
def test_density_gradient_matches_finite_differences(kernel):
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    samples = jnp.asarray(rng.uniform(size=(7, D)))
    x = jnp.asarray(rng.uniform(size=(1, D)))
    h = 0.9
    f = lambda v: mimicry.kernel_density(v, samples, h, kernel)  # noqa: E731
    g = np.asarray(jax.grad(lambda v: f(v)[0])(x))[0]
    e = 1e-6 * np.eye(D)
    fd = np.asarray(f(x + e) - f(x - e)) / 2e-6          # all D central differences at once
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    # and the value is the paper's 1/n sum_i k((x - x_i) / h)
    d = np.asarray(x)[0] - np.asarray(samples)
    k = (np.exp(-np.sum(d * d, 1) / h ** 2) if kernel == 'gaussian'
         else np.exp(-np.sum(np.abs(d), 1) / h))
    np.testing.assert_allclose(float(f(x)[0]), k.mean(), rtol=1e-12)


def test_svm_decision_fn_matches_scikit_learns_dual_form():
  from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  xs = rng.uniform(size=(40, D))
  ys = (xs[:, 0] + xs[:, 1] > 1.0).astype(int)
  xt = rng.uniform(size=(6, D)).astype(np.float32)
  for kern in ('rbf', 'linear'):
    svc = SVC(kernel=kern, C=10.0, gamma=0.7).fit(xs, ys)
    fn = mimicry.svm_decision_fn(svc.support_vectors_, svc.dual_coef_, svc.intercept_,
                                 kernel=kern, gamma=0.7)
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(xt)))[:, 0],
                               svc.decision_function(xt), rtol=1e-4, atol=1e-4)


def test_mimicry_term_moves_the_point_towards_the_target_density():
  # lam > 0 trades discriminant for density: the density at x_adv rises with lam and g
  # (the objective's first term) is no lower than without the term.
  x = _batch(6, seed=4)
  y = jnp.ones(x.shape[0], jnp.int32)
  benign = jnp.asarray(np.random.default_rng(5).uniform(0.0, 0.3, (20, D)), jnp.float32)

  def run(lam):                                   # lam traced: one program for the grid
    return mimicry.mimicry_evasion(d_max=1.0, norm='l1', lam=lam, bandwidth=0.8,
                                   target_samples=benign, step_size=0.02, max_steps=400)(
                                       _linear, x, y)
  both = jax.jit(jax.vmap(run))(jnp.asarray([0.0, 2.0, 20.0]))
  outs = [jax.tree_util.tree_map(lambda a, k=k: a[k], both) for k in range(3)]
  p = [np.asarray(o.info['density']) for o in outs]
  g = [np.asarray(o.info['discriminant']) for o in outs]
  assert np.all(p[1] >= p[0] - 1e-6) and np.all(p[2] >= p[1] - 1e-6)
  assert np.mean(p[2]) > 1.5 * np.mean(p[0])
  assert np.all(g[2] >= g[0] - 1e-5)
  mean_dist = lambda o: float(jnp.mean(jnp.min(jnp.sum(  # noqa: E731
      jnp.abs(o.x_adv[:, None] - benign[None]), -1), 1)))
  assert mean_dist(outs[2]) < mean_dist(outs[0])        # closer to the benign samples


@pytest.mark.parametrize('norm, add_only', [('l1', True), ('l2', False), ('linf', True)])
def test_budget_box_and_add_only(norm, add_only):
  x = _batch(6, lo=0.0, hi=1.0, seed=6)
  y = jnp.ones(x.shape[0], jnp.int32)
  atk = mimicry.mimicry_evasion(d_max=0.5, norm=norm, step_size=0.1, max_steps=50,
                                add_only=add_only, bounds=(0.0, 1.0))
  out = jax.jit(atk, static_argnums=0)(_linear, x, y)
  xa, x0 = np.asarray(out.x_adv), np.asarray(x)
  dist = {'l1': np.abs(xa - x0).sum(1), 'l2': np.sqrt(((xa - x0) ** 2).sum(1)),
          'linf': np.abs(xa - x0).max(1)}[norm]
  assert np.all(dist <= 0.5 + 1e-5) and xa.min() >= 0 and xa.max() <= 1
  if add_only:
    assert np.all(xa >= x0 - 1e-7)
  np.testing.assert_array_equal(out.info['success'],
                                np.asarray(_linear(out.x_adv))[:, 0] <= 0)
  assert np.all(np.asarray(out.info['discriminant']) <= np.asarray(_linear(x))[:, 0] + 1e-6)


def test_l2_box_projection_is_the_nearest_feasible_point():
  # Variational inequality of a projection onto a convex set: <v - P(v), z - P(v)> <= 0 for
  # every feasible z.
  rng = np.random.default_rng(7)
  x0 = jnp.asarray(rng.uniform(size=(4, D)), jnp.float32)
  v = x0 + jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
  lo, hi = jnp.zeros_like(x0), jnp.ones_like(x0)
  proj = jax.jit(mimicry.project, static_argnums=3)
  p = np.asarray(proj(v, x0, 0.6, 'l2', lo, hi))
  assert np.all(np.linalg.norm(p - np.asarray(x0), axis=1) <= 0.6 + 1e-5)
  m = 50                                          # 50 feasible points per example
  rep = lambda a: jnp.repeat(a, m, axis=0)  # noqa: E731
  z = np.asarray(proj(rep(x0) + jnp.asarray(rng.normal(size=(4 * m, D)) * 0.3,
                                                       jnp.float32),
                                 rep(x0), 0.6, 'l2', rep(lo), rep(hi))).reshape(4, m, D)
  ip = np.sum((np.asarray(v) - p)[:, None] * (z - p[:, None]), axis=-1)
  assert np.all(ip <= 1e-4)


def test_bad_input():
  with pytest.raises(ValueError, match='target_samples'):
    mimicry.mimicry_evasion(d_max=1.0, lam=1.0)
  with pytest.raises(ValueError, match='d_max'):
    mimicry.mimicry_evasion(d_max=-1.0)
  with pytest.raises(ValueError, match='norm'):
    mimicry.mimicry_evasion(d_max=1.0, norm='l3')
  with pytest.raises(ValueError, match='gamma'):
    mimicry.svm_decision_fn(np.zeros((2, D)), np.ones(2), 0.0)
  atk = mimicry.mimicry_evasion(d_max=1.0, lam=1.0, target_samples=jnp.zeros((3, D + 1)))
  with pytest.raises(ValueError, match='example shape'):
    atk(_linear, _batch(), jnp.ones(5, jnp.int32))
