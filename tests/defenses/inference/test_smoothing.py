"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): closed forms, the authors' code
replayed on fixed counts, abstention, and input checks."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jaxsec import train
from jaxsec.defenses.inference import smoothing

W = np.array([1.0, -2.0, 0.5, 0.0], np.float32)
B = 0.3


def linear_binary(w=W, b=B):
  """f(x) = 1[w.x + b > 0] as two logits; its smoothed g is the same classifier, with
  exact L2 radius |w.x + b| / ||w|| (Cohen et al., Sec. 3.1 / Appendix)."""
  w = jnp.asarray(w)
  return lambda x: jnp.stack([jnp.zeros(x.shape[0]), x.reshape(x.shape[0], -1) @ w + b], -1)


F = linear_binary()   # one function object: jit caches hit across tests


def points_at_margin(radii, key):
  """Points whose exact L2 distance to the hyperplane w.x + b = 0 is |radii|, on the side
  sign(radii)."""
  u = W / np.linalg.norm(W)
  z = np.array(jax.random.normal(key, (len(radii), W.size)), np.float64)
  z -= np.outer(z @ u, u)                 # any component along the hyperplane
  x0 = z - B / np.linalg.norm(W) * u      # on the hyperplane
  return (x0 + np.outer(radii, u)).astype(np.float32)


# ---- the authors' code (github.com/locuslab/smoothing, code/core.py) replayed in numpy


def _proportion_confint_beta(count, nobs, alpha):
  """statsmodels.stats.proportion.proportion_confint(method='beta'), transcribed."""
  try:
    from statsmodels.stats.proportion import proportion_confint  # pylint: disable=g-import-not-at-top
    return proportion_confint(count, nobs, alpha=alpha, method='beta')
  except ImportError:
    q_ = count / nobs
    alpha_2 = 0.5 * alpha
    low = stats.beta.ppf(alpha_2, count, nobs - count + 1)
    upp = stats.beta.isf(alpha_2, count + 1, nobs - count)
    if q_ == 0:
      low = 0.0
    if q_ == 1:
      upp = 1.0
    return low, upp


def _ref_certify(counts_selection, counts_estimation, n, alpha, sigma):
  c_a_hat = counts_selection.argmax().item()
  n_a = counts_estimation[c_a_hat].item()
  p_a_bar = _proportion_confint_beta(n_a, n, alpha=2 * alpha)[0]
  if p_a_bar < 0.5:
    return -1, 0.0
  return c_a_hat, sigma * stats.norm.ppf(p_a_bar)


def _ref_predict(counts, alpha):
  top2 = counts.argsort()[::-1][:2]
  count1, count2 = counts[top2[0]], counts[top2[1]]
  # scipy.stats.binom_test (removed in SciPy 1.12) is binomtest(...).pvalue
  if stats.binomtest(int(count1), int(count1 + count2), p=0.5).pvalue > alpha:
    return -1
  return top2[0]


def _random_counts(rng, rows, k, n):
  p = rng.dirichlet(np.full(k, 0.3), size=rows)
  out = np.stack([rng.multinomial(n, pi) for pi in p])
  # edge cases: all on one class, none on the selected class, exact ties
  out[0] = 0
  out[0, 2] = n
  out[1] = 0
  out[1, 0], out[1, 1] = n // 2, n - n // 2
  return out


