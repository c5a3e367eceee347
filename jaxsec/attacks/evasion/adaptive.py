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
GRADIENTS = ('per_sample_loss', 'averaged_output')


def _input_seed(x: jax.Array) -> jax.Array:
  """A uint32 fingerprint of the batch's bits (no gradient flows through it)."""
  bits = lax.bitcast_convert_type(lax.stop_gradient(x).astype(jnp.float32), jnp.uint32)
  bits = bits.reshape(-1)
  mult = (jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761)
          + jnp.uint32(0x9E3779B9))
  h = jnp.sum(bits * mult, dtype=jnp.uint32)
  return h ^ (h >> 16)


class EOTLogitsFn:
  """A randomised model made deterministic by averaging ``num_samples`` draws.

  Called, it returns the averaged output (see :func:`eot_logits_fn`). It also carries its
  own gradient estimator for the loss-gradient attacks (``attack_value_and_grad``, used by
  :func:`jaxsec.attacks.evasion.common.value_and_grad`, hence by FGM / BIM / MI-FGSM / PGD
  / APGD).
  """

  def __init__(self, model, num_samples, key, average, resample, gradient):
    self.model = model
    self.num_samples = num_samples
    self.key = key
    self.average = average
    self.resample = resample
    self.gradient = gradient

  def keys(self, x):
    """The ``num_samples`` keys of the draws used at input ``x``."""
    base = self.key if self.resample == 'fixed' else jax.random.fold_in(self.key,
                                                                         _input_seed(x))
    return jax.random.split(base, self.num_samples)

  def _term(self, z):
    if self.average == 'logits':
      return z
    if self.average == 'log_probs':
      return jax.nn.log_softmax(z, axis=-1)
    return jax.nn.softmax(z, axis=-1)

  def _output(self, total):
    mean = total / self.num_samples
    if self.average == 'probs':
      return jnp.log(jnp.maximum(mean, 1e-30))
    return mean

  def __call__(self, x):
    keys = self.keys(x)

    def one(carry, k):
      return carry + self._term(common.as_multiclass(self.model(x, k))), None

    spec = jax.eval_shape(lambda: common.as_multiclass(self.model(x, keys[0])))
    total, _ = lax.scan(one, jnp.zeros(spec.shape, spec.dtype), keys)
    return self._output(total)

  def attack_value_and_grad(self, obj):
    """``x, y -> (objective [B], logits, gradient)`` with the EOT gradient.

    'per_sample_loss': ``mean_s grad_x obj(model(x, k_s), y)`` (the loss of each draw on
    that draw's logits; all the objectives here are invariant to the log-softmax shift,
    so this does not depend on ``average``). 'averaged_output': ``grad_x obj(self(x), y)``.
    The objective and logits returned are those of the averaged model ``self(x)`` in both
    cases (what success tests and best-iterate selection see).
    """
    if self.gradient == 'averaged_output':
      return common.plain_value_and_grad(self, obj)

    def run(x, y):
      keys = self.keys(x)

      def loss_s(xx, k):
        z = common.as_multiclass(self.model(xx, k))
        return jnp.sum(obj(z, y)), z

      g_s = jax.grad(loss_s, has_aux=True)

      def one(carry, k):
        sg, sz = carry
        g, z = g_s(x, k)
        return (sg + g, sz + self._term(z)), None

      spec = jax.eval_shape(lambda: common.as_multiclass(self.model(x, keys[0])))
      init = (jnp.zeros_like(x), jnp.zeros(spec.shape, spec.dtype))
      (sg, sz), _ = lax.scan(one, init, keys)
      logits = self._output(lax.stop_gradient(sz))
      return obj(logits, y), logits, sg / self.num_samples
    return run


