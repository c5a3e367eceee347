"""Gradient-descent evasion with a mimicry term (Biggio, Corona, Maiorca, Nelson, Srndic,
Laskov, Giacinto & Roli, "Evasion Attacks against Machine Learning at Test Time", ECML PKDD
2013).

The attacker moves a malicious point ``x0`` (class ``y``) to minimise, eq. (2),

    F(x) = g(x) - lam / n sum_i k((x - x_i) / h)     s.t.  d(x, x0) <= d_max,  x in the box,

where ``g`` is the classifier's discriminant (``g > 0``: classified as ``y``; here the
margin ``z_y - max_{j != y} z_j`` of ``logits_fn``, which for a single-logit model is its
score, e.g. an SVM's decision function) and the second term is a kernel density estimate
of the *target* (benign) class over the attacker's samples ``x_i`` (the "mimicry" term:
it pulls the point towards dense benign regions where ``g``'s gradient is informative).
Algorithm 1: from ``x^0 = x0``, step ``x^m = P(x^{m-1} - t grad F / ||grad F||_2)``,
``P`` the Euclidean projection onto the feasible set, until the objective decreases by
less than ``tol``.

* ``norm`` of ``d``: 'l1' (the paper's MNIST and PDF experiments), 'l2' or 'linf'; the
  projections onto ``{||x - x0||_p <= d_max} ∩ box`` are exact (L1: sort-based, L2:
  bisection on the multiplier of ``clip(v / (1 + mu), lo, hi)``, L_inf: clipping).
* ``add_only=True``: the lower bound becomes ``x0`` per example (the PDF setting, where
  keywords can only be added: the box ``x0 <= x <= hi``).
* Kernels: 'gaussian' ``k = exp(-||x - x_i||_2^2 / h^2)``, 'laplacian'
  ``exp(-||x - x_i||_1 / h)``, unnormalised (the constant goes into ``lam``).
* Discriminants: any ``logits_fn``; :func:`svm_decision_fn` builds one from an SVM's
  dual form ``g(x) = sum_i alpha_i s_i k(x, sv_i) + b`` (scikit-learn's ``dual_coef_``,
  ``support_vectors_``, ``intercept_``).

Deliberate differences from the paper: the stop rule reads "the decrease
``F(x^{m-1}) - F(x^m)`` is below ``tol``" (the paper prints ``F(x^m) - F(x^{m-1}) < eps``),
and when the last step increased ``F`` the previous point is kept; ``max_steps`` caps the
loop; examples stop independently (one ``lax.while_loop`` for the batch). Like the paper,
the attack minimises ``g`` within the budget (it does not stop at the boundary), so the
budget is ``'fixed'``: ``||x_adv - x0||_p <= d_max`` and the box hold.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

KERNELS = ('gaussian', 'laplacian')
_L2_BISECTIONS = 60


def kernel_density(x: jax.Array, samples: jax.Array, bandwidth, kernel: str = 'gaussian'
                   ) -> jax.Array:
  """``p(x) = 1/n sum_i k((x - x_i) / h)`` per example (``[B]``), unnormalised kernels
  (module docstring); ``samples`` ``[n, ...]`` of the target class."""
  xf, sf = common._flat(x), samples.reshape((samples.shape[0], -1)).astype(x.dtype)
  h = jnp.asarray(bandwidth, x.dtype)
  if kernel == 'gaussian':
    d2 = (jnp.sum(xf * xf, 1)[:, None] + jnp.sum(sf * sf, 1)[None, :]
          - 2.0 * xf @ sf.T)
    return jnp.mean(jnp.exp(-jnp.maximum(d2, 0.0) / (h * h)), axis=1)
  d1 = jnp.sum(jnp.abs(xf[:, None, :] - sf[None, :, :]), axis=-1)
  return jnp.mean(jnp.exp(-d1 / h), axis=1)


def svm_decision_fn(support_vectors, dual_coef, intercept, *, kernel: str = 'rbf',
                    gamma=None):
  """The dual-form SVM discriminant ``g(x) = sum_i c_i k(x, sv_i) + b`` as a single-logit
  ``logits_fn: x [B, ...] -> [B, 1]`` (class 1 when ``g > 0``, scikit-learn's
  ``classes_[1]``), with ``c_i = alpha_i s_i`` (scikit-learn's ``dual_coef_[0]``).

  Args:
    support_vectors: ``[m, d]``.
    dual_coef: ``[m]`` (or scikit-learn's ``[1, m]``).
    intercept: the bias ``b`` (scalar or scikit-learn's ``[1]``).
    kernel: 'rbf' (``exp(-gamma ||x - sv||^2)``) or 'linear' (``x . sv``).
    gamma: the RBF width (required for 'rbf'; scikit-learn's ``_gamma``, the value
      ``gamma='scale'`` resolves to).
  """
  _checks.check_choice('kernel', kernel, ('rbf', 'linear'))
  sv = jnp.asarray(support_vectors, jnp.float32)
  c = jnp.asarray(dual_coef, jnp.float32).reshape(-1)
  if sv.ndim != 2 or sv.shape[0] != c.shape[0]:
    raise ValueError(f'support_vectors has shape {tuple(sv.shape)} and dual_coef '
                     f'{tuple(c.shape)}; expected [m, d] and [m].')
  b = jnp.asarray(intercept, jnp.float32).reshape(())
  if kernel == 'rbf' and gamma is None:
    raise ValueError('gamma=None: the rbf kernel needs its width gamma > 0.')
  gam = 0.0 if gamma is None else _checks.check_positive('gamma', gamma)
  w = sv.T @ c                                   # the linear kernel's primal weights

  def logits_fn(x):
    xf = common._flat(x).astype(jnp.float32)
    if kernel == 'linear':
      return (xf @ w + b)[:, None]
    d2 = jnp.sum(xf * xf, 1)[:, None] + jnp.sum(sv * sv, 1)[None, :] - 2.0 * xf @ sv.T
    return (jnp.exp(-gam * jnp.maximum(d2, 0.0)) @ c + b)[:, None]
  return logits_fn


def _project_l2_box(v: jax.Array, eps, lo: jax.Array, hi: jax.Array) -> jax.Array:
  """Exact projection of each row of ``v`` [B, d] onto ``{||d||_2 <= eps} ∩ [lo, hi]``
  (``lo <= 0 <= hi``): ``clip(v / (1 + mu), lo, hi)``, ``mu >= 0`` the KKT multiplier,
  found by bisection (``||.||`` is non-increasing in ``mu``)."""
  e = jnp.broadcast_to(jnp.asarray(eps, v.dtype), v.shape[:1])
  d_of = lambda mu: jnp.clip(v / (1.0 + mu[:, None]), lo, hi)  # noqa: E731
  nrm = lambda d: jnp.sqrt(jnp.sum(d * d, axis=1))  # noqa: E731
  inside = nrm(d_of(jnp.zeros_like(e))) <= e
  hi_mu = nrm(v) / jnp.maximum(e, 1e-12)

  def body(_, s):
    a, b = s
    m = 0.5 * (a + b)
    big = nrm(d_of(m)) > e
    return jnp.where(big, m, a), jnp.where(big, b, m)
  _, mu = lax.fori_loop(0, _L2_BISECTIONS, body, (jnp.zeros_like(e), hi_mu))
  mu = jnp.where(inside, 0.0, mu)
  return jnp.where((e <= 0)[:, None], 0.0, d_of(mu))


def project(x: jax.Array, x0: jax.Array, d_max, norm: str, lo: jax.Array,
            hi: jax.Array) -> jax.Array:
  """Euclidean projection of ``x`` onto ``{||x' - x0||_p <= d_max} ∩ [lo, hi]`` (``lo``,
  ``hi`` broadcastable to ``x``, containing ``x0``)."""
  b = x.shape[0]
  v = (x - x0).reshape((b, -1))
  lo_d = jnp.broadcast_to(lo - x0, x.shape).reshape((b, -1))
  hi_d = jnp.broadcast_to(hi - x0, x.shape).reshape((b, -1))
  if norm == 'l1':
    d = common.project_l1(v, d_max, lo_d, hi_d)
  elif norm == 'l2':
    d = _project_l2_box(v, d_max, lo_d, hi_d)
  else:
    d = jnp.clip(common.project_linf(v, d_max), lo_d, hi_d)
  return (x0 + d.reshape(x.shape)).astype(x.dtype)


def mimicry_evasion(*, d_max, norm: str = 'l1', lam=0.0, bandwidth=1.0,
                    target_samples=None, kernel: str = 'gaussian', step_size=0.01,
                    max_steps: int = 500, tol=1e-6, bounds=(0.0, 1.0),
                    add_only: bool = False, targeted: bool = False):
  """Biggio et al. (2013) gradient-descent evasion with the mimicry term; see the module
  docstring.

  Args:
    d_max: the distance budget (>= 0; may be traced, e.g. vmapped over a grid).
    norm: 'l1' (the paper's), 'l2' or 'linf'.
    lam: weight of the density term (>= 0; may be traced); 0: plain gradient descent on g.
    bandwidth: the kernel bandwidth ``h`` (> 0; may be traced).
    target_samples: ``[n, ...]`` samples of the target (benign) class for the density
      estimate; required when ``lam > 0``.
    kernel: 'gaussian' or 'laplacian'.
    step_size: the step ``t`` of Algorithm 1 (> 0, an L2 length; may be traced).
    max_steps: cap on iterations (>= 1).
    tol: stop when ``F`` decreases by less than ``tol`` in a step (>= 0).
    bounds: the feature box ``(lo, hi)``.
    add_only: the lower bound is ``x0`` (features can only increase).
    targeted: ``y`` are target classes (``g = max_{j != y} z_j - z_y``); default: ``y``
      are the true (malicious) labels.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'fixed'); info:
    ``success`` [B], ``steps`` [B] (gradient steps taken; one forward and backward each,
    plus one at ``x0``), ``discriminant`` [B] (``g`` at ``x_adv``), ``density`` [B]
    (``p`` at ``x_adv``; 0 without ``target_samples``), ``objective`` [B], ``distance``
    [B] (``||x_adv - x0||_p``).
  """
  common.check_common(eps=d_max, norm_=norm, eps_name='d_max')
  lo, hi = common.check_common(bounds=bounds)
  _checks.check_float('lam', lam, minimum=0.0)
  _checks.check_positive('bandwidth', bandwidth)
  _checks.check_positive('step_size', step_size)
  _checks.check_float('tol', tol, minimum=0.0)
  _checks.check_int('max_steps', max_steps, minimum=1)
  _checks.check_choice('kernel', kernel, KERNELS)
  common.check_bool(add_only=add_only, targeted=targeted)
  if target_samples is None:
    if not _checks.is_concrete(lam) or float(lam) > 0:
      raise ValueError(f'lam={lam!r} needs target_samples (the target class\'s samples '
                       'of the density term); got None.')
  else:
    _checks.check_array('target_samples', target_samples, dtype_kind='f', finite=True)
    if target_samples.ndim < 2 or target_samples.shape[0] == 0:
      raise ValueError(f'target_samples has shape {tuple(target_samples.shape)}; '
                       'expected a non-empty [n, ...].')

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, (lo, hi), logits_fn)
    if target_samples is not None and tuple(target_samples.shape[1:]) != tuple(x.shape[1:]):
      raise ValueError(f'target_samples has example shape {tuple(target_samples.shape[1:])}'
                       f'; x has {tuple(x.shape[1:])}.')
    b = x.shape[0]
    sign = -1.0 if targeted else 1.0

    def terms(v):
      z = logits_fn(v)
      g = sign * common.margin(z, y)
      p = (jnp.zeros((b,), v.dtype) if target_samples is None else
           kernel_density(v, target_samples, bandwidth, kernel))
      return g, p

    def total(v):
      g, p = terms(v)
      f = g - lam * p
      return jnp.sum(f), f

    vg = jax.grad(total, has_aux=True)
    lower = x if add_only else jnp.full_like(x, lo)
    upper = jnp.full_like(x, hi)

    def cond(s):
      return jnp.any(s[3]) & (s[4] < max_steps)

    def body(s):
      xc, fc, gc, active, it, steps = s
      d = common.normalize(gc, 'l2')
      xn = project(xc - step_size * d, x, d_max, norm, lower, upper)
      gn, fn = vg(xn)
      improved = fn < fc
      take = active & improved
      keep_on = take & (fc - fn >= tol)
      xc = common.select(take, xn, xc)
      gc = common.select(take, gn, gc)
      fc = jnp.where(take, fn, fc)
      return xc, fc, gc, keep_on, it + 1, steps + take.astype(jnp.int32)

    g0, f0 = vg(x)
    zeros = jnp.zeros((b,), jnp.int32)
    x_adv, f_adv, _, _, _, steps = lax.while_loop(
        cond, body, (x, f0, g0, jnp.ones((b,), bool), jnp.asarray(0, jnp.int32), zeros))
    g_adv, p_adv = terms(x_adv)
    info = {'success': common.success(logits_fn(x_adv), y, targeted), 'steps': steps,
            'discriminant': g_adv, 'density': p_adv, 'objective': f_adv,
            'distance': common.norm(x_adv - x, norm)}
    return AttackOutput(x_adv, info, 'fixed')
  return attack


def linear_l2_minimiser(w, x0, d_max) -> np.ndarray:
  """Closed form of ``argmin w.x`` over ``||x - x0||_2 <= d_max`` (no box):
  ``x0 - d_max w / ||w||`` (what the attack returns on a linear ``g`` with ``lam = 0``
  when the box is not active)."""
  w, x0 = np.asarray(w, np.float64), np.asarray(x0, np.float64)
  return x0 - d_max * w / np.linalg.norm(w)
