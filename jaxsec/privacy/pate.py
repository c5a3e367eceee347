"""PATE: Private Aggregation of Teacher Ensembles (Papernot et al. 2017, 2018).

Teachers are trained on *disjoint* partitions of the private data (:func:`train_teachers`,
one ``jaxsec.train.fit_many`` program); each public query gets a noisy plurality vote; the
released student is trained on answered queries only. One private example changes one
teacher, so the vote histogram moves by 1 in two bins (l1 = 2, l2 = sqrt 2). Aggregators:
:func:`lnmax` (2017, ``argmax(n + Lap(1/gamma))``, ``2 gamma``-DP per query), :func:`gnmax`
(2018, Gaussian, ``GaussianDpEvent(sigma / sqrt 2)``), :func:`confident_gnmax` (2018 Alg. 1:
answer iff ``max n + N(0, sigma1^2) >= T``, at most ``max_answers`` answers fixed in advance).

:func:`analyze` reports: the *data-independent* epsilon (the DP guarantee of the student),
where Confident-GNMax pays the check for every query and GNMax for the cap, never for the
realised answers (a Renyi filter, Feldman & Zrnic 2021, Thm. 3.1). Deviation: the official
``rdp_cumulative.py`` weights GNMax by each query's answer probability, which depends on the
votes (an expectation, not a guarantee); not offered. The *data-dependent* epsilon (2018 Thm.
6 / Prop. 10; LNMax: 2017 Lemma 4), with ``q`` from 2018 Prop. 7 capped at ``1 - 1/K``, is
**not** itself DP; the threshold check is always accounted data-independently. The *sanitised*
epsilon (``smooth_sensitivity=True``; 2018 App. B, Thm. 23, as the official
``smooth_sensitivity.py``): local sensitivities by Algorithms 3-5, smooth sensitivity by
:func:`smooth_sensitivity_gnmax`, release ``rdp + SS N(0, sigma_ss^2)`` plus its cost
(:class:`SanitisedEpsilon`). Deviations from the official code: ``q0`` is where the accounted
:func:`gnmax_rdp_at_order` meets ``lambda / sigma^2`` (not a bracketing point); conditions
C5-C6 are checked numerically at every order and, where they fail, the trivial local
sensitivity ``lambda / sigma^2`` is used instead of stopping. The order, beta and ``sigma_ss``
are chosen by default, as in the official scripts, on the private votes; fix them in advance
for a release that is DP in the strict sense.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from jaxsec import _checks
from jaxsec.privacy import accounting

ORDERS = np.concatenate([np.linspace(1.01, 10, 100), np.arange(11, 100, 1.0),
                         np.logspace(2, 4, 40)])


# ------------------------------------------------------------------ votes and aggregation

def vote_histogram(teacher_labels: jax.Array, num_classes: int) -> jax.Array:
  """``[T, Q]`` teacher predictions -> ``[Q, K]`` vote counts (float32)."""
  _checks.check_array('teacher_labels', teacher_labels, ndim=2, dtype_kind='i')
  _checks.check_int('num_classes', num_classes, minimum=2)
  return jnp.sum(jax.nn.one_hot(teacher_labels, num_classes, dtype=jnp.float32), axis=0)


def _check_votes(votes):
  _checks.check_array('votes', votes, ndim=2)
  if _checks.is_concrete(votes) and votes.size and float(jnp.min(votes)) < 0:
    raise ValueError('votes must be non-negative counts.')


def lnmax(votes: jax.Array, key: jax.Array, *, gamma: float) -> jax.Array:
  """Laplacian noisy max (PATE 2017): ``argmax_j n_j + Lap(1 / gamma)``; 2 gamma-DP/query."""
  _check_votes(votes)
  _checks.check_float('gamma', gamma, minimum=0.0, strict_min=True)
  noise = jax.random.laplace(key, votes.shape) / gamma
  return jnp.argmax(votes + noise, axis=-1).astype(jnp.int32)


def gnmax(votes: jax.Array, key: jax.Array, *, sigma: float) -> jax.Array:
  """Gaussian noisy max (PATE 2018): ``argmax_j n_j + N(0, sigma^2)``."""
  _check_votes(votes)
  _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
  return jnp.argmax(votes + sigma * jax.random.normal(key, votes.shape), axis=-1
                    ).astype(jnp.int32)


class ConfidentAnswers(NamedTuple):
  labels: jax.Array    # [Q] int32, -1 where not answered
  answered: jax.Array  # [Q] bool


def confident_gnmax(votes: jax.Array, key: jax.Array, *, threshold: float, sigma1: float,
                    sigma2: float, max_answers: int | None = None) -> ConfidentAnswers:
  """Confident-GNMax (PATE 2018, Alg. 1): answer only when the noisy max clears T.

  Queries are taken in order; once ``max_answers`` of them have been answered, the rest
  abstain (label -1) whatever their check. The cap must be fixed before seeing the votes
  and passed to :func:`analyze` too: the data-independent epsilon is charged for it.
  ``None``: no cap (then :func:`analyze` charges GNMax for every query).
  """
  _check_votes(votes)
  _checks.check_float('threshold', threshold)
  _checks.check_float('sigma1', sigma1, minimum=0.0, strict_min=True)
  if max_answers is not None:
    max_answers = _checks.check_int('max_answers', max_answers, minimum=0)
  k1, k2 = jax.random.split(key)
  check = jnp.max(votes, -1) + sigma1 * jax.random.normal(k1, votes.shape[:1])
  answered = check >= threshold
  if max_answers is not None:
    answered = answered & (jnp.cumsum(answered.astype(jnp.int32)) <= max_answers)
  labels = gnmax(votes, k2, sigma=sigma2)
  return ConfidentAnswers(jnp.where(answered, labels, -1), answered)


# ------------------------------------------------------------------ privacy analysis

def gnmax_logq(votes: np.ndarray, sigma: float) -> np.ndarray:
  """log of PATE 2018 Prop. 7's bound on ``P[GNMax(n) != argmax n]`` per query [Q]."""
  votes = np.asarray(votes, np.float64)
  top = votes.max(-1, keepdims=True)
  gaps = top - votes
  istar = votes.argmax(-1)
  # exclude the plurality class itself
  logsf = stats.norm.logsf(gaps, scale=math.sqrt(2.0) * sigma)
  logsf[np.arange(votes.shape[0]), istar] = -np.inf
  logq = special.logsumexp(logsf, axis=-1)
  return np.minimum(logq, math.log1p(-1.0 / votes.shape[-1]))