@pytest.mark.parametrize('n,alpha', [(100, 0.001), (1000, 0.05), (10, 0.3)])
def test_certify_and_predict_replay_the_reference_on_fixed_counts(n, alpha):
  rng = np.random.default_rng(n)
  k, rows, sigma = 5, 60, 0.37
  c0 = _random_counts(rng, rows, k, 20)
  c = _random_counts(rng, rows, k, n)
  c[2] = 0
  c[2, 1] = n                    # selection picks class 2, estimation never sees it: nA = 0
  c0[2] = 0
  c0[2, 2] = 20
  cert, info = smoothing.certify_from_counts(c0, c, sigma=sigma, alpha=alpha)
  ref = [_ref_certify(c0[i], c[i], n, alpha, sigma) for i in range(rows)]
  np.testing.assert_array_equal(cert.prediction, [r[0] for r in ref])
  np.testing.assert_allclose(cert.radius, [r[1] for r in ref], rtol=1e-12, atol=0)
  assert info['count_a'][2] == 0 and info['p_lower'][2] == 0.0
  assert (cert.prediction != -1).any() and (cert.prediction == -1).any()
  pred = smoothing.predict_from_counts(c, alpha=alpha)
  np.testing.assert_array_equal(pred, [_ref_predict(c[i], alpha) for i in range(rows)])
  assert (pred != -1).any() and (pred == -1).any()


def test_lower_bound_and_pvalue_match_scipy_and_closed_forms():
  n, alpha = 50, 0.01
  counts = np.arange(n + 1)
  low = smoothing.lower_confidence_bound(counts, n, alpha=alpha)
  ref = np.array([_proportion_confint_beta(int(x), n, 2 * alpha)[0] for x in counts])
  np.testing.assert_allclose(low, ref, rtol=1e-12)
  # closed forms: x = n gives alpha^(1/n); the bound holds one-sided at level alpha:
  # P_{p = low}(X >= x) = alpha.
  assert low[0] == 0.0
  np.testing.assert_allclose(low[-1], alpha ** (1 / n), rtol=1e-10)
  np.testing.assert_allclose(stats.binom.sf(counts[1:] - 1, n, low[1:]), alpha, rtol=1e-6)
  c1 = np.array([5, 9, 30, 12, 0])
  c2 = np.array([5, 3, 0, 11, 0])
  p = smoothing.binomial_pvalue(c1[:4], c2[:4])
  np.testing.assert_allclose(p, [stats.binomtest(int(a), int(a + b)).pvalue
                                 for a, b in zip(c1[:4], c2[:4], strict=True)], rtol=1e-10)
  assert p[0] == 1.0


def test_certify_linear_classifier_radius_below_and_near_exact():
  sigma, n, alpha = 0.5, 20000, 0.001
  exact = np.array([0.1, -0.3, 0.45, -0.6, 0.75])      # radius / sigma in [0.2, 1.5]
  x = points_at_margin(exact, jax.random.key(0))
  cert, info = smoothing.certify(F, x, jax.random.key(1), sigma=sigma, n0=100, n=n,
                                 alpha=alpha, batch_size=4096)
  np.testing.assert_array_equal(cert.prediction, (exact > 0).astype(int))
  assert np.all(cert.radius <= np.abs(exact) + 1e-9), (cert.radius, exact)
  assert np.all(np.abs(exact) - cert.radius < 0.06), (cert.radius, exact)
  # the radius is sigma * Phi^-1 of the one-sided Clopper-Pearson bound of the counts
  n_a = info['counts_estimation'][np.arange(5), cert.prediction]
  np.testing.assert_allclose(
      cert.radius, sigma * stats.norm.ppf(stats.beta.ppf(alpha, n_a, n - n_a + 1)), rtol=1e-9)
  assert np.all(info['counts_estimation'].sum(-1) == n)
  assert np.all(info['counts_selection'].sum(-1) == 100)


def test_certify_failure_rate_is_the_clopper_pearson_level():
  """Cohen's guarantee, measured: over many independent certifications at one margin, the
  rate of a radius above the exact one matches the exact binomial rate of the one-sided
  bound at level alpha (a two-sided bound, alpha / 2, gives about half of it)."""
  sigma, n, alpha, m, exact = 0.5, 500, 0.1, 2000, 0.3
  x = points_at_margin(np.full(m, exact), jax.random.key(8))
  cert, _ = smoothing.certify(F, x, jax.random.key(9), sigma=sigma, n0=20, n=n, alpha=alpha,
                              batch_size=4096)
  violated = (cert.prediction != -1) & ((cert.prediction != 1) | (cert.radius > exact))
  p_a = stats.norm.cdf(exact / sigma)
  k = np.arange(n + 1)
  low = np.where(k == 0, 0.0, stats.beta.ppf(alpha, k, n - k + 1))
  expected = float(np.sum(stats.binom.pmf(k, n, p_a) * (low > p_a)))    # 0.085
  assert expected <= alpha
  sd = np.sqrt(expected * (1 - expected) / m)
  assert abs(violated.mean() - expected) < 4 * sd, (violated.mean(), expected)


