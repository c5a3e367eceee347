"""Regularisers as objective transformations (survey §3.1, "parameter regularisation").

* :func:`weight_penalty` -- L1 / L2 penalties on the parameters (``objective + l1 ||w||_1
  + l2 / 2 ||w||_2^2``, added to every example's loss so that the mean over a batch adds
  the penalty once). :func:`decoupled_weight_decay` is the decoupled form of Loshchilov &
  Hutter (ICLR 2019) as an ``optax`` transformation: ``optax.chain(optax.adam(lr),
  decoupled_weight_decay(rate, learning_rate=lr))`` equals ``optax.adamw(lr,
  weight_decay=rate)``; with plain SGD the decoupled and the L2 forms coincide.
* Dropout lives in the models (``models.get('cnn', dropout=0.5)``): train it with
  ``train.fit(..., train_apply_fn=lambda p, x, k: model.apply(p, x, train=True,
  rngs={'dropout': k}))``; evaluation and attacks use ``model.apply`` (inference mode).
* :func:`jacobian_frobenius_sq`, :func:`contractive` and :func:`deep_contractive` -- the
  deep contractive network of Gu & Rigazio (ICLR 2015 workshop, "Towards deep neural
  network architectures robust to adversarial examples"): the loss plus
  ``sum_j lambda_j ||d h_j / d h_{j-1}||_F^2`` over the layers ``h_j`` (their eq. (5),
  layer-wise, an approximation of the input-output contractive penalty of Rifai et al.
  2011). :func:`deep_contractive` takes the network as a list of layer functions;
  :func:`contractive` works with any ``apply_fn`` and penalises the input-output Jacobian
  ``||d logits / d x||_F^2`` (what the layer-wise sum approximates).
* :func:`input_gradient_regularization` -- Ross & Doshi-Velez (AAAI 2018): the loss plus
  ``lambda ||d loss / d x||_2^2`` ("double backpropagation", Drucker & LeCun 1992).

The Frobenius norms are exact (one vector-Jacobian product per output coordinate,
vmapped) or, with ``num_projections=k``, the unbiased Hutchinson-type estimate
``||J||_F^2 = E_v ||v^T J||^2`` with ``v ~ N(0, I)`` over the outputs (``k`` VJPs, cheap
for wide layers; the variance falls as ``1/k``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxsec import _checks
from jaxsec.defenses.training.adversarial import resolve_objective


def _default_filter(leaf) -> bool:
  return getattr(leaf, 'ndim', 0) >= 2


def l1_penalty(params, filter_fn: Callable[[Any], bool] | None = _default_filter):
  """``sum |w|`` over the leaves selected by ``filter_fn`` (default: weight matrices and
  kernels, ndim >= 2, not biases; None: every leaf)."""
  leaves = [l for l in jax.tree.leaves(params) if filter_fn is None or filter_fn(l)]
  return sum((jnp.sum(jnp.abs(l)) for l in leaves), jnp.zeros(()))


def l2_penalty(params, filter_fn: Callable[[Any], bool] | None = _default_filter):
  """``1/2 sum w^2`` over the leaves selected by ``filter_fn`` (see :func:`l1_penalty`)."""
  leaves = [l for l in jax.tree.leaves(params) if filter_fn is None or filter_fn(l)]
  return 0.5 * sum((jnp.sum(l * l) for l in leaves), jnp.zeros(()))


def weight_penalty(*, loss=None, objective=None, l1=0.0, l2=0.0,
                   filter_fn: Callable[[Any], bool] | None = _default_filter):
  """``objective + l1 * ||w||_1 + l2 * ||w||_2^2 / 2`` (per example; see module doc).

  ``l1 = l2 = 0`` is the plain objective. Strengths may be traced.
  """
  obj = resolve_objective(loss, objective)[0]
  _checks.check_float('l1', l1, minimum=0.0)
  _checks.check_float('l2', l2, minimum=0.0)

  def new(apply_fn, params, x, y, key):
    pen = l1 * l1_penalty(params, filter_fn) + l2 * l2_penalty(params, filter_fn)
    return obj(apply_fn, params, x, y, key) + pen
  return new


def decoupled_weight_decay(rate, *, learning_rate=1.0, mask=None
                           ) -> optax.GradientTransformation:
  """Adds ``-learning_rate * rate * params`` to the updates of the optimizer before it.

  Chain it *after* the optimizer: ``optax.chain(opt, decoupled_weight_decay(rate,
  learning_rate=lr))``. With ``opt = optax.adam(lr)`` this is AdamW (Loshchilov & Hutter
  2019), identical to ``optax.adamw(lr, weight_decay=rate)``. ``mask`` is an optional
  pytree of bools (or a function of params) selecting the decayed leaves.
  """
  _checks.check_float('rate', rate, minimum=0.0)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0)

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('decoupled_weight_decay needs params: call optimizer.update(grads, '
                       'state, params).')
    m = mask(params) if callable(mask) else mask
    if m is None:
      m = jax.tree.map(lambda _: True, params)
    new = jax.tree.map(lambda u, p, keep: u - learning_rate * rate * p if keep else u,
                       updates, params, m)
    return new, state
  return optax.GradientTransformation(init, update)


# --------------------------------------------------------------------------- Jacobians


def jacobian_frobenius_sq(f: Callable[[jax.Array], jax.Array], x: jax.Array,
                          key: jax.Array | None = None, num_projections: int | None = None
                          ) -> jax.Array:
  """Per-example ``||d f(x)_i / d x_i||_F^2`` for a batch function ``f: [B, ...] -> [B, ...]``
  whose examples are independent.

  Exact (``num_projections=None``): one VJP per output coordinate ``k`` with the
  cotangent ``e_k`` for every example at once. Estimated: ``mean_s ||v_s^T J||^2`` with
  ``v_s ~ N(0, I)``, unbiased. Differentiable in whatever ``f`` closes over (double
  backprop).
  """
  out, vjp = jax.vjp(f, x)
  b = out.shape[0]
  k_out = out.size // b
  if num_projections is None:
    eye = jnp.eye(k_out, dtype=out.dtype)
    cots = jnp.broadcast_to(eye[:, None, :], (k_out, b, k_out)).reshape(
        (k_out,) + out.shape)
  else:
    _checks.check_int('num_projections', num_projections, minimum=1)
    if key is None:
      raise ValueError('num_projections needs a key for the random projections.')
    cots = jax.random.normal(key, (num_projections,) + out.shape, out.dtype)
  rows = jax.vmap(lambda c: vjp(c)[0])(cots)                 # [K, B, ...]
  sq = jnp.sum(rows.reshape(rows.shape[0], b, -1) ** 2, axis=-1)   # [K, B]
  return jnp.sum(sq, 0) if num_projections is None else jnp.mean(sq, 0)


def contractive(*, loss=None, objective=None, strength, num_projections: int | None = None,
                output: str = 'logits'):
  """``objective + strength * ||d g(x) / d x||_F^2`` with ``g`` the logits (default) or
  the softmax probabilities of ``apply_fn``: the input-output contractive penalty for any
  model (see module doc). ``strength = 0`` is the plain objective."""
  obj = resolve_objective(loss, objective)[0]
  _checks.check_float('strength', strength, minimum=0.0)
  _checks.check_choice('output', output, ('logits', 'probs'))

  def new(apply_fn, params, x, y, key):
    k_obj, k_proj = jax.random.split(key)
    g = (lambda z: apply_fn(params, z)) if output == 'logits' else (
        lambda z: jax.nn.softmax(apply_fn(params, z), axis=-1))
    pen = jacobian_frobenius_sq(g, x, k_proj, num_projections)
    return obj(apply_fn, params, x, y, k_obj) + strength * pen
  return new


def deep_contractive(*, loss=None, objective=None, layers: Sequence[Callable[[Any, jax.Array], jax.Array]],
                     strength, num_projections: int | None = None):
  """Gu & Rigazio's deep contractive network penalty (layer-wise Jacobians).

  ``objective + sum_j lambda_j ||d h_j / d h_{j-1}||_F^2`` per example, with ``h_0 = x``
  and ``h_j = layers[j](params, h_{j-1})``; the composition of ``layers`` should be the
  model's ``apply_fn`` (the loss itself still uses ``apply_fn``). Each layer's Jacobian
  is evaluated at the layer's actual input on the clean batch; the norms are exact or
  randomly projected (``num_projections``: advisable for wide convolutional layers).

  Args:
    loss, objective: what to regularise, at most one (see
      :func:`jaxsec.defenses.training.adversarial.resolve_objective`; default cross-entropy).
    layers: ``[layer(params, h) -> h']``; a layer may be several operations (Gu & Rigazio
      group each affine map with its nonlinearity).
    strength: one ``lambda`` for every layer or a sequence, one per layer; 0 = plain.
    num_projections: None (exact) or the number of random projections per layer.
  """
  obj = resolve_objective(loss, objective)[0]
  layers = tuple(layers)
  if not layers or not all(callable(l) for l in layers):
    raise ValueError(f'layers={layers!r} must be a non-empty sequence of functions '
                     '(params, h) -> h.')
  strengths = tuple(strength) if isinstance(strength, (list, tuple)) else (strength,) * len(
      layers)
  if len(strengths) != len(layers):
    raise ValueError(f'strength has {len(strengths)} values for {len(layers)} layers.')
  for s in strengths:
    _checks.check_float('strength', s, minimum=0.0)

  def new(apply_fn, params, x, y, key):
    k_obj, k_proj = jax.random.split(key)
    h = x
    pen = jnp.zeros((x.shape[0],), x.dtype)
    for j, (layer, lam) in enumerate(zip(layers, strengths, strict=True)):
      f = lambda z, layer=layer: layer(params, z)
      pen = pen + lam * jacobian_frobenius_sq(f, h, jax.random.fold_in(k_proj, j),
                                              num_projections)
      h = f(h)
    return obj(apply_fn, params, x, y, k_obj) + pen
  return new


def input_gradient_regularization(*, loss=None, objective=None, strength):
  """Ross & Doshi-Velez (AAAI 2018): ``loss + strength * ||d loss / d x||_2^2`` per example.

  The input gradient is that of the (per-example) ``objective`` itself, so it is the
  cross-entropy's gradient for the default objective (their eq. (3)); the penalty is
  differentiated through (double backprop). ``strength = 0`` is the plain objective.
  """
  obj = resolve_objective(loss, objective)[0]
  _checks.check_float('strength', strength, minimum=0.0)

  def new(apply_fn, params, x, y, key):
    def total(z):
      v = obj(apply_fn, params, z, y, key)
      return jnp.sum(v), v
    g, v = jax.grad(total, has_aux=True)(x)
    return v + strength * jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1)
  return new