def lnmax_logq(votes: np.ndarray, gamma: float) -> np.ndarray:
  """log of PATE 2017 Lemma 4's bound: ``sum_{j != i*} (2 + g d_j) / (4 exp(g d_j))``."""
  votes = np.asarray(votes, np.float64)
  gaps = votes.max(-1, keepdims=True) - votes
  istar = votes.argmax(-1)
  terms = np.log(2.0 + gamma * gaps) - math.log(4.0) - gamma * gaps
  terms[np.arange(votes.shape[0]), istar] = -np.inf
  logq = special.logsumexp(terms, axis=-1)
  return np.minimum(logq, math.log1p(-1.0 / votes.shape[-1]))


def _log1mexp(x):
  """log(1 - exp(x)) for x < 0."""
  x = np.asarray(x, np.float64)
  return np.where(x < -0.693, np.log1p(-np.exp(x)), np.log(-np.expm1(x)))


def theorem6_rdp(logq: float, orders: np.ndarray, mu1: float, eps1: float, mu2: float,
                 eps2: float) -> np.ndarray:
  """PATE 2018 Thm. 6: data-dependent RDP at ``orders`` (inf where it does not apply).

  ``M`` is (mu1, eps1)- and (mu2, eps2)-RDP, and ``q >= P[M(D) != i*]``. For
  ``lambda <= mu1`` and ``q <= e^{(mu2-1) eps2} / (mu1/(mu1-1) * mu2/(mu2-1))^mu2``:
  ``D_lambda <= log((1-q) A^{lambda-1} + q B^{lambda-1}) / (lambda-1)`` with
  ``A = (1-q) / (1 - (q e^{eps2})^{(mu2-1)/mu2})`` and ``B = e^{eps1} / q^{1/(mu1-1)}``.
  """
  orders = np.asarray(orders, np.float64)
  out = np.full(orders.shape, np.inf)
  if np.isneginf(logq):
    return np.zeros_like(orders)
  if not (mu1 > 1 and mu2 > 1):
    return out
  cond = logq <= (mu2 - 1) * eps2 - mu2 * (math.log(mu1 / (mu1 - 1)) +
                                           math.log(mu2 / (mu2 - 1)))
  if not cond or -logq <= eps2:   # need q e^{eps2} < 1 for A > 0
    return out
  log1q = float(_log1mexp(logq))
  log_a = log1q - float(_log1mexp((logq + eps2) * (1 - 1 / mu2)))
  log_b = eps1 - logq / (mu1 - 1)
  ok = orders <= mu1
  lam = orders[ok]
  log_s = np.logaddexp(log1q + (lam - 1) * log_a, logq + (lam - 1) * log_b)
  out[ok] = log_s / (lam - 1)
  return out


def gnmax_rdp_data_dependent(logq: float, sigma: float, orders: np.ndarray) -> np.ndarray:
  """Thm. 6 with Prop. 10's orders ``mu2 = sigma sqrt(log 1/q)``, ``mu1 = mu2 + 1``,
  and ``eps_i = mu_i / sigma^2``; never above the data-independent ``lambda / sigma^2``."""
  orders = np.asarray(orders, np.float64)
  base = orders / sigma ** 2
  if np.isneginf(logq):
    return np.zeros_like(orders)
  mu2 = sigma * math.sqrt(-logq)
  mu1 = mu2 + 1
  dd = theorem6_rdp(logq, orders, mu1, mu1 / sigma ** 2, mu2, mu2 / sigma ** 2)
  return np.minimum(base, dd)


def lnmax_rdp_data_independent(gamma: float, orders: np.ndarray) -> np.ndarray:
  """A pure eps-DP mechanism (eps = 2 gamma) has RDP <= min(eps, lambda eps^2 / 2)
  (D_lambda <= D_inf; Bun & Steinke 2016, Prop. 3.3)."""
  e = 2.0 * gamma
  return np.minimum(e, np.asarray(orders, np.float64) * e * e / 2.0)


def lnmax_rdp_data_dependent(logq: float, gamma: float, orders: np.ndarray) -> np.ndarray:
  """Thm. 6 for LNMax, minimised over a grid of (mu2, mu1 = mu2 + 1)."""
  orders = np.asarray(orders, np.float64)
  base = lnmax_rdp_data_independent(gamma, orders)
  if np.isneginf(logq):
    return np.zeros_like(orders)
  best = base.copy()
  for mu2 in np.logspace(0.01, 3, 60):
    mu1 = mu2 + 1
    e1, e2 = lnmax_rdp_data_independent(gamma, np.array([mu1, mu2]))
    best = np.minimum(best, theorem6_rdp(logq, orders, mu1, e1, mu2, e2))
  return best