def eot_logits_fn(logits_fn: Callable, transform: Callable | None = None, *,
                  num_samples: int, key: jax.Array, average: str = 'logits',
                  resample: str = 'per_input',
                  gradient: str = 'per_sample_loss') -> EOTLogitsFn:
  """Turns a randomised model into the deterministic ``x -> logits`` that attacks take.

  The returned function averages over ``num_samples`` draws of the randomness:
  ``mean_s logits_fn(transform(x, k_s))`` (or, if ``transform`` is None, the randomised
  model itself is ``logits_fn(x, key)``: ``mean_s logits_fn(x, k_s)``).

  Gradients (``gradient``): EOT ascends ``E_t[grad_x L(model_t(x), y)]``, the expected
  gradient of the attack loss (Athalye, Engstrom, Ilyas & Kwok, ICML 2018, eq. (2)). With
  'per_sample_loss' (default) the loss-gradient attacks (FGM, BIM, MI-FGSM, PGD, APGD,
  through :func:`common.value_and_grad`) get exactly that Monte-Carlo mean, one gradient
  per draw. 'averaged_output' instead differentiates the loss of the averaged output,
  ``grad_x L(mean_s model_s(x), y)``, which differs from it wherever the loss is not
  linear in the logits (e.g. cross-entropy on a dropout-randomised model). Attacks that differentiate other functions of the logits (C&W,
  DeepFool, FAB, JSMA) always differentiate the averaged output.

  Args:
    logits_fn: ``x -> logits`` (with ``transform``) or ``(x, key) -> logits``.
    transform: random input transformation ``(x, key) -> x'`` (e.g. random crops, noise,
      physical-world transformations), or None.
    num_samples: draws per call (static).
    key: PRNG key of the estimator.
    average: what the forward output averages (predictions, success flags): 'logits'
      (default), 'log_probs' (mean log-softmax), or 'probs' (log of the mean softmax: the
      expected prediction of the randomised classifier; its argmax is the
      majority-in-probability decision).
    resample: 'per_input' (default) derives the draws from ``key`` and a fingerprint of the
      input bits, so each new iterate of an attack sees fresh randomness while the function
      stays pure and jittable; 'fixed' uses the same ``num_samples`` draws for every input
      (a deterministic surrogate, useful for attacks with line searches).
    gradient: 'per_sample_loss' (EOT proper) or 'averaged_output' (see above).

  Returns:
    An :class:`EOTLogitsFn`: ``x -> logits`` (for 'log_probs' / 'probs':
    log-probabilities, which every attack here accepts as logits).
  """
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  _checks.check_choice('average', average, AVERAGES)
  _checks.check_choice('resample', resample, RESAMPLE)
  _checks.check_choice('gradient', gradient, GRADIENTS)
  if transform is None:
    model = logits_fn
  else:
    model = lambda x, k: logits_fn(transform(x, k))
  return EOTLogitsFn(model, num_samples, key, average, resample, gradient)


def eot(attack: Callable, transform: Callable | None = None, *, num_samples: int,
        average: str = 'logits', resample: str = 'per_input',
        gradient: str = 'per_sample_loss') -> Callable:
  """Wraps any attack into its EOT version against a randomised model.

  ``eot(attack, transform, num_samples=...)(logits_fn, x, y, key)`` runs ``attack`` on
  :func:`eot_logits_fn` built from ``logits_fn``, ``transform`` and a key split from
  ``key`` (``k_eot, k_attack = jax.random.split(key)``). With ``transform=None``,
  ``logits_fn`` must be the randomised model ``(x, key) -> logits``. Each gradient a
  loss-gradient attack takes is then the mean of the ``num_samples`` per-draw loss
  gradients (Athalye et al. 2018; ``gradient='averaged_output'`` for the gradient of the
  loss of the averaged output instead), at the cost of ``num_samples`` forward/backward
  passes. Returns the wrapped attack's ``AttackOutput``; its ``success`` flags are
  computed on the averaged model.

  >>> import jax, jax.numpy as jnp
  >>> from jaxsec.attacks.evasion import pgd
  >>> noisy = lambda x, k: x @ jnp.eye(2) + 0.1 * jax.random.normal(k, (x.shape[0], 2))
  >>> atk = eot(pgd(eps=0.5, num_steps=5), num_samples=4)
  >>> atk(noisy, jnp.full((1, 2), 0.5), jnp.array([0]), jax.random.key(0)).x_adv.shape
  (1, 2)
  """
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  _checks.check_choice('average', average, AVERAGES)
  _checks.check_choice('resample', resample, RESAMPLE)
  _checks.check_choice('gradient', gradient, GRADIENTS)
  if not callable(attack):
    raise ValueError(f'attack={attack!r} must be an attack function '
                     '(logits_fn, x, y, key) -> AttackOutput.')

  def wrapped(logits_fn, x, y, key):
    k_eot, k_attack = jax.random.split(key)
    f = eot_logits_fn(logits_fn, transform, num_samples=num_samples, key=k_eot,
                      average=average, resample=resample, gradient=gradient)
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
