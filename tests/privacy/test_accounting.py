"""Accounting: wrapper == dp_accounting for the same event; calibration inverts it;
closed forms (analytic Gaussian, randomized response); samplers draw what they account."""
from __future__ import annotations

import math

import dp_accounting
from dp_accounting import pld, rdp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsec.privacy import accounting, sampling

NR = dp_accounting.NeighboringRelation


@pytest.mark.parametrize('acc', ['pld', 'rdp'])
def test_poisson_epsilon_equals_dp_accounting(acc):
  s = sampling.PoissonSampler(dataset_size=60000, num_steps=500, expected_batch_size=256)
  ev = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(256 / 60000, dp_accounting.GaussianDpEvent(1.1)),
      500)
  a = pld.PLDAccountant() if acc == 'pld' else rdp.RdpAccountant()
  a.compose(ev)
  assert s.epsilon(1.1, 1e-5, accountant=acc) == pytest.approx(a.get_epsilon(1e-5),
                                                               rel=1e-12)
  # partial runs account fewer steps
  assert s.epsilon(1.1, 1e-5, num_steps=100, accountant=acc) < s.epsilon(
      1.1, 1e-5, accountant=acc)


def test_fixed_size_sampler_uses_replace_one_sensitivity_two_c():
  # q = 1 (the whole data set each step): the WOR event must be a Gaussian with shift 2C,
  # i.e. noise multiplier sigma/2 relative to the replace-one sensitivity.
  s = sampling.FixedSizeSampler(dataset_size=100, num_steps=3, batch_size=100)
  a = rdp.RdpAccountant()
  a.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0 / 2), 3))
  assert s.epsilon(2.0, 1e-5) == pytest.approx(a.get_epsilon(1e-5), rel=1e-9)
  with pytest.raises(ValueError, match='pld'):
    s.epsilon(2.0, 1e-5, accountant='pld')


def test_shuffle_sampler_counts_epochs_without_amplification():
  s = sampling.ShuffleSampler(dataset_size=1000, num_steps=25, batch_size=100)  # 3 epochs
  a = rdp.RdpAccountant()
  a.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 3))
  assert s.epsilon(2.0, 1e-5, accountant='rdp') == pytest.approx(a.get_epsilon(1e-5),
                                                                 rel=1e-9)
  # it is never smaller than Poisson accounting of the same noise and rate
  p = sampling.PoissonSampler(dataset_size=1000, num_steps=25, expected_batch_size=100)
  assert s.epsilon(2.0, 1e-5, accountant='rdp') > p.epsilon(2.0, 1e-5, accountant='rdp')


def test_truncated_poisson_needs_pld():
  s = sampling.PoissonSampler(dataset_size=1000, num_steps=10, expected_batch_size=100,
                              max_batch_size=105, overflow='truncate')
  e = s.epsilon(1.0, 1e-5)
  assert math.isfinite(e) and e > 0
  with pytest.raises(ValueError, match='rdp'):
    s.epsilon(1.0, 1e-5, accountant='rdp')


@pytest.mark.parametrize('acc', ['pld', 'rdp'])
def test_calibration_inverts_accounting(acc):
  s = sampling.PoissonSampler(dataset_size=1000, num_steps=20, expected_batch_size=100)
  sigma = s.calibrate(4.0, 1e-5, accountant=acc, tol=1e-3)
  assert s.epsilon(sigma, 1e-5, accountant=acc) <= 4.0
  assert s.epsilon(sigma - 5e-3, 1e-5, accountant=acc) > 4.0


def _analytic_gaussian_delta(eps, sigma, sens=1.0):
  """Balle & Wang 2018, Thm 8: exact delta of the Gaussian mechanism."""
  a = sens / (2 * sigma)
  b = eps * sigma / sens
  return stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b)


def test_gaussian_sigma_matches_closed_form():
  for eps, delta, sens in [(1.0, 1e-5, 1.0), (0.5, 1e-6, 2.5)]:
    sigma = accounting.gaussian_sigma(eps, delta, sens)
    d = _analytic_gaussian_delta(eps, sigma, sens)
    assert d <= delta * 1.001
    assert _analytic_gaussian_delta(eps, sigma * 0.99, sens) > delta


def test_randomized_response_event_is_eps_dp():
  for k, eps in [(2, 1.0), (10, 2.0)]:
    ev = accounting.randomized_response_event(eps, k)
    keep = math.exp(eps) / (math.exp(eps) + k - 1)
    # dp_accounting's noise parameter p: keep w.p. 1 - p + p / k
    assert 1 - ev.noise_parameter + ev.noise_parameter / k == pytest.approx(keep)
    got = accounting.epsilon(ev, 0.0, accountant='pld', neighboring_relation=NR.REPLACE_ONE)
    assert got == pytest.approx(eps, abs=2e-3)


def test_epsilon_from_rdp_gaussian_matches_event():
  orders = accounting.DEFAULT_ORDERS
  curve = accounting.rdp_of_event(dp_accounting.GaussianDpEvent(2.0), orders)
  np.testing.assert_allclose(curve, np.asarray(orders) / (2 * 4.0))
  e, _ = accounting.epsilon_from_rdp(orders, curve, 1e-5)
  assert e == pytest.approx(accounting.epsilon(dp_accounting.GaussianDpEvent(2.0), 1e-5,
                                               accountant='rdp'))


def test_validation():
  with pytest.raises(ValueError, match='delta'):
    accounting.epsilon(dp_accounting.GaussianDpEvent(1.0), 1.5)
  with pytest.raises(ValueError, match='accountant'):
    accounting.make_accountant('moments')
  with pytest.raises(ValueError, match='exactly one'):
    sampling.PoissonSampler(dataset_size=10, num_steps=1)
  with pytest.raises(ValueError, match='sampling_probability'):
    sampling.PoissonSampler(dataset_size=10, num_steps=1, sampling_probability=1.5)


