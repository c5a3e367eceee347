"""Bagging with a certified poisoning size (Jia, Cao & Gong, AAAI 2021).

"Intrinsic Certified Robustness of Bagging against Data Poisoning Attacks": ``M`` base
models, each trained on ``k`` examples drawn uniformly *with replacement* from the ``n``
training examples, vote; the ensemble predicts the majority class ``A``. With ``p_A``
(resp. ``p_B``) the probability that a base model trained on a random bag predicts ``A``
(resp. the runner-up), the prediction cannot change under any poisoning of at most ``r``
training examples (insertions, deletions and modifications, ``|D (-) D'| <= r``, poisoned
set of size ``n'``) as long as (Theorem 1, in the closed form of the authors' code)

    (n'/n)^k - 2 ((max(n, n') - r) / n)^k + 1 - p_A_lower + p_B_upper < 0

for the worst ``n'`` in ``[n - r, n + r]``. For ``n' <= n`` the left side grows with ``n'``;
for ``n' >= n`` it is concave in ``n'`` with its maximum at
``n* = r / (1 - 0.5^(1 / (k - 1)))``, so the worst ``n'`` is ``n``, ``n + r`` or the integers
next to ``n*`` — transcribed from the authors' ``certify.py`` (``Check_condition``,
``CertifyRadiusBS``). The certified poisoning size is the largest such ``r`` (monotone in
``r``), found by bisection; ``-1`` (abstain) where ``p_A_lower <= p_B_upper``.

``p_A_lower`` and ``p_B_upper`` come from the ``M`` votes with simultaneous Clopper-Pearson
bounds (Bonferroni over the ``K`` classes: each one-sided bound at level ``alpha / K``, the
authors' ``proportion_confint(alpha=2 alpha / K, method='beta')``), ``p_B_upper`` capped at
``1 - p_A_lower``, as the authors do; the guarantee holds with probability ``>= 1 - alpha``
per test point (the authors divide ``alpha`` by the number of test points for a
simultaneous statement; pass ``alpha / N`` for that). The authors' ``delta_l = delta_s =
1e-50`` (rounding ``p`` to multiples of ``n^-k``) are below float resolution and omitted.

Training: the ``M`` bags, drawn from ``key``, are gathered into one array of ``M * k`` rows
and trained as ONE ``jaxsec.train.fit_many`` program (model ``m`` trains on rows
``[m k, (m + 1) k)``), so duplicates inside a bag count as in the paper.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import optax
from scipy import stats

from jaxsec import _checks
from jaxsec import train as train_lib
from jaxsec.defenses.training import partition_aggregation as pa


class Certificate(NamedTuple):
  """Per test point: the ensemble's ``prediction`` and the certified poisoning size
  ``radius`` (-1: abstain), with the probability bounds it came from."""
  prediction: np.ndarray
  radius: np.ndarray
  p_a_lower: np.ndarray
  p_b_upper: np.ndarray


class BaggedModels(NamedTuple):
  """Stacked ``params`` (leading axis ``num_models``), the ``bags`` ``[M, k]`` of training
  indices (with repeats), and ``fit_many``'s ``history``."""
  params: Any
  bags: np.ndarray
  history: dict


def draw_bags(key: jax.Array, *, n: int, num_models: int, subsample_size: int) -> np.ndarray:
  """``[num_models, subsample_size]`` indices drawn uniformly with replacement from n."""
  _checks.check_int('n', n, minimum=1)
  _checks.check_int('num_models', num_models, minimum=1)
  _checks.check_int('subsample_size', subsample_size, minimum=1)
  return np.asarray(jax.random.randint(key, (num_models, subsample_size), 0, n))


def train(apply_fn: train_lib.ApplyFn, init_fn: Callable[[jax.Array], Any], x: Any, y: Any,
          *, num_models: int, subsample_size: int, optimizer: optax.GradientTransformation,
          key: jax.Array, batch_size: int | None = None, num_epochs: int | None = None,
          num_steps: int | None = None, num_classes: int | None = None,
          checkpoint_dir: str | None = None, progress: bool = False) -> BaggedModels:
  """Trains the ``num_models`` base models of bagging as one ``fit_many`` program.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits``.
    init_fn: ``init_fn(key) -> params`` of one base model.
    x, y: the training set.
    num_models: ``M``, the number of bags.
    subsample_size: ``k``, examples per bag (with replacement).
    optimizer, num_epochs, num_steps, checkpoint_dir, progress: as in ``fit_many`` (an
      epoch is a pass over one bag).
    key: draws the bags, the initialisations and the batch orders.
    batch_size: default ``k`` (one full-bag step per epoch); at most ``k``.
    num_classes: label range check (optional).
  """
  x = np.asarray(x)
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  _checks.check_labels('y', y, num_classes=num_classes, batch=x.shape[0])
  batch_size = subsample_size if batch_size is None else batch_size
  _checks.check_int('batch_size', batch_size, minimum=1, maximum=subsample_size)
  k_bags, k_models = jax.random.split(key)
  bags = draw_bags(k_bags, n=x.shape[0], num_models=num_models,
                   subsample_size=subsample_size)
  rows = bags.reshape(-1)
  masks = np.zeros((num_models, rows.size), bool)
  masks[np.repeat(np.arange(num_models), subsample_size), np.arange(rows.size)] = True
  params, keys = pa._init_and_keys(init_fn, k_models, num_models)  # pylint: disable=protected-access
  fit = train_lib.fit_many(apply_fn, params, x[rows], np.asarray(y)[rows], masks=masks,
                           optimizer=optimizer, keys=keys, batch_size=batch_size,
                           num_epochs=num_epochs, num_steps=num_steps, loss='cross_entropy',
                           checkpoint_dir=checkpoint_dir, progress=progress, label='bagging')
  return BaggedModels(fit.params, bags, fit.history)