# ------------------------------------------------------------------ smooth sensitivity

#: beta = SS_BETA_TIMES_ORDER / order: the official PATE 2018 analysis scripts' choice
#: (Thm. 23 needs beta < 1 / (2 order); the closer to it, the smaller the smooth sensitivity).
SS_BETA_TIMES_ORDER = 0.49


def gnmax_rdp_at_order(logq: Any, sigma: float, order: float) -> np.ndarray:
  """:func:`gnmax_rdp_data_dependent` at one order, vectorised over ``logq`` (any shape).

  This is the function ``beta_sigma(q)`` whose sensitivity App. B of PATE 2018 bounds:
  ``min(lambda / sigma^2, Thm. 6 bound)`` where Thm. 6 applies (``mu1 >= lambda``, the
  Lemma 9 condition on ``q``, ``q e^{eps2} < 1``), else ``lambda / sigma^2``; 0 at q = 0.
  """
  logq = np.asarray(logq, np.float64)
  base = order / sigma ** 2
  out = np.full(logq.shape, base)
  finite = np.isfinite(logq)
  out[np.isneginf(logq)] = 0.0
  lq = np.where(finite, np.minimum(logq, -1e-300), -1.0)   # placeholder where not finite
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    mu2 = sigma * np.sqrt(-lq)
    mu1 = mu2 + 1
    e1, e2 = mu1 / sigma ** 2, mu2 / sigma ** 2
    cond = lq <= (mu2 - 1) * e2 - mu2 * (np.log(mu1 / (mu1 - 1)) + np.log(mu2 / (mu2 - 1)))
    valid = finite & (mu1 > 1) & (mu2 > 1) & (order <= mu1) & cond & (-lq > e2)
    lqv, mu1v, mu2v, e1v, e2v = (a[valid] for a in (lq, mu1, mu2, e1, e2))
    log1q = _log1mexp(lqv)
    log_a = log1q - _log1mexp((lqv + e2v) * (1 - 1 / mu2v))
    log_b = e1v - lqv / (mu1v - 1)
    dd = np.logaddexp(log1q + (order - 1) * log_a, lqv + (order - 1) * log_b) / (order - 1)
  out[valid] = np.minimum(base, dd)
  return out


def gnmax_logq_neighbour_range(logq: Any, *, sigma: float, num_classes: int
                               ) -> tuple[np.ndarray, np.ndarray]:
  """``(log B_L(q), log B_U(q))``: PATE 2018 App. B's range of Prop. 7's ``q`` on neighbours.

  ``q = sum_{j != i*} erfc(gap_j / (2 sigma)) / 2``; one teacher changing its vote moves
  every gap by at most 2, so (Prop. 13) a neighbour's ``q'`` lies in
  ``[B_L(q), B_U(q)]``, ``B_{U/L}(q) = (m-1)/2 erfc(erfcinv(2q/(m-1)) -/+ 1/sigma)``
  (``B_U`` capped at 1). Computed in log space (``erfc(x) = 2 sf(sqrt 2 x)``).
  """
  logq = np.asarray(logq, np.float64)
  lm = math.log(num_classes - 1)
  z = -special.ndtri_exp(np.minimum(logq - lm, 0.0))    # sf(z) = q / (m - 1)
  shift = math.sqrt(2.0) / sigma
  lo = lm + stats.norm.logsf(z + shift)
  hi = np.minimum(lm + stats.norm.logsf(z - shift), 0.0)
  return lo, hi


class GnmaxSSRegime(NamedTuple):
  """Where App. B's Algorithms 3-5 switch regime, at one (sigma, order, classes, teachers).

  ``logq0``: above it GNMax's data-dependent RDP equals the data-independent
  ``lambda / sigma^2``; ``logq1 = log B_L(q0)``; ``plateau``: the largest local-sensitivity
  bound, reached on ``[q1, q0]``; ``conditions_hold``: whether C5 (``beta(q)``
  non-decreasing) and C6 (``beta(B_U(q)) - beta(q)`` non-decreasing on ``(0, q1]``), on
  which Algorithms 3-5 rest, were verified numerically; ``always_data_independent``: even
  a unanimous vote gets ``lambda / sigma^2`` (the RDP is constant, sensitivity 0).
  """
  logq0: float
  logq1: float
  plateau: float
  conditions_hold: bool
  always_data_independent: bool


def _unanimous_logq(sigma, num_classes, num_teachers):
  v = np.zeros((1, num_classes))
  v[0, 0] = num_teachers
  return float(gnmax_logq(v, sigma)[0])