def test_certify_constant_classifier_radius_is_closed_form():
  """All n draws agree: pA_lower = alpha^(1/n), radius = sigma Phi^-1(alpha^(1/n))."""
  sigma, n, alpha = 0.25, 1000, 0.001
  f = lambda x: jnp.tile(jnp.array([0.0, 0.0, 1.0]), (x.shape[0], 1))
  cert, _ = smoothing.certify(f, jnp.zeros((3, 2, 2, 1)), jax.random.key(0), sigma=sigma,
                              n0=10, n=n, alpha=alpha, batch_size=300)
  np.testing.assert_array_equal(cert.prediction, [2, 2, 2])
  np.testing.assert_allclose(cert.radius, sigma * stats.norm.ppf(alpha ** (1 / n)), rtol=1e-9)


def test_certify_returns_certificate_and_info_without_a_flag():
  assert 'return_info' not in inspect.signature(smoothing.certify).parameters
  f = lambda x: jnp.tile(jnp.array([0.0, 1.0]), (x.shape[0], 1))
  cert, info = smoothing.certify(f, jnp.zeros((2, 3)), jax.random.key(0), sigma=0.25, n0=5,
                                 n=20, alpha=0.01, batch_size=40)
  assert isinstance(cert, smoothing.Certificate) and cert.prediction.shape == (2,)
  assert {'p_lower', 'counts_selection', 'counts_estimation'} <= set(info)


def test_ties_abstain():
  """On the decision boundary pA = 1/2: CERTIFY abstains with radius 0 and PREDICT
  abstains except with probability about alpha; far from it PREDICT returns g(x) = f(x)."""
  # same shapes and settings as the linear test above: one compiled program
  x = points_at_margin(np.zeros(5), jax.random.key(3))
  cert, _ = smoothing.certify(F, x, jax.random.key(4), sigma=0.5, n0=100, n=20000,
                              alpha=0.001, batch_size=4096)
  np.testing.assert_array_equal(cert.prediction, -1)
  np.testing.assert_array_equal(cert.radius, 0.0)
  far = np.where(np.arange(40) % 2 == 0, 2.0, -2.0)
  x = points_at_margin(np.concatenate([np.zeros(200), far]), jax.random.key(5))
  pred = smoothing.predict(F, x, jax.random.key(6), sigma=0.5, num_samples=100, alpha=0.05,
                           batch_size=1000)
  assert set(np.unique(pred[:200])) <= {-1, 0, 1}
  assert np.mean(pred[:200] != -1) <= 0.1, np.mean(pred[:200] != -1)  # <= alpha expected
  np.testing.assert_array_equal(pred[200:], (far > 0).astype(int))


@pytest.mark.parametrize('num,batch_size,rows', [(37, 10, 3), (5, 16, 7)])
def test_sample_counts_masks_the_last_chunk(num, batch_size, rows):
  """num not a multiple of the chunk; rows not a multiple of the examples per pass."""
  margins = np.where(np.arange(rows) == 0, 0.0, 100.0)        # row 0 on the boundary
  x = points_at_margin(margins, jax.random.key(1))
  counts = smoothing.sample_counts(F, x, jax.random.key(0), sigma=1.0, num=num,
                                   batch_size=batch_size)
  np.testing.assert_array_equal(counts.sum(-1), num)
  np.testing.assert_array_equal(counts[1:], np.tile([0, num], (rows - 1, 1)))
  assert 0 < counts[0, 1] < num


