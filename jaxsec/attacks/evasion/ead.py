"""EAD: Elastic-net Attacks to DNNs (Chen, Sharma, Zhang, Yi & Hsieh, AAAI 2018).

Minimises ``c * f(x') + ||x' - x||_2^2 + beta ||x' - x||_1`` over the box, ``f`` the C&W
loss with confidence ``kappa`` (untargeted ``max(z_y - max_{j != y} z_j + kappa, 0)``,
targeted ``max(max_{j != t} z_j - z_t + kappa, 0)``), by the paper's Algorithm 1 (FISTA) as
in the authors' code (ysharma1126/EAD_Attack, as Foolbox's ``EADAttack``). With ``g(v) = c
f(v) + ||v - x||_2^2`` and ``lr_k = learning_rate (1 - k / K)^(1/2)`` (the official
square-root decay over ``K = num_steps`` iterations), iteration ``k`` of one round is

* ``x_{k+1} = S_beta(y_k - lr_k grad g(y_k))``, ``S_beta`` the projected shrinkage-
  thresholding of eq. (6): per coordinate ``z``, ``min(z - beta, hi)`` where ``z - x_i >
  beta``, ``max(z + beta, lo)`` where ``z - x_i < -beta``, ``x_i`` otherwise;
* ``y_{k+1} = x_{k+1} + k / (k + 3) (x_{k+1} - x_k)`` (FISTA momentum; ``fista=False``
  gives ISTA, ``y_{k+1} = x_{k+1}``), ``x_0 = y_0 = x``.

After each iteration ``x_{k+1}`` is checked: if adversarial with confidence ``kappa`` (the
C&W ``compare``) and better than the best so far under the decision rule (``'en'``:
``||d||_2^2 + beta ||d||_1``; ``'l1'``: ``||d||_1``), it is recorded. Each of the
``num_binary_steps`` rounds restarts from ``x`` with its own ``c``, found by the C&W binary
search (success: ``c`` bisected down; failure: ``c * 10`` until an upper bound is known,
then bisected; with >= 10 rounds the last one uses the upper bound). With ``abort_early``,
an example's round stops when its loss at ``x_{k+1}`` has not decreased by 0.01% over
``num_steps // 10`` iterations.

Deviations and choices: the threshold is ``beta`` itself, not ``lr_k beta`` (as the
official code and Foolbox; the paper's ISTA step would scale it); the early stop is per
example (the official code stops the whole batch); success is checked on ``x_{k+1}`` with
one extra forward pass (Foolbox judges ``x_{k+1}`` by the logits at ``y_k``, which can
record a non-adversarial point); the stall test uses the loss at ``x_{k+1}`` with its L1
term (the official ``loss``; Foolbox uses ``g(y_k)``); any box ``(lo, hi)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.cw import _state_machine_attack, cw_margin

DECISION_RULES = ('en', 'l1')


def shrinkage(z, x, beta, lo, hi):
  """The projected shrinkage-thresholding ``S_beta`` of EAD's eq. (6), per coordinate."""
  d = z - x
  return jnp.where(d > beta, jnp.minimum(z - beta, hi),
                   jnp.where(d < -beta, jnp.maximum(z + beta, lo), x))


def _norms(d):
  f = d.reshape((d.shape[0], -1))
  return jnp.sum(f * f, axis=-1), jnp.sum(jnp.abs(f), axis=-1)


