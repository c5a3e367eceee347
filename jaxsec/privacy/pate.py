"""PATE: Private Aggregation of Teacher Ensembles (Papernot et al. 2017, 2018).

Teachers are trained on *disjoint* partitions of the private data (one vmapped program,
:func:`train_teachers` over ``jaxsec.train.fit_many``); each public query is answered by a
noisy plurality vote over the teachers' predictions; a student is trained on the answered
public queries only and is the released model. Changing one private example changes one
teacher, hence one vote: the vote histogram moves by 1 in two bins (l1 = 2, l2 = sqrt 2).

Aggregators (``votes`` [Q, K] histograms, ``key``):

* :func:`lnmax` (2017): ``argmax(n + Lap(1/gamma))``, pure ``2 gamma``-DP per query.
* :func:`gnmax` (2018): ``argmax(n + N(0, sigma^2))``; RDP ``lambda / sigma^2`` per query
  (2018, Prop. 8), i.e. dp_accounting's ``GaussianDpEvent(sigma / sqrt 2)``.
* :func:`confident_gnmax` (2018, Alg. 1): answer only if
  ``max n + N(0, sigma1^2) >= T``, then GNMax with ``sigma2``. The check costs
  ``GaussianDpEvent(sigma1)`` (the max count has sensitivity 1) for *every* query, GNMax
  only for answered ones.

Privacy analysis (:func:`analyze`):

* *data-independent* epsilon: the composition above through dp_accounting. This is the DP
  guarantee of the released student.
* *data-dependent* epsilon (2018, Thm. 6 with the orders of Prop. 10; for LNMax with the
  2017 Lemma 4 bound on ``q``): for each answered query, ``q`` upper-bounds the
  probability that the noisy argmax differs from the plurality (GNMax: 2018 Prop. 7,
  ``sum_{j != i*} erfc((n_i* - n_j) / (2 sigma)) / 2``, capped at ``1 - 1/K`` because the
  plurality wins with probability >= 1/K under i.i.d. noise), and Thm. 6 turns ``q`` and
  two data-independent RDP points into a smaller RDP bound at each order. RDP curves are
  summed over queries and converted to ``(eps, delta)`` by dp_accounting. The
  data-dependent epsilon depends on the private votes and is **not** itself DP; PATE 2018
  releases it through smooth sensitivity (its Sec. 4 / App. C), which jaxsec does not
  implement. We therefore report it as an *unsanitised* figure next to the
  data-independent guarantee, the documented conservative bound.
  The threshold check of Confident-GNMax is always accounted data-independently.
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
                    sigma2: float) -> ConfidentAnswers:
  """Confident-GNMax (PATE 2018, Alg. 1): answer only when the noisy max clears T."""
  _check_votes(votes)
  _checks.check_float('threshold', threshold)
  _checks.check_float('sigma1', sigma1, minimum=0.0, strict_min=True)
  k1, k2 = jax.random.split(key)
  check = jnp.max(votes, -1) + sigma1 * jax.random.normal(k1, votes.shape[:1])
  answered = check >= threshold
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


class PateAccount(NamedTuple):
  epsilon: float                  # data-independent: the DP guarantee
  epsilon_data_dependent: float   # unsanitised data-dependent figure (see module doc)
  delta: float
  num_queries: int
  num_answered: int
  order: float                    # optimal RDP order of the data-dependent bound


def analyze(votes: Any, *, mechanism: str, delta: float, answered: Any = None,
            gamma: float | None = None, sigma: float | None = None,
            sigma1: float | None = None, orders: Sequence[float] = ORDERS) -> PateAccount:
  """Privacy of answering ``votes`` [Q, K] with 'lnmax', 'gnmax' or 'confident_gnmax'.

  Args:
    votes: the teachers' vote histograms of the queries asked.
    mechanism: 'lnmax' (needs ``gamma``), 'gnmax' (``sigma``), 'confident_gnmax'
      (``sigma1`` for the check, ``sigma`` for the answers, ``answered`` mask [Q]).
    delta: target delta.
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
  else:
    answered = np.ones(q_total, bool)
  n_ans = int(answered.sum())
  orders = np.asarray(orders, np.float64)
  if mechanism == 'lnmax':
    _checks.check_float('gamma', gamma, minimum=0.0, strict_min=True)
    indep = n_ans * lnmax_rdp_data_independent(gamma, orders)
    logq = lnmax_logq(votes[answered], gamma)
    dep = sum((lnmax_rdp_data_dependent(l, gamma, orders) for l in logq),
              np.zeros_like(orders))
    eps_indep, _ = accounting.epsilon_from_rdp(orders, indep, delta)
    eps_indep = min(eps_indep, 2.0 * gamma * n_ans)   # basic composition of pure DP
  else:
    _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), n_ans)]
    check = np.zeros_like(orders)
    if mechanism == 'confident_gnmax':
      events.append(dp_accounting.SelfComposedDpEvent(
          dp_accounting.GaussianDpEvent(sigma1), q_total))
      check = accounting.rdp_of_event(events[-1], orders)
    eps_indep = accounting.epsilon(dp_accounting.ComposedDpEvent(events), delta,
                                   accountant='rdp')
    logq = gnmax_logq(votes[answered], sigma)
    dep = check + sum((gnmax_rdp_data_dependent(l, sigma, orders) for l in logq),
                      np.zeros_like(orders))
  eps_dep, order = accounting.epsilon_from_rdp(orders, dep, delta)
  return PateAccount(float(eps_indep), float(min(eps_dep, eps_indep)), float(delta),
                     q_total, n_ans, float(order))


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
