"""NES attack (Ilyas, Engstrom, Athalye & Lin, ICML 2018): score-based black box.

"Black-box Adversarial Attacks with Limited Queries and Information", the query-limited
setting: projected gradient descent whose gradient is the NES estimate
(:func:`estimators.nes_gradient`: ``num_samples`` antithetic Gaussian pairs of scale
``sigma``) of the cross-entropy on the scores. As the authors' code
(labsix/limited-blackbox-attacks, same defaults: ``sigma = 1e-3``, 50 samples per draw =
``num_samples = 25`` pairs, ``eps = 0.05``, momentum 0.9 on the estimate, step ``max_lr =
1e-2`` annealed by ``plateau_drop = 2`` down to ``min_lr = 5e-5`` whenever the mean sample
loss of the last ``plateau_length = 5`` steps rose, start at ``x``, L_inf sign step
``x - lr sign(g)`` projected onto the ball and the box, stop at the first success). The
query count follows theirs: ``2 * num_samples`` per estimate plus one query of the new
point per step (their line-search query, which decides success here).

Deliberate differences from the authors' code:

* Batched: every example has its own momentum, step size, plateau window and early stop.
* ``norm='l2'`` (an option; the paper is L_inf): the step ``x - lr g / ||g||_2``,
  projected onto the L2 ball, then the box.
* The plateau test compares the minimised loss (for untargeted attacks ``-CE`` of the true
  label; the authors' untargeted branch compared the raw ``CE``, so it annealed on progress;
  targeted attacks, the paper's setting, are identical).
* The clean input is queried first (counted; their first success check is not counted);
  examples already misclassified are returned unchanged.
* The partial-information and label-only settings are not implemented.

Query cost per example: at most ``1 + num_steps * (2 * num_samples + 1)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common

NORMS = ('linf', 'l2')


def run_nes(query_fn, x, y, key, *, eps, norm, num_steps, step_size, min_step_size, sigma,
            num_samples, momentum, plateau_length, plateau_drop, targeted, loss, bounds):
  """The NES engine: ``(x_adv, success [B], queries [B], loss [B])``."""
  b = x.shape[0]
  loss_fn = estimators.attack_loss(loss, targeted)
  sample_f = estimators.sample_losses(query_fn, loss_fn, y)
  scores_of = lambda z: common.as_multiclass(query_fn(z))

  scores = scores_of(x)
  done = common.success(scores, y, targeted)
  loss_cur = loss_fn(scores, y)
  queries = jnp.ones((b,), jnp.int32)
  lr0 = jnp.full((b,), step_size, x.dtype)
  min_lr = jnp.asarray(min_step_size, x.dtype)
  mom = jnp.asarray(momentum, x.dtype)

  def step(i, carry):
    x_cur, g_prev, lr, hist, cnt, done, queries, loss_cur = carry
    active = ~done
    g_est, l_mean = estimators.nes_gradient(sample_f, x_cur, jax.random.fold_in(key, i),
                                            sigma=sigma, num_samples=num_samples)
    g = mom * g_prev + (1 - mom) * g_est
    # Plateau annealing: the window holds the last `plateau_length` mean sample losses;
    # when it is full and the newest exceeds the oldest, the step size drops and the
    # window empties.
    hist_new = jnp.concatenate([hist[:, 1:], l_mean[:, None]], axis=1)
    cnt_new = jnp.minimum(cnt + 1, plateau_length)
    anneal = (cnt_new == plateau_length) & (l_mean > hist_new[:, 0])
    lr_new = jnp.where(anneal & (lr > min_lr), jnp.maximum(lr / plateau_drop, min_lr), lr)
    cnt_new = jnp.where(anneal, 0, cnt_new)
    d = common.normalize(g, norm)
    x_new = common.project(x_cur - lr_new.reshape((-1,) + (1,) * (x.ndim - 1)) * d, x, eps, norm, bounds)
    scores = scores_of(x_new)
    sel = lambda a, c: common.select(active, a, c)
    x_cur = sel(x_new, x_cur)
    loss_cur = jnp.where(active, loss_fn(scores, y), loss_cur)
    done = done | (active & common.success(scores, y, targeted))
    queries = queries + active.astype(jnp.int32) * (2 * num_samples + 1)
    return (x_cur, sel(g, g_prev), sel(lr_new, lr), sel(hist_new, hist),
            sel(cnt_new, cnt), done, queries, loss_cur)

  carry = (x, jnp.zeros_like(x), lr0, jnp.zeros((b, plateau_length), x.dtype),
           jnp.zeros((b,), jnp.int32), done, queries, loss_cur)

  def cond(st):
    return (st[0] < num_steps) & jnp.any(~st[1][5])

  def body(st):
    return st[0] + 1, step(st[0], st[1])
  _, carry = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), carry))
  x_adv, _, _, _, _, succ, queries, loss_cur = carry
  return x_adv, succ, queries, loss_cur


def nes(*, eps, num_steps: int = 200, norm: str = 'linf', step_size=1e-2,
        min_step_size=5e-5, sigma=1e-3, num_samples: int = 25, momentum=0.9,
        plateau_length: int = 5, plateau_drop=2.0, targeted: bool = False,
        loss: str = 'ce', bounds=(0.0, 1.0)):
  """NES attack (Ilyas et al., ICML 2018), L_inf and L2; see the module docstring.

  ``attack(query_fn, x, y, key)`` queries ``query_fn: x -> scores`` only on the clean
  batch, the NES points ``x_t +- sigma u`` (not clipped to the box) and the iterates. It
  keeps ``x_adv`` in the eps-ball and the box, and ``info['queries']`` counts, per example,
  every query a real API would see (as :func:`jaxsec.attacks.blackbox.spsa`).

  Args:
    eps: radius of the threat model (may be traced).
    num_steps: PGD steps (the authors' ``max_queries // samples_per_draw``; 200 = their
      10,000-query budget).
    norm: 'linf' (the paper's) or 'l2'.
    step_size: initial step (the authors' ``max_lr``; may be traced).
    min_step_size: floor of the plateau annealing (``min_lr``; may be traced).
    sigma: the NES search variance (may be traced).
    num_samples: antithetic pairs per estimate (``samples_per_draw / 2``).
    momentum: in [0, 1); ``g = momentum g_prev + (1 - momentum) g_est``.
    plateau_length: steps in the annealing window (>= 1).
    plateau_drop: the step-size divisor at a plateau (>= 1).
    targeted: ``y`` are target labels.
    loss: 'ce' (the authors') or 'margin'; minimised, see :func:`estimators.attack_loss`.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'fixed'), info: ``success``
    (bool [B], at ``x_adv``), ``queries`` (int32 [B]) and ``loss`` ([B], at ``x_adv``).
  """
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=NORMS)
  _checks.check_counts(num_steps=num_steps, num_samples=num_samples,
                       plateau_length=plateau_length)
  _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  _checks.check_float('min_step_size', min_step_size, minimum=0.0, strict_min=True)
  if _checks.is_concrete(step_size) and _checks.is_concrete(min_step_size) and float(
      min_step_size) > float(step_size):
    raise ValueError(f'min_step_size={min_step_size} must be <= step_size={step_size}.')
  _checks.check_float('sigma', sigma, minimum=0.0, strict_min=True)
  _checks.check_float('momentum', momentum, minimum=0.0, maximum=1.0, strict_max=True)
  _checks.check_float('plateau_drop', plateau_drop, minimum=1.0)
  _checks.check_choice('loss', loss, estimators.LOSSES)
  common.check_bool(targeted=targeted)

  return estimators.score_attack(run_nes, bounds, eps=eps, norm=norm, num_steps=num_steps,
      step_size=step_size, min_step_size=min_step_size, sigma=sigma,
      num_samples=num_samples, momentum=momentum, plateau_length=plateau_length,
      plateau_drop=plateau_drop, targeted=targeted, loss=loss)
