"""Gradient poisoning of an SVM (Biggio, Nelson, Laskov, ICML 2012), linear or RBF kernel.

The attacker injects points ``(x_c, y_c)`` and moves ``x_c`` by gradient *ascent* of the
validation hinge loss ``L(x_c) = mean_k max(0, 1 - s_k f_{x_c}(x_k))`` of the SVM retrained
on ``D u {(x_c, y_c)}``, ``f(x) = sum_i alpha_i s_i k(x_i, x) + b``. The gradient goes
through the SVM's optimality conditions: with the margin support vectors ``S`` held on the
margin, ``(b, alpha_S)`` solve a linear KKT system in ``Q = s s^T K`` whose derivative in
``x_c`` is the paper's eqs. (7)-(10), ``dK(x_i, x_c)/dx_c`` entering through the Gram
matrix (``x_i`` for the linear kernel, ``2 gamma (x_i - x_c) k(x_i, x_c)`` for the RBF
kernel; :func:`learners.svm_kkt_dual`, differentiated by ``jax.grad``). The SVM is
re-solved exactly (SMO on the Gram matrix, warm-started) after every step, so the active
sets are always those of the current point.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning import learners
from jaxsec.attacks.poisoning.base import PoisonOutput, check_dataset, check_fraction, check_validation, num_poison


def validation_hinge(w, b, x_val, y_val):
  """Mean hinge loss ``max(0, 1 - s f(x))`` of ``f = w.x + b`` on a labelled set."""
  s = 2.0 * y_val.astype(w.dtype) - 1.0
  f = x_val.reshape((x_val.shape[0], -1)) @ w + b
  return jnp.mean(jax.nn.relu(1.0 - s * f))


def _kkt_validation_hinge(x_all, y_all, sol, c, point, x_val, y_val, kernel, gamma):
  """The validation hinge loss with row ``c`` of the training set at ``point`` and the
  active sets of ``sol`` frozen: the function whose ``jax.grad`` is Biggio's gradient."""
  xs = x_all.at[c].set(point)
  if kernel == 'linear':
    w, b = learners.svm_kkt_solution(xs, y_all, sol)
    return validation_hinge(w, b, x_val, y_val)
  alpha, b = learners.svm_kkt_dual(xs, y_all, sol, kernel=kernel, gamma=gamma)
  f = learners.svm_decision(alpha, b, xs, y_all, x_val, kernel=kernel, gamma=gamma)
  s = 2.0 * y_val.astype(f.dtype) - 1.0
  return jnp.mean(jax.nn.relu(1.0 - s * f))


def svm_poisoning_gradient(x, y, xc, yc, x_val, y_val, *, C: float = 1.0, tol: float = 1e-6,
                           sample_weight=None, alpha0=None, kernel: str = 'linear',
                           gamma: float | None = None):
  """Biggio's gradient ``dL/dx_c`` and the loss, for one poison point appended to ``(x, y)``.

  Args:
    x, y: clean training set ([n, d], labels in {0, 1}).
    xc, yc: the poison point ([d]) and its label (int scalar).
    x_val, y_val: the attacker's validation set.
    C, tol: SVM constant and SMO tolerance.
    sample_weight, alpha0: optional [n + 1] weights and warm start for the SVM.
    kernel, gamma: the SVM's kernel, ``'linear'`` or ``'rbf'`` with width ``gamma``.

  Returns:
    ``(loss, grad, solution)``: the validation hinge loss at ``x_c``, its gradient [d] and
    the :class:`learners.SVMSolution` on ``D u {x_c}``.
  """
  learners.check_kernel(kernel, gamma)
  x_all = jnp.concatenate([x, xc[None]], axis=0)
  y_all = jnp.concatenate([y, jnp.asarray(yc, y.dtype)[None]])
  sol = learners.svm_dual(x_all, y_all, C=C, tol=tol, sample_weight=sample_weight,
                          alpha0=alpha0, kernel=kernel, gamma=gamma)
  loss, grad = jax.value_and_grad(
      lambda p: _kkt_validation_hinge(x_all, y_all, sol, x.shape[0], p, x_val, y_val,
                                      kernel, gamma))(xc)
  return loss, grad, sol


