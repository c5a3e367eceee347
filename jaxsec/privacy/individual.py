"""Individual (per-example) Renyi-DP accounting of DP-SGD from realised gradient norms
(Feldman & Zrnic 2021, "Individual Privacy Accounting via a Renyi Filter").

At a step with clip ``C`` and noise ``sigma C``, example ``i`` whose gradient has norm
``||g_i||`` moves the clipped sum by ``min(||g_i||, C)``: a Gaussian mechanism with the
*effective* noise multiplier ``sigma C / min(||g_i||, C)``; unsampled its RDP is
``alpha min(||g_i||, C)^2 / (2 sigma^2 C^2)``, Poisson-subsampled at rate ``q`` it is the
subsampled Gaussian's (Mironov et al. 2019) at that multiplier (per-step analysis as in Yu
et al. 2023, "Individual Privacy Accounting for DP-SGD"). Every curve here is
``dp_accounting``'s RDP of the event ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma / r))``
with ``r = min(||g_i||, C) / C`` rounded *up* to a grid of ``resolution`` (a valid upper
bound: RDP grows with r); the per-step curves add up over steps (RDP composition).

Formal guarantee, and what it is not: the sum is example ``i``'s RDP only if the norms are
fixed in advance or the run stops using ``i`` once its budget is reached (the Renyi filter,
Feldman & Zrnic Thm. 3.1); a realised curve of an unfiltered run is a *diagnostic* of whom
the run exposed least, not a released guarantee. ``norms[t, i]`` must be the norm at the
step-``t`` parameters for *every* example (sampled or not); an example with norms ``>= C``
throughout gets exactly the standard DP-SGD curve.
"""
from __future__ import annotations

from typing import Sequence

import dp_accounting
import numpy as np

from jaxsec import _checks
from jaxsec.privacy import accounting

__all__ = ['individual_rdp', 'individual_epsilon']


def _step_rdp(ratio: float, noise_multiplier: float, q: float, orders) -> np.ndarray:
  if ratio <= 0.0:
    return np.zeros(len(orders))
  gauss = dp_accounting.GaussianDpEvent(noise_multiplier / ratio)
  event = gauss if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, gauss)
  return accounting.rdp_of_event(event, orders)


def individual_rdp(norms, *, l2_norm_clip: float, noise_multiplier: float,
                   sampling_probability: float = 1.0,
                   orders: Sequence[float] = accounting.DEFAULT_ORDERS,
                   resolution: float = 1e-3) -> np.ndarray:
  """Per-example RDP ``[N, len(orders)]`` of DP-SGD steps with realised ``norms [T, N]``.

  Args:
    norms: ``[T, N]`` per-example gradient norms (before clipping) at each step.
    l2_norm_clip, noise_multiplier: C and sigma of the run (fixed clipping).
    sampling_probability: Poisson rate q (1: every example in every step).
    orders: RDP orders.
    resolution: grid of ``min(norm, C) / C``, rounded up (1 / resolution dp_accounting
      curves at most).
  """
  n = np.asarray(norms, np.float64)
  if n.ndim != 2:
    raise ValueError(f'norms must be [steps, examples]; got shape {n.shape}.')
  if not np.all(np.isfinite(n)) or np.any(n < 0):
    raise ValueError('norms must be finite and non-negative.')
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0, strict_min=True)
  _checks.check_float('sampling_probability', sampling_probability, minimum=0.0,
                      maximum=1.0, strict_min=True)
  _checks.check_float('resolution', resolution, minimum=0.0, maximum=1.0, strict_min=True)
  orders = [float(o) for o in orders]
  cells = int(np.ceil(1.0 / resolution - 1e-9))
  grid = np.minimum(np.ceil(np.minimum(n / l2_norm_clip, 1.0) * cells), cells)
  grid = grid.astype(np.int64)                       # r rounded up to k / cells
  used, idx = np.unique(grid, return_inverse=True)
  table = np.stack([_step_rdp(k / cells, noise_multiplier, sampling_probability, orders)
                    for k in used])                  # [U, A]
  idx = idx.reshape(grid.shape)
  counts = np.zeros((n.shape[1], len(used)))
  for t in range(n.shape[0]):
    np.add.at(counts, (np.arange(n.shape[1]), idx[t]), 1.0)
  return counts @ table


def individual_epsilon(rdp, delta: float,
                       orders: Sequence[float] = accounting.DEFAULT_ORDERS) -> np.ndarray:
  """``[N]`` epsilons at ``delta`` of per-example RDP curves ``[N, len(orders)]``
  (``accounting.epsilon_from_rdp``); 0 for an example that never moved the output."""
  r = np.asarray(rdp, np.float64)
  if r.ndim != 2 or r.shape[1] != len(orders):
    raise ValueError(f'rdp must be [examples, {len(orders)}]; got shape {r.shape}.')
  return np.array([0.0 if not np.any(row) else accounting.epsilon_from_rdp(
      orders, row, delta)[0] for row in r])