# ------------------------------- samplers ------------------------------------------------

def test_poisson_two_stage_has_independent_bernoulli_inclusions():
  n, q, draws = 20, 0.3, 4000
  s = sampling.PoissonSampler(dataset_size=n, num_steps=draws, sampling_probability=q,
                              max_batch_size=n)
  sched = s.schedule(jax.random.key(0))
  idx, mask = jax.jit(jax.vmap(lambda t: s.indices(sched, t)))(jnp.arange(draws))
  inc = np.zeros((draws, n))
  rows = np.repeat(np.arange(draws)[:, None], s.batch_size, 1)
  inc[rows[np.asarray(mask)], np.asarray(idx)[np.asarray(mask)]] = 1
  # indices within a batch are distinct
  assert inc.sum() == np.asarray(mask).sum()
  marg = inc.mean(0)
  se = math.sqrt(q * (1 - q) / draws)
  assert np.all(np.abs(marg - q) < 5 * se)
  pair = (inc[:, :, None] * inc[:, None, :]).mean(0)[np.triu_indices(n, 1)]
  # pairwise inclusion q^2 (independence), not the q * (qN - 1)/(N - 1) of fixed size
  assert abs(pair.mean() - q * q) < 0.004
  # sizes are Binomial(N, q)
  sizes = np.asarray(sched.sizes)
  assert abs(sizes.mean() - n * q) < 5 * math.sqrt(n * q * (1 - q) / draws)


def test_poisson_overflow_raises_before_training_or_truncates():
  s = sampling.PoissonSampler(dataset_size=1000, num_steps=50, expected_batch_size=100,
                              max_batch_size=100)
  with pytest.raises(ValueError, match='exceeds max_batch_size'):
    s.schedule(jax.random.key(0))
  t = sampling.PoissonSampler(dataset_size=1000, num_steps=50, expected_batch_size=100,
                              max_batch_size=100, overflow='truncate')
  sched = t.schedule(jax.random.key(0))
  assert int(sched.sizes.max()) == 100
  # default size: run-wide overflow probability below the tolerance (1e-15: its delta term
  # (1 + e^eps) p stays under 1% of delta = 1e-5 up to eps = 18), and the smallest such
  d = sampling.PoissonSampler(dataset_size=60000, num_steps=1000, expected_batch_size=256)
  b = stats.binom(60000, 256 / 60000)
  assert d.overflow_probability <= 1e-15 and d.batch_size < 420
  assert 1000 * b.sf(d.batch_size - 1) > 1e-15


def test_poisson_overflow_is_in_the_reported_delta_or_refused():
  # the setting: N=1000, q=0.1, T=50, max_batch_size=115: P[overflow] = 1
  s = sampling.PoissonSampler(dataset_size=1000, num_steps=50, sampling_probability=0.1,
                              max_batch_size=115)
  assert s.overflow_probability == 1.0
  p_step = stats.binom(1000, 0.1).sf(115)
  assert p_step > 0.05        # a step overflows with probability 5%: 50 steps, union = 1
  with pytest.raises(ValueError, match=r'max_batch_size=115.*overflow probability 1'
                     ) as err:
    s.epsilon(1.0, 1e-5)      # was 5.148 reported at delta 1e-5
  m = int(str(err.value).split('smallest max_batch_size that passes is ')[1].split()[0]
          .rstrip('.;,'))
  # that size passes, one less does not; the reported delta grows by (1 + e^eps) p
  eps_acc = accounting.epsilon(s.dp_event(1.0), 1e-5)
  def term(mm):
    return (1 + math.exp(eps_acc)) * 50 * stats.binom(1000, 0.1).sf(mm)
  assert term(m) <= 0.01 * 1e-5 < term(m - 1)
  ok = sampling.PoissonSampler(dataset_size=1000, num_steps=50, sampling_probability=0.1,
                               max_batch_size=m)
  eps = ok.epsilon(1.0, 1e-5)
  assert eps == pytest.approx(eps_acc, rel=1e-12)
  od = ok.overflow_delta(eps)
  assert od == pytest.approx((1 + math.exp(eps)) * ok.overflow_probability, rel=1e-12)
  assert 0 < od <= 1e-7
  assert ok.delta_spent(eps, 1e-5) == pytest.approx(1e-5 + od, rel=1e-12)
  # the refusal threshold is a documented keyword
  loose = sampling.PoissonSampler(dataset_size=1000, num_steps=50, sampling_probability=0.1,
                                  max_batch_size=m - 2, max_overflow_delta_fraction=0.5)
  assert loose.epsilon(1.0, 1e-5) == pytest.approx(eps_acc, rel=1e-12)
  with pytest.raises(ValueError, match='max_overflow_delta_fraction'):
    sampling.PoissonSampler(dataset_size=10, num_steps=1, sampling_probability=0.1,
                            max_overflow_delta_fraction=1.5)
  # truncation is accounted exactly: no overflow term
  t = sampling.PoissonSampler(dataset_size=1000, num_steps=50, sampling_probability=0.1,
                              max_batch_size=115, overflow='truncate')
  assert t.overflow_delta(t.epsilon(1.0, 1e-5)) == 0.0


def test_shuffle_sampler_visits_each_example_once_per_epoch():
  s = sampling.ShuffleSampler(dataset_size=50, num_steps=10, batch_size=10)
  sched = s.schedule(jax.random.key(1))
  seen = [np.asarray(s.indices(sched, jnp.int32(t))[0]) for t in range(10)]
  for e in range(2):
    ep = np.concatenate(seen[5 * e:5 * e + 5])
    assert sorted(ep.tolist()) == list(range(50))
