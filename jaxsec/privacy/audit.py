"""Privacy auditing: statistically valid *lower* bounds on the epsilon of a mechanism.

An accountant gives an upper bound on epsilon; an audit runs the mechanism and a
distinguishing test and bounds epsilon from below. A correct implementation has
``lower bound <= accountant's epsilon`` at every setting (up to the audit's failure
probability 1 - confidence); a lower bound above the claimed epsilon proves a bug (for
example DP-SGD that forgets to clip).

* Multi-run / canary audit (Jagielski, Ullman, Oprea 2020; Nasr et al. 2021): run the
  mechanism many times on D (with canary) and D' (without), score each output, and a
  threshold test has false positive / negative rates that any (eps, delta)-DP mechanism
  must satisfy ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``.
  With Clopper-Pearson upper confidence bounds on FPR and FNR,
  ``eps >= max(log((1 - delta - FNR_hi) / FPR_hi), log((1 - delta - FPR_hi) / FNR_hi))``.
  When several thresholds are tried, a Bonferroni correction keeps the bound valid.
* One-run audit (Steinke, Nasr, Jagielski 2023, "Privacy auditing with one (1) training
  run"): ``m`` canaries are each included independently with probability 1/2 in a single
  run; the auditor guesses "in" for the ``k_pos`` highest scores and "out" for the
  ``k_neg`` lowest, abstaining on the rest. For an (eps, delta)-DP mechanism the number of
  correct guesses ``v`` out of ``r = k_pos + k_neg`` has tail at most
  ``P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta * alpha`` (their Thm. 3.1 /
  Alg. 2 p-value); the lower bound is the largest eps whose p-value is below
  ``1 - confidence``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats

from jaxsec import _checks


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
  """Exact two-sided Clopper-Pearson interval for a binomial proportion."""
  _checks.check_int('n', n, minimum=1)
  _checks.check_int('k', k, minimum=0, maximum=n)
  _checks.check_float('confidence', confidence, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  a = 1.0 - confidence
  lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
  hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
  return lo, hi


def _upper(k, n, alpha):
  """One-sided (1 - alpha) Clopper-Pearson upper bound."""
  return 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))


def epsilon_lower_bound(*, false_positives: int, num_negatives: int, false_negatives: int,
                        num_positives: int, delta: float = 0.0, confidence: float = 0.95
                        ) -> float:
  """Lower bound on eps from one threshold test's error counts (Jagielski et al. 2020).

  Positives are runs *with* the canary. Holds with probability >= ``confidence`` (the two
  one-sided Clopper-Pearson bounds each get ``(1 - confidence) / 2``).
  """
  _checks.check_int('num_negatives', num_negatives, minimum=1)
  _checks.check_int('num_positives', num_positives, minimum=1)
  _checks.check_int('false_positives', false_positives, minimum=0, maximum=num_negatives)
  _checks.check_int('false_negatives', false_negatives, minimum=0, maximum=num_positives)
  _checks.check_float('delta', delta, minimum=0.0, maximum=1.0)
  alpha = (1.0 - confidence) / 2.0
  fpr = _upper(false_positives, num_negatives, alpha)
  fnr = _upper(false_negatives, num_positives, alpha)
  best = 0.0
  for a, b in ((fnr, fpr), (fpr, fnr)):
    num = 1.0 - delta - a
    if num > 0 and b > 0:
      best = max(best, math.log(num / b))
  return best


class ThresholdAudit(NamedTuple):
  epsilon_lower_bound: float
  threshold: float
  false_positive_rate: float
  false_negative_rate: float


def epsilon_lower_bound_from_scores(scores_with: Sequence[float] | np.ndarray,
                                    scores_without: Sequence[float] | np.ndarray, *, delta: float = 0.0,
                                    confidence: float = 0.95,
                                    num_thresholds: int = 20) -> ThresholdAudit:
  """Best threshold test "score >= t means canary present" over a grid of thresholds
  (quantiles of all scores), with a Bonferroni correction over the grid."""
  pos = np.asarray(scores_with, np.float64)
  neg = np.asarray(scores_without, np.float64)
  if pos.ndim != 1 or neg.ndim != 1 or not pos.size or not neg.size:
    raise ValueError('scores_with and scores_without must be non-empty 1-D arrays.')
  _checks.check_int('num_thresholds', num_thresholds, minimum=1)
  allv = np.concatenate([pos, neg])
  ts = np.unique(np.quantile(allv, np.linspace(0.0, 1.0, num_thresholds + 2)[1:-1]))
  conf = 1.0 - (1.0 - confidence) / len(ts)
  best = ThresholdAudit(0.0, float('nan'), float('nan'), float('nan'))
  for t in ts:
    fp = int(np.sum(neg >= t))
    fn = int(np.sum(pos < t))
    e = epsilon_lower_bound(false_positives=fp, num_negatives=neg.size, false_negatives=fn,
                            num_positives=pos.size, delta=delta, confidence=conf)
    if e > best.epsilon_lower_bound or math.isnan(best.threshold):
      best = ThresholdAudit(e, float(t), fp / neg.size, fn / pos.size)
  return best


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
  """Steinke et al. 2023, Alg. 2: probability of >= v correct guesses out of r under an
  (eps, delta)-DP null hypothesis with m canaries (each included w.p. 1/2)."""
  if not 0 <= v <= r <= m:
    raise ValueError(f'need 0 <= v <= r <= m; got v={v}, r={r}, m={m}.')
  q = 1.0 / (1.0 + math.exp(-eps))   # e^eps / (1 + e^eps), stable
  beta = float(stats.binom.sf(v - 1, r, q))
  alpha = 0.0
  if delta > 0 and v > 0:
    # alpha = max_{1 <= i <= v} P[v > Binomial(r, q) >= v - i] / i
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)   # v-1, v-2, ..., 0
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
  return min(1.0, beta + alpha * delta * 2 * m)


def one_run_epsilon_lower_bound(m: int, r: int, v: int, *, delta: float,
                                confidence: float = 0.95) -> float:
  """Largest eps rejected at level ``1 - confidence`` (bisection on the p-value)."""
  _checks.check_float('delta', delta, minimum=0.0, maximum=1.0)
  _checks.check_float('confidence', confidence, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  p = 1.0 - confidence
  if one_run_p_value(m, r, v, 0.0, delta) >= p:
    return 0.0
  lo, hi = 0.0, 1.0
  while one_run_p_value(m, r, v, hi, delta) < p:
    lo, hi = hi, hi * 2
    if hi > 1e3:
      return math.inf
  for _ in range(60):
    mid = (lo + hi) / 2
    if one_run_p_value(m, r, v, mid, delta) < p:
      lo = mid
    else:
      hi = mid
  return lo


class OneRunAudit(NamedTuple):
  epsilon_lower_bound: float
  num_guesses: int
  num_correct: int
  num_canaries: int


def one_run_audit(scores: Sequence[float] | np.ndarray,
                  included: Sequence[bool] | np.ndarray, *, k_pos: int,
                  k_neg: int, delta: float, confidence: float = 0.95) -> OneRunAudit:
  """Guess "in" for the ``k_pos`` highest scores, "out" for the ``k_neg`` lowest."""
  s = np.asarray(scores, np.float64)
  inc = np.asarray(included, bool)
  m = s.size
  if inc.shape != s.shape or s.ndim != 1:
    raise ValueError(f'scores {s.shape} and included {inc.shape} must be equal 1-D shapes.')
  _checks.check_int('k_pos', k_pos, minimum=0, maximum=m)
  _checks.check_int('k_neg', k_neg, minimum=0, maximum=m - k_pos)
  order = np.argsort(-s, kind='stable')
  correct = int(inc[order[:k_pos]].sum()) + int((~inc[order[m - k_neg:]]).sum() if k_neg
                                                 else 0)
  r = k_pos + k_neg
  eps = one_run_epsilon_lower_bound(m, r, correct, delta=delta, confidence=confidence)
  return OneRunAudit(eps, r, correct, m)
