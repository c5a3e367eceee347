"""Privacy accounting through Google's ``dp_accounting`` (RDP and PLD), and calibration.

Nothing here composes privacy by hand: every epsilon is what a ``dp_accounting``
accountant returns for a ``DpEvent``, and every calibrated noise multiplier is
``dp_accounting.calibrate_dp_mechanism`` run on the same event constructor, so that
accounting and calibration cannot disagree.

The DP-SGD events are built by the samplers in :mod:`jaxsec.privacy.sampling` (the sampler
that draws the batches is the one that names the event), see there.

>>> import dp_accounting
>>> ev = dp_accounting.SelfComposedDpEvent(
...     dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.0)), 1000)
>>> round(epsilon(ev, 1e-5, accountant='rdp'), 2) > 0
True
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import dp_accounting
from dp_accounting import pld as _pld
from dp_accounting import rdp as _rdp
from dp_accounting.rdp import rdp_privacy_accountant as _rdp_acc
import numpy as np

from jaxsec import _checks

NeighboringRelation = dp_accounting.NeighboringRelation
ACCOUNTANTS = ('pld', 'rdp')

#: PLD discretisation used by default (dp_accounting's default is 1e-4; the estimate is
#: pessimistic, i.e. an upper bound on the true epsilon, at any discretisation).
PLD_DISCRETIZATION = 1e-4


def make_accountant(accountant: str = 'pld', *,
                    neighboring_relation: NeighboringRelation = (
                        NeighboringRelation.ADD_OR_REMOVE_ONE),
                    pld_discretization: float = PLD_DISCRETIZATION,
                    rdp_orders: Sequence[float] | None = None,
                    ) -> dp_accounting.PrivacyAccountant:
  """A fresh ``dp_accounting`` accountant: ``'pld'`` (tight) or ``'rdp'`` (Renyi DP)."""
  _checks.check_choice('accountant', accountant, ACCOUNTANTS)
  if accountant == 'pld':
    _checks.check_float('pld_discretization', pld_discretization, minimum=0.0,
                        strict_min=True)
    return _pld.PLDAccountant(neighboring_relation,
                              value_discretization_interval=pld_discretization)
  return _rdp.RdpAccountant(orders=rdp_orders, neighboring_relation=neighboring_relation)


def _check_delta(delta):
  _checks.check_float('delta', delta, minimum=0.0, maximum=1.0, strict_max=True)


def epsilon(event: dp_accounting.DpEvent, delta: float, *, accountant: str = 'pld',
            neighboring_relation: NeighboringRelation = (
                NeighboringRelation.ADD_OR_REMOVE_ONE),
            **accountant_kwargs) -> float:
  """The epsilon at ``delta`` of ``event``, from a fresh ``dp_accounting`` accountant.

  Raises ``ValueError`` when the accountant does not support the event (for example
  ``SampledWithoutReplacementDpEvent`` under PLD, or ``TruncatedSubsampledGaussianDpEvent``
  under RDP) instead of returning a wrong number.
  """
  _check_delta(delta)
  acc = make_accountant(accountant, neighboring_relation=neighboring_relation,
                        **accountant_kwargs)
  if not acc.supports(event):
    raise ValueError(f'accountant={accountant!r} with neighboring_relation='
                     f'{neighboring_relation.name} does not support the event {event}.')
  acc.compose(event)
  return float(acc.get_epsilon(delta))


def delta_for_epsilon(event: dp_accounting.DpEvent, eps: float, *, accountant: str = 'pld',
                      neighboring_relation: NeighboringRelation = (
                          NeighboringRelation.ADD_OR_REMOVE_ONE)) -> float:
  """The delta at ``eps`` of ``event`` (inverse view of :func:`epsilon`)."""
  _checks.check_float('eps', eps, minimum=0.0)
  acc = make_accountant(accountant, neighboring_relation=neighboring_relation)
  if not acc.supports(event):
    raise ValueError(f'accountant={accountant!r} does not support the event {event}.')
  acc.compose(event)
  return float(acc.get_delta(eps))


def calibrate(make_event: Callable[[float], dp_accounting.DpEvent], target_epsilon: float,
              delta: float, *, accountant: str = 'pld',
              neighboring_relation: NeighboringRelation = (
                  NeighboringRelation.ADD_OR_REMOVE_ONE),
              lower: float = 0.0, guess: float = 1.0, tol: float = 1e-4) -> float:
  """Smallest parameter (e.g. noise multiplier) whose event meets ``(target_epsilon, delta)``.

  A thin wrapper around ``dp_accounting.calibrate_dp_mechanism`` (Brent's method on the
  accountant's epsilon). ``make_event`` must be decreasing in privacy loss as its argument
  grows (true for a noise multiplier). The returned value is rounded *up* by ``tol`` so
  that the event it makes never exceeds the target.
  """
  _checks.check_float('target_epsilon', target_epsilon, minimum=0.0, strict_min=True)
  _check_delta(delta)
  _checks.check_float('tol', tol, minimum=0.0, strict_min=True)
  make_acc = lambda: make_accountant(accountant, neighboring_relation=neighboring_relation)
  probe = make_acc()
  if not probe.supports(make_event(guess)):
    raise ValueError(f'accountant={accountant!r} does not support the event '
                     f'{make_event(guess)}.')

  def eps_at(v):
    acc = make_acc()
    acc.compose(make_event(v))
    return acc.get_epsilon(delta)

  # Explicit bracket by doubling / halving from the guess (dp_accounting's own search
  # starts at the lower endpoint, where a PLD of a tiny noise multiplier is huge).
  lo, hi = guess, guess
  if eps_at(guess) > target_epsilon:
    while eps_at(hi) > target_epsilon:
      lo, hi = hi, hi * 2.0
      if hi > 1e6:
        raise ValueError(f'target_epsilon={target_epsilon} needs a parameter > 1e6.')
  else:
    while eps_at(lo) <= target_epsilon:
      hi, lo = lo, lo / 2.0
      if lo < max(lower, 1e-2):
        raise ValueError(f'target_epsilon={target_epsilon} is met by parameters below '
                         f'{max(lower, 1e-2)}; it is too large to calibrate here.')
  value = dp_accounting.calibrate_dp_mechanism(
      make_acc, make_event, target_epsilon, delta,
      bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi), tol=tol)
  # Brent returns a point within tol of the optimum, possibly on the wrong side: step up
  # until the guarantee holds (at most a couple of steps).
  for _ in range(100):
    acc = make_acc()
    acc.compose(make_event(value))
    if acc.get_epsilon(delta) <= target_epsilon:
      return float(value)
    value += tol
  raise RuntimeError('calibration did not converge; this is a bug.')


def epsilon_from_rdp(orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray,
                     delta: float
                     ) -> tuple[float, float]:
  """``(epsilon, optimal order)`` of an RDP curve, by ``dp_accounting``'s conversion.

  Used for data-dependent RDP curves (PATE) that are not a ``DpEvent``; the conversion is
  ``dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon`` (the improved conversion of
  Balle et al. 2020 / Asoodeh et al.), never a hand-written one.
  """
  _check_delta(delta)
  o = np.asarray(orders, dtype=np.float64)
  r = np.asarray(rdp, dtype=np.float64)
  if o.shape != r.shape or o.ndim != 1:
    raise ValueError(f'orders {o.shape} and rdp {r.shape} must be 1-D of equal length.')
  eps, order = _rdp_acc.compute_epsilon(o.tolist(), r.tolist(), delta)
  return float(eps), float(order)


def rdp_of_event(event: dp_accounting.DpEvent, orders: Sequence[float] | np.ndarray
                 ) -> np.ndarray:
  """The RDP curve of ``event`` at ``orders`` from ``dp_accounting``'s RDP accountant."""
  acc = _rdp.RdpAccountant(orders=list(orders))
  if not acc.supports(event):
    raise ValueError(f'the RDP accountant does not support the event {event}.')
  acc.compose(event)
  return np.asarray(acc._rdp, dtype=np.float64)  # pylint: disable=protected-access


DEFAULT_ORDERS = tuple(_rdp_acc.DEFAULT_RDP_ORDERS)


def gaussian_sigma(eps: float, delta: float, sensitivity: float = 1.0) -> float:
  """Std of the Gaussian mechanism for ``(eps, delta)``-DP at l2 ``sensitivity``.

  Exact: the analytic Gaussian mechanism (Balle & Wang 2018), as implemented by
  ``dp_accounting.get_sigma_gaussian``.
  """
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  _check_delta(delta)
  _checks.check_float('sensitivity', sensitivity, minimum=0.0, strict_min=True)
  return float(dp_accounting.get_sigma_gaussian(eps, delta)) * sensitivity


def randomized_response_event(eps: float, num_buckets: int) -> dp_accounting.DpEvent:
  """The ``RandomizedResponseDpEvent`` of k-ary randomized response with keep probability
  ``e^eps / (e^eps + k - 1)``; its ``noise_parameter`` is ``k / (e^eps + k - 1)``."""
  _checks.check_float('eps', eps, minimum=0.0)
  _checks.check_int('num_buckets', num_buckets, minimum=2)
  return dp_accounting.RandomizedResponseDpEvent(
      noise_parameter=num_buckets / (math.exp(eps) + num_buckets - 1),
      num_buckets=num_buckets)
