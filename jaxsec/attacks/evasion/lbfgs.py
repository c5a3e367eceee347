"""Box-constrained L-BFGS attack (Szegedy et al., "Intriguing properties of neural
networks", ICLR 2014, Sec. 4.1).

Approximately minimise ``c * ||r||_2^2 + loss_f(x + r, l)`` subject to ``x + r in
[lo, hi]^n``, with a line search over ``c``: the larger ``c``, the smaller ``r``, so the
minimal perturbation is the minimiser for the largest ``c`` still classified ``l`` (the
paper's "minimum c" names the same boundary value).

Documented departures (the objective is unchanged):

* The box is handled by ``x + r = lo + (hi - lo)(tanh(w) + 1)/2`` (as in C&W) and the
  problem in ``w`` is solved with ``optax.lbfgs`` (zoom line search, strong Wolfe
  conditions) instead of L-BFGS-B; the minimiser is the same wherever it lies inside the
  open box.
* L-BFGS runs independently per example (``jax.vmap``): no shared curvature pairs or line
  searches.
* The search over ``c`` is per example: from ``initial_const``, ``c`` is multiplied by 10
  after a success and divided by 10 after a failure until bracketed, then bisected
  geometrically (``sqrt(c_lo * c_hi)``), ``num_search_steps`` solves in all; the smallest
  successful perturbation is returned.
* ``loss_f`` is the target label's cross-entropy (the paper). Untargeted
  (``targeted=False``, ``y`` the true labels) minimises ``c ||r||^2 + log p_y(x + r)``
  (i.e. ``-CE(y)``) and succeeds when the prediction leaves ``y``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
import optax
import optax.tree_utils as otu

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.cw import from_box, to_box


def lbfgs(*, targeted: bool = False, initial_const=1.0, num_search_steps: int = 10,
          max_iter: int = 100, memory_size: int = 10, tol=1e-5, bounds=(0.0, 1.0)):
  """Szegedy et al.'s box-constrained L-BFGS minimal-perturbation attack.

  Guarantee: ``lo <= x_adv <= hi``; where ``success`` is True, ``x_adv`` is classified as the
  target (targeted) or not as ``y`` (untargeted); elsewhere ``x_adv = x``.

  Args:
    targeted: ``y`` are target labels ``l`` (the paper's setting); else true labels.
    initial_const: first ``c`` > 0 of the line search.
    num_search_steps: number of L-BFGS solves (values of ``c``) per example.
    max_iter: L-BFGS iterations per solve.
    memory_size: L-BFGS history length.
    tol: stop a solve when the gradient norm (in ``w``) is below this.
    bounds: input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal'); info:
    ``success`` [B], ``l2`` [B] (0 where it failed), ``const`` [B] (the ``c`` of the
    returned solution, 0 where it failed), ``steps`` [B] (L-BFGS iterations over all
    solves) and ``gradients`` [B] (gradient evaluations including the line searches').
  """
  common.check_bool(targeted=targeted)
  _checks.check_float('initial_const', initial_const, minimum=0.0, strict_min=True)
  _checks.check_counts(num_search_steps=num_search_steps, max_iter=max_iter,
                       memory_size=memory_size)
  _checks.check_float('tol', tol, minimum=0.0)
  bounds = _checks.check_bounds(bounds)
  lo, hi = bounds
  opt = optax.lbfgs(memory_size=memory_size)

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, bounds, logits_fn)
    if x.shape[0] == 0:   # empty batch: nothing to attack
      return AttackOutput(x, {'success': jnp.zeros((0,), bool)}, 'minimal')
    b = x.shape[0]
    dt = x.dtype
    f = lambda v: common.as_multiclass(logits_fn(v))

    def logp(z, lab):
      return jax.nn.log_softmax(z)[lab]

    def solve_one(x1, lab, c):
      """One example: minimise c||r||^2 + loss in w; returns (x_adv, success, iters, evals)."""
      def obj(w):
        xa = to_box(w, lo, hi)
        z = f(xa[None])[0]
        loss = -logp(z, lab) if targeted else logp(z, lab)
        return c * jnp.sum((xa - x1) ** 2) + loss

      vg = optax.value_and_grad_from_state(obj)

      def body(carry):
        w, state = carry
        value, grad = vg(w, state=state)
        upd, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=obj)
        return optax.apply_updates(w, upd), state

      def cond(carry):
        _, state = carry
        k = otu.tree_get(state, 'count')
        g = otu.tree_get(state, 'grad')
        return (k == 0) | ((k < max_iter) & (otu.tree_norm(g) >= tol))

      w0 = from_box(x1, lo, hi)
      w, state = lax.while_loop(cond, body, (w0, opt.init(w0)))
      xa = to_box(w, lo, hi)
      pred = jnp.argmax(f(xa[None])[0])
      succ = (pred == lab) if targeted else (pred != lab)
      k = otu.tree_get(state, 'count')
      ls = otu.tree_get(state, 'num_linesearch_steps')
      return xa, succ, k, k + ls

    solve = jax.vmap(solve_one)

    def search(_, s):
      c, c_lo, c_hi, best_l2, best_adv, best_c, iters, evals = s
      xa, succ, k, e = solve(x, y, c)
      l2 = common.norm(xa - x, 'l2')
      imp = succ & (l2 < best_l2)
      best_l2 = jnp.where(imp, l2, best_l2)
      best_adv = common.select(imp, xa, best_adv)
      best_c = jnp.where(imp, c, best_c)
      c_lo = jnp.where(succ, c, c_lo)
      c_hi = jnp.where(succ, c_hi, c)
      both = (c_lo > 0) & jnp.isfinite(c_hi)
      c = jnp.where(both, jnp.sqrt(c_lo * jnp.where(jnp.isfinite(c_hi), c_hi, 1.0)),
                    jnp.where(succ, c * 10.0, c / 10.0))
      return c, c_lo, c_hi, best_l2, best_adv, best_c, iters + k, evals + e

    init = (jnp.full((b,), initial_const, dt), jnp.zeros((b,), dt),
            jnp.full((b,), jnp.inf, dt), jnp.full((b,), jnp.inf, dt), x,
            jnp.zeros((b,), dt), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.int32))
    _, _, _, best_l2, x_adv, best_c, iters, evals = lax.fori_loop(
        0, num_search_steps, search, init)
    success = jnp.isfinite(best_l2)
    info = {'success': success, 'l2': common.norm(x_adv - x, 'l2'), 'const': best_c,
            'steps': iters, 'gradients': evals}
    return AttackOutput(x_adv, info, 'minimal')
  return attack
