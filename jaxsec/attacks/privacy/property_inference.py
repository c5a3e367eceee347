"""Property inference (Ateniese et al. 2015): does the target's training set have property P?

Ateniese, Mancini, Spognardi, Villani, Vitali, Felici 2015 (IJSN), "Hacking smart machines
with smarter ones": train many shadow models on data sets WITH and WITHOUT the property,
describe each model by features of its parameters, and train a meta-classifier on
(features, has-property) to apply to the target's parameters (white-box).

Here all shadow models are one ``train.fit_many`` program (:func:`property_masks` builds
their training sets). Parameters of a neural network are only defined up to a permutation of
hidden units, so a model is described by permutation-INVARIANT features: every parameter
tensor's values sorted (a permutation of hidden units only permutes a tensor's entries, so
its sorted values do not change), reduced to ``num_quantiles`` evenly spaced order
statistics per tensor, plus the tensor's mean and standard deviation (Ganju et al. 2018
motivate invariance; sorting is the simplest invariant). The meta-classifier is a small MLP
(or logistic regression, ``hidden=()``) trained with ``train.fit`` on standardised features.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import train
from jaxsec.attacks.privacy import _nets


def property_masks(key: jax.Array, has_property, *, num_models: int, size: int,
                   fraction_with: float, fraction_without: float
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Training sets for shadow models with / without a property.

  The property is a proportion: a fraction ``fraction_with`` (models labelled 1) or
  ``fraction_without`` (labelled 0) of each training set is drawn from the examples with
  ``has_property``, the rest from the others; every set has exactly ``size`` examples, drawn
  without replacement, independently per model. The first half of the models have the
  property.

  Returns:
    ``(masks bool [num_models, N], labels int32 [num_models])``.
  """
  num_models = _checks.check_int('num_models', num_models, minimum=2)
  size = _checks.check_int('size', size, minimum=1)
  _checks.check_probability('fraction_with', fraction_with)
  _checks.check_probability('fraction_without', fraction_without)
  has_property = np.asarray(has_property, bool)
  pos, neg = np.nonzero(has_property)[0], np.nonzero(~has_property)[0]
  labels = (np.arange(num_models) < num_models // 2).astype(np.int32)
  masks = np.zeros((num_models, has_property.size), bool)
  for m, k in enumerate(jax.random.split(key, num_models)):
    frac = fraction_with if labels[m] else fraction_without
    n_pos = int(round(frac * size))
    if n_pos > pos.size or size - n_pos > neg.size:
      raise ValueError(f'size={size} with fraction {frac} needs {n_pos} examples with the '
                       f'property ({pos.size} available) and {size - n_pos} without '
                       f'({neg.size} available).')
    k1, k2 = jax.random.split(k)
    masks[m, np.asarray(jax.random.choice(k1, pos, (n_pos,), replace=False))] = True
    masks[m, np.asarray(jax.random.choice(k2, neg, (size - n_pos,), replace=False))] = True
  return masks, labels


def parameter_features(params: Any, *, num_quantiles: int = 16, stacked: bool = True,
                       output_leaves: int = 0) -> jax.Array:
  """Permutation-invariant features of (stacked) parameters: per tensor, ``num_quantiles``
  evenly spaced order statistics of its values, its mean and its standard deviation.

  The output layer's classes are NOT interchangeable (class 0 is class 0), so the last
  ``output_leaves`` leaves (in tree order; for a Flax model ending in a Dense ``head``,
  ``output_leaves=2``: its bias, then its kernel) keep their class axis (the last axis):
  a bias is kept as is, a kernel ``[hidden, C]`` is sorted over the hidden axis only and
  reduced to quantiles per class column. Both are still invariant to permuting hidden units.

  Args:
    params: a pytree; with ``stacked=True`` every leaf has a leading model axis ``M``.
    output_leaves: how many trailing leaves form the output layer (see above).

  Returns:
    ``[M, F]`` (or ``[F]`` when ``stacked=False``).
  """
  num_quantiles = _checks.check_int('num_quantiles', num_quantiles, minimum=2)
  if not stacked:
    params = jax.tree.map(lambda a: jnp.asarray(a)[None], params)
  feats = []
  leaves = jax.tree.leaves(params)
  output_leaves = _checks.check_int('output_leaves', output_leaves, minimum=0,
                                    maximum=len(leaves))
  for i, leaf in enumerate(leaves):
    leaf = jnp.asarray(leaf)
    if i >= len(leaves) - output_leaves:
      if leaf.ndim == 2:                       # [M, C] bias: class order kept
        feats.append(leaf)
        continue
      cols = leaf.reshape((leaf.shape[0], -1, leaf.shape[-1]))   # [M, hidden, C]
      s = jnp.sort(cols, axis=1)
      pos = jnp.round(jnp.linspace(0, s.shape[1] - 1, num_quantiles)).astype(jnp.int32)
      feats += [s[:, pos, :].reshape((leaf.shape[0], -1)), jnp.mean(cols, 1),
                jnp.std(cols, 1)]
      continue
    flat = leaf.reshape((leaf.shape[0], -1))
    s = jnp.sort(flat, axis=1)
    pos = jnp.round(jnp.linspace(0, s.shape[1] - 1, num_quantiles)).astype(jnp.int32)
    feats += [s[:, pos], jnp.mean(flat, 1, keepdims=True), jnp.std(flat, 1, keepdims=True)]
  out = jnp.concatenate(feats, axis=1)
  return out if stacked else out[0]


class MetaClassifier(NamedTuple):
  params: Any
  mean: jax.Array
  std: jax.Array


def fit_meta_classifier(features, labels, *, key: jax.Array, hidden: Sequence[int] = (32,),
                        optimizer: optax.GradientTransformation | None = None,
                        num_epochs: int = 200, batch_size: int = 16) -> MetaClassifier:
  """Trains the meta-classifier on shadow-model features (label 1 = has the property)."""
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels).astype(np.int32)
  _checks.check_array('features', features, ndim=2, dtype_kind='f', finite=True)
  _checks.check_labels('labels', labels, num_classes=2, batch=features.shape[0])
  mean, std = features.mean(0), features.std(0) + 1e-6
  z = (features - mean) / std
  sizes = (features.shape[1], *[int(h) for h in hidden], 2)
  params = _nets.mlp_init(key, sizes)
  res = train.fit(_nets.mlp_apply, params, z, labels,
                  optimizer=optimizer or optax.adam(1e-3), key=jax.random.fold_in(key, 1),
                  batch_size=min(batch_size, z.shape[0]), num_epochs=num_epochs)
  return MetaClassifier(res.params, jnp.asarray(mean), jnp.asarray(std))


def meta_scores(meta: MetaClassifier, features) -> jax.Array:
  """``logit(has property) - logit(not)`` per model (larger = has the property)."""
  z = (jnp.asarray(features, jnp.float32) - meta.mean) / meta.std
  out = _nets.mlp_apply(meta.params, z)
  return out[:, 1] - out[:, 0]


__all__ = ('property_masks', 'parameter_features', 'MetaClassifier', 'fit_meta_classifier',
           'meta_scores')
