"""Jacobian-based Saliency Map Attack (Papernot et al., EuroS&P 2016; Algorithms 1 and 3).

* ``Gamma`` (the search domain) holds the features that can still move in the direction of
  ``theta`` (not already at that bound). Each iteration takes the forward derivative (of the
  logits, or of the probabilities with ``jacobian='probs'``) and, over pairs ``p != q`` in
  ``Gamma``, ``alpha = sum_{i in {p,q}} dZ_t/dx_i``, ``beta = sum_{i in {p,q}} sum_{j != t}
  dZ_j/dx_i``. Increasing variant: among pairs with ``alpha > 0``, ``beta < 0`` maximise
  ``-alpha * beta`` (decreasing: ``alpha < 0``, ``beta > 0``). Both features move by
  ``theta * (hi - lo)`` (clipped to the box); features at the bound leave ``Gamma`` (with
  ``|theta| = 1``, the paper's setting, at once, as in CleverHans).
* Stop at the target, when fewer than two features remain, or when another pair could
  exceed the budget: at most ``floor(gamma * n)`` features change (the paper's Upsilon).
* Empty saliency map (no pair meets the sign conditions; Algorithm 3 has no rule): the
  paper's argmax of the product-form score is zero everywhere and the loop goes on with
  whatever pair it returns, as CleverHans v3 ``jsma_symbolic`` does. ``empty_map='continue'``
  (default) does the same with the first two features of ``Gamma`` in index order (not
  CleverHans's pair (0, 0) regardless of ``Gamma``, cleverhans-lab/cleverhans#221);
  ``'stop'`` stops the example (a failure). Both agree where ``info['empty_map_iterations'] == 0``.

Targeted by default (``y`` = targets). ``targeted=False``: the map's target is the second
most likely class at ``x`` (``untargeted_target='second'``) or a random class ``!= y``
(``'random'``), stopping at the first misclassification. Per iteration: one forward and two
backward passes plus the O(n^2) pair search, ``lax.map`` over chunks of ``pair_batch``
examples to bound memory.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common


def _best_pair(a, b, dom, increase: bool, empty_map: str = 'stop'):
  """For one example: features a = dZ_t/dx [n], b = sum_{j!=t} dZ_j/dx [n], domain [n].

  Returns (p, q, found): the pair maximising -alpha*beta under the sign conditions. When no
  pair qualifies (found False) and ``empty_map='continue'``, (p, q) is the first pair of the
  domain in index order (what an argmax over the all-zero product-form map returns).
  """
  n = a.shape[0]
  alpha = a[:, None] + a[None, :]
  beta = b[:, None] + b[None, :]
  if increase:
    ok = (alpha > 0) & (beta < 0)
  else:
    ok = (alpha < 0) & (beta > 0)
  ok = ok & dom[:, None] & dom[None, :] & ~jnp.eye(n, dtype=bool)
  score = jnp.where(ok, -alpha * beta, -jnp.inf)
  best = jnp.argmax(score.reshape(-1))
  p, q, found = best // n, best % n, jnp.any(ok)
  if empty_map == 'continue':
    idx = jnp.arange(n)
    p0 = jnp.argmax(dom)
    q0 = jnp.argmax(dom & (idx > p0))
    p, q = jnp.where(found, p, p0), jnp.where(found, q, q0)
  return p, q, found


def jsma(*, theta=1.0, gamma=0.145, targeted: bool = True, untargeted_target: str = 'second',
         jacobian: str = 'logits', bounds=(0.0, 1.0), empty_map: str = 'continue',
         pair_batch: int = 16):
  """JSMA with pairs of features (Papernot et al., EuroS&P 2016).

  Guarantee: ``lo <= x_adv <= hi``; ``x_adv`` differs from ``x`` in at most
  ``floor(gamma * n)`` features (``n`` = features per example), each moved only in the
  direction of ``theta``.

  Args:
    theta: change per selected feature as a fraction of ``hi - lo``, in ``[-1, 1]``, not 0;
      ``+1`` is the paper's increasing variant (features set to the maximum), ``-1`` the
      decreasing one.
    gamma: maximum distortion, the fraction of features that may change, in (0, 1] (paper:
      14.5% on MNIST).
    targeted: ``y`` are target classes (default, as in the paper); False: ``y`` are true
      labels and the target is chosen by ``untargeted_target``.
    untargeted_target: 'second' (second most likely class at ``x``) or 'random'.
    jacobian: 'logits' (the paper's choice for its DNNs, more stable) or 'probs' (softmax).
    bounds: input box ``(lo, hi)``.
    empty_map: what an example does when no pair satisfies the sign conditions: 'continue'
      (the paper's loop and CleverHans: modify the first pair of the search domain) or
      'stop' (give up on it).
    pair_batch: examples per chunk of the O(n^2) pair search.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal': the fewest
    features, up to ``gamma``); info: ``success`` [B], ``steps`` [B] (iterations),
    ``gradients`` [B] (backward passes, 2 per iteration), ``features_changed`` [B] and
    ``features_changed_frac`` [B] (fraction of the input features that differ from
    ``x``), ``target`` [B], and ``empty_map_iterations`` [B] (iterations at which the
    example was still being attacked and its saliency map was empty; with 'stop' at most
    1, and it stopped there).
  """
  _checks.check_float('theta', theta, minimum=-1.0, maximum=1.0, allow_traced=False)
  if float(theta) == 0.0:
    raise ValueError('theta=0.0 must be non-zero (its sign picks the increasing or '
                     'decreasing variant).')
  _checks.check_float('gamma', gamma, minimum=0.0, maximum=1.0, strict_min=True,
                      allow_traced=False)
  common.check_bool(targeted=targeted)
  _checks.check_choice('untargeted_target', untargeted_target, ('second', 'random'))
  _checks.check_choice('jacobian', jacobian, ('logits', 'probs'))
  _checks.check_choice('empty_map', empty_map, ('stop', 'continue'))
  _checks.check_int('pair_batch', pair_batch, minimum=1)
  bounds = _checks.check_bounds(bounds)
  lo, hi = bounds
  increase = float(theta) > 0
  step_size = float(theta) * (hi - lo)

  def attack(logits_fn, x, y, key=None):
    common.check_call(x, y, bounds, logits_fn)
    b = x.shape[0]
    n = 1
    for s in x.shape[1:]:
      n *= s
    budget = int(float(gamma) * n)
    f = lambda v: common.as_multiclass(logits_fn(v))
    z0 = f(x)
    c = z0.shape[-1]
    if targeted:
      t = y
    elif untargeted_target == 'second':
      t = jnp.argmax(jnp.where(jax.nn.one_hot(y, c, dtype=bool), -jnp.inf, z0), axis=-1)
    else:
      if key is None:
        raise ValueError("untargeted_target='random' needs a PRNG key; got key=None.")
      off = jax.random.randint(key, (b,), 1, c)
      t = (y + off) % c
    t = t.astype(jnp.int32)

    def outputs(v):
      z = f(v)
      out = jax.nn.softmax(z, axis=-1) if jacobian == 'probs' else z
      zt = jnp.take_along_axis(out, t[:, None], axis=1)[:, 0]
      return jnp.stack([zt, jnp.sum(out, axis=-1)], axis=1), z

    def is_done(z):
      pred = jnp.argmax(z, axis=-1)
      return pred == t if targeted else pred != y

    xflat0 = x.reshape((b, n))
    dom0 = (xflat0 < hi) if increase else (xflat0 > lo)

    def cond(s):
      return jnp.any(s[3])

    def body(s):
      xc, dom, changed, active, steps, succ, empties = s
      o, vjp, z = jax.vjp(outputs, xc, has_aux=True)
      succ = is_done(z)
      active = active & ~succ & (changed + 2 <= budget) & (jnp.sum(dom, axis=-1) >= 2)

      def do_move(_):
        ct = jnp.broadcast_to(jnp.eye(2, dtype=o.dtype)[:, None, :], (2, b, 2))
        (g,) = jax.vmap(vjp)(ct)                        # [2, B, ...]
        g = g.reshape((2, b, n))
        a_t, a_all = g[0], g[1]
        def best_pair(args):
          a_i, b_i, dom_i = args
          return _best_pair(a_i, b_i, dom_i, increase, empty_map)
        p, q, found = lax.map(best_pair, (a_t, a_all - a_t, dom),
                              batch_size=min(pair_batch, max(b, 1)))
        empty = active & ~found
        move = active & found if empty_map == 'stop' else active
        sel = (jax.nn.one_hot(p, n, dtype=bool) | jax.nn.one_hot(q, n, dtype=bool)
               ) & move[:, None]
        xf = xc.reshape((b, n))
        xf = jnp.where(sel, jnp.clip(xf + step_size, lo, hi), xf)
        dom_new = dom & ~(sel & ((xf >= hi) if increase else (xf <= lo)))
        return xf.reshape(x.shape), dom_new, move, empty

      no_move = jnp.zeros((b,), bool)
      xc, dom, move, empty = lax.cond(jnp.any(active), do_move,
                                      lambda _: (xc, dom, no_move, no_move), None)
      changed = jnp.sum(xc.reshape((b, n)) != xflat0, axis=-1)
      steps = steps + move.astype(jnp.int32)
      empties = empties + empty.astype(jnp.int32)
      # With empty_map='stop' an example whose saliency map is empty stops (a failure).
      active = move
      return xc, dom, changed, active, steps, succ, empties

    zeros = jnp.zeros((b,), jnp.int32)
    init = (x, dom0, zeros, jnp.ones((b,), bool), zeros, jnp.zeros((b,), bool), zeros)
    x_adv, _, changed, _, steps, _, empties = lax.while_loop(cond, body, init)
    success = is_done(f(x_adv))
    info = {'success': success, 'steps': steps, 'gradients': 2 * steps,
            'features_changed': changed,
            'features_changed_frac': changed.astype(x.dtype) / n, 'target': t,
            'empty_map_iterations': empties}
    return AttackOutput(x_adv, info, 'minimal')
  return attack
