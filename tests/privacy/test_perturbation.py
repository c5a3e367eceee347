"""Input / objective / output perturbation: noise scales, unbiasedness, CMS 2011 formulas."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsec import losses
from jaxsec.privacy import accounting, perturbation as pt


def test_laplace_features_scale_and_clipping():
  x = jnp.zeros((4000, 5))
  out = pt.laplace_features(x, jax.random.key(0), eps=2.0, l1_radius=0.5)
  b = 2 * 0.5 / 2.0      # Lap(2R / eps)
  z = np.asarray(out).ravel()
  assert stats.kstest(z / b, 'laplace').pvalue > 1e-3
  # records outside the l1 ball are projected onto it (radially)
  big = jnp.array([[3.0, -1.0]])
  clipped = pt._clip_rows(big, 0.5, 1)
  assert float(jnp.sum(jnp.abs(clipped))) == pytest.approx(0.5)


def test_gaussian_features_std_is_analytic_gaussian_for_2r():
  x = jnp.zeros((20000, 3))
  out = pt.gaussian_features(x, jax.random.key(1), eps=1.0, delta=1e-5, l2_radius=0.25)
  std = accounting.gaussian_sigma(1.0, 1e-5, sensitivity=0.5)
  assert float(jnp.std(out)) == pytest.approx(std, rel=0.02)


def test_randomized_response_rates_and_debiasing():
  k, eps, n = 4, 1.0, 100000
  y = jnp.asarray(np.random.default_rng(0).choice(k, n, p=[0.1, 0.2, 0.3, 0.4]), jnp.int32)
  yr = pt.randomized_response(y, jax.random.key(3), eps=eps, num_classes=k)
  keep = math.exp(eps) / (math.exp(eps) + k - 1)
  assert float(jnp.mean(yr == y)) == pytest.approx(keep, abs=0.006)
  # flips go uniformly to the other labels
  flipped = np.asarray(yr)[np.asarray(y) == 0]
  flipped = flipped[flipped != 0]
  counts = np.bincount(flipped, minlength=k)[1:]
  assert stats.chisquare(counts).pvalue > 1e-3
  est = pt.debias_label_frequencies(yr, eps=eps, num_classes=k)
  np.testing.assert_allclose(est, [0.1, 0.2, 0.3, 0.4], atol=0.012)
  # transition matrix rows are distributions with keep prob on the diagonal
  t = pt.rr_transition_matrix(eps, k)
  np.testing.assert_allclose(t.sum(1), 1.0)
  np.testing.assert_allclose(np.diag(t), keep)


def test_rr_unbiased_loss_expectation_equals_clean_loss():
  k, eps = 3, 0.7
  logits = jax.random.normal(jax.random.key(4), (5, k))
  y = jnp.array([0, 1, 2, 1, 0], jnp.int32)
  corrected = pt.rr_unbiased_loss(losses.cross_entropy, eps=eps, num_classes=k)
  t = pt.rr_transition_matrix(eps, k)
  expected = sum(t[np.asarray(y), j] * np.asarray(
      corrected(logits, jnp.full((5,), j, jnp.int32))) for j in range(k))
  np.testing.assert_allclose(expected, losses.cross_entropy(logits, y), rtol=1e-4, atol=1e-5)


def test_huber_hinge_pieces_and_derivative_bounds():
  h = 0.5
  z = jnp.array([2.0, 1.5, 1.0, 0.5, 0.0])
  np.testing.assert_allclose(pt.huber_hinge(z, h), [0, 0, 0.125, 0.5, 1.0], atol=1e-6)  # (1+h-z)^2/(4h)
  zz = jnp.linspace(-2, 3, 501)
  d1 = jax.vmap(jax.grad(lambda v: pt.huber_hinge(v, h)))(zz)
  d2 = jax.vmap(jax.grad(jax.grad(lambda v: pt.huber_hinge(v, h))))(zz)
  assert float(jnp.max(jnp.abs(d1))) <= 1 + 1e-6
  assert float(jnp.max(d2)) <= 1 / (2 * h) + 1e-6


def test_objective_perturbation_parameters_follow_cms_alg2():
  n, lam, c = 1000, 1e-3, 0.25
  e, d = pt.objective_perturbation_params(1.0, n, lam, c)
  assert e == pytest.approx(1.0 - math.log(1 + 2 * c / (n * lam) + (c / (n * lam)) ** 2))
  assert d == 0.0
  e, d = pt.objective_perturbation_params(0.1, n, lam, c)   # eps' <= 0 branch
  assert e == pytest.approx(0.05)
  assert d == pytest.approx(c / (n * (math.exp(0.1 / 4) - 1)) - lam)


def test_gamma_ball_noise_norm_distribution():
  d, beta = 6, 3.0
  norms = jax.vmap(lambda k: jnp.linalg.norm(pt._gamma_ball_noise(k, d, beta)))(
      jax.random.split(jax.random.key(5), 4000))
  # density exp(-beta ||b||) in R^d: ||b|| ~ Gamma(d, 1/beta)
  assert stats.kstest(np.asarray(norms), stats.gamma(d, scale=1 / beta).cdf).pvalue > 1e-3


def _toy():
  k1, k2 = jax.random.split(jax.random.key(6))
  x = jax.random.normal(k1, (600, 4))
  y = (x @ jnp.array([1., -1., .5, 0.]) > 0).astype(jnp.int32)
  return pt.prepare_erm_data(x, y)


def test_erm_solutions_are_exact_minimisers_and_private_ones_converge():
  x, y = _toy()
  assert float(jnp.max(jnp.linalg.norm(x, axis=1))) <= 1 + 1e-6
  for loss in ('logistic', 'huber'):
    base = pt.erm(x, y, regularization=1e-3, loss=loss)
    assert base.grad_norm <= 1e-4
    assert pt.erm_accuracy(base.weights, x, y) > 0.9
    big = pt.objective_perturbation(x, y, jax.random.key(7), eps=50.0, regularization=1e-3,
                                    loss=loss)
    assert pt.erm_accuracy(big.weights, x, y) > 0.85
    out = pt.output_perturbation(x, y, jax.random.key(8), eps=50.0, regularization=1e-3,
                                 loss=loss)
    assert pt.erm_accuracy(out.weights, x, y) > 0.85
    # output noise has the documented scale: ||b|| ~ Gamma(d, 2 / (n Lambda eps))
    assert float(jnp.linalg.norm(out.weights - base.weights)) < 10 * 5 * 2 / (600 * 1e-3 * 50)


def test_erm_validation():
  x, y = _toy()
  with pytest.raises(ValueError, match='norm'):
    pt.erm(x * 3, y, regularization=1e-2)
  with pytest.raises(ValueError, match='labels'):
    pt.erm(x, (y + 1) / 2, regularization=1e-2)
  with pytest.raises(ValueError, match='loss'):
    pt.erm(x, y, regularization=1e-2, loss='hinge')


def test_snapping_laplace_grid_bounds_and_scale():
  # sensitivity 0.25 (a power of two: exact scaling), eps 0.75 -> lambda = 4/3,
  # Lambda = 2, grid 0.5 in data units
  v = np.concatenate([np.zeros(6000), np.full(10, 1e6)])
  out = pt.snapping_laplace(v, eps=0.75, sensitivity=0.25, bound=50.0)
  assert out.shape == v.shape and np.all(np.abs(out) <= 50.0)
  on_grid = np.mod(out, 0.5) == 0
  assert np.all(on_grid | (np.abs(out) == 50.0))
  assert np.all(out[-10:] <= 50.0) and np.all(out[-10:] >= 50.0 - 30)   # clamped input
  # noise of the zeros: Laplace(b = Delta / eps) rounded to the grid g = 0.5. Its exact
  # distribution: P(z = k g) = P((k - 1/2) g < L < (k + 1/2) g). The sample moments must sit
  # within 6 standard errors of the exact ones (a false alarm ~1e-8; the OS randomness
  # cannot be seeded); a 10% error in the scale is 6.4-7.3 standard errors away, 20% > 12.
  z = out[:6000]
  b, g = 0.25 / 0.75, 0.5
  k = np.arange(-80, 81)
  cdf = lambda t: np.where(t < 0, 0.5 * np.exp(t / b), 1 - 0.5 * np.exp(-t / b))
  pk = cdf((k + 0.5) * g) - cdf((k - 0.5) * g)
  for f in (np.abs, np.square):
    m1 = np.sum(pk * f(k * g))
    sd = np.sqrt(np.sum(pk * f(k * g) ** 2) - m1 ** 2)
    assert abs(np.mean(f(z)) - m1) < 6 * sd / np.sqrt(z.size), (f, np.mean(f(z)), m1)
  assert abs(z.mean()) < 6 * np.sqrt(np.sum(pk * (k * g) ** 2) / z.size)
  # not a constant: the grid points -1.5 .. 1.5 each have probability >= 1% (>= 60 expected
  # hits); the tails beyond +-2.5 are too rare to count on (CI once saw exactly 10 values)
  assert {-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5} <= set(z.tolist())
  # fresh OS randomness on each call
  assert not np.array_equal(z, pt.snapping_laplace(v, eps=0.75, sensitivity=0.25,
                                                   bound=50.0)[:6000])
  # Mironov Thm 1: eps (1 + 2^-49 B / Delta), only for lambda < B / Delta < 2^46 lambda
  assert pt.snapping_epsilon(0.75, bound=50.0, sensitivity=0.25) == pytest.approx(
      0.75 * (1 + 2.0 ** -49 * 200))
  with pytest.raises(ValueError, match='bound=0.2'):
    pt.snapping_laplace(np.zeros(3), eps=0.75, sensitivity=0.25, bound=0.2)
  with pytest.raises(ValueError, match='NaN'):
    pt.snapping_laplace(np.array([np.nan]), eps=1.0, sensitivity=1.0, bound=10.0)


def test_full_precision_uniform_reaches_below_2_to_minus_53():
  u = pt._uniform_full_precision(4000)
  assert np.all((u > 0) & (u < 1))
  assert abs(u.mean() - 0.5) < 0.03 and np.mean(u < 0.25) == pytest.approx(0.25, abs=0.03)
  # the low bits of small draws are random (a plain k/2^53 grid would leave them zero)
  small = u[u < 2 ** -4]
  assert np.any(np.mod(small * 2 ** 53, 1) != 0)


def test_output_perturbation_noise_has_the_documented_scale_from_both_sides():
  """||b|| ~ Gamma(d, 2 / (n Lambda eps)) (CMS Alg. 1): a 10x smaller (or larger) noise
  fails; the former test only bounded it from above."""
  x, y = _toy()
  n, d = x.shape
  lam, eps = 1e-2, 2.0
  base = pt.erm(x, y, regularization=lam)
  norms = [float(jnp.linalg.norm(
      pt.output_perturbation(x, y, jax.random.key(100 + i), eps=eps, regularization=lam
                             ).weights - base.weights)) for i in range(40)]
  scale = 2.0 / (n * lam * eps)
  assert stats.kstest(np.asarray(norms), stats.gamma(d, scale=scale).cdf).pvalue > 1e-3
  assert 0.75 * d * scale < np.mean(norms) < 1.3 * d * scale


@pytest.mark.parametrize('eps,bound,sensitivity', [(0.75, 50.0, 0.25), (0.3, 7.0, 1.0),
                                                   (3.0, 1000.0, 1.0), (1.7, 7.0, 1.0)])
def test_snapping_epsilon_is_theorem_1_for_the_lambda_and_clamp_used(eps, bound,
                                                                      sensitivity):
  """Mironov 2012 Thm. 1 (sensitivity 1, lambda < B < 2^46 lambda): the snapping mechanism
  is (1/lambda + 2^-49 B / lambda)-DP. In units of Delta, with the floating-point
  lambda = 1/eps and B = bound/Delta the mechanism runs with, the reported epsilon is that
  exact rational value rounded up (never below it; the 2^-49 B term is ~1e-13 relative,
  invisible to approx)."""
  from fractions import Fraction  # pylint: disable=g-import-not-at-top
  got = pt.snapping_epsilon(eps, bound=bound, sensitivity=sensitivity)
  lam, b1 = 1.0 / eps, bound / sensitivity
  exact = (1 + Fraction(b1) / 2 ** 49) / Fraction(lam)
  assert Fraction(got) >= exact
  assert Fraction(got) - exact <= exact * Fraction(1, 2 ** 51)
  # the clamp term is there: dropping it (eps alone) is below the bound
  assert Fraction(1) / Fraction(lam) < exact
  assert Fraction(got) - Fraction(1) / Fraction(lam) >= Fraction(b1) / 2 ** 50 / Fraction(lam)


def test_privacy_package_exports_the_recent_public_api():
  import jaxsec.privacy as privacy  # pylint: disable=g-import-not-at-top
  from jaxsec.privacy import dpsgd  # pylint: disable=g-import-not-at-top
  assert privacy.snapping_laplace is pt.snapping_laplace
  assert privacy.snapping_epsilon is pt.snapping_epsilon
  assert privacy.secure_key is dpsgd.secure_key
  for name in ('snapping_laplace', 'snapping_epsilon', 'secure_key'):
    assert name in privacy.__all__
  for name in privacy.__all__:
    assert hasattr(privacy, name), name
