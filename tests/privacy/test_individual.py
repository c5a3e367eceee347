"""Individual RDP (Feldman & Zrnic 2021): norms >= C give exactly DP-SGD's epsilon, norm 0
gives 0, the curve grows with the norm, the unsampled closed form, rounding up is safe."""
from __future__ import annotations

import dp_accounting
from dp_accounting import rdp
import numpy as np
import pytest

from jaxsec.privacy import individual

ORDERS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def test_clipped_example_gets_dp_sgd_epsilon_and_zero_norm_gets_zero():
  q, sigma, steps, c, delta = 0.01, 1.1, 40, 1.0, 1e-5
  rng = np.random.default_rng(0)
  norms = np.stack([np.full(steps, 5.0), np.full(steps, 1.0), np.zeros(steps),
                    rng.uniform(0.0, 0.9, steps), np.full(steps, 0.3),
                    np.full(steps, 0.6)], axis=1)
  r = individual.individual_rdp(norms, l2_norm_clip=c, noise_multiplier=sigma,
                                sampling_probability=q, orders=ORDERS)
  eps = individual.individual_epsilon(r, delta, ORDERS)
  acc = rdp.RdpAccountant(orders=list(ORDERS))
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
  assert eps[0] == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
  assert eps[1] == eps[0]                      # norm == C: the full sensitivity
  assert eps[2] == 0.0 and not np.any(r[2])
  assert 0 < eps[4] < eps[5] < eps[0] and 0 < eps[3] < eps[0]
  assert np.all(np.diff(r[[2, 4, 5, 0]], axis=0) > 0)   # RDP monotone in the norm


def test_unsampled_closed_form_and_conservative_rounding():
  sigma, steps = 2.0, 5
  norms = np.array([[0.5, 0.3004]] * steps) * 3.0      # C = 3: ratios 0.5 and 0.3004
  r = individual.individual_rdp(norms, l2_norm_clip=3.0, noise_multiplier=sigma,
                                orders=ORDERS)
  a = np.asarray(ORDERS)
  np.testing.assert_allclose(r[0], steps * a * 0.5 ** 2 / (2 * sigma ** 2), rtol=1e-12)
  exact = steps * a * 0.3004 ** 2 / (2 * sigma ** 2)
  assert np.all(r[1] >= exact) and np.all(r[1] <= steps * a * 0.301 ** 2 / (2 * sigma ** 2)
                                          * (1 + 1e-12))


def test_bad_inputs():
  with pytest.raises(ValueError, match='steps, examples'):
    individual.individual_rdp(np.ones(3), l2_norm_clip=1.0, noise_multiplier=1.0)
  with pytest.raises(ValueError, match='noise_multiplier'):
    individual.individual_rdp(np.ones((2, 3)), l2_norm_clip=1.0, noise_multiplier=0.0)
  with pytest.raises(ValueError, match='non-negative'):
    individual.individual_rdp(-np.ones((2, 3)), l2_norm_clip=1.0, noise_multiplier=1.0)
