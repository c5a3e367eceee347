"""PATE: aggregation on constructed vote histograms and its RDP bounds vs closed forms."""
from __future__ import annotations

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsec.privacy import accounting, pate


def test_vote_histogram_counts():
  preds = jnp.array([[0, 1, 2], [0, 2, 2], [1, 2, 2]], jnp.int32)   # [T=3, Q=3]
  np.testing.assert_array_equal(pate.vote_histogram(preds, 3),
                                [[2, 1, 0], [0, 1, 2], [0, 0, 3]])


def test_aggregators_on_constructed_histograms():
  votes = jnp.array([[50., 0, 0], [0, 30, 20], [10, 10, 30]])
  np.testing.assert_array_equal(pate.gnmax(votes, jax.random.key(0), sigma=1e-3), [0, 1, 2])
  np.testing.assert_array_equal(pate.lnmax(votes, jax.random.key(0), gamma=1e3), [0, 1, 2])
  ans = pate.confident_gnmax(votes, jax.random.key(1), threshold=45., sigma1=1e-3,
                             sigma2=1e-3)
  np.testing.assert_array_equal(ans.answered, [True, False, False])
  np.testing.assert_array_equal(ans.labels, [0, -1, -1])


def test_lnmax_logq_is_exact_for_two_classes_and_matches_frequency():
  # K = 2: P[argmax != i*] = P[L1 - L0 > gap] = exp(-g gap) (1 + g gap / 2) / 2 exactly,
  # which is Papernot 2017 Lemma 4's bound.
  gamma, gap = 0.5, 3.0
  votes = np.array([[10 + gap, 10.]])
  q = math.exp(pate.lnmax_logq(votes, gamma)[0])
  assert q == pytest.approx(0.5 * math.exp(-gamma * gap) * (1 + gamma * gap / 2))
  n = 40000
  labels = pate.lnmax(jnp.tile(jnp.asarray(votes), (n, 1)), jax.random.key(2), gamma=gamma)
  freq = float(jnp.mean(labels != 0))
  assert abs(freq - q) < 4 * math.sqrt(q * (1 - q) / n)


def test_gnmax_logq_is_exact_for_two_classes():
  sigma, gap = 4.0, 5.0
  q = math.exp(pate.gnmax_logq(np.array([[gap, 0.]]), sigma)[0])
  assert q == pytest.approx(stats.norm.sf(gap / (math.sqrt(2) * sigma)))
  # capped at 1 - 1/K on ties
  assert math.exp(pate.gnmax_logq(np.array([[3., 3., 3.]]), sigma)[0]) == pytest.approx(2 / 3)


def _bernoulli_renyi(loga, loga2, lam):
  """D_lam(Bern(a) || Bern(a2)) from log a, log a2 (a = P[output != plurality])."""
  t1 = lam * np.log1p(-np.exp(loga)) + (1 - lam) * np.log1p(-np.exp(loga2))
  t2 = lam * loga + (1 - lam) * loga2
  return float(np.logaddexp(t1, t2)) / (lam - 1)


def test_data_dependent_gnmax_rdp_upper_bounds_true_divergence():
  # Two classes: the output is Bernoulli; neighbours move the gap by +-2 (one teacher
  # switches). Theorem 6 must upper-bound the exact Renyi divergence, and be far below
  # the data-independent lambda / sigma^2 for a strong consensus.
  sigma = 10.0
  orders = np.array([2., 5., 10., 20.])
  for gap in [30.0, 60.0, 100.0, 150.0]:
    logq = pate.gnmax_logq(np.array([[gap, 0.]]), sigma)[0]
    bound = pate.gnmax_rdp_data_dependent(logq, sigma, orders)
    la = stats.norm.logsf(gap / (math.sqrt(2) * sigma))
    assert la == pytest.approx(logq)
    for g2 in (gap - 2, gap + 2):
      la2 = stats.norm.logsf(g2 / (math.sqrt(2) * sigma))
      for lam, b in zip(orders, bound):
        true = _bernoulli_renyi(la, la2, lam)
        assert 0 <= true <= b * (1 + 1e-9) + 1e-300
    assert np.all(bound <= orders / sigma ** 2)
  logq = pate.gnmax_logq(np.array([[150., 0.]]), sigma)[0]
  assert pate.gnmax_rdp_data_dependent(logq, sigma, orders)[0] < 1e-3 * 2 / sigma ** 2


def test_theorem6_is_no_better_than_data_independent_without_consensus():
  sigma = 10.0
  logq = pate.gnmax_logq(np.array([[5., 5.]]), sigma)[0]
  orders = np.array([2., 10.])
  np.testing.assert_allclose(pate.gnmax_rdp_data_dependent(logq, sigma, orders),
                             orders / sigma ** 2)


def test_analyze_gnmax_matches_dp_accounting_and_data_dependent_is_smaller():
  sigma, q = 40.0, 100
  votes = np.zeros((q, 10))
  votes[:, 0] = 240
  votes[:, 1] = 10
  acc = pate.analyze(votes, mechanism='gnmax', sigma=sigma, delta=1e-5)
  ev = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2)),
                                         q)
  assert acc.epsilon == pytest.approx(accounting.epsilon(ev, 1e-5, accountant='rdp'))
  # data-independent RDP of GNMax is lambda / sigma^2 per query (PATE 2018 Prop. 8)
  e_closed, _ = accounting.epsilon_from_rdp(pate.ORDERS, q * pate.ORDERS / sigma ** 2, 1e-5)
  assert acc.epsilon == pytest.approx(e_closed, rel=1e-3)
  assert acc.epsilon_data_dependent < 0.2 * acc.epsilon


def test_analyze_confident_gnmax_charges_every_check():
  votes = np.zeros((50, 10))
  votes[:, 0] = 200
  answered = np.arange(50) < 20
  a = pate.analyze(votes, mechanism='confident_gnmax', sigma=40., sigma1=150.,
                   answered=answered, delta=1e-5)
  b = pate.analyze(votes[:20], mechanism='gnmax', sigma=40., delta=1e-5)
  assert a.num_answered == 20 and a.num_queries == 50
  assert a.epsilon > b.epsilon
  with pytest.raises(ValueError, match='sigma1'):
    pate.analyze(votes, mechanism='confident_gnmax', sigma=40., delta=1e-5)


def test_analyze_lnmax_pure_dp_bound():
  gamma, q = 0.05, 10
  votes = np.zeros((q, 10))
  votes[:, 3] = 250
  acc = pate.analyze(votes, mechanism='lnmax', gamma=gamma, delta=1e-5)
  # never worse than basic composition of pure 2 gamma-DP
  assert acc.epsilon <= 2 * gamma * q + 1e-9
  assert acc.epsilon_data_dependent < acc.epsilon


def test_teacher_masks_disjoint():
  m = pate.teacher_masks(jax.random.key(0), 103, 10)
  assert m.shape == (10, 103) and m.sum(1).tolist() == [10] * 10
  assert m.sum(0).max() == 1
