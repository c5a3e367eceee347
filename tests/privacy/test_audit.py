"""Auditing: Clopper-Pearson, the Jagielski bound, the one-run p-value, and that a
non-private mechanism gets a large lower bound while a DP one stays below its epsilon."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from jaxsec.privacy import audit


def test_clopper_pearson_exact_endpoints():
  lo, hi = audit.clopper_pearson(0, 10, 0.95)
  assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
  lo, hi = audit.clopper_pearson(10, 10, 0.95)
  assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
  lo, hi = audit.clopper_pearson(5, 20)
  assert lo < 0.25 < hi


def test_jagielski_bound_closed_form():
  # no errors in n trials: FPR_hi = FNR_hi = 1 - (alpha/2)^(1/n); eps >= log((1-u)/u)
  n = 1000
  u = 1 - 0.025 ** (1 / n)
  e = audit.epsilon_lower_bound(false_positives=0, num_negatives=n, false_negatives=0,
                                num_positives=n, confidence=0.95)
  assert e == pytest.approx(math.log((1 - u) / u))
  # a coin flip gives nothing
  assert audit.epsilon_lower_bound(false_positives=500, num_negatives=1000,
                                   false_negatives=500, num_positives=1000) == 0.0


def test_non_private_mechanism_gets_large_bound_private_one_stays_below():
  rng = np.random.default_rng(0)
  n = 2000
  # non-private: output reveals membership exactly
  e = audit.epsilon_lower_bound_from_scores(np.ones(n), np.zeros(n), delta=1e-5)
  assert e.epsilon_lower_bound > 5.0
  # Gaussian mechanism with sensitivity 1, sigma 2: exact eps at delta 1e-5 is ~2.0
  s_in = rng.normal(1.0, 2.0, n)
  s_out = rng.normal(0.0, 2.0, n)
  e = audit.epsilon_lower_bound_from_scores(s_in, s_out, delta=1e-5)
  assert 0.0 < e.epsilon_lower_bound < 2.0
  # randomized response with eps = 1 (score = released bit): bound close to, below 1
  p = math.e / (1 + math.e)
  bits_in = rng.random(20000) < p
  bits_out = rng.random(20000) < 1 - p
  e = audit.epsilon_lower_bound_from_scores(bits_in.astype(float), bits_out.astype(float))
  assert 0.8 < e.epsilon_lower_bound < 1.0


def test_one_run_p_value_delta_zero_is_binomial_tail():
  m, r, v, eps = 1000, 100, 70, 0.5
  q = math.exp(eps) / (1 + math.exp(eps))
  assert audit.one_run_p_value(m, r, v, eps, 0.0) == pytest.approx(stats.binom.sf(v - 1, r, q))
  assert audit.one_run_p_value(m, r, v, eps, 1e-6) > audit.one_run_p_value(m, r, v, eps, 0.0)
  with pytest.raises(ValueError):
    audit.one_run_p_value(10, 20, 5, 1.0, 0.0)


def test_one_run_audit_non_private_vs_randomized_response():
  rng = np.random.default_rng(1)
  m = 1000
  inc = rng.random(m) < 0.5
  # non-private: scores reveal inclusion
  res = audit.one_run_audit(inc.astype(float) + 1e-3 * rng.random(m), inc, k_pos=200,
                            k_neg=200, delta=0.0)
  assert res.num_correct == 400
  # all r correct: p = q^r < 0.05 <=> eps > log(q / (1 - q)) with q = 0.05^(1/r)
  q = 0.05 ** (1 / 400)
  assert res.epsilon_lower_bound == pytest.approx(math.log(q / (1 - q)), rel=1e-3)
  # eps = 1 randomized response on the inclusion bit: bound below 1
  p = math.e / (1 + math.e)
  bit = np.where(rng.random(m) < p, inc, ~inc)
  res = audit.one_run_audit(bit + 1e-3 * rng.random(m), inc, k_pos=m // 2, k_neg=m // 2,
                            delta=0.0)
  assert 0.0 < res.epsilon_lower_bound < 1.0
