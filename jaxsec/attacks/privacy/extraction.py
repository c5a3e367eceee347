"""Model extraction: equation solving (Tramer et al. 2016) and learning-based stealing.

Tramer, Zhang, Juels, Reiter, Ristenpart, "Stealing machine learning models via prediction
APIs" (USENIX Security 2016):

* :func:`extract_logistic_binary`: each answer ``p = sigmoid(w.x + b)`` gives the linear
  equation ``log(p / (1 - p)) = w.x + b``; ``d + 1`` queries in general position recover
  ``(w, b)`` exactly (up to the oracle's floating-point rounding).
* :func:`extract_softmax_regression`: ``log(p_i / p_0) = (w_i - w_0).x + (b_i - b_0)``;
  ``d + 1`` queries recover every row up to the softmax's shift invariance (returned with
  ``w_0 = 0, b_0 = 0``: identical probabilities, hence identical predictions).
* :func:`retrain_extraction`: models without a closed form (MLPs): train the same
  architecture on the oracle's answers (probabilities with soft cross-entropy, or labels).

Learning-based extraction with a query budget:

* :func:`knockoff_extraction` (Orekondy et al. 2019, KnockoffNets; Tramer's random
  queries): ``budget`` inputs from a public / random pool, a substitute trained on the answers.
* :func:`jacobian_extraction` (Papernot et al. 2017): label queries only, Jacobian-based
  augmentation ``S_{r+1} = S_r U {x + lambda_r sign(d F_sub[O(x)] / dx)}`` from a seed set,
  ``lambda_r = lambda (-1)^floor(r / tau)``, retrained each round, stopped at the budget.

``query_fn`` takes a batch and returns probabilities ``[B, C]`` (confidence API) or labels
``[B]`` (label-only API). Fidelity is measured with ``jaxsec.metrics.agreement``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import losses
from jaxsec import train
from jaxsec.attacks.blackbox.substitute import jacobian_augmentation


class Counter:
  """Wraps an oracle and counts the inputs it was queried on (``.queries``)."""

  def __init__(self, query_fn: Callable[[Any], Any]):
    self.query_fn = query_fn
    self.queries = 0

  def __call__(self, x):
    self.queries += int(np.shape(x)[0])
    return self.query_fn(x)


def _query_points(key, num, dim, scale):
  return np.asarray(scale * jax.random.normal(key, (num, dim)), np.float64)


def _log_probs(p, name='query_fn output'):
  p = np.asarray(p, np.float64)
  if np.any(p <= 0) or not np.all(np.isfinite(p)):
    raise ValueError(f'{name} contains probabilities <= 0 (underflow); query closer to the '
                     'decision boundary (smaller scale=) so every log-probability is finite.')
  return np.log(p)


def _solve(a, rhs):
  sol, _, rank, _ = np.linalg.lstsq(a, rhs, rcond=None)
  if rank < a.shape[1]:
    raise ValueError(f'the query matrix has rank {rank} < {a.shape[1]}: queries are not in '
                     'general position.')
  return sol


def extract_logistic_binary(query_fn: Callable, dim: int, key: jax.Array, *,
                            scale: float = 1.0) -> tuple[np.ndarray, float, int]:
  """Recovers ``(w, b)`` of ``p(y=1|x) = sigmoid(w.x + b)`` from ``dim + 1`` queries.

  Args:
    query_fn: ``x [B, dim] -> p`` with ``p`` of shape ``[B]`` / ``[B, 1]`` (``P(y=1)``) or
      ``[B, 2]`` (both class probabilities; then ``log p_1 - log p_0`` is used, which keeps
      full precision even where ``p_1`` rounds to 1).
    dim: input dimension ``d``.
    scale: queries are ``scale * N(0, I)`` (general position with probability 1).

  Returns:
    ``(w [d], b, queries)`` with ``queries == d + 1``.
  """
  dim = _checks.check_int('dim', dim, minimum=1)
  _checks.check_positive('scale', scale)
  x = _query_points(key, dim + 1, dim, scale)
  p = np.asarray(query_fn(x.astype(np.float32)), np.float64)
  if p.ndim == 2 and p.shape[1] == 2:
    logit = _log_probs(p[:, 1]) - _log_probs(p[:, 0])
  else:
    p = p.reshape(-1)
    logit = _log_probs(p) - _log_probs(1.0 - p)
  if logit.shape != (dim + 1,):
    raise ValueError(f'query_fn returned {np.asarray(p).shape}; expected one probability '
                     f'per query ({dim + 1} queries).')
  theta = _solve(np.c_[x, np.ones(dim + 1)], logit)
  return theta[:-1], float(theta[-1]), dim + 1


def extract_softmax_regression(query_fn: Callable, dim: int, num_classes: int,
                               key: jax.Array, *, scale: float = 1.0
                               ) -> tuple[np.ndarray, np.ndarray, int]:
  """Recovers a softmax regression ``softmax(x W + b)`` from ``dim + 1`` queries.

  Solves ``[X 1] [W_i - W_0; b_i - b_0] = log p_i - log p_0`` (one linear system with ``C``
  right-hand sides).

  Returns:
    ``(W [d, C], b [C], queries)`` normalised so ``W[:, 0] = 0, b[0] = 0``: the same
    probabilities as the target for every input (softmax is shift invariant).
  """
  dim = _checks.check_int('dim', dim, minimum=1)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_positive('scale', scale)
  x = _query_points(key, dim + 1, dim, scale)
  p = np.asarray(query_fn(x.astype(np.float32)), np.float64)
  if p.shape != (dim + 1, num_classes):
    raise ValueError(f'query_fn returned shape {p.shape}; expected [{dim + 1}, '
                     f'{num_classes}] probabilities.')
  logp = _log_probs(p)
  theta = _solve(np.c_[x, np.ones(dim + 1)], logp - logp[:, :1])
  return theta[:-1], theta[-1], dim + 1


def linear_logits(w: np.ndarray, b, x) -> np.ndarray:
  """Logits of an extracted linear model: ``x w + b`` (``[B, C]``, or ``[B, 1]`` binary)."""
  x = np.asarray(x, np.float64).reshape((np.shape(x)[0], -1))
  out = x @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
  return out[:, None] if out.ndim == 1 else out


# ------------------------------------------------------------------- learning-based


def _soft_objective():
  """Objective on (x, index) pairs: the index looks up the oracle's soft label."""
  def make(targets):
    def objective(apply_fn, params, x, idx, key):
      del key
      return losses.soft_cross_entropy(apply_fn(params, x), targets[idx])
    return objective
  return make


