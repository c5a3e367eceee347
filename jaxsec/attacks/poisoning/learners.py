"""Small, exact, jittable learners that poisoning attacks differentiate through.

* :func:`svm_dual` -- the binary soft-margin linear SVM
  ``min_w,b 1/2 ||w||^2 + sum_i C_i max(0, 1 - s_i (w.x_i + b))`` (``s_i = 2 y_i - 1``, the
  bias is not regularised), solved in the dual by SMO with second-order working-set
  selection (Fan, Chen, Lin 2005, the LIBSVM solver) inside one ``lax.while_loop``. It stops
  when the maximal KKT violation ``m(alpha) - M(alpha)`` is below ``tol``, so the solution is
  exact up to ``tol``; it returns the dual variables, which give the margin support vectors
  that Biggio's attack needs (:func:`svm_kkt_solution`). With ``kernel='rbf'`` SMO runs on
  the Gram matrix ``exp(-gamma ||x_i - x_j||^2)`` (Biggio et al.'s kernel setting;
  :func:`svm_decision`, :func:`svm_kkt_dual`).
* :func:`logreg_newton` -- L2-regularised (weights and bias) logistic regression, binary (one
  logit) or multinomial, by damped Newton steps: strongly convex, so its minimiser is unique
  and :func:`implicit_train_fn` can differentiate it by the implicit-function theorem.
* :func:`unrolled_gd` -- any ``apply_fn`` trained by full-batch gradient descent (optionally
  with momentum) unrolled in a ``lax.scan``: ``jax.grad`` through it is the back-gradient of
  Munoz-Gonzalez et al. 2017 (computed by reverse-mode autodiff with rematerialisation
  instead of reversing the dynamics; the value is the same).

Parameters use the Flax ``Dense`` layout ``{'params': {'linear': {'kernel': [d, K],
'bias': [K]}}}`` so that ``jaxsec.models.get('svm' | 'logreg').apply`` and
:func:`linear_apply` read them alike (no Flax import here).

Labels are int32: ``{0, 1}`` for the binary SVM (the sign ``s = 2y - 1``), ``[0, K)`` else.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec import train as train_lib

Array = jax.Array


def linear_params(w: Array, b: Array) -> dict:
  """Flax-``Dense``-layout parameters from ``w`` [d] or [d, K] and ``b`` [] or [K]."""
  w = w[:, None] if w.ndim == 1 else w
  b = jnp.reshape(b, (w.shape[1],))
  return {'params': {'linear': {'kernel': w, 'bias': b}}}


def linear_apply(params: dict, x: Array) -> Array:
  """``logits = flatten(x) @ kernel + bias`` ([B, K]); same as ``models.get('svm').apply``."""
  p = params['params']['linear']
  return x.reshape((x.shape[0], -1)) @ p['kernel'] + p['bias']


def _flat(x: Array) -> Array:
  return x.reshape((x.shape[0], -1))


# ----------------------------------------------------------------------------- SVM (dual)

KERNELS = ('linear', 'rbf')


def check_kernel(kernel: str, gamma: float | None) -> float | None:
  """Validates a kernel spec: ``'linear'`` (``gamma`` unused) or ``'rbf'`` with ``gamma > 0``."""
  _checks.check_choice('kernel', kernel, KERNELS)
  if kernel == 'rbf':
    if gamma is None:
      raise ValueError("gamma=None: kernel='rbf' needs its width gamma > 0 "
                       '(K(a, b) = exp(-gamma ||a - b||^2)).')
    return _checks.check_positive('gamma', gamma)
  return gamma


def kernel_matrix(a: Array, b: Array, *, kernel: str = 'linear',
                  gamma: float | None = None) -> Array:
  """Gram matrix ``K[i, j] = k(a_i, b_j)`` ([n, m]; inputs flattened to [n, d], [m, d]).

  ``'linear'``: ``a_i . b_j``; ``'rbf'``: ``exp(-gamma ||a_i - b_j||^2)`` (scikit-learn's
  ``gamma``). Differentiable in both arguments.
  """
  check_kernel(kernel, gamma)
  af, bf = _flat(a), _flat(b)
  if kernel == 'linear':
    return af @ bf.T
  d2 = jnp.sum(af * af, 1)[:, None] + jnp.sum(bf * bf, 1)[None, :] - 2.0 * af @ bf.T
  assert gamma is not None  # check_kernel raised otherwise
  return jnp.exp(-gamma * jnp.maximum(d2, 0.0))


def _kernel_diag(xf: Array, kernel: str) -> Array:
  """``k(x_i, x_i)``: ``||x_i||^2`` (linear), 1 (rbf)."""
  if kernel == 'linear':
    return jnp.sum(xf * xf, axis=1)
  return jnp.ones((xf.shape[0],), xf.dtype)


class SVMSolution(NamedTuple):
  """A solved binary soft-margin SVM.

  Attributes:
    w: weights [d] of the linear kernel: ``f(x) = w.x + b``; class 1 when ``f > 0``. A
      kernel SVM (``'rbf'``) has no finite weights: ``w`` is NaN there; evaluate ``f`` with
      :func:`svm_decision` (``f(x) = sum_i alpha_i s_i k(x_i, x) + b``).
    b: bias [].
    alpha: dual variables [n], ``0 <= alpha_i <= C_i``, ``sum_i s_i alpha_i = 0``.
    upper: the box ``C_i`` [n] (``C`` times the sample weight).
    gap: final maximal KKT violation ``m(alpha) - M(alpha)`` (<= tol when converged).
    iterations: SMO iterations used.
  """
  w: Array
  b: Array
  alpha: Array
  upper: Array
  gap: Array
  iterations: Array

  @property
  def params(self) -> dict:
    return linear_params(self.w, self.b)


def _svm_sign(y: Array, dtype) -> Array:
  return 2.0 * y.astype(dtype) - 1.0


def _smo(kmat: Array, kdiag: Array, s: Array, upper: Array, alpha: Array, *, tol,
         max_iter: int):
  """LIBSVM's SMO (WSS 2) on the Gram matrix ``kmat``: ``(alpha, bias, gap, iterations)``."""
  dtype = kmat.dtype
  grad = s * (kmat @ (alpha * s)) - 1.0    # G = Q alpha - 1, Q = s s^T * K
  tau = jnp.asarray(1e-12, dtype)
  big = jnp.asarray(jnp.inf, dtype)

  def select(alpha, grad):
    in_up = ((alpha < upper) & (s > 0)) | ((alpha > 0) & (s < 0))
    in_low = ((alpha < upper) & (s < 0)) | ((alpha > 0) & (s > 0))
    score = -s * grad
    i = jnp.argmax(jnp.where(in_up, score, -big))
    m_up = jnp.where(in_up, score, -big)[i]
    m_low = jnp.min(jnp.where(in_low, score, big))
    # second-order choice of j among I_low with score below score_i
    bij = m_up - score
    aij = jnp.maximum(kdiag[i] + kdiag - 2.0 * kmat[i], tau)
    cand = in_low & (bij > 0)
    j = jnp.argmin(jnp.where(cand, -(bij * bij) / aij, big))
    return i, j, m_up - m_low

  def cond(state):
    _, _, gap, it = state
    return (gap > tol) & (it < max_iter)

  def body(state):
    alpha, grad, _, it = state
    i, j, _ = select(alpha, grad)
    # step along d: alpha_i += s_i t, alpha_j -= s_j t (keeps sum s alpha = 0)
    b = -s[i] * grad[i] + s[j] * grad[j]
    a = jnp.maximum(kdiag[i] + kdiag[j] - 2.0 * kmat[i, j], tau)
    ti = jnp.where(s[i] > 0, upper[i] - alpha[i], alpha[i])
    tj = jnp.where(s[j] > 0, alpha[j], upper[j] - alpha[j])
    t = jnp.clip(jnp.minimum(b / a, jnp.minimum(ti, tj)), 0.0)
    alpha = alpha.at[i].add(s[i] * t).at[j].add(-s[j] * t)
    alpha = jnp.clip(alpha, 0.0, upper)
    grad = grad + t * s * (kmat[:, i] - kmat[:, j])
    _, _, gap = select(alpha, grad)
    return alpha, grad, gap, it + 1

  gap0 = select(alpha, grad)[2]
  alpha, grad, gap, it = jax.lax.while_loop(
      cond, body, (alpha, grad, gap0, jnp.asarray(0, jnp.int32)))
  # bias (LIBSVM calculate_rho): b = -rho, rho = mean of s_i G_i over free SVs
  sg = s * grad
  eps_b = 1e-8 * jnp.maximum(jnp.max(upper), 1.0)
  free = (alpha > eps_b) & (alpha < upper - eps_b)
  at_up = alpha >= upper - eps_b
  ub = jnp.min(jnp.where((at_up & (s < 0)) | (~at_up & ~free & (s > 0)), sg, big))
  lb = jnp.max(jnp.where((at_up & (s > 0)) | (~at_up & ~free & (s < 0)), sg, -big))
  nfree = jnp.sum(free)
  rho = jnp.where(nfree > 0, jnp.sum(jnp.where(free, sg, 0.0)) / jnp.maximum(nfree, 1),
                  0.5 * (jnp.where(jnp.isfinite(ub), ub, lb) +
                         jnp.where(jnp.isfinite(lb), lb, ub)))
  return alpha, -rho, gap, it