def ead(*, beta=1e-3, decision_rule: str = 'en', targeted: bool = False,
                confidence=0.0, initial_const=1e-3, num_binary_steps: int = 9,
                num_steps: int = 1000, learning_rate=1e-2, fista: bool = True,
                abort_early: bool = True, bounds=(0.0, 1.0)):
  """EAD elastic-net attack (Chen et al., AAAI 2018); the algorithm is in the module docstring.

  Guarantee: ``lo <= x_adv <= hi``; where ``success``, ``x_adv`` is adversarial with
  confidence ``kappa`` and is the best iterate of all rounds under the decision rule;
  elsewhere ``x_adv = x``.

  Args:
    beta: the L1 weight (> 0; official 1e-3, Foolbox 1e-2; may be traced).
    decision_rule: 'en' (elastic-net distance) or 'l1', which adversarial iterate is kept.
    targeted: ``y`` are target labels.
    confidence: kappa >= 0.
    initial_const: the first ``c`` > 0 (official 1e-3).
    num_binary_steps: rounds of the binary search over ``c`` (official 9).
    num_steps: iterations per round (official 1000).
    learning_rate: the initial step size (official 1e-2).
    fista: FISTA momentum (True, the paper's Algorithm 1) or plain ISTA.
    abort_early: stop an example's round when its loss stalls.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal'; ``key``
    unused); info: ``success`` [B], ``l1`` and ``l2`` [B] (of ``x_adv - x``; 0 where it
    failed), ``const`` [B] (the final c), ``gradients`` [B] (gradient evaluations).

  Called eagerly on the CPU backend, the iterations run as a host loop over jitted blocks
  of straight-line iterations (jax-ml/jax#12868; same iterations, same result); otherwise
  one ``lax.while_loop``.
  """
  _checks.check_float('beta', beta, minimum=0.0, strict_min=True)
  _checks.check_choice('decision_rule', decision_rule, DECISION_RULES)
  common.check_bool(targeted=targeted, fista=fista, abort_early=abort_early)
  _checks.check_float('confidence', confidence, minimum=0.0)
  _checks.check_float('initial_const', initial_const, minimum=0.0, strict_min=True)
  num_binary_steps = _checks.check_int('num_binary_steps', num_binary_steps, minimum=1)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0, strict_min=True)
  lo, hi = _checks.check_bounds(bounds)
  repeat = num_binary_steps >= 10
  every = max(num_steps // 10, 1)

  def make(logits_fn, x, y):
    b, dt = x.shape[0], x.dtype
    kappa = jnp.asarray(confidence, dt)

    def margin(v):
      return cw_margin(common.as_multiclass(logits_fn(v)), y, targeted)

    def g_loss(v, const):
      l2, _ = _norms(v - x)
      return jnp.sum(const * jnp.maximum(margin(v) + kappa, 0.0) + l2)

    grad_g = jax.grad(g_loss)

    def cond(s):
      return s[0] < num_binary_steps

    def body(s):
      (j, k, const, lower, upper, xk, yk, prev, active, r_found, o_best, o_adv,
       grads) = s
      live = (j < num_binary_steps) & active       # a host block may overrun the end
      c_round = jnp.where(j == num_binary_steps - 1, upper, const) if repeat else const
      kf = k.astype(dt)
      lr = learning_rate * jnp.sqrt(jnp.maximum(1.0 - kf / num_steps, 0.0))
      g = grad_g(yk, c_round)
      x_new = shrinkage(yk - lr * g, x, beta, lo, hi)
      mom = kf / (kf + 3.0) if fista else 0.0
      y_new = x_new + mom * (x_new - xk)
      m = margin(x_new)
      l2, l1 = _norms(x_new - x)
      dist = l2 + beta * l1 if decision_rule == 'en' else l1
      succ = live & (m + kappa < 0)
      r_found = r_found | succ
      imp = succ & (dist < o_best)
      o_best = jnp.where(imp, dist, o_best)
      o_adv = common.select(imp, x_new, o_adv)
      grads = grads + live.astype(jnp.int32)
      xk = common.select(live, x_new, xk)
      yk = common.select(live, y_new, yk)
      if abort_early:
        loss = c_round * jnp.maximum(m + kappa, 0.0) + l2 + beta * l1
        check = (k % every) == 0
        stall = check & (loss > prev * 0.9999)
        prev = jnp.where(live & check, loss, prev)
        active = active & ~(live & stall)
      k = k + 1
      # ---- end of round: the binary search on c, then restart from x.
      end = (j < num_binary_steps) & ((k >= num_steps) | ~jnp.any(active))
      up2 = jnp.where(r_found, jnp.minimum(upper, c_round), upper)
      lo2 = jnp.where(r_found, lower, jnp.maximum(lower, c_round))
      c2 = jnp.where(up2 < 1e9, 0.5 * (lo2 + up2), jnp.where(r_found, c_round, c_round * 10))
      const = jnp.where(end, c2, const)
      upper = jnp.where(end, up2, upper)
      lower = jnp.where(end, lo2, lower)
      xk = jnp.where(end, x, xk)
      yk = jnp.where(end, x, yk)
      prev = jnp.where(end, jnp.inf, prev)
      active = jnp.where(end, True, active)
      r_found = jnp.where(end, False, r_found)
      k = jnp.where(end, 0, k)
      j = j + end.astype(j.dtype)
      return (j, k, const, lower, upper, xk, yk, prev, active, r_found, o_best, o_adv,
              grads)

    def init():
      return (jnp.asarray(0), jnp.asarray(0), jnp.full((b,), initial_const, dt),
              jnp.zeros((b,), dt), jnp.full((b,), 1e10, dt), x, x,
              jnp.full((b,), jnp.inf, dt), jnp.ones((b,), bool), jnp.zeros((b,), bool),
              jnp.full((b,), jnp.inf, dt), x, jnp.zeros((b,), jnp.int32))

    def finish(s):
      const, o_best, x_adv, grads = s[2], s[10], s[11], s[12]
      l2, l1 = _norms(x_adv - x)
      info = {'success': jnp.isfinite(o_best), 'l1': l1, 'l2': jnp.sqrt(l2),
              'const': const, 'gradients': grads}
      return AttackOutput(x_adv, info, 'minimal')

    return init, cond, body, finish

  return _state_machine_attack(make, loop='auto', bounds=(lo, hi))