def retrain_extraction(apply_fn: Callable, init_params: Any, x_query, answers, *,
                       key: jax.Array, optimizer: optax.GradientTransformation | None = None,
                       num_epochs: int | None = None, num_steps: int | None = None,
                       batch_size: int = 64) -> Any:
  """Trains a substitute ``apply_fn`` on the oracle's answers to ``x_query``.

  Args:
    answers: probabilities ``[Q, C]`` (soft cross-entropy, Tramer's retraining attack) or
      integer labels ``[Q]`` (cross-entropy; label-only extraction).
    optimizer: default ``optax.adam(1e-3)``.

  Returns:
    The substitute's params (trained with ``train.fit``).
  """
  answers = np.asarray(answers)
  x_query = np.asarray(x_query, np.float32)
  optimizer = optimizer or optax.adam(1e-3)
  batch_size = min(batch_size, x_query.shape[0])
  if num_steps is not None:
    num_epochs = None
  elif num_epochs is None:
    num_epochs = 10
  if answers.ndim == 2:
    idx = np.arange(x_query.shape[0], dtype=np.int32)
    objective = _soft_objective()(jnp.asarray(answers, jnp.float32))
    return train.fit(apply_fn, init_params, x_query, idx, optimizer=optimizer, key=key,
                     batch_size=batch_size, num_epochs=num_epochs, num_steps=num_steps,
                     objective=objective).params
  if answers.ndim != 1 or not np.issubdtype(answers.dtype, np.integer):
    raise ValueError(f'answers has shape {answers.shape} and dtype {answers.dtype}; '
                     'expected probabilities [Q, C] or integer labels [Q].')
  return train.fit(apply_fn, init_params, x_query, answers.astype(np.int32),
                   optimizer=optimizer, key=key, batch_size=batch_size,
                   num_epochs=num_epochs, num_steps=num_steps).params


class ExtractionResult(NamedTuple):
  """Substitute params, total queries, and ``history``: (queries, params) per round."""
  params: Any
  queries: int
  history: list


