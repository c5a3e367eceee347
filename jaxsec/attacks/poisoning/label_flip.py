"""Label-flipping poisoning: random flips, ALFA (Xiao, Xiao, Eckert, ECAI 2012) and the
farthest-first / nearest-first baselines it is compared with.

All keep the data set's size and inputs and change exactly ``round(fraction * n)`` labels.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning import learners
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, flip_budget, num_poison


def random_label_flip(*, fraction: float, num_classes: int = 2) -> Callable:
  """Flips the labels of ``round(fraction * n)`` uniformly chosen training points.

  A flipped binary label becomes ``1 - y``; with ``num_classes > 2`` it becomes a uniformly
  drawn *different* class. Inputs are unchanged; the set keeps size ``n``.

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x, y', info)``, ``info['poison_mask']`` the
    flipped rows. Deterministic for a key.
  """
  fraction = check_fraction('fraction', fraction)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)

  def attack(x, y, key):
    n, k, k_idx, k_lab = flip_budget(x, y, key, fraction, num_classes)
    idx = jax.random.permutation(k_idx, n)[:k]
    mask = jnp.zeros((n,), bool).at[idx].set(True)
    shift = jax.random.randint(k_lab, (n,), 1, num_classes)
    y_new = jnp.where(mask, (y + shift) % num_classes, y).astype(y.dtype)
    return PoisonOutput(x, y_new, {'poison_mask': mask})
  return attack


def _margin_loss(learner: str):
  if learner == 'svm':
    return lambda s, f: jax.nn.relu(1.0 - s * f)
  return lambda s, f: jax.nn.softplus(-s * f)


def _fit_scores(x, labels, *, learner, C, l2, tol):
  """Scores ``f(x_i)`` of the learner trained on ``(x, labels)`` (class 1 when ``f > 0``)."""
  if learner == 'svm':
    sol = learners.svm_dual(x, labels, C=C, tol=tol)
    return x.reshape((x.shape[0], -1)) @ sol.w + sol.b
  p = learners.logreg_newton(x, labels, num_classes=2, l2=l2)
  return learners.linear_apply(p, x)[:, 0]


@functools.partial(jax.jit, static_argnames=('learner', 'l2', 'num_iters', 'tol'))
def _alfa_mask(x, y, budget, C, *, learner, l2, num_iters, tol):
  """ALFA's flip mask and the alternations used (see :func:`alfa`); ``budget`` and ``C`` are
  traced, so budgets and SVM constants share one program."""
  vloss = _margin_loss(learner)
  fit_scores = functools.partial(_fit_scores, x, learner=learner, C=C, l2=l2, tol=tol)

  n = x.shape[0]
  s = 2.0 * y.astype(x.dtype) - 1.0
  f_s = fit_scores(y)
  eps_keep, eps_flip = vloss(s, f_s), vloss(-s, f_s)

  def lp(xi_keep, xi_flip):
    d = (xi_flip - eps_flip) - (xi_keep - eps_keep)
    order = jnp.argsort(d)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return rank, (rank < budget) & (d < 0)

  def cond(carry):
    *_, it, converged = carry
    return (it < num_iters) & ~converged

  def body(carry):
    xi_keep, xi_flip, it, _ = carry
    _, flip = lp(xi_keep, xi_flip)                       # LP in q
    f = fit_scores(jnp.where(flip, 1 - y, y))            # QP in f
    xi_keep, xi_flip = vloss(s, f), vloss(-s, f)
    _, flip_next = lp(xi_keep, xi_flip)
    return xi_keep, xi_flip, it + 1, jnp.all(flip_next == flip)   # q unchanged: converged

  zero = jnp.zeros((n,), x.dtype)
  xi_keep, xi_flip, it, _ = jax.lax.while_loop(
      cond, body, (zero, zero, jnp.asarray(0, jnp.int32), jnp.asarray(False)))
  rank, _ = lp(xi_keep, xi_flip)
  return rank < budget, it


def alfa(*, fraction: float, learner: str = 'svm', C: float = 1.0, l2: float = 1e-2,
         num_iters: int = 50, tol: float = 1e-3) -> Callable:
  """Adversarial Label Flip Attack (ALFA) on a binary linear SVM or logistic regression.

  Xiao, Xiao, Eckert, "Adversarial label flips attack on support vector machines" (ECAI
  2012), Algorithm 1 (restated as ALFA in Xiao, Biggio, Nelson, Xiao, Eckert, Roli, "Support
  vector machines under adversarial label contamination", Neurocomputing 2015). They pick the
  flips ``q`` that solve
  ``min_{q, f} gamma ||f||^2 + sum_{i=1}^{2n} q_i [V(y_i, f(x_i)) - V(y_i, f_S(x_i))]``
  over the doubled set ``U`` = every point with its label and with the flipped label,
  ``q_i + q_{n+i} = 1``, ``sum q_{n+i} <= L``; ``f_S`` is the clean classifier and ``V`` the
  learner's loss (hinge for the SVM, as in the paper; logistic loss for logistic
  regression, our extension). Starting from ``xi = 0`` they alternate an LP in ``q`` (relaxed
  to ``[0, 1]``) with the learner's QP in ``f`` (the learner trained on the current flips)
  until ``q`` stops changing, then flip the top-``L`` points by ``q_{n+i}``. With unit flip
  costs (the case implemented) the relaxed LP is a fractional knapsack with unit weights, so
  its solution is integral and exact in closed form: flip the (at most ``L``) points with the
  most negative ``d_i = (xi_{n+i} - eps_{n+i}) - (xi_i - eps_i)``. The loop stops when an
  LP returns the flips of the previous one (converged) or after ``num_iters`` QPs; the final
  ranking by ``d`` flips exactly ``L = round(fraction * n)`` labels (ties among ``q = 0``
  broken by ``d``).

  Args:
    fraction: flip budget, a fraction of the training set.
    learner: 'svm' (linear SVM with constant ``C``, hinge loss, unregularised bias) or
      'logreg' (L2 strength ``l2``).
    num_iters: at most this many LP/QP alternations (fewer when ``q`` converges; 50 is
      the cap of the authors' ALFASVMLib).
    tol: SMO tolerance of the SVM fits.

  Returns:
    ``attack(x, y, key) -> PoisonOutput(x, y', info)`` for labels in {0, 1}; same size,
    same inputs. The key is unused (ALFA is deterministic). ``info``: ``poison_mask`` and
    ``iterations``
    (the QPs solved).
  """
  fraction = check_fraction('fraction', fraction)
  _checks.check_choice('learner', learner, ('svm', 'logreg'))
  C = _checks.check_positive('C', C)
  l2 = _checks.check_positive('l2', l2)
  num_iters = _checks.check_int('num_iters', num_iters, minimum=1)
  tol = _checks.check_positive('tol', tol)

  def attack(x, y, key=None):
    del key
    check_dataset(x, y, num_classes=2)
    mask, iters = _alfa_mask(x, y, jnp.asarray(num_poison(fraction, x.shape[0]), jnp.int32),
                             jnp.asarray(C, x.dtype), learner=learner, l2=float(l2),
                             num_iters=num_iters, tol=float(tol))
    y_new = jnp.where(mask, 1 - y, y).astype(y.dtype)
    return PoisonOutput(x, y_new, {'poison_mask': mask, 'iterations': iters})
  return attack


_ORDERS = ('farthest', 'nearest')


@functools.partial(jax.jit, static_argnames=('tol', 'order'))
def _distance_mask(x, y, budget, C, *, tol, order):
  f = _fit_scores(x, y, learner='svm', C=C, l2=0.0, tol=tol)
  dist = jnp.abs(f)
  key = -dist if order == 'farthest' else dist
  rank = jnp.zeros(dist.shape, jnp.int32).at[jnp.argsort(key)].set(
      jnp.arange(dist.shape[0], dtype=jnp.int32))
  return rank < budget


def distance_label_flip(*, fraction: float, order: str = 'farthest', C: float = 1.0,
                        tol: float = 1e-3) -> Callable:
  """Farthest-first / nearest-first label flips against a binary linear SVM.

  The distance-based baselines that Xiao, Xiao, Eckert (ECAI 2012) and Xiao et al.
  ("Support vector machines under adversarial label contamination", Neurocomputing 2015;
  their ALFASVMLib ``CAttackerSVMDist``) compare ALFA with: train the SVM (constant ``C``,
  hinge loss, with bias) on the clean set, then flip the labels of the
  ``L = round(fraction * n)`` points with the largest (``'farthest'``) or smallest
  (``'nearest'``) ``|f(x_i)|``, the distance to the hyperplane up to the factor
  ``1 / ||w||``; equal distances go to the lower index. Random flips
  (:func:`random_label_flip`) are their third baseline.

  Args:
    fraction: flip budget, a fraction of the training set.
    order: 'farthest' or 'nearest'.
    C: the SVM's soft-margin constant (the attacker's model of the learner).
    tol: SMO tolerance of the SVM fit.

  Returns:
    ``attack(x, y, key=None) -> PoisonOutput(x, y', info)`` for labels in {0, 1}; same size
    and inputs, exactly ``L`` labels changed, deterministic (the key is unused). ``info``:
    ``poison_mask``.
  """
  fraction = check_fraction('fraction', fraction)
  _checks.check_choice('order', order, _ORDERS)
  C = _checks.check_positive('C', C)
  tol = _checks.check_positive('tol', tol)

  def attack(x, y, key=None):
    del key
    check_dataset(x, y, num_classes=2)
    mask = _distance_mask(x, y, jnp.asarray(num_poison(fraction, x.shape[0]), jnp.int32),
                          jnp.asarray(C, x.dtype), tol=float(tol), order=order)
    y_new = jnp.where(mask, 1 - y, y).astype(y.dtype)
    return PoisonOutput(x, y_new, {'poison_mask': mask})
  return attack