def gnmax_ss_regime(*, sigma: float, order: float, num_classes: int, num_teachers: int,
                    grid_size: int = 4000) -> GnmaxSSRegime:
  """``q0``, ``q1``, the plateau and a numerical check of C5-C6 (PATE 2018 App. B).

  ``q0 = sup {q : beta(q) < lambda / sigma^2}`` is found by bisection (the official code
  brackets the same crossing with Brent's method); C5 and C6 are checked on a dense grid
  of ``log q`` from below the unanimous vote's ``q`` (the smallest ``q`` any histogram of
  ``num_teachers`` votes has) up to 1, as the official ``check_conditions`` checks the
  sign of the derivatives numerically. When they fail, callers fall back on the trivial
  local sensitivity ``lambda / sigma^2`` (``0 <= beta <= lambda / sigma^2``).
  """
  _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
  _checks.check_float('order', order, minimum=1.0, strict_min=True)
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_int('num_teachers', num_teachers, minimum=1)
  base = order / sigma ** 2
  beta = lambda lq: gnmax_rdp_at_order(lq, sigma, order)
  lq_unan = _unanimous_logq(sigma, num_classes, num_teachers)
  if beta(np.array([lq_unan]))[0] >= base:
    return GnmaxSSRegime(lq_unan, lq_unan, 0.0, True, True)
  # q of every histogram with num_teachers votes is >= q_unan, and Alg. 3 looks down to
  # B_L(q): the conditions are needed on [B_L(q_unan), 1). Grid in -log q, geometric.
  lo_ext = float(gnmax_logq_neighbour_range(lq_unan, sigma=sigma,
                                            num_classes=num_classes)[0])
  grid = -np.geomspace(-lo_ext, 1e-8, grid_size)
  b = beta(grid)
  below = np.nonzero(b < base)[0]
  if not below.size:                 # not resolved by the grid: do not rely on Alg. 3-5
    return GnmaxSSRegime(lq_unan, lq_unan, base, False, False)
  i = below[-1]                      # last grid point with a data-dependent bound
  single = np.all(b[:i + 1] < base) and np.all(b[i + 1:] >= base)
  lo, hi = grid[i], grid[i + 1] if i + 1 < grid.size else 0.0
  for _ in range(200):               # bisection on the predicate beta < base
    mid = 0.5 * (lo + hi)
    if beta(np.array([mid]))[0] < base:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-13 * max(1.0, abs(lo)):
      break
  logq0 = hi
  logq1 = float(gnmax_logq_neighbour_range(logq0, sigma=sigma, num_classes=num_classes)[0])
  # C5: beta non-decreasing in q everywhere on the grid.
  tol = 1e-12 * base
  c5 = bool(np.all(np.diff(b) >= -tol))
  # C6: beta(B_U(q)) - beta(q) non-decreasing on (0, q1].
  g6 = np.concatenate([grid[grid < logq1], [logq1]])
  delta_u = beta(gnmax_logq_neighbour_range(g6, sigma=sigma, num_classes=num_classes)[1]
                 ) - beta(g6)
  c6 = bool(np.all(np.diff(delta_u) >= -tol))
  b1 = float(beta(np.array([logq1]))[0])
  plateau = max(float(_ls_alg3(np.array([logq1]), sigma, order, num_classes, logq0,
                               logq1)[0]), base - b1)
  return GnmaxSSRegime(float(logq0), logq1, plateau, bool(single and c5 and c6), False)


def _ls_alg3(logq, sigma, order, num_classes, logq0, logq1):
  logq = np.where((logq >= logq1) & (logq <= logq0), logq1, logq)
  lo, hi = gnmax_logq_neighbour_range(logq, sigma=sigma, num_classes=num_classes)
  b = gnmax_rdp_at_order(logq, sigma, order)
  return np.maximum(gnmax_rdp_at_order(hi, sigma, order) - b,
                    b - gnmax_rdp_at_order(lo, sigma, order))


def gnmax_local_sensitivity(logq: Any, *, sigma: float, order: float, num_classes: int,
                            num_teachers: int) -> np.ndarray:
  """PATE 2018 Alg. 3: a bound on the local sensitivity of ``beta_sigma(q)`` at order
  ``order``, i.e. on ``max_{n' ~ n} |beta(q(n')) - beta(q(n))|`` over the histograms ``n'``
  one changed teacher vote away (Prop. 13, under C5-C6; ``lambda / sigma^2`` where they
  fail). ``q`` in ``[q1, q0]`` is moved to ``q1``, where the bound is largest."""
  r = gnmax_ss_regime(sigma=sigma, order=order, num_classes=num_classes,
                      num_teachers=num_teachers)
  logq = np.asarray(logq, np.float64)
  if r.always_data_independent:
    return np.zeros(logq.shape)
  if not r.conditions_hold:
    return np.full(logq.shape, order / sigma ** 2)
  return _ls_alg3(logq, sigma, order, num_classes, r.logq0, r.logq1)


class _Walks(NamedTuple):
  right: np.ndarray      # [Q, T] log q after d votes moved from the top to the runner-up
  left: np.ndarray       # [Q, T] log q after d votes moved from the runner-up to the top
  can_left: np.ndarray   # [Q, T] the runner-up still has a vote to give


def _gnmax_walks(votes, sigma, num_teachers):
  """Algorithms 4-5's greedy walks, for all queries at once (independent of the order)."""
  v = -np.sort(-np.asarray(votes, np.float64), axis=1)
  q, t = v.shape[0], num_teachers
  right, left = np.empty((q, t)), np.empty((q, t))
  can_left = np.empty((q, t), bool)
  vr, vl = v.copy(), v.copy()
  for d in range(t):
    right[:, d] = gnmax_logq(vr, sigma)
    left[:, d] = gnmax_logq(vl, sigma)
    can = vl[:, 1] > 0
    can_left[:, d] = can
    # going right: q grows fastest when a top vote goes to the runner-up
    vr[:, 0] -= 1
    vr[:, 1] += 1
    # going left: q shrinks fastest when the runner-up's vote goes to the top
    vl[can, 0] += 1
    vl[can, 1] -= 1
    vl = -np.sort(-vl, axis=1)
  return _Walks(right, left, can_left)


