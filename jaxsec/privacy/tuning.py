"""The privacy cost of hyperparameter tuning (Papernot & Steinke 2022, "Hyperparameter Tuning
with Renyi Differential Privacy", arXiv:2110.03620 v2).

Run a DP training (each run ``(lambda, eps(lambda))``-RDP, with hyperparameters drawn
independently of the data) a *random* number K of times and release only the best run.

* K ~ Poisson(mu) (Thm. 6): ``eps'(lambda) = eps(lambda) + mu delta^ + log(mu) / (lambda - 1)``
  where each run is ``(eps^, delta^)``-DP at ``eps^ = log(1 + 1 / (lambda - 1))``; delta^ is
  the per-run curve's ``dp_accounting`` conversion (``rdp.compute_delta``).
* K ~ truncated negative binomial ``D_{eta, gamma}`` (Thm. 2; eta = 1 geometric, eta = 0
  logarithmic): ``eps'(lambda) = eps(lambda) + (1 + eta) min_{lambda^} [(1 - 1/lambda^)
  eps(lambda^) + log(1/gamma) / lambda^] + log(E K) / (lambda - 1)``.

The per-run curve may be any RDP curve (a ``DpEvent``'s through
``accounting.rdp_of_event``, or a data-dependent one); ``dp_accounting``'s own
``RepeatAndSelectDpEvent`` gives the same numbers for events (tested). Convert with
``accounting.epsilon_from_rdp``.
"""
from __future__ import annotations

import math
from typing import Sequence

from dp_accounting.rdp import rdp_privacy_accountant as _rdp_acc
import numpy as np

from jaxsec import _checks

__all__ = ['poisson_repeat_rdp', 'tnb_mean', 'tnb_repeat_rdp']


def _curve(orders, rdp):
  o = np.asarray(orders, np.float64)
  r = np.asarray(rdp, np.float64)
  if o.ndim != 1 or o.shape != r.shape:
    raise ValueError(f'orders {o.shape} and rdp {r.shape} must be 1-D of equal length.')
  if np.any(o < 1):
    raise ValueError(f'RDP orders must be >= 1; got min {o.min()}.')
  return o, r


Curve = Sequence[float] | np.ndarray


def poisson_repeat_rdp(orders: Curve, rdp: Curve, *, mean: float) -> np.ndarray:
  """RDP of best-of-K runs with K ~ Poisson(``mean``) (Thm. 6); inf at orders <= 1."""
  o, r = _curve(orders, rdp)
  _checks.check_float('mean', mean, minimum=0.0, strict_min=True)
  out = np.full_like(o, np.inf)
  for i, lam in enumerate(o):
    if lam <= 1:
      continue
    delta_hat, _ = _rdp_acc.compute_delta(o.tolist(), r.tolist(), math.log1p(1 / (lam - 1)))
    out[i] = r[i] + mean * delta_hat + math.log(mean) / (lam - 1)
  return out


def tnb_mean(eta: float, gamma: float) -> float:
  """E[K] of the truncated negative binomial ``D_{eta, gamma}`` (paper Def. 1 / Eq. 3)."""
  _checks.check_float('eta', eta, minimum=-1.0, strict_min=True)
  _checks.check_float('gamma', gamma, minimum=0.0, maximum=1.0, strict_min=True)
  if gamma == 1.0:
    return 1.0
  if eta == 0:
    return (1 - gamma) / (gamma * math.log(1 / gamma))
  return eta * (1 - gamma) / (gamma * (1 - gamma ** eta))


def tnb_repeat_rdp(orders: Curve, rdp: Curve, *, eta: float, gamma: float) -> np.ndarray:
  """RDP of best-of-K runs, K ~ truncated negative binomial (Thm. 2), the min over the
  given orders as lambda^; then RDP's monotonicity in the order (as dp_accounting does)."""
  o, r = _curve(orders, rdp)
  mean = tnb_mean(eta, gamma)
  c = (1 + eta) * np.min((1 - 1 / o) * r + math.log(1 / gamma) / o)
  with np.errstate(divide='ignore'):
    out = np.where(o > 1, r + c + math.log(mean) / np.maximum(o - 1, 0.0), np.inf)
  # eps'(lambda) <= eps'(lambda2) for lambda <= lambda2
  return np.array([out[o >= lam].min() for lam in o])
