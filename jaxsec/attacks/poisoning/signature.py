"""Noise-injection poisoning of a worm-signature generator, in the spirit of Perdisci,
Dagon, Lee, Fogla, Sharif (IEEE S&P 2006), "Misleading worm signature generators using
deliberate noise injection" -- a small documented case.

Flows are binary token-presence vectors ``[n, V]``. The generator is Polygraph's
*conjunction signature* (Newsome, Karp, Song 2005): the set of tokens present in at least
``coverage`` of the suspicious pool and in at most ``max_fp`` of the innocuous pool; a flow
matches when it contains every signature token, and an empty conjunction is no signature
(it would match all traffic), so it matches nothing. The worm's flows share true invariant
tokens ``I`` (needed by the exploit). Noise injection: alongside its flows the worm sends
crafted *noise flows* that the flow classifier also puts in the suspicious pool; they
look like worm traffic (optionally carrying fake tokens ``F``) but lack ``I``. Once the noise
exceeds ``1/coverage - 1`` of the worm flows, every token of ``I`` falls below the coverage
threshold and no signature containing ``I`` can be generated: the worm goes undetected.
(Perdisci et al. attack Polygraph's clustering and Bayes signatures and Hamsa; this keeps
only the mechanism.)
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning.base import PoisonOutput, check_fraction, num_poison


def conjunction_signature(x_suspicious: jax.Array, x_innocuous: jax.Array, *,
                          coverage: float = 0.9, max_fp: float = 0.01) -> jax.Array:
  """Polygraph-style conjunction signature: bool [V] token set (see module doc)."""
  _checks.check_array('x_suspicious', x_suspicious, ndim=2)
  _checks.check_array('x_innocuous', x_innocuous, ndim=2)
  coverage = _checks.check_probability('coverage', coverage)
  max_fp = _checks.check_probability('max_fp', max_fp)
  if x_suspicious.shape[1] != x_innocuous.shape[1]:
    raise ValueError(f'x_suspicious has {x_suspicious.shape[1]} tokens, x_innocuous '
                     f'{x_innocuous.shape[1]}.')
  f_s = jnp.mean(x_suspicious > 0, axis=0)
  f_n = jnp.mean(x_innocuous > 0, axis=0)
  return (f_s >= coverage) & (f_n <= max_fp)


def signature_matches(signature: jax.Array, x: jax.Array) -> jax.Array:
  """bool [n]: flow contains every signature token (an empty signature matches nothing)."""
  return jnp.all((x > 0) | ~signature[None, :], axis=1) & jnp.any(signature)


def signature_noise_poisoning(*, fraction: float, invariant_tokens, fake_tokens=()) -> Callable:
  """Noise-flow injection into the suspicious pool (Perdisci et al. 2006, simplified).

  ``attack(x, y, key) -> PoisonOutput(x', y', info)`` takes the suspicious pool ``x`` [n, V] (labels ``y``:
  1 = from the worm). ``round(fraction * n)`` noise flows are appended, each a copy of a
  random pool flow with the true invariants removed and the ``fake_tokens`` set, labelled 1
  (they come from the worm). The original flows are unchanged; size ``n + n_poison``;
  ``info['poison_mask']`` marks the noise flows.
  """
  fraction = check_fraction('fraction', fraction)
  inv = [int(t) for t in invariant_tokens]
  fake = [int(t) for t in fake_tokens]
  if not inv:
    raise ValueError('invariant_tokens must be a non-empty list of token indices.')
  if set(inv) & set(fake):
    raise ValueError(f'invariant_tokens={inv} and fake_tokens={fake} must be disjoint.')

  def attack(x, y, key):
    _checks.check_array('x', x, ndim=2, finite=True)
    _checks.check_labels('y', y, num_classes=2, batch=x.shape[0])
    v = x.shape[1]
    if max(inv + fake) >= v or min(inv + fake) < 0:
      raise ValueError(f'token indices {inv + fake} must lie in [0, V={v}).')
    n = x.shape[0]
    n_p = num_poison(fraction, n)
    idx = jax.random.randint(key, (n_p,), 0, n)
    noise = x[idx].at[:, jnp.asarray(inv)].set(0)
    if fake:
      noise = noise.at[:, jnp.asarray(fake)].set(1)
    x2 = jnp.concatenate([x, noise.astype(x.dtype)])
    y2 = jnp.concatenate([y, jnp.ones((n_p,), y.dtype)])
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(n + n_p) >= n})
  return attack