def svm_poisoning(*, fraction: float | None = None, num_points: int | None = None,
                  C: float = 1.0, step_size: float = 0.1, num_steps: int = 50,
                  bounds: tuple[float, float] | None = (0.0, 1.0), tol: float = 1e-5,
                  kernel: str = 'linear', gamma: float | None = None) -> Callable:
  """Biggio et al. (2012)'s poisoning attack on a binary SVM (injection).

  Each poison point starts as a copy of a random training point with its label flipped
  (the paper's initialisation) and takes ``num_steps`` steps
  ``x_c <- Proj_bounds(x_c + step_size * g / ||g||)`` along the gradient ``g`` of the
  validation hinge loss through the SVM's KKT conditions; the best point seen (highest
  validation loss) is kept (the paper stops when the loss stops increasing). Several
  points are added one after another, each optimised with the earlier ones in the training
  set (the paper's multi-point extension). The result has ``n + n_poison`` rows, the
  poison appended last.

  Args:
    fraction / num_points: the budget, either a fraction of ``n`` or a count (exactly one).
    C: the SVM's soft-margin constant (the learner the attacker targets).
    step_size: step length in input units (the gradient is normalised).
    num_steps: gradient steps per poison point.
    bounds: the input box the poison is projected on (``None``: unconstrained).
    tol: SMO tolerance (KKT violation) of every retraining.
    kernel, gamma: the targeted SVM's kernel: ``'linear'`` (default) or ``'rbf'``
      (``exp(-gamma ||a - b||^2)``, ``gamma > 0`` required), the paper's two settings.

  Returns:
    ``attack(x, y, key, *, x_val=None, y_val=None) -> PoisonOutput(x', y', info)``;
    ``info``: ``poison_mask``, ``val_loss`` ([n_poison, num_steps + 1], the validation
    hinge loss along each point's path) and ``path`` ([n_poison, num_steps + 1, d], the
    point at which each ``val_loss`` entry was measured). The validation set defaults to
    the training set.
  """
  if (fraction is None) == (num_points is None):
    raise ValueError(f'Give exactly one of fraction={fraction!r} and '
                     f'num_points={num_points!r}.')
  if fraction is not None:
    fraction = check_fraction('fraction', fraction)
  else:
    num_points = _checks.check_int('num_points', num_points, minimum=0)
  C = _checks.check_positive('C', C)
  step_size = _checks.check_positive('step_size', step_size)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)
  tol = _checks.check_positive('tol', tol)
  gamma = learners.check_kernel(kernel, gamma)
  svm_kw = dict(C=C, tol=tol, kernel=kernel, gamma=gamma)

  def proj(v):
    return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])

  def run(x, y, key, x_val, y_val, n_p):
    n, d = x.shape
    starts = jax.random.randint(key, (n_p,), 0, n)
    buf_x = jnp.concatenate([x, jnp.zeros((n_p, d), x.dtype)], 0)
    buf_y = jnp.concatenate([y, 1 - y[starts]]).astype(y.dtype)

    def one_point(k, carry):
      buf_x, alpha, hist, path = carry
      c = n + k
      weight = (jnp.arange(n + n_p) <= c).astype(x.dtype)
      xc0 = proj(x[starts[k]])
      base_x, base_y = buf_x, buf_y

      def evaluate(xc, alpha):
        xa = base_x.at[c].set(xc)
        sol = learners.svm_dual(xa, base_y, sample_weight=weight, alpha0=alpha, **svm_kw)
        loss, g = jax.value_and_grad(
            lambda p: _kkt_validation_hinge(xa, base_y, sol, c, p, x_val, y_val, kernel,
                                            gamma))(xc)
        return loss, g, sol.alpha

      def step(carry, _):
        xc, alpha, best_x, best_l = carry
        loss, g, alpha = evaluate(xc, alpha)
        better = loss > best_l
        best_x = jnp.where(better, xc, best_x)
        best_l = jnp.where(better, loss, best_l)
        x_next = proj(xc + step_size * g / jnp.maximum(jnp.linalg.norm(g), 1e-12))
        return (x_next, alpha, best_x, best_l), (loss, xc)

      init = (xc0, alpha, xc0, jnp.asarray(-jnp.inf, x.dtype))
      (xc, alpha, best_x, best_l), (losses, points) = jax.lax.scan(step, init, None,
                                                                   length=num_steps)
      last, _, alpha = evaluate(xc, alpha)
      best_x = jnp.where(last > best_l, xc, best_x)
      hist = hist.at[k].set(jnp.concatenate([losses, last[None]]))
      path = path.at[k].set(jnp.concatenate([points, xc[None]], axis=0))
      buf_x = buf_x.at[c].set(best_x)
      # re-solve at the kept point so the warm start is feasible and current
      sol = learners.svm_dual(buf_x, buf_y, sample_weight=weight, alpha0=alpha, **svm_kw)
      return buf_x, sol.alpha, hist, path

    alpha0 = jnp.zeros((n + n_p,), x.dtype)
    hist0 = jnp.zeros((n_p, num_steps + 1), x.dtype)
    path0 = jnp.zeros((n_p, num_steps + 1, d), x.dtype)
    buf_x, _, hist, path = jax.lax.fori_loop(0, n_p, one_point,
                                             (buf_x, alpha0, hist0, path0))
    return buf_x, buf_y, hist, path

  run = jax.jit(run, static_argnums=(5,))

  def attack(x, y, key, *, x_val=None, y_val=None):
    check_dataset(x, y, num_classes=2)
    if x.ndim != 2:
      raise ValueError(f'x has shape {tuple(x.shape)}; expected [n, d] features.')
    x_val, y_val = check_validation(x, y, x_val, y_val, num_classes=2, bounds=bounds)
    n = x.shape[0]
    n_p = num_points if fraction is None else num_poison(fraction, n)
    x2, y2, hist, path = run(x, y, key, x_val, y_val, n_p)
    mask = jnp.arange(n + n_p) >= n
    return PoisonOutput(x2, y2, {'poison_mask': mask, 'val_loss': hist, 'path': path})
  return attack