def knockoff_extraction(query_fn: Callable, apply_fn: Callable, init_params: Any, pool,
                        *, budgets: Sequence[int], key: jax.Array,
                        optimizer: optax.GradientTransformation | None = None,
                        num_epochs: int | None = 10, num_steps: int | None = None,
                        batch_size: int = 64) -> ExtractionResult:
  """KnockoffNets-style extraction: random queries from a public pool at growing budgets.

  For each budget ``q`` in ``budgets`` (increasing), the first ``q`` inputs of one random
  permutation of ``pool`` are queried (nested sets: answers are reused, so the total cost is
  ``max(budgets)`` queries) and a fresh substitute is trained from ``init_params`` on them.
  ``query_fn`` returns probabilities (soft labels) or labels (label-only extraction).
  Give ``num_steps`` (it overrides ``num_epochs``) to train every substitute for the same
  number of steps whatever its budget.
  """
  budgets = [_checks.check_int('budgets[i]', q, minimum=1) for q in budgets]
  if budgets != sorted(budgets) or budgets[-1] > np.shape(pool)[0]:
    raise ValueError(f'budgets={budgets} must increase and stay <= the pool size '
                     f'{np.shape(pool)[0]}.')
  k_perm, k_train = jax.random.split(key)
  order = np.asarray(jax.random.permutation(k_perm, np.shape(pool)[0]))[:budgets[-1]]
  xq = np.asarray(pool)[order]
  oracle = Counter(query_fn)
  answers = np.asarray(oracle(xq))
  history, params = [], init_params
  for i, q in enumerate(budgets):
    params = retrain_extraction(apply_fn, init_params, xq[:q], answers[:q],
                                key=jax.random.fold_in(k_train, i), optimizer=optimizer,
                                num_epochs=num_epochs, num_steps=num_steps,
                                batch_size=batch_size)
    history.append((q, params))
  return ExtractionResult(params, oracle.queries, history)


def jacobian_extraction(label_fn: Callable, apply_fn: Callable, init_params: Any, seed_x, *,
                        budget: int, key: jax.Array, rounds: int = 6, lam: float = 0.1,
                        tau: int = 3, bounds: tuple[float, float] | None = (0.0, 1.0),
                        optimizer: optax.GradientTransformation | None = None,
                        num_epochs: int | None = 10, num_steps: int | None = None,
                        batch_size: int = 64) -> ExtractionResult:
  """Papernot et al. 2017's substitute training with Jacobian-based data augmentation.

  Round ``r``: query the labels of the new points, train the substitute (from
  ``init_params``, on all points labelled so far), then double the set with
  :func:`~jaxsec.attacks.blackbox.jacobian_augmentation` (on the logits) at step
  ``lam * (-1)^floor(r / tau)``; new points are kept
  inside ``bounds``. Stops after ``rounds`` rounds or when the next round's queries would
  exceed ``budget`` (the last round is truncated to fit it exactly).

  Args:
    label_fn: the label-only oracle ``x -> labels [B]``.
    seed_x: the attacker's small initial set (e.g. 10 images per class in the paper: 150).

  Returns:
    ExtractionResult with one history entry per round.
  """
  budget = _checks.check_int('budget', budget, minimum=1)
  rounds = _checks.check_int('rounds', rounds, minimum=1)
  tau = _checks.check_int('tau', tau, minimum=1)
  _checks.check_positive('lam', lam)
  oracle = Counter(label_fn)
  xs = np.asarray(seed_x, np.float32)[:budget]
  ys = np.asarray(oracle(xs)).astype(np.int32)
  history, params = [], init_params
  for r in range(rounds):
    params = retrain_extraction(apply_fn, init_params, xs, ys,
                                key=jax.random.fold_in(key, r), optimizer=optimizer,
                                num_epochs=num_epochs, num_steps=num_steps,
                                batch_size=batch_size)
    history.append((oracle.queries, params))
    room = budget - oracle.queries
    if r == rounds - 1 or room <= 0:
      break
    step = lam * (-1.0) ** (r // tau)
    new = np.asarray(jacobian_augmentation(
        apply_fn, params, jnp.asarray(xs), jnp.asarray(ys), step, jacobian='logits',
        bounds=None if bounds is None else _checks.check_bounds(bounds)))
    new = new[:room]
    xs = np.concatenate([xs, new])
    ys = np.concatenate([ys, np.asarray(oracle(new)).astype(np.int32)])
  return ExtractionResult(params, oracle.queries, history)


__all__ = ('Counter', 'extract_logistic_binary', 'extract_softmax_regression',
           'linear_logits', 'retrain_extraction', 'ExtractionResult', 'knockoff_extraction',
           'jacobian_extraction')