def probability_bounds(counts: Any, *, alpha: float) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
  """``(prediction, p_a_lower, p_b_upper)`` from vote counts ``[N, K]`` (module doc)."""
  counts = np.asarray(counts)
  if counts.ndim != 2 or counts.shape[1] < 2 or not np.issubdtype(counts.dtype, np.integer):
    raise ValueError(f'counts has shape {counts.shape} and dtype {counts.dtype}; expected '
                     'integer vote counts [N, K] with K >= 2.')
  if counts.size and counts.min() < 0:
    raise ValueError(f'counts contains {counts.min()}; expected counts >= 0.')
  _checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  m = counts.sum(1, keepdims=True)
  if np.any(m == 0):
    raise ValueError('a row of counts has no votes; expected >= 1 vote per test point.')
  a = alpha / counts.shape[1]              # one-sided level per class (Bonferroni over K)
  # Clopper-Pearson (statsmodels' 'beta') with the authors' clamp of the count into (0, m).
  c = np.clip(counts.astype(np.float64), 1e-10, m - 1e-10)
  lower = stats.beta.ppf(a, c, m - c + 1)
  upper = stats.beta.ppf(1 - a, c + 1, m - c)
  pred = np.argmax(counts, 1)
  rows = np.arange(counts.shape[0])
  p_a = lower[rows, pred]
  up = np.minimum(upper, (1.0 - p_a)[:, None])
  up[rows, pred] = -1.0
  return pred, p_a, up.max(1)


def _holds(r, n, k, p_a, p_b):
  """The Theorem 1 condition at poisoning size ``r`` (arrays broadcast), worst ``n'``."""
  r = np.asarray(r, np.float64)
  value = lambda npr: (npr / n) ** k - 2.0 * ((npr - r) / n) ** k + 1.0 - p_a + p_b
  if k == 1:
    star = n + r                         # then the left side is linear and grows with n'
  else:
    star = r / (1.0 - 0.5 ** (1.0 / (k - 1.0)))
  # n* clipped to [n, n + r]: n where n* <= n, n + r where n* >= n + r, else the integers
  # either side of n* (the authors' three cases).
  star = np.clip(star, n, n + r)
  worst = np.maximum(value(np.floor(star)), value(np.ceil(star)))
  return worst < 0


def certified_radius(p_a_lower: Any, p_b_upper: Any, *, n: int, subsample_size: int
                     ) -> np.ndarray:
  """The largest ``r`` in ``[0, n]`` with the Theorem 1 condition; -1 where none (abstain)."""
  _checks.check_int('n', n, minimum=1)
  _checks.check_int('subsample_size', subsample_size, minimum=1)
  p_a = np.asarray(p_a_lower, np.float64)
  p_b = np.asarray(p_b_upper, np.float64)
  k = float(subsample_size)
  ok0 = _holds(np.zeros_like(p_a), n, k, p_a, p_b)
  lo = np.where(ok0, 0, -1).astype(np.int64)       # the condition holds at lo (or lo = -1)
  hi = np.where(ok0, n + 1, 0).astype(np.int64)    # and fails at hi (r = n + 1 never holds)
  while True:
    active = hi - lo > 1
    if not active.any():
      break
    mid = (lo + hi) // 2
    ok = _holds(mid, n, k, p_a, p_b)
    lo = np.where(active & ok, mid, lo)
    hi = np.where(active & ~ok, mid, hi)
  return lo


def certify(counts: Any, *, n: int, subsample_size: int, alpha: float) -> Certificate:
  """Majority prediction and certified poisoning size from vote counts ``[N, K]``."""
  pred, p_a, p_b = probability_bounds(counts, alpha=alpha)
  radius = certified_radius(p_a, p_b, n=n, subsample_size=subsample_size)
  return Certificate(pred, radius, p_a, p_b)