def svm_dual(x: Array, y: Array, *, C: float = 1.0, sample_weight: Array | None = None,
             tol: float = 1e-4, max_iter: int | None = None,
             alpha0: Array | None = None, kernel: str = 'linear',
             gamma: float | None = None) -> SVMSolution:
  """Binary soft-margin SVM by SMO (second-order working set; LIBSVM's algorithm).

  Args:
    x: [n, ...] inputs (flattened to [n, d]).
    y: [n] int labels in {0, 1}.
    C: the soft-margin constant (traceable).
    sample_weight: optional [n] non-negative weights; point i gets box ``C * weight_i``
      (weight 0 removes the point exactly).
    tol: stop when the maximal KKT violation is below ``tol`` (LIBSVM's ``eps``).
    max_iter: SMO iteration cap (default ``max(10_000, 50 n)``). Check ``gap`` against
      ``tol``: with a large ``C`` on noisy labels SMO needs far more (on a few hundred
      standardised points with 40% flipped labels, C=100 took ~10^6 iterations here and
      LIBSVM 2.6-6.3 million), and the capped solution can be far from the optimum.
    alpha0: feasible warm start (``0 <= alpha0 <= C_i`` and ``sum s_i alpha0_i = 0``);
      moving the inputs keeps a previous solution feasible, so Biggio's attack warm-starts.
    kernel, gamma: ``'linear'`` (the default) or ``'rbf'`` with width ``gamma``
      (:func:`kernel_matrix`); SMO runs on the Gram matrix, as LIBSVM / scikit-learn's
      ``SVC(kernel=..., gamma=...)``.

  Returns:
    :class:`SVMSolution`; jittable, deterministic.
  """
  check_kernel(kernel, gamma)
  x = _flat(x)
  n = x.shape[0]
  dtype = x.dtype
  s = _svm_sign(y, dtype)
  upper = jnp.full((n,), C, dtype)
  if sample_weight is not None:
    upper = upper * sample_weight.astype(dtype)
  if max_iter is None:
    max_iter = max(10_000, 50 * n)
  kmat = kernel_matrix(x, x, kernel=kernel, gamma=gamma)
  kdiag = jnp.diag(kmat)
  alpha = jnp.zeros((n,), dtype) if alpha0 is None else jnp.clip(alpha0.astype(dtype), 0.0,
                                                                    upper)
  alpha, b, gap, it = _smo(kmat, kdiag, s, upper, alpha, tol=tol, max_iter=max_iter)
  w = x.T @ (alpha * s) if kernel == 'linear' else jnp.full((x.shape[1],), jnp.nan, dtype)
  return SVMSolution(w=w, b=b, alpha=alpha, upper=upper, gap=gap, iterations=it)


