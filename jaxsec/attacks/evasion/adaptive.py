"""Adaptive-attack wrappers: EOT for randomised models, BPDA for non-differentiable inputs.

Both are wrappers of the model function, so every attack of this package (and any
``attack(logits_fn, x, y, key)``) runs against the defended model unchanged:

* :func:`eot_logits_fn` / :func:`eot` -- Expectation over Transformation (Athalye,
  Engstrom, Ilyas & Kwok, ICML 2018; Athalye, Carlini & Wagner, ICML 2018 §4.2).
* :func:`bpda` -- Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner,
  ICML 2018 §4.1): the forward pass runs the true preprocessor, the backward pass the
  gradient of a differentiable approximation (the identity: straight-through).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.evasion import common

AVERAGES = ('logits', 'log_probs', 'probs')
RESAMPLE = ('per_input', 'fixed')


def _input_seed(x: jax.Array) -> jax.Array:
  """A uint32 fingerprint of the batch's bits (no gradient flows through it)."""
  bits = lax.bitcast_convert_type(lax.stop_gradient(x).astype(jnp.float32), jnp.uint32)
  bits = bits.reshape(-1)
  mult = (jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761)
          + jnp.uint32(0x9E3779B9))
  h = jnp.sum(bits * mult, dtype=jnp.uint32)
  return h ^ (h >> 16)


def eot_logits_fn(logits_fn: Callable, transform: Callable | None = None, *,
                  num_samples: int, key: jax.Array, average: str = 'logits',
                  resample: str = 'per_input') -> Callable[[jax.Array], jax.Array]:
  """Turns a randomised model into the deterministic ``x -> logits`` that attacks take.

  The returned function averages over ``num_samples`` draws of the randomness:
  ``mean_s logits_fn(transform(x, k_s))`` (or, if ``transform`` is None, the randomised
  model itself is ``logits_fn(x, key)``: ``mean_s logits_fn(x, k_s)``). The gradient of
  any loss of the result is the gradient of the Monte-Carlo estimate, which is what EOT
  ascends.

  Args:
    logits_fn: ``x -> logits`` (with ``transform``) or ``(x, key) -> logits``.
    transform: random input transformation ``(x, key) -> x'`` (e.g. random crops, noise,
      physical-world transformations), or None.
    num_samples: draws per call (static).
    key: PRNG key of the estimator.
    average: what is averaged: 'logits' (default), 'log_probs' (mean log-softmax: the
      cross-entropy of the result is the mean cross-entropy of the samples up to a
      log-normaliser term), or 'probs' (log of the mean softmax: the expected
      prediction of the randomised classifier; its argmax is the majority-in-probability
      decision).
    resample: 'per_input' (default) derives the draws from ``key`` and a fingerprint of the
      input bits, so each new iterate of an attack sees fresh randomness while the function
      stays pure and jittable; 'fixed' uses the same ``num_samples`` draws for every input
      (a deterministic surrogate, useful for attacks with line searches).

  Returns:
    ``x -> logits`` (for 'log_probs' / 'probs': log-probabilities, which every attack
    here accepts as logits).
  """
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  _checks.check_choice('average', average, AVERAGES)
  _checks.check_choice('resample', resample, RESAMPLE)
  if transform is None:
    model = logits_fn
  else:
    model = lambda x, k: logits_fn(transform(x, k))

  def f(x):
    base = key if resample == 'fixed' else jax.random.fold_in(key, _input_seed(x))
    keys = jax.random.split(base, num_samples)

    def one(carry, k):
      z = common.as_multiclass(model(x, k))
      if average == 'logits':
        v = z
      elif average == 'log_probs':
        v = jax.nn.log_softmax(z, axis=-1)
      else:
        v = jax.nn.softmax(z, axis=-1)
      return carry + v, None

    spec = jax.eval_shape(lambda: common.as_multiclass(model(x, keys[0])))
    init = jnp.zeros(spec.shape, spec.dtype)
    total, _ = lax.scan(one, init, keys)
    mean = total / num_samples
    if average == 'probs':
      return jnp.log(jnp.maximum(mean, 1e-30))
    return mean
  return f


def eot(attack: Callable, transform: Callable | None = None, *, num_samples: int,
        average: str = 'logits', resample: str = 'per_input') -> Callable:
  """Wraps any attack into its EOT version against a randomised model.

  ``eot(attack, transform, num_samples=...)(logits_fn, x, y, key)`` runs ``attack`` on
  :func:`eot_logits_fn` built from ``logits_fn``, ``transform`` and a key split from
  ``key``. With ``transform=None``, ``logits_fn`` must be the randomised model
  ``(x, key) -> logits``. Each gradient the attack takes is then averaged over
  ``num_samples`` draws (so it costs ``num_samples`` forward/backward passes). Success
  flags in ``info`` are computed on the averaged model.

  >>> import jax, jax.numpy as jnp
  >>> from jaxsec.attacks.evasion import pgd
  >>> noisy = lambda x, k: x @ jnp.eye(2) + 0.1 * jax.random.normal(k, (x.shape[0], 2))
  >>> atk = eot(pgd(eps=0.5, num_steps=5), num_samples=4)
  >>> atk(noisy, jnp.full((1, 2), 0.5), jnp.array([0]), jax.random.key(0)).shape
  (1, 2)
  """
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  _checks.check_choice('average', average, AVERAGES)
  _checks.check_choice('resample', resample, RESAMPLE)
  if not callable(attack):
    raise ValueError(f'attack={attack!r} must be an attack function '
                     '(logits_fn, x, y, key) -> x_adv.')

  def wrapped(logits_fn, x, y, key):
    k_eot, k_attack = jax.random.split(key)
    f = eot_logits_fn(logits_fn, transform, num_samples=num_samples, key=k_eot,
                      average=average, resample=resample)
    return attack(f, x, y, k_attack)
  return wrapped


def bpda(preprocess: Callable[[jax.Array], jax.Array],
         approx: Callable[[jax.Array], jax.Array] | None = None
         ) -> Callable[[jax.Array], jax.Array]:
  """BPDA: ``preprocess`` on the forward pass, the vector-Jacobian product of ``approx``
  (default: the identity, i.e. straight-through) on the backward pass.

  ``approx`` should satisfy ``approx(x) ≈ preprocess(x)`` (Athalye et al. 2018 §4.1); the
  identity is their choice for preprocessors that are close to it (quantisation, JPEG,
  denoisers). Compose with the classifier: ``lambda x: logits_fn(bpda(prep)(x))``, or use
  :func:`bpda_logits_fn`. Implemented with ``jax.custom_vjp``: works under jit, vmap and
  grad; ``preprocess`` need not be differentiable at all.
  """
  if not callable(preprocess):
    raise ValueError(f'preprocess={preprocess!r} must be callable.')
  if approx is not None and not callable(approx):
    raise ValueError(f'approx={approx!r} must be callable or None.')
  approx_fn = approx if approx is not None else (lambda x: x)

  @jax.custom_vjp
  def f(x):
    return preprocess(x)

  def fwd(x):
    return preprocess(x), x

  def bwd(x, g):
    _, vjp = jax.vjp(approx_fn, x)
    return vjp(g)

  f.defvjp(fwd, bwd)
  return f


def bpda_logits_fn(logits_fn: Callable, preprocess: Callable,
                   approx: Callable | None = None) -> Callable:
  """``x -> logits_fn(preprocess(x))`` with BPDA gradients through ``preprocess``."""
  p = bpda(preprocess, approx)
  return lambda x: logits_fn(p(x))
