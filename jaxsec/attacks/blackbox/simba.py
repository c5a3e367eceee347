"""SimBA (Guo, Gardner, You, Wilson & Weinberger, ICML 2019): score-based black box.

"Simple Black-box Adversarial Attacks", Algorithm 1 with the Cartesian (pixel) basis: at
step ``t`` take the next coordinate ``q`` of a random order, query ``x - step e_q``; keep it
if the probability of the label (softmax of the scores) drops (targeted: of the target
rises), else query ``x + step e_q`` and keep it if that one does; an example stops at its
first success. The paper's ``epsilon`` is ``step_size`` here (its default 0.2). Queries per
step: 1 when the first direction improves, 2 otherwise, as the official ``simba_single``
and the query count of its ``simba_batch`` (cg563/simple-blackbox-attack).

Deliberate differences from the official code:

* Threat model: every proposal is projected onto the ``eps`` ball (``norm`` 'l2' or
  'linf') and the box; the official pixel attack only clamps to the box, so its L2 norm
  grows as ``step sqrt(t)``. ``eps=float('inf')`` is not accepted; a large ``eps`` gives
  the official behaviour. With ``norm='linf'`` and ``step_size = eps`` one pass over the
  coordinates visits a vertex of the ball per coordinate, as the L_inf SimBA variants.
* The order is a random permutation per example (official: one per batch), cycled when
  ``num_steps`` exceeds the dimension (official: at most one pass).
* When the first direction improves, the second is not sent (``simba_single``; the
  batched official code sends it anyway without counting it, and keeps it if better).
* The clean input is queried first (counted; the official code does not count it);
  examples already misclassified are returned unchanged.
* SimBA-DCT (the low-frequency DCT basis) is not implemented.

Query cost per example: at most ``1 + 2 * num_steps``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common

NORMS = ('l2', 'linf')


def _label_prob(scores, y):
  z = common.as_multiclass(scores)
  return jnp.take_along_axis(jax.nn.softmax(z, axis=-1), y[:, None], axis=-1)[:, 0]


def run_simba(query_fn, x, y, key, *, eps, norm, num_steps, step_size, targeted, bounds):
  """The SimBA engine: ``(x_adv, success [B], queries [B], loss [B])``; ``loss`` is the
  label probability (untargeted) or minus the target probability (targeted) at ``x_adv``."""
  b = x.shape[0]
  dim = math.prod(x.shape[1:])
  sign = -1.0 if targeted else 1.0
  loss_of = lambda s: sign * _label_prob(s, y)

  scores = query_fn(x)
  done = common.success(scores, y, targeted)
  loss_cur = loss_of(scores)
  queries = jnp.ones((b,), jnp.int32)
  order = jax.vmap(lambda k: jax.random.permutation(k, dim))(
      estimators.example_keys(key, b))                         # [B, D]
  step = jnp.asarray(step_size, x.dtype)

  def body(st):
    i, x_cur, loss_cur, done, queries = st
    active = ~done
    q = order[:, i % dim]
    e = (jax.nn.one_hot(q, dim, dtype=x.dtype) * step).reshape(x.shape)
    left = common.project(x_cur - e, x, eps, norm, bounds)
    right = common.project(x_cur + e, x, eps, norm, bounds)
    s = query_fn(jnp.concatenate([left, right], axis=0))
    s_l, s_r = s[:b], s[b:]
    l_l, l_r = loss_of(s_l), loss_of(s_r)
    take_l = active & (l_l < loss_cur)
    take_r = active & ~take_l & (l_r < loss_cur)
    x_cur = common.select(take_l, left, common.select(take_r, right, x_cur))
    loss_cur = jnp.where(take_l, l_l, jnp.where(take_r, l_r, loss_cur))
    done = done | (take_l & common.success(s_l, y, targeted)) | (
        take_r & common.success(s_r, y, targeted))
    queries = queries + active.astype(jnp.int32) * (1 + (~take_l).astype(jnp.int32))
    return i + 1, x_cur, loss_cur, done, queries

  def cond(st):
    return (st[0] < num_steps) & jnp.any(~st[3])

  _, x_adv, loss_cur, done, queries = lax.while_loop(
      cond, body, (jnp.asarray(0, jnp.int32), x, loss_cur, done, queries))
  return x_adv, done, queries, loss_cur


def simba(*, eps, norm: str = 'l2', num_steps: int = 1000, step_size=0.2,
          targeted: bool = False, bounds=(0.0, 1.0)):
  """SimBA with the pixel basis (Guo et al., ICML 2019); see the module docstring.

  The returned ``attack(query_fn, x, y, key)`` only evaluates ``query_fn: x -> scores``
  (logits or log-probabilities; the label probability is their softmax) on the clean batch
  and on the proposals ``x_t -+ step_size e_q`` projected onto the threat model.

  Guarantees: ``||x_adv - x||_p <= eps`` (up to float rounding) and ``lo <= x_adv <= hi``;
  the label probability (targeted: minus the target's) never increases; ``info['queries']``
  counts the queries an attacker with a real API would send for the example.

  Args:
    eps: radius of the threat model (may be traced).
    norm: 'l2' (the paper reports L2 distances) or 'linf'.
    num_steps: coordinates tried per example (the official ``max_iters``).
    step_size: the step along a coordinate (the paper's ``epsilon``; may be traced).
    targeted: ``y`` are target labels.
    bounds: the input box ``(lo, hi)``.

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'fixed'), info: ``success``
    (bool [B], at ``x_adv``), ``queries`` (int32 [B]) and ``loss`` ([B], at ``x_adv``).
  """
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=NORMS)
  _checks.check_counts(num_steps=num_steps)
  _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  common.check_bool(targeted=targeted)

  return estimators.score_attack(run_simba, bounds, eps=eps, norm=norm, num_steps=num_steps,
      step_size=step_size, targeted=targeted)
