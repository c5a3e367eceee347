"""The victim's weight-decay SVM and the decoy parameters of Koh, Steinhardt & Liang (2022).

The victim trains a binary linear SVM on the sanitised data by

    L(w, b; D) = (1/n) sum_{i in D} max(0, 1 - s_i (w.x_i + b)) + (l2 / 2) ||w||^2,

``s_i = 2 y_i - 1`` and ``n`` the clean training set's size (fixed, so poison adds loss
terms without renormalising: the min-max bound's ``L_c + eps L_p``); that is
:func:`learners.svm_dual` with ``C = 1 / (n l2)``.

Decoy parameters (the paper's Sec. 5.2; the authors' ``generateTheta.m``): train on the
clean data, take the validation points whose margin is below the ``q``-quantile of all
validation margins, flip their labels, and retrain on the clean data plus ``r`` copies of
them, for every ``(q, r)`` on a grid; keep the decoys on the Pareto front of high
validation error and low clean training loss. The KKT and min-max attacks then look
for poison that makes the learner land on (or near) a decoy.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.poisoning import learners

Array = jax.Array


def _sign(y, dtype):
  return 2.0 * y.astype(dtype) - 1.0


def hinge_losses(w, b, x, y) -> Array:
  """Per-example hinge ``max(0, 1 - s (w.x + b))`` [n]."""
  return jax.nn.relu(1.0 - _sign(y, w.dtype) * (x.reshape((x.shape[0], -1)) @ w + b))


def objective(w, b, x, y, *, l2, n, weight=None) -> Array:
  """``L(w, b)`` of the module docstring: ``sum(weight * hinge) / n + l2/2 ||w||^2``."""
  h = hinge_losses(w, b, x, y)
  if weight is not None:
    h = h * weight
  return jnp.sum(h) / n + 0.5 * l2 * jnp.sum(w * w)


def hinge_subgradient(w, b, x, y, weight=None) -> tuple[Array, Array]:
  """``sum_i weight_i d/d(w, b) hinge_i``: ``(-sum s_i x_i, -sum s_i)`` over the points
  with margin ``s_i f(x_i) < 1`` (the authors' ``hinge_grad``, not divided by ``n``)."""
  xf = x.reshape((x.shape[0], -1))
  s = _sign(y, w.dtype)
  act = (s * (xf @ w + b) < 1.0).astype(w.dtype)
  if weight is not None:
    act = act * weight
  return -(act * s) @ xf, -jnp.sum(act * s)


def fit_svm(x, y, *, l2, n, weight=None, tol: float = 1e-5,
            max_iter: int | None = None) -> learners.SVMSolution:
  """Minimiser of ``L`` (``learners.svm_dual`` with ``C = 1 / (n l2)``); ``weight`` [n']
  multiplies each point's loss (0 removes it, ``k`` counts it ``k`` times)."""
  return learners.svm_dual(x, y, C=1.0 / (n * l2), sample_weight=weight, tol=tol,
                           max_iter=max_iter)


class Decoys(NamedTuple):
  """Decoy parameters, one row per ``(quantile, repeats)`` pair.

  Attributes:
    w: [K, d]; b: [K].
    train_loss: [K] mean clean hinge loss (over the weighted clean points).
    val_error: [K] validation error.
    quantile, repeats: [K] the pair that made each decoy.
    pareto: [K] bool, on the front (highest error for its training loss; the authors'
      ``pruneTheta``).
  """
  w: Array
  b: Array
  train_loss: Array
  val_error: Array
  quantile: Array
  repeats: Array
  pareto: np.ndarray


def pareto_front(val_error, train_loss) -> np.ndarray:
  """Walk the decoys by decreasing validation error (ties: the later one first, the
  authors' flip of an ascending stable sort); keep one iff its training loss is below
  every one walked before it."""
  err, loss = np.asarray(val_error), np.asarray(train_loss)
  keep = np.zeros(err.shape, bool)
  best = np.inf
  for i in np.argsort(err, kind='stable')[::-1]:
    if loss[i] < best:
      keep[i], best = True, loss[i]
  return keep


def decoy_parameters(x, y, x_val, y_val, *, l2: float, weight=None,
                     quantiles: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.25),
                     repeats: Sequence[int] = (1, 2, 3, 5, 8), tol: float = 1e-5) -> Decoys:
  """Decoy parameters on the ``quantiles x repeats`` grid (module docstring).

  Args:
    x, y: clean training set [n, d], labels in {0, 1}; ``weight`` [n] optional (e.g. the
      sanitiser's keep-mask: the decoys are then trained on what the defender keeps).
    x_val, y_val: the attacker's validation set (the paper's default: the test set).
    l2: the victim's weight decay; ``n`` of the objective is ``x.shape[0]``.
    quantiles: margin quantiles ``q`` in (0, 1]; repeats: copy counts ``r >= 1``.
  """
  l2 = _checks.check_positive('l2', l2)
  qs = [float(_checks.check_float('quantiles', q, minimum=0.0, maximum=1.0,
                                  strict_min=True, allow_traced=False)) for q in quantiles]
  rs = [_checks.check_int('repeats', r, minimum=1) for r in repeats]
  if not qs or not rs:
    raise ValueError(f'quantiles={quantiles!r} and repeats={repeats!r} must be non-empty.')
  grid_q = jnp.asarray([q for q in qs for _ in rs], x.dtype)
  grid_r = jnp.asarray([r for _ in qs for r in rs], x.dtype)
  weight = (jnp.ones(x.shape[0], x.dtype) if weight is None
            else jnp.asarray(weight, x.dtype))
  w_d, b_d, loss, err = _decoys(x, y, x_val, y_val, weight, grid_q, grid_r, l2=float(l2),
                                tol=float(tol))
  return Decoys(w_d, b_d, loss, err, grid_q, grid_r, pareto_front(err, loss))


def _decoys_body(x, y, x_val, y_val, weight, grid_q, grid_r, *, l2, tol):
  n = x.shape[0]
  sol = fit_svm(x, y, l2=l2, n=n, weight=weight, tol=tol)
  margins = _sign(y_val, x.dtype) * (x_val @ sol.w + sol.b)
  xa = jnp.concatenate([x, x_val])
  ya = jnp.concatenate([y, 1 - y_val]).astype(y.dtype)

  def one(q, r):
    thr = jnp.quantile(margins, q)
    wa = jnp.concatenate([weight, r * (margins < thr).astype(x.dtype)])
    s = fit_svm(xa, ya, l2=l2, n=n, weight=wa, tol=tol)
    loss = jnp.sum(weight * hinge_losses(s.w, s.b, x, y)) / jnp.maximum(weight.sum(), 1.0)
    err = jnp.mean(((x_val @ s.w + s.b) > 0).astype(y_val.dtype) != y_val)
    return s.w, s.b, loss, err
  return jax.vmap(one)(grid_q, grid_r)


_decoys = jax.jit(_decoys_body, static_argnames=('l2', 'tol'))