def svm_decision(alpha: Array, b: Array, x_train: Array, y_train: Array, x: Array, *,
                 kernel: str = 'linear', gamma: float | None = None) -> Array:
  """The dual-form discriminant ``f(x) = sum_i alpha_i s_i k(x_i, x) + b`` ([B]) of an SVM
  trained on ``(x_train, y_train)`` (class 1 when ``f > 0``); differentiable in every
  argument (Biggio's attack differentiates it through ``x_train`` and ``alpha``)."""
  s = _svm_sign(y_train, alpha.dtype)
  return kernel_matrix(x, x_train, kernel=kernel, gamma=gamma) @ (alpha * s) + b


def svm_margin_mask(sol: SVMSolution, rtol: float = 1e-5) -> Array:
  """Margin support vectors: ``0 < alpha_i < C_i`` (up to ``rtol * max C``)."""
  eps = rtol * jnp.maximum(jnp.max(sol.upper), 1e-12)
  return (sol.alpha > eps) & (sol.alpha < sol.upper - eps)


def svm_kkt_dual(x: Array, y: Array, sol: SVMSolution, margin: Array | None = None,
                 ridge: float = 1e-6, *, kernel: str = 'linear',
                 gamma: float | None = None) -> tuple[Array, Array]:
  """``(alpha, b)`` as a differentiable function of ``x`` with the SVM's active sets frozen.

  This is the implicit function of Biggio, Nelson, Laskov (2012), eqs. (7)-(10): for small
  moves of the inputs, the margin support vectors ``S`` (``0 < alpha < C``) stay on the
  margin (``s_k f(x_k) = 1``), error vectors keep ``alpha = C`` and the rest ``alpha = 0``,
  and ``sum_i s_i alpha_i = 0``. Solving that linear system (``Q = s s^T K``, ``K`` the
  kernel's Gram matrix) for ``(b, alpha_S)`` gives the solution; its derivative with
  respect to ``x`` (by ``jax.grad``, through ``dK/dx``) is exactly the paper's
  ``d alpha / du``, ``d b / du``. At the solver's ``x`` the value equals the solver's. A
  ridge ``ridge * mean(diag K)`` is added to ``Q_SS`` (relative error ~1e-6): when ``Q_SS``
  is singular (more margin vectors than ``d + 1`` in a linear kernel) this Tikhonov solve
  tends to the minimum-norm ``alpha``.

  Args:
    x: [n, ...] training inputs (the poison point included), differentiable.
    y: [n] labels in {0, 1}.
    sol: :func:`svm_dual` on ``(x, y)`` with the same kernel.
    margin: optional bool [n] margin set; default :func:`svm_margin_mask`.
    kernel, gamma: as in :func:`svm_dual`.
  """
  xf = _flat(x)
  s = _svm_sign(y, xf.dtype)
  m = (svm_margin_mask(sol) if margin is None else margin).astype(xf.dtype)
  fixed = jnp.where(sol.alpha >= sol.upper * 0.5, sol.upper, 0.0)  # C for error vectors
  q = (s[:, None] * s[None, :]) * kernel_matrix(xf, xf, kernel=kernel, gamma=gamma)
  top = jnp.concatenate([jnp.zeros((1,), xf.dtype), s])[None, :]
  eps = ridge * jnp.mean(_kernel_diag(xf, kernel))
  rows = jnp.concatenate([(m * s)[:, None],
                          m[:, None] * q + jnp.diag(1.0 - m + eps * m)], axis=1)
  a = jnp.concatenate([top, rows], axis=0)
  rhs = jnp.concatenate([jnp.zeros((1,), xf.dtype), m + (1.0 - m) * fixed])
  z = jnp.linalg.solve(a, rhs)
  return z[1:], z[0]


