"""SPSA attack (Uesato, O'Donoghue, van den Oord & Kohli, ICML 2018): score-based black box.

"Adversarial Risk and the Dangers of Evaluating Against Weak Attacks": projected Adam on
the SPSA gradient estimate (:func:`estimators.spsa_gradient`: ``num_samples`` antithetic
Rademacher pairs of scale ``delta``) of the margin loss on the scores, as CleverHans'
``spsa`` (``SPSAAdam`` + ``projected_optimization``; same defaults: Adam with learning rate
0.01, beta 0.9 / 0.999, ``delta = 0.01``, 128 evaluations per estimate = ``num_samples =
64`` pairs, a uniform random start in the L_inf box ``[-eps, eps]`` projected onto the
threat model, projection onto the ball and the input box after every step). Gradient-free,
so it is the standard check for gradient masking: a defense whose robust accuracy under
SPSA is below its PGD figure masks gradients.

Deliberate differences from CleverHans:

* Batched: every example runs its own optimisation (its own Adam moments, its own early
  stop), where CleverHans splits the batch into single examples.
* Early stop per example at success (``early_stop=True``, default): after each step the new
  point is queried once (counted) and the example stops as soon as it is misclassified
  (targeted: classified as its target). CleverHans' ``early_stop_loss_threshold=0`` with the
  margin loss, its recommended setting; ``early_stop=False`` is its default (no per-step
  query, the last iterate is returned), plus one final counted query for ``success``.
* The clean input is queried first (counted); examples already misclassified are returned
  unchanged (CleverHans attacks them from a random start).
* The estimate is scaled as in the paper (and CleverHans' PyTorch ``spsa``); the TF
  versions return ``delta`` times it, which Adam ignores up to its epsilon (1e-8 here).
* ``spsa_iters`` estimates are averaged (the TF versions sum them; same Adam step up to
  its epsilon).
* ``norm='l2'`` (CleverHans PyTorch's ``norm=2``): L2-ball projection, then the box.

Query cost per example: ``1 + num_steps * (2 * num_samples * spsa_iters + 1)`` at most with
``early_stop=True``; ``2 + num_steps * 2 * num_samples * spsa_iters`` exactly without.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common

NORMS = ('linf', 'l2')
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


def run_spsa(query_fn, x, y, key, *, eps, norm, num_steps, learning_rate, delta,
             num_samples, spsa_iters, rand_init, early_stop, targeted, loss, bounds):
  """The SPSA engine: ``(x_adv, success [B], queries [B], loss [B])``."""
  lo, hi = bounds
  b = x.shape[0]
  loss_fn = estimators.attack_loss(loss, targeted)
  sample_f = estimators.sample_losses(query_fn, loss_fn, y)
  scores_of = lambda z: common.as_multiclass(query_fn(z))
  k_init, k_steps = jax.random.split(key)

  scores = scores_of(x)
  done = common.success(scores, y, targeted)
  loss_cur = loss_fn(scores, y)
  queries = jnp.ones((b,), jnp.int32)
  if rand_init:
    u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0))(
        estimators.example_keys(k_init, b))
    x0 = common.project(x + u * jnp.asarray(eps, x.dtype), x, eps, norm, bounds)
    x0 = common.select(done, x, x0)
  else:
    x0 = x
  lr = jnp.asarray(learning_rate, x.dtype)
  cost = 2 * num_samples * spsa_iters

  def estimate(x_cur, k):
    if spsa_iters == 1:
      return estimators.spsa_gradient(sample_f, x_cur, k, delta=delta,
                                      num_samples=num_samples)[0]
    def body(j, acc):
      g, _ = estimators.spsa_gradient(sample_f, x_cur, jax.random.fold_in(k, j),
                                      delta=delta, num_samples=num_samples)
      return acc + g
    return lax.fori_loop(0, spsa_iters, body, jnp.zeros_like(x_cur)) / spsa_iters

  def step(i, carry):
    x_cur, m, v, done, queries, loss_cur = carry
    active = ~done
    g = estimate(x_cur, jax.random.fold_in(k_steps, i))
    t = (i + 1).astype(x.dtype)
    m_new = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
    v_new = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
    m_hat = m_new / (1 - ADAM_BETA1 ** t)
    v_hat = v_new / (1 - ADAM_BETA2 ** t)
    x_new = common.project(x_cur - lr * m_hat / (jnp.sqrt(v_hat) + ADAM_EPS), x, eps, norm,
                           (lo, hi))
    x_cur = common.select(active, x_new, x_cur)
    m = common.select(active, m_new, m)
    v = common.select(active, v_new, v)
    if early_stop:
      scores = scores_of(x_cur)
      loss_cur = jnp.where(active, loss_fn(scores, y), loss_cur)
      done = done | (active & common.success(scores, y, targeted))
      queries = queries + active.astype(jnp.int32) * (cost + 1)
    else:
      queries = queries + active.astype(jnp.int32) * cost
    return x_cur, m, v, done, queries, loss_cur

  zeros = jnp.zeros_like(x)
  carry = (x0, zeros, zeros, done, queries, loss_cur)
  if early_stop:
    def cond(st):
      return (st[0] < num_steps) & jnp.any(~st[1][3])

    def body(st):
      return st[0] + 1, step(st[0], st[1])
    _, carry = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), carry))
    x_adv, _, _, succ, queries, loss_cur = carry
  else:
    x_adv, _, _, _, queries, _ = lax.fori_loop(0, num_steps, step, carry)
    # One final query scores the last iterate (clean successes keep their clean query).
    scores = scores_of(x_adv)
    succ = done | common.success(scores, y, targeted)
    loss_cur = jnp.where(done, loss_cur, loss_fn(scores, y))
    queries = queries + (~done).astype(jnp.int32)
  return x_adv, succ, queries, loss_cur


def spsa(*, eps, num_steps: int = 100, norm: str = 'linf', learning_rate=0.01, delta=0.01,
         num_samples: int = 64, spsa_iters: int = 1, rand_init: bool = True,
         early_stop: bool = True, targeted: bool = False, loss: str = 'margin',
         bounds=(0.0, 1.0)):
  """SPSA attack (Uesato et al., ICML 2018), L_inf and L2; see the module docstring.

  The returned ``attack(query_fn, x, y, key)`` only evaluates ``query_fn: x -> scores``
  (logits or log-probabilities) on the clean batch, the SPSA sample points ``x_t +- delta
  u`` (not clipped to the box) and the iterates.

  Guarantees: ``||x_adv - x||_p <= eps`` (up to float rounding) and ``lo <= x_adv <= hi``;
  ``info['queries']`` counts every query an attacker with a real API would send for the
  example (finished examples stay in the compiled batch but are not counted).

  Args:
    eps: radius of the threat model (may be traced).
    num_steps: Adam steps (CleverHans' ``nb_iter``).
    norm: 'linf' (the paper's) or 'l2'.
    learning_rate: Adam's learning rate (may be traced).
    delta: the SPSA perturbation scale (may be traced).
    num_samples: antithetic pairs per estimate (CleverHans' ``spsa_samples / 2``).
    spsa_iters: estimates averaged per step (memory: each is one batched query of
      ``2 * num_samples`` points per example).
    rand_init: start from a uniform point of ``[-eps, eps]^d`` projected onto the threat
      model (CleverHans); False starts at ``x``.
    early_stop: stop each example at its first success (one query per step).
    targeted: ``y`` are target labels.
    loss: 'margin' (CleverHans, the paper) or 'ce'; minimised, see
      :func:`estimators.attack_loss`.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'fixed'), info: ``success``
    (bool [B], at ``x_adv``), ``queries`` (int32 [B]) and ``loss`` ([B], at ``x_adv``).
  """
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=NORMS)
  _checks.check_counts(num_steps=num_steps, num_samples=num_samples, spsa_iters=spsa_iters)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0, strict_min=True)
  _checks.check_float('delta', delta, minimum=0.0, strict_min=True)
  _checks.check_choice('loss', loss, estimators.LOSSES)
  common.check_bool(rand_init=rand_init, early_stop=early_stop, targeted=targeted)

  return estimators.score_attack(run_spsa, bounds, eps=eps, norm=norm, num_steps=num_steps,
      learning_rate=learning_rate, delta=delta, num_samples=num_samples,
      spsa_iters=spsa_iters, rand_init=rand_init, early_stop=early_stop, targeted=targeted,
      loss=loss)