def _ls_by_distance(walks, sigma, order, num_classes, regime):
  """[Q, T] bounds on the local sensitivity at distance d (Algorithms 4-5), per query."""
  q, t = walks.right.shape
  base = order / sigma ** 2
  if regime.always_data_independent:
    return np.zeros((q, t))
  if not regime.conditions_hold:
    return np.full((q, t), base)
  start = walks.right[:, 0]
  go_left = start > regime.logq0
  band = (start >= regime.logq1) & ~go_left
  path = np.where(go_left[:, None], walks.left, walks.right)
  cont = np.where(go_left[:, None], (walks.left > regime.logq0) & walks.can_left,
                  walks.right < regime.logq1)
  computed = np.concatenate([np.ones((q, 1), bool),
                             np.logical_and.accumulate(cont[:, :-1], axis=1)], axis=1)
  computed[band] = False
  ls = np.full((q, t), regime.plateau)
  ls[computed] = _ls_alg3(path[computed], sigma, order, num_classes, regime.logq0,
                          regime.logq1)
  return ls


def _check_ss_votes(votes, num_teachers):
  votes = np.asarray(votes, np.float64)
  if votes.ndim == 1:
    votes = votes[None]
  if votes.ndim != 2 or votes.shape[1] < 2:
    raise ValueError(f'votes has shape {votes.shape}; expected [queries, classes >= 2].')
  if votes.size and (not np.all(np.isfinite(votes)) or votes.min() < 0):
    raise ValueError('votes must be finite non-negative counts.')
  most = int(math.ceil(votes.sum(1).max())) if votes.shape[0] else 1
  if num_teachers is None:
    num_teachers = max(most, 1)
  _checks.check_int('num_teachers', num_teachers, minimum=max(most, 1))
  return votes, num_teachers


def gnmax_local_sensitivity_by_distance(votes: Any, *, sigma: float, order: float,
                                        num_teachers: int | None = None) -> np.ndarray:
  """``[Q, T]``: for each query, a bound on ``A(d) = max`` local sensitivity of its
  data-dependent RDP at ``order`` over all histograms ``d`` teacher votes away,
  ``d = 0 .. T-1`` (PATE 2018 App. B, Algorithms 4-5, as the official
  ``compute_local_sensitivity_bounds_gnmax``).

  Algorithm 3's bound is increasing in ``q`` below ``q1``, maximal on ``[q1, q0]`` and
  decreasing above ``q0``, so the worst histogram within distance ``d`` is the one whose
  ``q`` is closest to that plateau: the walk moves one vote per step from the top class to
  the runner-up (``q`` below ``q1``) or from the runner-up to the top (``q`` above ``q0``),
  and every distance past the plateau gets the plateau value. ``votes`` is ``[Q, K]``
  (or ``[K]``); ``num_teachers`` defaults to the largest row sum.
  """
  _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
  _checks.check_float('order', order, minimum=1.0, strict_min=True)
  votes, num_teachers = _check_ss_votes(votes, num_teachers)
  regime = gnmax_ss_regime(sigma=sigma, order=order, num_classes=votes.shape[1],
                           num_teachers=num_teachers)
  return _ls_by_distance(_gnmax_walks(votes, sigma, num_teachers), sigma, order,
                         votes.shape[1], regime)


def discounted_max(local_sensitivity: Any, beta: float) -> float:
  """``max_d exp(-beta d) A(d)``: the beta-smooth sensitivity (Nissim et al. 2007) from
  ``A(d)``, the local sensitivity bound at distance ``d = 0, 1, ...``."""
  a = np.asarray(local_sensitivity, np.float64)
  _checks.check_float('beta', beta, minimum=0.0)
  if a.ndim != 1 or not a.size:
    raise ValueError(f'local_sensitivity has shape {a.shape}; expected [distances].')
  return float(np.max(a * np.exp(-beta * np.arange(a.size))))


def _check_beta_order(beta, order):
  _checks.check_float('order', order, minimum=1.0, strict_min=True)
  _checks.check_float('beta', beta, minimum=0.0)
  if beta > 0 and not order < 1 / (2 * beta):
    raise ValueError(f'beta={beta} needs order < 1 / (2 beta) = {1 / (2 * beta)}; '
                     f'got order={order}.')


def smooth_sensitivity_gnmax(votes: Any, *, sigma: float, order: float,
                             beta: float | None = None,
                             num_teachers: int | None = None) -> float:
  """beta-smooth sensitivity of GNMax's data-dependent RDP at ``order``, summed over the
  queries ``votes`` [Q, K] (PATE 2018 App. B; the official
  ``compute_smooth_sensitivity_gnmax``, here for the sum as its analysis scripts use it).

  A neighbouring dataset changes one teacher, which may change its vote on every query,
  so the local sensitivity at distance ``d`` of ``sum_i beta(q_i)`` is at most the sum of
  the per-query bounds; the smooth sensitivity is ``max_d exp(-beta d) sum_i A_i(d)``.
  ``beta`` defaults to ``0.49 / order``.
  """
  if beta is None:
    beta = SS_BETA_TIMES_ORDER / order
  _check_beta_order(beta, order)
  ls = gnmax_local_sensitivity_by_distance(votes, sigma=sigma, order=order,
                                           num_teachers=num_teachers)
  return discounted_max(ls.sum(0), beta)