def svm_kkt_solution(x: Array, y: Array, sol: SVMSolution, margin: Array | None = None,
                     ridge: float = 1e-6) -> tuple[Array, Array]:
  """``(w, b)`` of the linear SVM as a differentiable function of ``x`` with the active
  sets frozen: :func:`svm_kkt_dual` with ``w = sum_i alpha_i s_i x_i``.

  Args:
    x: [n, ...] training inputs (the poison point included), differentiable.
    y: [n] labels in {0, 1}.
    sol: :func:`svm_dual` on ``(x, y)`` (linear kernel).
    margin: optional bool [n] margin set; default :func:`svm_margin_mask`.
  """
  alpha, b = svm_kkt_dual(x, y, sol, margin, ridge)
  xf = _flat(x)
  w = xf.T @ (alpha * _svm_sign(y, xf.dtype))
  return w, b


def svm_train_fn(*, C: float = 1.0, tol: float = 1e-4, max_iter: int | None = None
                 ) -> Callable[[Array, Array, Array], dict]:
  """``train_fn(x, y, key) -> params`` for the binary SVM (key unused: it is exact)."""
  C = _checks.check_positive('C', C)
  tol = _checks.check_positive('tol', tol)

  def train_fn(x, y, key=None):
    del key
    return svm_dual(x, y, C=C, tol=tol, max_iter=max_iter).params
  return train_fn


