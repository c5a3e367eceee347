"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), multiclass, L2 and L_inf.

Linearise the classifier and step to the nearest linearised boundary. For the true class
``y`` and a candidate ``k``, ``f'_k = z_k - z_y`` and ``w'_k = grad f'_k``; the nearest
boundary is ``l = argmin_k |f'_k| / ||w'_k||_q`` (``q`` the dual norm: 2 for L2, 1 for
L_inf), and the step (paper, Algorithm 2 and eq. (9)) is

* L2:    ``r_i = (|f'_l| / ||w'_l||_2 + 1e-4) * w'_l / ||w'_l||_2``
* L_inf: ``r_i = (|f'_l| / ||w'_l||_1 + 1e-4) * sign(w'_l)``

and the iterate ``x_i = clip(x + (1 + overshoot) r, lo, hi)``, ``r = sum_i r_i`` (the
official code's overshoot on the accumulated perturbation; the ``1e-4`` is the official
code's and Foolbox's extra distance to land strictly beyond the boundary). For an affine
binary classifier one step is exact: ``||r||_2 = |f(x)| / ||w||_2`` (L2), ``||r||_inf =
|f(x)| / ||w||_1`` (L_inf), times ``1 + overshoot`` (plus the 1e-4).

Candidates are the ``num_classes`` highest logits at the clean input, ``y`` included (the
paper's "top-10"); an iteration is one forward and ``num_classes - 1`` backward passes (one
``jax.vjp``, vmapped over cotangents). Examples stop once misclassified; those misclassified
at ``x`` are returned unchanged (success). Untargeted only: ``y`` are the labels to move away
from. A single-logit binary model is handled as the logits ``[0, z]``.
:func:`linearised_step` and :func:`run_deepfool` are shared with the universal perturbation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

_TINY = 1e-8
_EXTRA = 1e-4   # the official code's extra distance beyond the linearised boundary


def _candidates(z0: jax.Array, y: jax.Array, k: int) -> jax.Array:
  """[B, k] class indices: ``y`` first, then the k-1 other classes with highest logits."""
  onehot = jax.nn.one_hot(y, z0.shape[-1], dtype=bool)
  ranked = jnp.where(onehot, jnp.inf, z0)
  _, idx = lax.top_k(ranked, k)
  return idx


def linearised_step(f, xc: jax.Array, cand: jax.Array, norm: str):
  """One DeepFool linearisation at ``xc``.

  Args:
    f: multiclass logits function.
    xc: current points [B, ...].
    cand: candidate classes [B, K], the label first.
    norm: 'l2' or 'linf'.

  Returns:
    ``(z, r)``: the logits at ``xc`` [B, C] and the DeepFool step ``r_i`` [B, ...] towards
    the nearest linearised boundary (including the 1e-4 extra distance).
  """
  b = xc.shape[0]
  k = cand.shape[1]

  def g(xx):
    z = f(xx)
    zc = jnp.take_along_axis(z, cand, axis=1)
    return zc[:, 1:] - zc[:, :1], z

  d, vjp, z = jax.vjp(g, xc, has_aux=True)           # d [B, K-1]
  ct = jnp.broadcast_to(jnp.eye(k - 1, dtype=d.dtype)[:, None, :], (k - 1, b, k - 1))
  (grads,) = jax.vmap(vjp)(ct)                       # [K-1, B, ...]
  gflat = jnp.moveaxis(grads.reshape((k - 1, b, -1)), 0, 1)   # [B, K-1, D]
  if norm == 'l2':
    gn = jnp.sqrt(jnp.sum(gflat * gflat, axis=-1))
  else:
    gn = jnp.sum(jnp.abs(gflat), axis=-1)
  dist = jnp.abs(d) / (gn + _TINY)                   # [B, K-1]
  # A candidate whose gradient difference is exactly zero can never be reached by the
  # linearisation; exclude it (unless all are, then nothing moves).
  dist = jnp.where(gn > 0, dist, jnp.inf)
  l = jnp.argmin(dist, axis=1)
  dl = jnp.take_along_axis(dist, l[:, None], axis=1)[:, 0]
  wl = jnp.take_along_axis(gflat, l[:, None, None], axis=1)[:, 0]   # [B, D]
  finite = jnp.isfinite(dl)
  dl = jnp.where(finite, dl + _EXTRA, 0.0)
  if norm == 'l2':
    wn = jnp.take_along_axis(gn, l[:, None], axis=1)[:, 0]
    r = (dl / (wn + _TINY))[:, None] * wl
  else:
    r = dl[:, None] * jnp.sign(wl)
  return z, r.reshape(xc.shape).astype(xc.dtype)


def run_deepfool(f, x, y, *, norm: str, num_classes: int, overshoot, max_iter: int,
                 bounds):
  """DeepFool on a batch; ``f`` multiclass logits. Returns (x_adv, r_total, z_adv, steps)."""
  lo, hi = bounds
  b = x.shape[0]
  z0 = f(x)
  k = min(num_classes, z0.shape[-1])
  cand = _candidates(z0, y, k)
  ov = jnp.asarray(overshoot, x.dtype)

  def cond(s):
    i, _, _, active, _, _ = s
    return (i <= max_iter) & jnp.any(active)

  def body(s):
    i, xc, r_tot, active, steps, zc = s
    # The forward pass at xc tells which examples are done; the vmapped backward passes
    # and the update only run while some example is still classified y.
    z = f(xc)
    active = active & (jnp.argmax(z, axis=-1) == y)
    do_step = jnp.any(active) & (i < max_iter)

    def step(_):
      _, r = linearised_step(f, xc, cand, norm)
      r_new = common.select(active, r_tot + r, r_tot)
      x_new = jnp.clip(x + (1.0 + ov) * r_new, lo, hi)
      return common.select(active, x_new, xc), r_new

    xc, r_tot = lax.cond(do_step, step, lambda _: (xc, r_tot), None)
    steps = steps + (active & do_step).astype(jnp.int32)
    return i + 1, xc, r_tot, active, steps, z

  init = (jnp.asarray(0), x, jnp.zeros_like(x), jnp.ones((b,), bool),
          jnp.zeros((b,), jnp.int32), z0)
  # The last executed body evaluated z at the final xc and took no step (either no example
  # was active any more or i == max_iter), so z are the logits at the returned points.
  _, xc, r_tot, _, steps, z = lax.while_loop(cond, body, init)
  return xc, r_tot, z, steps, k


def deepfool(*, norm: str = 'l2', num_classes: int = 10, overshoot=0.02,
             max_iter: int = 50, bounds=(0.0, 1.0)):
  """DeepFool minimal-perturbation attack (Moosavi-Dezfooli et al., CVPR 2016).

  Guarantee: ``lo <= x_adv <= hi``; no fixed budget (it is a minimal-perturbation attack):
  the returned point is the first DeepFool iterate that is misclassified, or the last one
  after ``max_iter`` steps (then ``success`` is False).

  Args:
    norm: 'l2' or 'linf' (the paper's p = 2 and p = inf).
    num_classes: number of candidate classes (top logits at x, the label included), >= 2;
      capped at the model's number of classes.
    overshoot: the paper's eta (0.02); the iterate is ``x + (1 + eta) * sum_i r_i``.
    max_iter: maximum number of DeepFool steps (the paper's attacks take 2-3).
    bounds: input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal'; ``key``
    unused); info: ``success`` [B] (misclassified at ``x_adv``), ``steps`` [B]
    (linearisation steps taken), ``gradients`` [B] (per-class gradient evaluations:
    ``steps * (K - 1)``), and ``'l2'`` or ``'linf'`` (the key is ``norm``) [B]:
    ``||x_adv - x||`` in that norm.

  >>> import jax.numpy as jnp
  >>> w = jnp.array([1.0, -2.0, 2.0]); f = lambda x: (x @ w)[:, None] - 0.75
  >>> x = jnp.full((1, 3), 0.5); y = jnp.array([0])      # f(x) = -0.25, class 0
  >>> xa = deepfool(norm='l2', overshoot=0.0)(f, x, y, None).x_adv
  >>> round(float(jnp.linalg.norm(xa - x)), 4)           # |f| / ||w|| = 0.25 / 3 (+1e-4)
  0.0834
  """
  _checks.check_choice('norm', norm, ('l2', 'linf'))
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_float('overshoot', overshoot, minimum=0.0)
  _checks.check_int('max_iter', max_iter, minimum=1)
  bounds = _checks.check_bounds(bounds)

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, bounds, logits_fn)
    if x.shape[0] == 0:   # empty batch: nothing to attack
      return AttackOutput(x, {'success': jnp.zeros((0,), bool)}, 'minimal')
    f = lambda v: common.as_multiclass(logits_fn(v))
    x_adv, _, z, steps, k = run_deepfool(f, x, y, norm=norm, num_classes=num_classes,
                                         overshoot=overshoot, max_iter=max_iter,
                                         bounds=bounds)
    info = {'success': jnp.argmax(z, axis=-1) != y, 'steps': steps,
            'gradients': steps * (k - 1), norm: common.norm(x_adv - x, norm)}
    return AttackOutput(x_adv, info, 'minimal')
  return attack
