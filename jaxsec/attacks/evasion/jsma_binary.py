"""Add-only binary-feature JSMA (Grosse, Papernot, Manoharan, Backes & McDaniel, ESORICS
2017), the malware-detection variant of :func:`jaxsec.attacks.evasion.jsma`.

"Adversarial Examples for Malware Detection", Algorithm 1: features are binary (an app
declares a permission / API call or not), and the adversary may only *add* features
(0 -> 1), so that the malware keeps its functionality. Each iteration takes the gradient
of the target class's output ``F_t`` (the softmax probability, the paper's ``F``; or the
logit with ``jacobian='logits'``) and sets to 1 the feature ``i`` with the largest
``dF_t/dx_i`` among the features that are 0 and may be changed (the mask ``I``,
``allowed``); it stops at the target class, when at most ``max_changes`` features have been
added (the paper's ``k``, 20 in its evaluation), or when no admissible feature has a
positive derivative (the paper's failure exit). One feature per iteration (JSMA moves a
pair), one backward pass per iteration.

Targeted by default (``y`` = targets; the paper's target is the benign class).
``targeted=False``: the target is the most likely class other than the true label ``y`` at
``x`` (the other class for a binary detector); stop at the first misclassification.

Deliberate differences from the paper:

* ``jacobian='probs'`` (default, the paper's) or ``'logits'`` (JSMA's choice for DNNs).
* Ties in the derivative go to the lowest feature index.
* The input box is ``{0, 1}``: on concrete inputs a value other than 0 / 1 is a
  ``ValueError``.

Guarantees: ``x_adv >= x`` elementwise (no feature is removed), ``x_adv`` is 0 / 1, only
features with ``allowed`` set change, and at most ``max_changes`` change.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common


def select_feature(grad_t, x_flat, allowed):
  """The paper's selection rule for one batch: ``argmax_i dF_t/dx_i`` over ``x_i = 0`` and
  ``allowed_i``; returns ``(i [B], found [B])``, ``found`` False when no admissible feature
  has a positive derivative."""
  ok = (x_flat == 0) & allowed[None, :]
  score = jnp.where(ok, grad_t, -jnp.inf)
  i = jnp.argmax(score, axis=-1)
  found = jnp.take_along_axis(score, i[:, None], axis=1)[:, 0] > 0
  return i, found


def jsma_add_only(*, max_changes: int = 20, allowed=None, targeted: bool = True,
                  jacobian: str = 'probs'):
  """Add-only JSMA on binary features (Grosse et al., ESORICS 2017); see the module
  docstring.

  Args:
    max_changes: the most features that may be added per example (the paper's ``k``; >= 1).
    allowed: optional boolean mask over the features (shape of one example) of those the
      adversary may add (the paper's ``I``); None: all.
    targeted: ``y`` are target classes (default); False: ``y`` are true labels.
    jacobian: 'probs' (the paper's softmax output) or 'logits'.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal': the fewest
    additions, up to ``max_changes``); info: ``success`` [B], ``features_changed`` [B],
    ``steps`` [B] (iterations that added a feature; one gradient each, plus the final
    check), ``target`` [B], ``stalled`` [B] (stopped because no admissible feature had a
    positive derivative).
  """
  _checks.check_int('max_changes', max_changes, minimum=1)
  common.check_bool(targeted=targeted)
  _checks.check_choice('jacobian', jacobian, ('probs', 'logits'))
  if allowed is not None:
    allowed = np.asarray(allowed)
    if allowed.dtype != bool:
      raise ValueError(f'allowed has dtype {allowed.dtype}; expected a boolean mask.')
  bounds = (0.0, 1.0)

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, bounds, logits_fn)
    if _checks.is_concrete(x):
      vals = np.unique(np.asarray(x))
      if not np.all((vals == 0) | (vals == 1)):
        raise ValueError(f'x has values {vals[~((vals == 0) | (vals == 1))][:5]}; the '
                         'add-only JSMA takes binary 0 / 1 features.')
    b = x.shape[0]
    n = int(np.prod(x.shape[1:]))
    if allowed is None:
      mask = jnp.ones((n,), bool)
    else:
      if allowed.shape != tuple(x.shape[1:]):
        raise ValueError(f'allowed has shape {allowed.shape}; expected one example\'s '
                         f'shape {tuple(x.shape[1:])}.')
      mask = jnp.asarray(allowed.reshape(-1))
    f = lambda v: common.as_multiclass(logits_fn(v))
    z0 = f(x)
    c = z0.shape[-1]
    if targeted:
      t = y.astype(jnp.int32)
    else:
      t = jnp.argmax(jnp.where(jax.nn.one_hot(y, c, dtype=bool), -jnp.inf, z0),
                     axis=-1).astype(jnp.int32)

    def out_t(v):
      z = f(v)
      o = jax.nn.softmax(z, axis=-1) if jacobian == 'probs' else z
      return jnp.sum(jnp.take_along_axis(o, t[:, None], axis=1)), z

    def is_done(z):
      pred = jnp.argmax(z, axis=-1)
      return pred == t if targeted else pred != y

    x0 = x.reshape((b, n))

    def cond(s):
      return jnp.any(s[1])

    def body(s):
      xc, active, steps, stalled = s
      g, z = jax.grad(out_t, has_aux=True)(xc)
      xf = xc.reshape((b, n))
      changed = jnp.sum(xf != x0, axis=-1)
      active = active & ~is_done(z) & (changed < max_changes)
      i, found = select_feature(g.reshape((b, n)), xf, mask)
      move = active & found
      xf = jnp.where(jax.nn.one_hot(i, n, dtype=bool) & move[:, None], 1.0, xf)
      stalled = stalled | (active & ~found)
      return xf.reshape(x.shape).astype(x.dtype), move, steps + move.astype(jnp.int32), stalled

    zeros = jnp.zeros((b,), jnp.int32)
    x_adv, _, steps, stalled = lax.while_loop(
        cond, body, (x, jnp.ones((b,), bool), zeros, jnp.zeros((b,), bool)))
    changed = jnp.sum(x_adv.reshape((b, n)) != x0, axis=-1)
    info = {'success': is_done(f(x_adv)), 'features_changed': changed, 'steps': steps,
            'target': t, 'stalled': stalled}
    return AttackOutput(x_adv, info, 'minimal')
  return attack