# ------------------------------------------------------------------- logistic regression


def logreg_objective(params: dict, x: Array, y: Array, *, l2: float,
                     sample_weight: Array | None = None) -> Array:
  """Weighted mean cross-entropy + ``l2 / 2 * (||W||^2 + ||b||^2)``."""
  ce = losses_lib.cross_entropy(linear_apply(params, x), y)
  if sample_weight is None:
    data = jnp.mean(ce)
  else:
    data = jnp.sum(sample_weight * ce) / ce.shape[0]
  flat, _ = ravel_pytree(params)
  return data + 0.5 * l2 * jnp.sum(flat * flat)


def logreg_newton(x: Array, y: Array, *, num_classes: int, l2: float = 1e-2,
                  num_steps: int = 20, sample_weight: Array | None = None) -> dict:
  """L2-regularised logistic regression by damped Newton steps (exact to float precision).

  ``num_classes=1`` or ``2`` gives binary logistic regression with one logit
  (``losses.cross_entropy`` switches to the sigmoid); otherwise multinomial. Each step takes
  the best of the Newton step scaled by 1, 1/2, ..., 1/16 (a jittable line search).

  Returns: Flax-``Dense``-layout params (``linear_apply``).
  """
  num_classes = _checks.check_int('num_classes', num_classes, minimum=1)
  _checks.check_positive('l2', l2)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  xf = _flat(x)
  k = 1 if num_classes <= 2 else num_classes
  p0 = linear_params(jnp.zeros((xf.shape[1], k), xf.dtype), jnp.zeros((k,), xf.dtype))
  flat0, unravel = ravel_pytree(p0)

  def obj(flat):
    return logreg_objective(unravel(flat), xf, y, l2=l2, sample_weight=sample_weight)

  scales = jnp.asarray([1.0, 0.5, 0.25, 0.125, 0.0625, 0.0], xf.dtype)

  def step(flat, _):
    g = jax.grad(obj)(flat)
    h = jax.hessian(obj)(flat)
    d = jnp.linalg.solve(h, g)
    vals = jax.vmap(lambda t: obj(flat - t * d))(scales)
    return flat - scales[jnp.argmin(vals)] * d, None

  flat, _ = jax.lax.scan(step, flat0, None, length=num_steps)
  return unravel(flat)


def logreg_train_fn(*, num_classes: int, l2: float = 1e-2, num_steps: int = 20,
                    implicit: bool = True) -> Callable[[Array, Array, Array], dict]:
  """``train_fn(x, y, key) -> params`` for logistic regression.

  With ``implicit=True`` gradients with respect to ``x`` come from the implicit-function
  theorem at the optimum (:func:`implicit_train_fn`), not from the unrolled Newton steps.
  """
  def solve(x, y):
    return logreg_newton(x, y, num_classes=num_classes, l2=l2, num_steps=num_steps)
  if implicit:
    return implicit_train_fn(
        lambda p, x, y: logreg_objective(p, x, y, l2=l2), solve)
  return lambda x, y, key=None: solve(x, y)