def gnss_rdp(*, beta: float, sigma_ss: float, order: float) -> float:
  """RDP at ``order`` of releasing ``f(D) + SS_beta(D) N(0, sigma_ss^2)`` (GNSS mechanism,
  PATE 2018 Thm. 23; the official ``compute_rdp_of_smooth_sensitivity_gaussian``):
  ``lambda e^{2 beta} / sigma_ss^2 + (beta lambda - log(1 - 2 lambda beta) / 2) / (lambda - 1)``
  for ``1 < lambda < 1 / (2 beta)``."""
  _check_beta_order(beta, order)
  _checks.check_float('sigma_ss', sigma_ss, minimum=0.0, strict_min=True, allow_traced=False)
  return float(order * math.exp(2 * beta) / sigma_ss ** 2 +
               (beta * order - 0.5 * math.log1p(-2 * order * beta)) / (order - 1))


def gnss_sigma(*, beta: float, order: float, smooth_sensitivity: float) -> float:
  """The official scripts' noise multiplier ``(lambda e^{2 beta} / SS)^{1/3}``, which
  minimises GNSS's cost ``lambda e^{2 beta} / sigma^2`` plus two noise stds ``2 SS sigma``.
  It depends on the data through ``SS``; fix ``sigma_ss`` in advance for a formal release."""
  _check_beta_order(beta, order)
  _checks.check_float('smooth_sensitivity', smooth_sensitivity, minimum=0.0,
                      strict_min=True)
  return float((order * math.exp(2 * beta) / smooth_sensitivity) ** (1 / 3))


class SanitisedEpsilon(NamedTuple):
  """The data-dependent epsilon released through smooth sensitivity (PATE 2018 App. B).

  The data-dependent RDP at ``order`` is published as ``rdp + SS * N(0, sigma_ss^2)``; the
  whole run (answers + release) is ``rdp + gnss_rdp`` RDP at ``order``. ``epsilon`` is that
  sum converted to (eps, delta) (the expectation of the released figure), ``noise_std``
  the std of the noise on it, ``released`` one draw (when a key was given).
  """
  epsilon: float
  noise_std: float
  order: float
  beta: float
  sigma_ss: float
  smooth_sensitivity: float
  release_rdp: float            # gnss_rdp at `order` (0 when SS = 0: nothing to hide)
  epsilon_before_release: float  # the data-dependent epsilon at `order` alone
  conditions_hold: bool
  released: float | None = None


class PateAccount(NamedTuple):
  epsilon: float                  # data-independent: the DP guarantee
  epsilon_data_dependent: float   # unsanitised data-dependent figure (see module doc)
  delta: float
  num_queries: int
  num_answered: int
  order: float                    # optimal RDP order of the data-dependent bound
  sanitised: SanitisedEpsilon | None = None   # with analyze(..., smooth_sensitivity=True)
  max_answers: int | None = None  # Confident-GNMax: the cap that `epsilon` charges


#: the smoothness parameters searched, as multiples of 1 / order: the official Table 2
#: script's grid (smooth_sensitivity_table.py: beta in [0.3, 0.495) / order, step 0.01).
SS_BETA_GRID = tuple(np.arange(0.30, 0.495, 0.01))