def test_certified_accuracy():
  cert = smoothing.Certificate(np.array([0, 1, -1, 2]), np.array([0.3, 0.6, 0.0, 1.2]))
  acc = smoothing.certified_accuracy(cert, np.array([0, 1, 1, 0]), (0.0, 0.5, 1.0))
  assert acc == {'0': 0.5, '0.5': 0.25, '1': 0.0}


def test_gaussian_augmentation_objective():
  apply_fn = lambda p, x: x @ p
  p = jax.random.normal(jax.random.key(0), (4, 2))
  x = jax.random.normal(jax.random.key(1), (8, 4))
  y = jnp.arange(8) % 2
  key = jax.random.key(2)
  obj = smoothing.gaussian_augmentation(sigma=0.5)
  k_noise, _ = jax.random.split(key)
  noisy = x + 0.5 * jax.random.normal(k_noise, x.shape)
  plain = train.supervised()
  np.testing.assert_allclose(obj(apply_fn, p, x, y, key), plain(apply_fn, p, noisy, y, key),
                             rtol=1e-6)
  assert not np.allclose(obj(apply_fn, p, x, y, key), plain(apply_fn, p, x, y, key))
  np.testing.assert_allclose(smoothing.gaussian_augmentation(sigma=0.0)(apply_fn, p, x, y, key),
                             plain(apply_fn, p, x, y, key), rtol=1e-6)
  g = jax.grad(lambda q: obj(apply_fn, q, x, y, key).mean())(p)
  assert g.shape == p.shape and np.all(np.isfinite(g))
  # plugs into train.fit: separable data, noise-trained linear model classifies it
  xs = np.asarray(jax.random.normal(jax.random.key(3), (256, 4)), np.float32)
  ys = (xs @ W + B > 0).astype(np.int32)
  res = train.fit(apply_fn, jnp.zeros((4, 2)), xs, ys, optimizer=optax.adam(0.1),
                  key=jax.random.key(4), batch_size=64, num_epochs=5, objective=obj)
  assert np.mean(np.argmax(xs @ np.asarray(res.params), -1) == ys) > 0.9


def test_bad_inputs():
  f = linear_binary()
  x = jnp.zeros((2, 4))
  key = jax.random.key(0)
  kw = dict(sigma=0.5, n0=10, n=100, alpha=0.01, batch_size=50)
  for bad, match in [({'sigma': 0.0}, 'sigma=0.0'), ({'sigma': -1.0}, 'sigma=-1.0'),
                     ({'n0': 101}, 'n0=101'), ({'alpha': 0.0}, 'alpha=0.0'),
                     ({'alpha': 1.0}, 'alpha=1.0'), ({'alpha': 1.5}, 'alpha=1.5'),
                     ({'n': 0}, 'n=0'), ({'batch_size': 0}, 'batch_size=0')]:
    with pytest.raises(ValueError, match=match):
      smoothing.certify(f, x, key, **{**kw, **bad})
  with pytest.raises(ValueError, match='num_samples=0'):
    smoothing.predict(f, x, key, sigma=0.5, num_samples=0, alpha=0.01, batch_size=10)
  with pytest.raises(ValueError, match='alpha=2'):
    smoothing.predict(f, x, key, sigma=0.5, num_samples=10, alpha=2, batch_size=10)
  with pytest.raises(ValueError, match='rank|batch'):
    smoothing.certify(f, jnp.zeros((4,)), key, **kw)
  with pytest.raises(ValueError, match='1 class'):
    smoothing.certify(lambda z: z[:, :1], x, key, **kw)
  with pytest.raises(ValueError, match='sigma=-0.1'):
    smoothing.gaussian_augmentation(sigma=-0.1)
  with pytest.raises(ValueError, match='count='):
    smoothing.lower_confidence_bound(5, 4, alpha=0.1)
