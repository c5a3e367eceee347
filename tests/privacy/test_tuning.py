"""Papernot & Steinke 2022: best-of-K RDP equals dp_accounting's RepeatAndSelectDpEvent;
the pure-DP special cases (2 + eta) eps (Liu & Talwar's 3 eps for geometric K) and, for
Poisson K, eps + log(mu) / (lambda - 1) when the per-run delta^ vanishes."""
from __future__ import annotations

import math

import dp_accounting
from dp_accounting import dp_event
import numpy as np
import pytest

from jaxsec.privacy import accounting, tuning

ORDERS = [1.5, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]


def test_poisson_equals_dp_accounting_repeat_and_select():
  run = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(3.0), 10)
  per_run = accounting.rdp_of_event(run, ORDERS)
  ours = tuning.poisson_repeat_rdp(ORDERS, per_run, mean=10.0)
  ref = accounting.rdp_of_event(dp_event.RepeatAndSelectDpEvent(run, 10.0, math.inf),
                                ORDERS)
  np.testing.assert_allclose(ours, ref, rtol=1e-12)
  assert np.all(ours > per_run)


@pytest.mark.parametrize('eta', [0.0, 0.5, 1.0, 2.0])
def test_tnb_equals_dp_accounting_repeat_and_select(eta):
  run = dp_accounting.GaussianDpEvent(4.0)
  per_run = accounting.rdp_of_event(run, ORDERS)
  gamma = 0.1
  ours = tuning.tnb_repeat_rdp(ORDERS, per_run, eta=eta, gamma=gamma)
  ref = accounting.rdp_of_event(dp_event.RepeatAndSelectDpEvent(
      run, tuning.tnb_mean(eta, gamma), eta), ORDERS)
  np.testing.assert_allclose(ours, ref, rtol=1e-6)   # dp_accounting inverts mean -> gamma


def test_pure_dp_special_cases():
  eps = 0.1
  big = [2.0, 10.0, 1e3, 1e5, 1e7]
  flat = [eps] * len(big)
  # geometric K (eta = 1): 3 eps (Liu & Talwar 2019); logarithmic (eta = 0): 2 eps
  for eta, factor in ((1.0, 3.0), (0.0, 2.0)):
    out = tuning.tnb_repeat_rdp(big, flat, eta=eta, gamma=0.05)
    assert out[-1] == pytest.approx(factor * eps, abs=2e-6)
  assert tuning.tnb_mean(1.0, 0.05) == pytest.approx(20.0)
  # Poisson: e^eps <= 1 + 1/(lambda - 1) makes the per-run delta^ (numerically) 0
  orders = [2.0, 5.0, 1e4, 1e6]
  out = tuning.poisson_repeat_rdp(orders, [eps] * 4, mean=8.0)
  assert out[1] == pytest.approx(eps + math.log(8.0) / 4.0, abs=1e-9)


def test_bad_inputs():
  with pytest.raises(ValueError, match='mean'):
    tuning.poisson_repeat_rdp(ORDERS, ORDERS, mean=0.0)
  with pytest.raises(ValueError, match='gamma'):
    tuning.tnb_repeat_rdp(ORDERS, ORDERS, eta=1.0, gamma=1.5)
  with pytest.raises(ValueError, match='equal length'):
    tuning.poisson_repeat_rdp(ORDERS, ORDERS[:-1], mean=2.0)
