"""DDN: Decoupled Direction and Norm attack (Rony, Hafemann, Oliveira, Ben Ayed, Sabourin &
Granger, CVPR 2019), minimal L2.

The gradient step and the norm of the perturbation are decoupled (paper, Algorithm 1; the
authors' code, jeromerony/fast_adversarial ``DDN``, as Foolbox's ``DDNAttack``). With
``delta_k`` the perturbation (``delta_0 = 0``), ``eps_0 = init_epsilon`` and ``alpha_k`` the
cosine-annealed step size (``alpha_final + (alpha_init - alpha_final) (1 + cos(pi k / K))
/ 2``, the authors' ``CosineAnnealingLR`` from 1 to 0.01), one step ``k`` is:

1. at ``x + delta_k``: logits, ``g`` the gradient of the cross-entropy (ascended,
   untargeted; descended towards the target, targeted), adversarial flag; record ``x +
   delta_k`` when adversarial and closer (``||delta_k||_2``) than the best so far;
2. ``delta <- delta_k + alpha_k g / ||g||_2`` (a zero gradient is replaced by a Gaussian
   direction drawn from ``key``, as the authors' code does);
3. ``eps_{k+1} = eps_k (1 - gamma)`` if ``x + delta_k`` was adversarial, else ``eps_k (1 +
   gamma)``, capped at ``worst = ||max(x - lo, hi - x)||_2``;
4. ``delta_{k+1} = eps_{k+1} delta / ||delta||_2`` (onto the sphere, not the ball), then
   ``x + delta_{k+1}`` clipped to the box.

Deviations: the step size follows the closed-form cosine schedule indexed from ``k = 0``
(the authors call ``scheduler.step()`` before each step, an off-by-one of one step);
no 8-bit quantisation of the iterate (the authors' ``quantize`` option; Foolbox has none);
``best`` starts at ``inf`` with a separate "found" flag (the authors start at ``worst``);
any box ``(lo, hi)``; no ``max_norm`` renormalisation of the result.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.cw import _host_block, _while_attack
from jaxsec.attacks.evasion.fmn import cosine

_TINY = 1e-12


def ddn(*, targeted: bool = False, num_steps: int = 100,
                             init_epsilon=1.0, gamma=0.05, alpha_init=1.0,
                             alpha_final=0.01, bounds=(0.0, 1.0)):
  """DDN minimal-L2 attack (Rony et al., CVPR 2019); the steps are in the module docstring.

  Guarantee: ``lo <= x_adv <= hi``; where ``success``, ``x_adv`` is the closest (L2)
  adversarial iterate; elsewhere ``x_adv = x``. Examples misclassified at ``x`` return
  ``x`` (distance 0, success).

  Args:
    targeted: ``y`` are target labels.
    num_steps: iterations (the paper's 100 for its fast results; Foolbox's default 10).
    init_epsilon: the first norm ``eps_0 > 0`` (the authors' 1.0 for inputs in [0, 1]).
    gamma: the norm-update factor in (0, 1) (0.05).
    alpha_init, alpha_final: the step-size schedule (1.0 -> 0.01, cosine).
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal'; ``key`` only
    draws the direction where a gradient is exactly zero; with ``key=None`` such an
    example takes no gradient step); info: ``success`` [B], ``l2`` [B] (``||x_adv -
    x||_2``; 0 where it failed), ``eps`` [B] (the final norm), ``gradients`` [B].

  Called eagerly on the CPU backend, the steps run as a host loop over jitted blocks of
  straight-line steps (jax-ml/jax#12868; same steps, same result); otherwise one
  ``lax.while_loop``.
  """
  common.check_bool(targeted=targeted)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_float('init_epsilon', init_epsilon, minimum=0.0, strict_min=True)
  _checks.check_float('gamma', gamma, minimum=0.0, maximum=1.0, strict_min=True,
                      strict_max=True)
  _checks.check_float('alpha_init', alpha_init, minimum=0.0, strict_min=True)
  _checks.check_float('alpha_final', alpha_final, minimum=0.0)
  lo, hi = _checks.check_bounds(bounds)

  def make_for(use_key: bool, key):
    """The state machine; the key rides in the state, so that one host block (built with
    ``key=None``) serves every call."""
    def make(logits_fn, x, y):
      b, dt = x.shape[0], x.dtype
      sign = -1.0 if targeted else 1.0

      def loss_fn(xa):
        z = common.as_multiclass(logits_fn(xa))
        return sign * jnp.sum(common.cross_entropy(z, y)), z

      vg = jax.value_and_grad(loss_fn, has_aux=True)
      worst = common.norm(jnp.maximum(x - lo, hi - x), 'l2')

      def cond(s):
        return s[0] < num_steps

      def body(s):
        k, xa, eps, best, x_best, found, rkey = s
        live = k < num_steps                    # a host block may overrun the end
        alpha = cosine(k.astype(dt), num_steps, alpha_init, alpha_final)
        (_, z), g = vg(xa)
        delta = xa - x
        l2 = common.norm(delta, 'l2')
        is_adv = common.success(z, y, targeted) & live
        imp = is_adv & (l2 < best)
        best = jnp.where(imp, l2, best)
        x_best = common.select(imp, xa, x_best)
        found = found | is_adv
        gn = common.norm(g, 'l2')
        if use_key:
          rnd = jax.random.normal(jax.random.fold_in(rkey, k), x.shape, dt)
          g = common.select(gn > 0, g, rnd)
        delta = delta + alpha * common.normalize(g, 'l2')
        eps_new = jnp.minimum(eps * jnp.where(is_adv, 1.0 - gamma, 1.0 + gamma), worst)
        delta = delta * common._bcast(eps_new / jnp.maximum(common.norm(delta, 'l2'), _TINY),
                                      delta)
        xa = jnp.where(live, jnp.clip(x + delta, lo, hi), xa)
        eps = jnp.where(live, eps_new, eps)
        return k + live.astype(k.dtype), xa, eps, best, x_best, found, rkey

      def init():
        return (jnp.asarray(0), x, jnp.full((b,), init_epsilon, dt),
                jnp.full((b,), jnp.inf, dt), x, jnp.zeros((b,), bool),
                key if use_key else jnp.zeros((), jnp.int32))

      def finish(s):
        _, _, eps, _, x_best, found, _ = s
        info = {'success': found, 'l2': common.norm(x_best - x, 'l2'), 'eps': eps,
                'gradients': jnp.full((b,), num_steps, jnp.int32)}
        return AttackOutput(x_best, info, 'minimal')

      return init, cond, body, finish
    return make

  blocks = {flag: _host_block(make_for(flag, None)) for flag in (False, True)}

  def attack(logits_fn, x, y, key=None):
    common.check_call(x, y, (lo, hi), logits_fn)
    if x.shape[0] == 0:   # empty batch: nothing to attack
      return AttackOutput(x, {'success': jnp.zeros((0,), bool)}, 'minimal')
    use_key = key is not None
    return _while_attack('auto', make_for(use_key, key), blocks[use_key], logits_fn, x, y)
  return attack