def _sanitise_gnmax(votes, logq, check_rdp, delta, *, sigma, orders, num_teachers, beta,
                    sigma_ss, key, chunk_elements=2_000_000):
  """Smooth-sensitivity release of the data-dependent RDP (see :class:`SanitisedEpsilon`)."""
  num_classes = votes.shape[1]
  cands = []
  for lam, chk in zip(orders, check_rdp, strict=True):
    betas = [b / lam for b in SS_BETA_GRID] if beta is None else [beta]
    betas = [b for b in betas if 1 < lam < (1 / (2 * b) if b > 0 else np.inf)]
    if betas:
      dep = chk + float(np.sum(gnmax_rdp_at_order(logq, sigma, lam)))
      regime = gnmax_ss_regime(sigma=sigma, order=lam, num_classes=num_classes,
                               num_teachers=num_teachers)
      cands.append((lam, betas, dep, regime))
  if not cands:
    raise ValueError(f'ss_beta={beta} leaves no order with 1 < order < 1 / (2 beta).')
  # local sensitivity at distance d, summed over the answered queries, for every order.
  # It depends on a histogram only through its sorted counts: each distinct one is done
  # once and weighted by its multiplicity. The walks do not depend on the order, so they
  # are made once per chunk of histograms.
  uniq, mult = np.unique(-np.sort(-votes, axis=1), axis=0, return_counts=True)
  ls = np.zeros((len(cands), num_teachers))
  step = max(1, chunk_elements // num_teachers)
  for lo in range(0, uniq.shape[0], step):
    walks = _gnmax_walks(uniq[lo:lo + step], sigma, num_teachers)
    for k, (lam, _, _, regime) in enumerate(cands):
      ls[k] += mult[lo:lo + step] @ _ls_by_distance(walks, sigma, lam, num_classes, regime)
  rows = []
  for (lam, betas, dep, regime), ls_k in zip(cands, ls, strict=True):
    for b in betas:
      ss = discounted_max(ls_k, b)
      if ss > 0:
        s = (gnss_sigma(beta=b, order=lam, smooth_sensitivity=ss) if sigma_ss is None
             else sigma_ss)
        cost, noise = gnss_rdp(beta=b, sigma_ss=s, order=lam), ss * s
      else:   # the RDP is the same on every dataset: releasing it costs nothing
        s, cost, noise = math.inf, 0.0, 0.0
      eps, _ = accounting.epsilon_from_rdp([lam], [dep + cost], delta)
      # the official objective: sanitised epsilon plus two stds of the release noise
      rows.append((eps + 2 * noise, eps, lam, b, s, ss, cost, dep, regime.conditions_hold,
                   noise))
  # every candidate order has at least one beta, so rows is not empty; the first minimum wins
  _, eps, lam, b, s, ss, cost, dep, ok, noise = min(rows, key=lambda row: row[0])
  released = None
  if key is not None:
    z = float(jax.random.normal(key, ()))
    released, _ = accounting.epsilon_from_rdp([lam], [max(dep + noise * z + cost, 0.0)],
                                              delta)
  before, _ = accounting.epsilon_from_rdp([lam], [dep], delta)
  return SanitisedEpsilon(float(eps), float(noise), float(lam), float(b), float(s), float(ss),
                          float(cost), float(before), bool(ok), released)


def analyze(votes: Any, *, mechanism: str, delta: float, answered: Any = None,
            gamma: float | None = None, sigma: float | None = None,
            sigma1: float | None = None, max_answers: int | None = None,
            orders: Sequence[float] | np.ndarray = ORDERS,
            smooth_sensitivity: bool = False, ss_beta: float | None = None,
            ss_sigma: float | None = None, ss_order: float | None = None,
            num_teachers: int | None = None, key: jax.Array | None = None) -> PateAccount:
  """Privacy of answering ``votes`` [Q, K] with 'lnmax', 'gnmax' or 'confident_gnmax'.

  Args:
    votes: the teachers' vote histograms of the queries asked.
    mechanism: 'lnmax' (needs ``gamma``), 'gnmax' (``sigma``), 'confident_gnmax'
      (``sigma1`` for the check, ``sigma`` for the answers, ``answered`` mask [Q]).
    delta: target delta.
    max_answers: Confident-GNMax only: the cap on answered queries that
      :func:`confident_gnmax` was run with, fixed in advance. The data-independent
      epsilon charges ``Q`` checks and ``min(max_answers, Q)`` GNMax answers (``Q``
      without a cap), never the realised ``answered.sum()``; more answers than the cap is
      an error. The data-dependent figures are summed over the answered queries.
    smooth_sensitivity: also release the data-dependent epsilon through smooth
      sensitivity (PATE 2018 App. B, Thm. 23; GNMax and Confident-GNMax only),
      in ``PateAccount.sanitised``. The RDP at one order ``lambda`` is summed over the
      answered queries (the threshold check is charged data-independently, so it has no
      sensitivity), its beta-smooth sensitivity ``SS`` is the discounted max of the summed
      per-query local-sensitivity bounds, and the release adds ``SS * N(0, sigma_ss^2)``
      at the RDP cost :func:`gnss_rdp`.
    ss_beta: the smoothness beta; default: searched over the official Table 2 script's
      grid ``[0.30, 0.49] / lambda`` (Thm. 23 needs ``beta < 1 / (2 lambda)``).
    ss_sigma: GNSS's noise multiplier; default :func:`gnss_sigma`, the official
      minimiser of the release cost plus two noise stds.
    ss_order: the order of the release; default: searched over ``orders``. Defaults
      pick the (order, beta) minimising the official objective, sanitised epsilon plus
      two noise stds (the Table 2 script fixes the order at the raw optimum and searches
      beta); like there they are tuned on the private votes, so fix ``ss_order``,
      ``ss_beta`` and ``ss_sigma`` in advance for a release that is DP in the strict sense.
    num_teachers: number of teachers (distances run over ``0 .. T-1``); default the
      largest vote total of a query.
    key: if given, ``sanitised.released`` is one noisy draw of the released epsilon.
  """
  _checks.check_choice('mechanism', mechanism, ('lnmax', 'gnmax', 'confident_gnmax'))
  votes = np.asarray(votes, np.float64)
  if votes.ndim != 2:
    raise ValueError(f'votes has shape {votes.shape}; expected [queries, classes].')
  q_total = votes.shape[0]
  if mechanism == 'confident_gnmax':
    if answered is None or sigma1 is None:
      raise ValueError('confident_gnmax needs answered= and sigma1=.')
    answered = np.asarray(answered, bool)
    if answered.shape != (q_total,):
      raise ValueError(f'answered has shape {answered.shape}; expected ({q_total},).')
    _checks.check_float('sigma1', sigma1, minimum=0.0, strict_min=True)
    if max_answers is not None:
      max_answers = _checks.check_int('max_answers', max_answers, minimum=0)
      if int(answered.sum()) > max_answers:
        raise ValueError(f'answered has {int(answered.sum())} answers but '
                         f'max_answers={max_answers}: the mechanism that ran is not the '
                         'one accounted (run confident_gnmax with the same max_answers).')
    # GNMax may run on every query up to the cap, whatever the votes turn out to be.
    charged = q_total if max_answers is None else min(max_answers, q_total)
  else:
    if max_answers is not None:
      raise ValueError(f"max_answers={max_answers} is only for mechanism='confident_gnmax', "
                       f'got mechanism={mechanism!r}.')
    answered = np.ones(q_total, bool)
    charged = q_total
  votes_ss = None   # the smooth-sensitivity votes, checked only when they are used
  if smooth_sensitivity:
    if mechanism == 'lnmax':
      raise ValueError("smooth_sensitivity=True is implemented for mechanism='gnmax' and "
                       "'confident_gnmax' (PATE 2018 App. B), not 'lnmax'.")
    if ss_beta is not None:
      _checks.check_float('ss_beta', ss_beta, minimum=0.0)
    if ss_sigma is not None:
      _checks.check_float('ss_sigma', ss_sigma, minimum=0.0, strict_min=True)
    if ss_order is not None:
      _checks.check_float('ss_order', ss_order, minimum=1.0, strict_min=True)
    votes_ss, num_teachers = _check_ss_votes(votes, num_teachers)
  n_ans = int(answered.sum())
  orders = np.asarray(orders, np.float64)
  sanitised = None
  if mechanism == 'lnmax':
    if gamma is None:
      raise ValueError("mechanism='lnmax' needs gamma=; got gamma=None.")
    _checks.check_float('gamma', gamma, minimum=0.0, strict_min=True)
    indep = charged * lnmax_rdp_data_independent(gamma, orders)
    logq = lnmax_logq(votes[answered], gamma)
    dep = sum((lnmax_rdp_data_dependent(l, gamma, orders) for l in logq),
              np.zeros_like(orders))
    eps_indep, _ = accounting.epsilon_from_rdp(orders, indep, delta)
    eps_indep = min(eps_indep, 2.0 * gamma * charged)   # basic composition of pure DP
  else:
    if sigma is None:
      raise ValueError(f'mechanism={mechanism!r} needs sigma=; got sigma=None.')
    _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
    events: list[dp_accounting.DpEvent] = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), charged)]
    check_event = None
    check = np.zeros_like(orders)
    if mechanism == 'confident_gnmax':
      if sigma1 is None:
        raise ValueError("mechanism='confident_gnmax' needs sigma1=; got sigma1=None.")
      check_event = dp_accounting.SelfComposedDpEvent(
          dp_accounting.GaussianDpEvent(sigma1), q_total)
      events.append(check_event)
      check = accounting.rdp_of_event(check_event, orders)
    eps_indep = accounting.epsilon(dp_accounting.ComposedDpEvent(events), delta,
                                   accountant='rdp')
    logq = gnmax_logq(votes[answered], sigma)
    dep = check + sum((gnmax_rdp_data_dependent(l, sigma, orders) for l in logq),
                      np.zeros_like(orders))
    if votes_ss is not None:   # smooth_sensitivity
      ss_orders = orders if ss_order is None else np.array([float(ss_order)])
      ss_check = (np.zeros_like(ss_orders) if check_event is None
                  else accounting.rdp_of_event(check_event, ss_orders))
      sanitised = _sanitise_gnmax(votes_ss[answered], logq, ss_check, delta, sigma=sigma,
                                  orders=ss_orders, num_teachers=num_teachers,
                                  beta=ss_beta, sigma_ss=ss_sigma, key=key)
  eps_dep, order = accounting.epsilon_from_rdp(orders, dep, delta)
  return PateAccount(float(eps_indep), float(min(eps_dep, eps_indep)), float(delta),
                     q_total, n_ans, float(order), sanitised,
                     max_answers if mechanism == 'confident_gnmax' else None)