# ------------------------------------------------------------- implicit differentiation


def implicit_train_fn(objective: Callable[[Any, Array, Array], Array],
                      solve: Callable[[Array, Array], Any], *, cg_iters: int = 100,
                      cg_tol: float = 1e-8) -> Callable[[Array, Array, Array], Any]:
  """Wraps an exact solver of a strongly convex training objective for implicit gradients.

  With ``theta*(x) = argmin_theta objective(theta, x, y)``, the implicit-function theorem
  gives ``d theta*/dx = -H^{-1} d^2 objective / (d theta dx)`` with ``H`` the Hessian in
  ``theta``. The backward pass solves ``H v = g`` by conjugate gradients on Hessian-vector
  products (no Hessian is formed) and returns ``-d/dx <grad_theta objective, v>``: the
  KKT / influence gradient of Mei and Zhu (2015) and Koh and Liang (2017).

  Args:
    objective: ``objective(params, x, y) -> scalar``, strongly convex in ``params``.
    solve: ``solve(x, y) -> params`` returning its minimiser.
    cg_iters, cg_tol: conjugate-gradient budget for the backward solve.

  Returns:
    ``train_fn(x, y, key=None) -> params`` whose ``jax.grad`` w.r.t. ``x`` is implicit.
  """
  @jax.custom_vjp
  def run(x, y):
    return solve(x, y)

  def fwd(x, y):
    params = solve(x, y)
    return params, (params, x, y)

  def bwd(res, g):
    params, x, y = res
    grad_p = lambda p: jax.grad(objective)(p, x, y)
    hvp = lambda v: jax.jvp(grad_p, (params,), (v,))[1]
    v, _ = jax.scipy.sparse.linalg.cg(hvp, g, maxiter=cg_iters, tol=cg_tol)
    _, vjp_x = jax.vjp(lambda xx: jax.grad(objective)(params, xx, y), x)
    (gx,) = vjp_x(jax.tree_util.tree_map(jnp.negative, v))
    return gx, None

  run.defvjp(fwd, bwd)

  def train_fn(x, y, key=None):
    del key
    return run(x, y)
  return train_fn


# ----------------------------------------------------------------------- unrolled GD


def unrolled_gd(apply_fn: train_lib.ApplyFn, init_fn: Callable[[Array], Any],
                *, num_steps: int, learning_rate: float, momentum: float = 0.0,
                l2: float = 0.0, loss: Callable[[Array, Array], Array] = losses_lib.cross_entropy,
                remat: bool = True) -> Callable[[Array, Array, Array], Any]:
  """``train_fn(x, y, key) -> params``: full-batch (heavy-ball) GD unrolled in ``lax.scan``.

  ``params_0 = init_fn(key)``; each step minimises ``mean(loss(apply_fn(p, x), y)) +
  l2/2 ||p||^2``. ``jax.grad`` of any function of the result with respect to ``x`` is the
  exact gradient through all ``num_steps`` steps (Munoz-Gonzalez et al. 2017's
  back-gradient; ``remat`` recomputes each step in the backward pass to save memory).
  """
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_positive('learning_rate', learning_rate)
  _checks.check_float('momentum', momentum, minimum=0.0, maximum=1.0, strict_max=True)
  _checks.check_positive('l2', l2, allow_zero=True)

  def train_fn(x, y, key):
    params = init_fn(key)

    def obj(p):
      flat, _ = ravel_pytree(p)
      return jnp.mean(loss(apply_fn(p, x), y)) + 0.5 * l2 * jnp.sum(flat * flat)

    def step(carry, _):
      p, v = carry
      g = jax.grad(obj)(p)
      v = jax.tree_util.tree_map(lambda vv, gg: momentum * vv + gg, v, g)
      p = jax.tree_util.tree_map(lambda pp, vv: pp - learning_rate * vv, p, v)
      return (p, v), None

    body = jax.checkpoint(step) if remat else step
    v0 = jax.tree_util.tree_map(jnp.zeros_like, params)
    (params, _), _ = jax.lax.scan(body, (params, v0), None, length=num_steps)
    return params
  return train_fn
