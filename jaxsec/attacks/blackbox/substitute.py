"""Substitute training with Jacobian-based dataset augmentation (Papernot, McDaniel,
Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks against Machine Learning",
AsiaCCS 2017), and transfer of white-box attacks from the substitute to the oracle.

The adversary sees only the labels ``O~(x)`` of the remote model (the oracle). It trains a
substitute ``F`` on a seed set ``S_0`` labelled by the oracle and grows it (Algorithm 1)::

    for rho in 0 .. num_aug_epochs - 1:
        theta_F = train(F, {(x, O~(x)) : x in S_rho})       # only new points are queried
        S_{rho+1} = S_rho  U  {x + lambda_rho sign(J_F(x)[O~(x)]) : x in S_rho}

``J_F(x)[O~(x)]`` is the input gradient of the substitute's softmax probability for the
oracle's label (the paper, ``jacobian='probs'``) or of its logit (``jacobian='logits'``).
``lambda_rho = lambda`` (Algorithm 1) or, with ``lam_period=tau``, ``lambda (-1)^floor(rho /
tau)`` (Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning",
arXiv:1605.07277, 2016; their reservoir sampling is not implemented). Adversarial examples
are crafted on the substitute with any white-box attack (the paper: FGSM, eps = 0.3 on
MNIST) and sent to the oracle (:func:`transfer_attack`).

The rounds are a host loop (the set doubles each round, so shapes change, and the oracle may
be a remote API); training (:func:`jaxsec.train.fit`), :func:`jacobian_augmentation` and
:func:`transfer_attack` are jitted. Queries are counted exactly, each input once (the last
round's augmentation is not made): ``|S_0| 2^(num_aug_epochs - 1)`` in all (4,800 for the
paper's 150 seeds and 6 rounds).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec.attacks.evasion import common
from jaxsec import train as train_lib

JACOBIANS = ('probs', 'logits')


# --------------------------------------------------------------------------- augmentation


def _output_fn(substitute_apply, jacobian):
  if jacobian == 'probs':
    return lambda p, x: jax.nn.softmax(substitute_apply(p, x), axis=-1)
  return substitute_apply


def jacobian_augmentation(substitute_apply: Callable, params: Any, x: jax.Array,
                          y: jax.Array, lam, *, jacobian: str = 'probs', bounds=(0.0, 1.0)
                          ) -> jax.Array:
  """The new points ``x + lam * sign(d F(x)_y / dx)`` of one augmentation step, per example.

  Args:
    substitute_apply: ``substitute_apply(params, x) -> logits``.
    params: the substitute's parameters.
    x: points ``[N, ...]`` of the current substitute training set.
    y: their oracle labels ``[N]``.
    lam: the step (may be traced, negative for the periodic variant).
    jacobian: 'probs' (the paper's ``F``, a softmax output) or 'logits'.
    bounds: the input box the new points are clipped to (``None``: no clipping).

  Returns:
    ``[N, ...]`` new points (jit friendly; the examples are independent, so the
    per-example gradients are the gradient of the sum).
  """
  _checks.check_choice('jacobian', jacobian, JACOBIANS)
  out = _output_fn(substitute_apply, jacobian)

  def total(xx):
    z = out(params, xx)
    return jnp.sum(jnp.take_along_axis(z, y[:, None].astype(jnp.int32), axis=-1))

  g = jax.grad(total)(x)
  x_new = x + jnp.asarray(lam, x.dtype) * jnp.sign(g)
  if bounds is not None:
    x_new = jnp.clip(x_new, bounds[0], bounds[1])
  return x_new


@functools.lru_cache(maxsize=64)
def _augment_jit(substitute_apply, jacobian, bounds):
  return jax.jit(functools.partial(jacobian_augmentation, substitute_apply,
                                   jacobian=jacobian, bounds=bounds))


# --------------------------------------------------------------------------- oracle


class CountingOracle:
  """Wraps ``oracle_fn: x -> labels`` (or scores, reduced to labels): every input row sent
  is counted in ``queries``, and only labels come back. Called from the host in chunks of
  ``batch_size``."""

  def __init__(self, oracle_fn: Callable, batch_size: int = 1000):
    self.oracle_fn = oracle_fn
    self.batch_size = batch_size
    self.queries = 0

  def __call__(self, x) -> np.ndarray:
    outs = []
    for i in range(0, x.shape[0], self.batch_size):
      xb = x[i:i + self.batch_size]
      out = np.asarray(self.oracle_fn(jnp.asarray(xb)))
      self.queries += int(xb.shape[0])
      if out.ndim == 2:
        out = (out[:, 0] > 0) if out.shape[1] == 1 else np.argmax(out, axis=-1)
      if out.shape != (xb.shape[0],):
        raise ValueError(f'oracle_fn returned shape {out.shape} for {xb.shape[0]} inputs; '
                         'expected labels [N] or scores [N, K].')
      outs.append(out.astype(np.int32))
    if not outs:
      return np.zeros((0,), np.int32)
    return np.concatenate(outs)


# --------------------------------------------------------------------------- training


class SubstituteOutput(NamedTuple):
  """What a substitute-training run returns.

  Attributes:
    params: the trained substitute's parameters.
    queries: oracle queries spent (inputs labelled by the oracle), exact.
    x: the final substitute training set ``S`` (every point was labelled by the oracle).
    y: its oracle labels.
    history: per substitute epoch ``rho``: ``size`` (|S_rho|), ``queries`` (cumulative),
      ``train_loss`` (mean loss of the last training epoch), ``lam`` (the step used to
      augment after that round, ``None`` after the last) and, with ``eval_data``,
      ``eval_accuracy``.
  """
  params: Any
  queries: int
  x: np.ndarray
  y: np.ndarray
  history: dict


def substitute_training(*, substitute_apply: Callable, substitute_init: Callable,
                        num_aug_epochs: int = 6, lam: float = 0.1, lam_period: int | None = None,
                        train_epochs: int = 10, batch_size: int = 128,
                        optimizer: optax.GradientTransformation | None = None,
                        learning_rate: float = 1e-3, jacobian: str = 'probs',
                        bounds=(0.0, 1.0), query_batch_size: int = 1000,
                        aug_batch_size: int = 512, reinit: bool = False):
  """Papernot et al. (AsiaCCS 2017) substitute training with Jacobian-based augmentation.

  Args:
    substitute_apply: ``substitute_apply(params, x) -> logits`` (any architecture).
    substitute_init: ``substitute_init(key) -> params`` (e.g.
      ``lambda k: module.init(k, x_example)``).
    num_aug_epochs: ``rho_max``, the number of substitute epochs (rounds of label, train,
      augment); the paper uses 6 (>= 1).
    lam: the augmentation step ``lambda`` (paper: 0.1), > 0.
    lam_period: ``tau`` of the periodic step ``lambda (-1)^floor(rho / tau)``
      (arXiv:1605.07277; ``None``: the constant step of Algorithm 1).
    train_epochs: training epochs of the substitute per round (the paper's code: 10).
    batch_size: training batch size (capped at the size of the training set).
    optimizer: an optax optimizer (default ``optax.adam(learning_rate)``).
    learning_rate: Adam's learning rate when ``optimizer`` is None.
    jacobian: 'probs' (the paper: gradient of the softmax output of the oracle's label) or
      'logits' (gradient of that logit).
    bounds: the input box; new points are clipped to it (``None``: no clipping).
    query_batch_size: inputs per call of the oracle.
    aug_batch_size: points per jitted augmentation call.
    reinit: train each round from a fresh initialisation (default: continue from the
      previous round's parameters, as the paper's reference code does).

  Returns:
    ``run(oracle_fn, x_seed, key, *, eval_data=None) -> SubstituteOutput`` where
    ``oracle_fn: x -> labels`` (scores are reduced to labels: only labels are used),
    ``x_seed`` ``[N0, ...]`` is the adversary's seed set ``S_0`` (e.g. 150 held-out images)
    and ``eval_data=(x, labels)``, if given, is scored after every round
    (``history['eval_accuracy']``: the substitute's accuracy, as in the paper's Table 1, or
    its agreement with the oracle when the labels are the oracle's); it costs no queries.
  """
  if not callable(substitute_apply):
    raise ValueError(f'substitute_apply={substitute_apply!r} must be callable.')
  if not callable(substitute_init):
    raise ValueError(f'substitute_init={substitute_init!r} must be callable.')
  num_aug_epochs = _checks.check_int('num_aug_epochs', num_aug_epochs, minimum=1)
  lam = float(_checks.check_float('lam', lam, minimum=0.0, strict_min=True,
                                  allow_traced=False))
  if lam_period is not None:
    lam_period = _checks.check_int('lam_period', lam_period, minimum=1)
  train_epochs = _checks.check_int('train_epochs', train_epochs, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  learning_rate = float(_checks.check_float('learning_rate', learning_rate, minimum=0.0,
                                            strict_min=True, allow_traced=False))
  _checks.check_choice('jacobian', jacobian, JACOBIANS)
  if bounds is not None:
    bounds = _checks.check_bounds(bounds)
  query_batch_size = _checks.check_int('query_batch_size', query_batch_size, minimum=1)
  aug_batch_size = _checks.check_int('aug_batch_size', aug_batch_size, minimum=1)
  if not isinstance(reinit, bool):
    raise ValueError(f'reinit={reinit!r} must be a bool (True or False).')
  opt = optax.adam(learning_rate) if optimizer is None else optimizer
  augment = _augment_jit(substitute_apply, jacobian, bounds)

  def lam_at(rho):
    if lam_period is None:
      return lam
    return lam * (-1.0) ** (rho // lam_period)

  def augment_all(params, xs, ys, lam_r, chunk):
    # Fixed-size chunks (the last one padded): one compiled program for every round.
    outs = []
    for i in range(0, xs.shape[0], chunk):
      xb, yb = xs[i:i + chunk], ys[i:i + chunk]
      m = xb.shape[0]
      if m < chunk:
        xb = np.concatenate([xb, np.repeat(xb[-1:], chunk - m, axis=0)])
        yb = np.concatenate([yb, np.repeat(yb[-1:], chunk - m, axis=0)])
      outs.append(np.asarray(augment(params, jnp.asarray(xb), jnp.asarray(yb),
                                     jnp.float32(lam_r)))[:m])
    return np.concatenate(outs)

  def run(oracle_fn, x_seed, key, *, eval_data=None) -> SubstituteOutput:
    _checks.check_array('x_seed', x_seed, dtype_kind='f', finite=True)
    if x_seed.ndim < 2 or x_seed.shape[0] == 0:
      raise ValueError(f'x_seed has shape {tuple(x_seed.shape)}; expected a non-empty '
                       'batch [N0, ...].')
    if bounds is not None:
      _checks.check_in_bounds('x_seed', x_seed, bounds, tol=1e-5)
    if eval_data is not None:
      ex, ey = eval_data
      _checks.check_labels('eval_data labels', np.asarray(ey), batch=ex.shape[0])
    oracle = CountingOracle(oracle_fn, query_batch_size)
    k_init, k_train = jax.random.split(key)
    params = substitute_init(k_init)
    xs = np.asarray(x_seed, np.float32)
    ys = oracle(xs)
    # The largest set ever augmented is S_{rho_max - 2}: chunks need not be larger.
    chunk = min(aug_batch_size, xs.shape[0] * 2 ** max(num_aug_epochs - 2, 0))
    history = {'size': [], 'queries': [], 'train_loss': [], 'lam': []}
    if eval_data is not None:
      history['eval_accuracy'] = []
    for rho in range(num_aug_epochs):
      if reinit and rho > 0:
        params = substitute_init(jax.random.fold_in(k_init, rho))
      res = train_lib.fit(substitute_apply, params, xs, ys, optimizer=opt,
                          key=jax.random.fold_in(k_train, rho),
                          batch_size=min(batch_size, xs.shape[0]), num_epochs=train_epochs)
      params = res.params
      history['size'].append(int(xs.shape[0]))
      history['queries'].append(oracle.queries)
      history['train_loss'].append(float(np.asarray(res.history['loss'])[-1]))
      if eval_data is not None:
        ex, ey = eval_data
        pred = np.argmax(train_lib.predict_logits(substitute_apply, params, ex), axis=-1)
        history['eval_accuracy'].append(float(np.mean(pred == np.asarray(ey))))
      if rho == num_aug_epochs - 1:       # S_{rho_max} would never be used: no queries
        history['lam'].append(None)
        break
      lam_r = lam_at(rho)
      history['lam'].append(lam_r)
      new = augment_all(params, xs, ys, lam_r, chunk)
      xs = np.concatenate([xs, new])
      ys = np.concatenate([ys, oracle(new)])
    return SubstituteOutput(params, oracle.queries, xs, ys, history)
  return run


# --------------------------------------------------------------------------- transfer


class TransferOutput(NamedTuple):
  """Transfer of adversarial examples crafted on the substitute to the oracle.

  Attributes:
    x_adv: the adversarial examples ``[N, ...]`` (crafted on the substitute only).
    oracle_labels: the oracle's labels of ``x_adv``.
    oracle_clean_labels: the oracle's labels of the clean ``x``.
    substitute_labels: the substitute's labels of ``x_adv``.
    misclassification_rate: fraction of ``x_adv`` the oracle labels ``!= y`` (untargeted)
      or ``== y`` (targeted), over all the images whatever the oracle says of the clean
      ones: the paper's figure.
    success_rate: the same over the images whose clean label is not already a success
      (oracle correct, untargeted; oracle not at the target, targeted).
    substitute_success_rate: the same measure on the substitute itself (white-box).
    queries: oracle queries spent by the evaluation (clean and adversarial: ``2 N``); not
      part of the attack's cost.
  """
  x_adv: np.ndarray
  oracle_labels: np.ndarray
  oracle_clean_labels: np.ndarray
  substitute_labels: np.ndarray
  misclassification_rate: float
  success_rate: float
  substitute_success_rate: float
  queries: int


def transfer_attack(attack: Callable, substitute_apply: Callable, substitute_params: Any,
                    oracle_fn: Callable, x, y, key=None, *, targeted: bool = False,
                    batch_size: int = 500) -> TransferOutput:
  """Crafts ``attack`` (any white-box attack of :mod:`jaxsec.attacks.evasion`, e.g.
  ``fgsm(eps=0.3)``) on the substitute and evaluates it on the oracle's labels.

  The attack runs jitted in fixed-size batches (the last one padded with copies of its last
  example, which are dropped); batch ``i`` gets ``fold_in(key, i)`` (``None`` if ``key`` is
  None: for deterministic attacks).

  Args:
    attack: ``attack(logits_fn, x, y, key) -> AttackOutput``.
    substitute_apply, substitute_params: the substitute model.
    oracle_fn: ``x -> labels`` (or scores, reduced to labels).
    x, y: the images and their true labels (untargeted) or targets (``targeted=True``).
    key: randomness for the attack (or None).
    targeted: success means the oracle outputs ``y``.
    batch_size: examples per jitted attack call.

  Returns:
    TransferOutput.
  """
  _checks.check_int('batch_size', batch_size, minimum=1)
  x = np.asarray(x)
  y = np.asarray(y).astype(np.int32)
  logits_fn = lambda z: substitute_apply(substitute_params, z)
  # Finite inputs, labels in the substitute's classes (the attack itself runs jitted).
  common.check_call(x, y, None, logits_fn)

  @jax.jit
  def craft(xb, yb, kb):
    x_adv = attack(logits_fn, xb, yb, kb).x_adv
    return x_adv, jnp.argmax(logits_fn(x_adv), axis=-1).astype(jnp.int32)

  n = x.shape[0]
  advs, subs = [], []
  for j, i in enumerate(range(0, n, batch_size)):
    xb, yb = x[i:i + batch_size], y[i:i + batch_size]
    m = xb.shape[0]
    if m < batch_size and n > batch_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - m, axis=0)])
      yb = np.concatenate([yb, np.repeat(yb[-1:], batch_size - m, axis=0)])
    kb = None if key is None else jax.random.fold_in(key, j)
    xa, sl = craft(jnp.asarray(xb), jnp.asarray(yb), kb)
    advs.append(np.asarray(xa)[:m])
    subs.append(np.asarray(sl)[:m])
  x_adv = np.concatenate(advs)
  sub_labels = np.concatenate(subs)
  oracle = CountingOracle(oracle_fn, batch_size)
  clean = oracle(x)
  adv = oracle(x_adv)
  hit = (adv == y) if targeted else (adv != y)
  sub_hit = (sub_labels == y) if targeted else (sub_labels != y)
  ok = clean == y if not targeted else clean != y
  return TransferOutput(
      x_adv=x_adv, oracle_labels=adv, oracle_clean_labels=clean,
      substitute_labels=sub_labels, misclassification_rate=float(hit.mean()),
      success_rate=float(hit[ok].mean()) if ok.any() else float('nan'),
      substitute_success_rate=float(sub_hit.mean()), queries=oracle.queries)