# ------------------------------------------------------------------ teachers and student

def teacher_masks(key: jax.Array, n: int, num_teachers: int) -> np.ndarray:
  """``[T, N]`` bool masks of disjoint, equal-size partitions (remainder unused)."""
  _checks.check_int('num_teachers', num_teachers, minimum=1, maximum=n)
  perm = np.asarray(jax.random.permutation(key, n))
  size = n // num_teachers
  masks = np.zeros((num_teachers, n), bool)
  for t in range(num_teachers):
    masks[t, perm[t * size:(t + 1) * size]] = True
  return masks


def train_teachers(apply_fn: Callable, init_fn: Callable[[jax.Array], Any], x: Any, y: Any,
                   *, num_teachers: int, key: jax.Array, optimizer, batch_size: int,
                   num_epochs: int, **fit_kwargs) -> tuple[Any, np.ndarray]:
  """Trains ``num_teachers`` models on disjoint partitions with ``train.fit_many``.

  Returns ``(stacked params [T, ...], masks [T, N])``; the masks are disjoint, which the
  analysis above relies on (one example -> one teacher).
  """
  from jaxsec import train  # pylint: disable=g-import-not-at-top
  k_part, k_init, k_fit = jax.random.split(key, 3)
  masks = teacher_masks(k_part, x.shape[0], num_teachers)
  params = train.init_many(init_fn, jax.random.split(k_init, num_teachers))
  res = train.fit_many(apply_fn, params, x, y, masks=masks, optimizer=optimizer,
                       keys=jax.random.split(k_fit, num_teachers), batch_size=batch_size,
                       num_epochs=num_epochs, **fit_kwargs)
  return res.params, masks


def teacher_votes(apply_fn: Callable, teacher_params: Any, x_public: Any,
                  num_classes: int) -> np.ndarray:
  """Vote histograms ``[Q, K]`` of stacked teachers on the public queries."""
  from jaxsec import train  # pylint: disable=g-import-not-at-top
  logits = train.predict_logits_many(apply_fn, teacher_params, x_public)
  preds = jnp.argmax(jnp.asarray(logits), axis=-1).astype(jnp.int32)
  return np.asarray(vote_histogram(preds, num_classes))
