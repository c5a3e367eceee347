"""The influence attack of Koh, Steinhardt & Liang (Machine Learning 2022, Sec. 4).

The attacker maximises the validation (in the paper: test) hinge loss of the victim
trained on clean + poison, ``max L_val(theta*(D_c u D_p))``, with every poison point
inside the sphere + slab feasible set ``F`` of the defender's clean-data bounds
(:mod:`feasible_set`). Following the authors (``iterative_attack.py``,
``init_gradient_attack_from_mask``), the poison is two distinct points, ``x_+`` with label 1
copied ``n_+`` times and ``x_-`` with label 0 copied ``n_-`` times (in inverse class
proportion), each started at a random point of the other class projected onto ``F_y``,
and moved by projected gradient ascent

    x <- P_{F_y}(x + step_size * grad / ||grad||).

The gradient ``d L_val / d x`` is the influence of the poison on the validation loss,
``-grad_theta L_val^T H^{-1} d^2 loss / (d theta d x)``; for the hinge-loss SVM it is
computed exactly here through the SVM's optimality conditions with the active sets frozen
(:func:`learners.svm_kkt_solution`, the same implicit function the authors' smooth hinge
with temperature 0.001 approximates). Copies are one point with weight ``n_+`` (the SVM
box ``C n_+``), which is the same training problem. The projection is exact
(:func:`feasible_set.project_point`; the authors solve a QP with cvxpy). The iterate with
the highest validation loss is returned. The feasible set stays fixed at the clean data's
(the authors' ``em_iter = 0``).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning import decoy as decoy_lib
from jaxsec.attacks.poisoning import feasible_set as fs_lib
from jaxsec.attacks.poisoning import learners
from jaxsec.attacks.poisoning.base import PoisonOutput
from jaxsec.attacks.poisoning.svm_gradient import validation_hinge


def _train_set(x, y, weight, x_pos, x_neg, n_pos, n_neg):
  xa = jnp.concatenate([x, x_pos[None], x_neg[None]])
  ya = jnp.concatenate([y, jnp.asarray([1, 0], y.dtype)])
  wa = jnp.concatenate([weight, jnp.stack([n_pos, n_neg]).astype(x.dtype)])
  return xa, ya, wa


def influence_gradient(x, y, weight, x_pos, x_neg, n_pos, n_neg, x_val, y_val, *,
                       l2: float, tol: float = 1e-6, alpha0=None):
  """Validation hinge loss of the victim trained on ``(x, y)`` (point weights ``weight``)
  plus ``n_pos`` copies of ``(x_pos, 1)`` and ``n_neg`` of ``(x_neg, 0)``, and its gradient
  in ``x_pos`` and ``x_neg``.

  Returns ``(loss, g_pos, g_neg, solution)`` (``solution`` the :class:`learners.SVMSolution`
  on the ``n + 2`` weighted points, for warm starts). ``n = x.shape[0]`` normalises the
  victim's objective (:mod:`decoy`)."""
  n = x.shape[0]
  xa, ya, wa = _train_set(x, y, weight, x_pos, x_neg, n_pos, n_neg)
  sol = decoy_lib.fit_svm(xa, ya, l2=l2, n=n, weight=wa, tol=tol) if alpha0 is None else \
      learners.svm_dual(xa, ya, C=1.0 / (n * l2), sample_weight=wa, tol=tol, alpha0=alpha0)

  def loss_of(points):
    w, b = learners.svm_kkt_solution(xa.at[n:].set(points), ya, sol)
    return validation_hinge(w, b, x_val, y_val)
  loss, g = jax.value_and_grad(loss_of)(jnp.stack([x_pos, x_neg]))
  return loss, g[0], g[1], sol


@functools.partial(jax.jit, static_argnames=('l2', 'num_steps', 'tol'))
def _run(fs, x, y, weight, x_val, y_val, start_pos, start_neg, n_pos, n_neg, step_size, *,
         l2, num_steps, tol):
  xp0, _ = fs_lib.project_point(fs, start_pos, 1)
  xn0, _ = fs_lib.project_point(fs, start_neg, 0)
  alpha0 = jnp.zeros(x.shape[0] + 2, x.dtype)

  def unit(g):
    return g / jnp.maximum(jnp.linalg.norm(g), 1e-12)

  def step(carry, _):
    xp, xn, alpha, best_p, best_n, best_l = carry
    loss, gp, gn, sol = influence_gradient(x, y, weight, xp, xn, n_pos, n_neg, x_val,
                                           y_val, l2=l2, tol=tol, alpha0=alpha)
    better = loss > best_l
    best_p, best_n = jnp.where(better, xp, best_p), jnp.where(better, xn, best_n)
    best_l = jnp.where(better, loss, best_l)
    xp1, _ = fs_lib.project_point(fs, xp + step_size * unit(gp), 1)
    xn1, _ = fs_lib.project_point(fs, xn + step_size * unit(gn), 0)
    return (xp1, xn1, sol.alpha, best_p, best_n, best_l), loss

  init = (xp0, xn0, alpha0, xp0, xn0, jnp.asarray(-jnp.inf, x.dtype))
  (xp, xn, alpha, best_p, best_n, best_l), hist = jax.lax.scan(step, init, None,
                                                                length=num_steps)
  last = influence_gradient(x, y, weight, xp, xn, n_pos, n_neg, x_val, y_val, l2=l2,
                            tol=tol, alpha0=alpha)[0]
  better = last > best_l
  return (jnp.where(better, xp, best_p), jnp.where(better, xn, best_n),
          jnp.concatenate([hist, last[None]]))


def influence_attack(*, fraction: float, l2: float = 0.01, percentile: float = 90.0,
                     bounds: tuple[float, float] | None = (0.0, 1.0),
                     step_size: float = 0.1, num_steps: int = 100,
                     tol: float = 1e-5) -> Callable:
  """Koh, Steinhardt & Liang's influence attack on a binary linear SVM behind sphere + slab.

  Args:
    fraction: injection budget, ``n_poison = round(fraction * n)`` points.
    l2: the victim's weight decay (``C = 1 / (n l2)``).
    percentile: the defender's radii (:func:`feasible_set.feasible_set`) on the clean data.
    bounds: input box of the poison (None: none).
    step_size: step length in input units (the gradient is normalised per point).
    num_steps: projected gradient steps.
    tol: SMO tolerance of each retraining.

  Returns:
    ``attack(x, y, key, *, x_val=None, y_val=None) -> PoisonOutput(x', y', info)`` with
    ``n + n_poison`` rows, the poison last (``n_+`` copies of ``x_+`` labelled 1, then the
    ``n_-`` copies of ``x_-`` labelled 0); the key picks the two start points. The
    victim in the attacker's model trains on the clean points the defender keeps.
    ``info``: ``poison_mask``, ``val_loss`` ([num_steps + 1] along the path),
    ``n_pos``, ``feasible_set``.
  """
  tm = fs_lib.threat_model(fraction=fraction, l2=l2, percentile=percentile, bounds=bounds,
                           tol=tol)
  l2, tol = tm.l2, tm.tol
  step_size = _checks.check_positive('step_size', step_size)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)

  def attack(x, y, key, *, x_val=None, y_val=None):
    x_val, y_val, n_p, fs, weight = fs_lib.setup(tm, x, y, x_val, y_val)
    n = x.shape[0]
    n_pos = round(float(jnp.mean(y == 0)) * n_p)
    n_neg = n_p - n_pos
    k_pos, k_neg = jax.random.split(key)
    start_pos = x[jax.random.choice(k_pos, jnp.flatnonzero(y == 0))]
    start_neg = x[jax.random.choice(k_neg, jnp.flatnonzero(y == 1))]
    xp, xn, hist = _run(fs, x, y, weight, x_val, y_val, start_pos, start_neg,
                        jnp.asarray(n_pos, x.dtype), jnp.asarray(n_neg, x.dtype),
                        jnp.asarray(step_size, x.dtype), l2=l2, num_steps=num_steps, tol=tol)
    poison_x = jnp.concatenate([jnp.broadcast_to(xp, (n_pos, x.shape[1])),
                                jnp.broadcast_to(xn, (n_neg, x.shape[1]))])
    poison_y = jnp.concatenate([jnp.ones(n_pos, y.dtype), jnp.zeros(n_neg, y.dtype)])
    return PoisonOutput(jnp.concatenate([x, poison_x]), jnp.concatenate([y, poison_y]),
                        {'poison_mask': jnp.arange(n + n_p) >= n, 'val_loss': hist,
                         'n_pos': n_pos, 'feasible_set': fs})
  return attack
