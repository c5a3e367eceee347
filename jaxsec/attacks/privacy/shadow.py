"""Shadow models (one ``train.fit_many`` program) and Shokri et al. 2017's attack models.

Shokri, Stronati, Song, Shmatikov 2017 (IEEE S&P), "Membership inference attacks against
machine learning models":

1. train ``K`` shadow models that imitate the target, each on its own training set, with a
   disjoint held-out set of the same size (here: ``2K`` disjoint partitions of the attacker's
   data, :func:`shokri_masks`); all ``K`` are ONE vmapped program (:func:`train_shadow_models`);
2. label every shadow output "in" (from its training set) or "out" (from its held-out set);
3. train ONE binary attack model PER CLASS on those records (the class is the record's true
   label); here the ``C`` attack models are again one ``fit_many`` program over per-class
   masks of one shared record set;
4. score a target example with the attack model of its class, on the target's output.

The attack model's input (:func:`attack_features`) is the prediction vector sorted in
decreasing order (optionally its top-k entries, as in Salem et al. 2019's ML-Leaks), the raw
vector in class order (Shokri's "prediction vector and label", the label choosing the
attack model), or the true class's entry followed by the sorted vector; as probabilities
(Shokri's choice) or log-probabilities; standardised with the shadow records' statistics.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import data as data_lib
from jaxsec import train
from jaxsec.attacks.privacy import _nets


def shadow_keys(key: jax.Array, num_models: int) -> tuple[jax.Array, jax.Array]:
  """The (init, train) keys ``[num_models]`` that :func:`train_shadow_models` uses."""
  num_models = _checks.check_int('num_models', num_models, minimum=1)
  k_init, k_train = jax.random.split(key)
  return jax.random.split(k_init, num_models), jax.random.split(k_train, num_models)


def train_shadow_models(apply_fn: Callable, init_fn: Callable[[jax.Array], Any], x, y,
                        masks: np.ndarray, *, key: jax.Array,
                        optimizer: optax.GradientTransformation, batch_size: int = 128,
                        num_epochs: int | None = None, num_steps: int | None = None,
                        **fit_kwargs) -> train.FitResult:
  """Trains ``len(masks)`` shadow models of one architecture as ONE ``train.fit_many`` program.

  Model ``m`` starts from ``init_fn(init_keys[m])`` and trains on ``x[masks[m]]`` with key
  ``train_keys[m]`` (``init_keys, train_keys = shadow_keys(key, M)``): exactly what
  ``train.fit(apply_fn, init_fn(init_keys[m]), x, y, indices=nonzero(masks[m]),
  key=train_keys[m], ...)`` returns when all masks select the same number of examples
  (:func:`complementary_membership`, :func:`shokri_masks`); otherwise every model runs
  ``min_m |masks[m]| // batch_size`` steps per epoch (``fit_many``'s rule), e.g. with
  ``data.balanced_membership``, whose per-model counts vary by a few examples.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits``.
    init_fn: ``key -> params`` of one model.
    x, y: the attacker's shared data set; masks: bool ``[M, N]`` training sets.
    fit_kwargs: passed to ``train.fit_many`` (``loss``, ``objective``, ``num_classes``,
      ``mesh``, ``checkpoint_dir``, ...). ``progress`` defaults to True here: one
      ``absl.logging`` line per epoch of the whole program (mean loss, epochs/s, ETA),
      labelled ``shadow models (M)`` unless ``label`` is given.

  Returns:
    ``train.FitResult`` with stacked params (leading axis ``M``).
  """
  masks = np.asarray(masks)
  if masks.ndim != 2:
    raise ValueError(f'masks has shape {masks.shape}; expected bool [num_models, N].')
  init_keys, train_keys = shadow_keys(key, masks.shape[0])
  fit_kwargs.setdefault('progress', True)
  fit_kwargs.setdefault('label', f'shadow models ({masks.shape[0]})')
  params = train.init_many(init_fn, init_keys)
  return train.fit_many(apply_fn, params, x, y, masks=masks, optimizer=optimizer,
                        keys=train_keys, batch_size=batch_size, num_epochs=num_epochs,
                        num_steps=num_steps, **fit_kwargs)


def complementary_membership(key: jax.Array, num_models: int, n: int) -> np.ndarray:
  """Bool ``[num_models, n]``: every example IN for exactly half of the models AND every
  model IN on exactly ``n // 2`` examples.

  Models come in complementary pairs: pair ``k`` splits an independent random permutation
  of ``range(n)`` into halves (model ``2k`` trains on one, ``2k + 1`` on the other; for odd
  ``n`` the last example of each permutation is OUT for both, so a few examples are IN for
  fewer than half the models). Unlike
  ``data.balanced_membership`` (balanced per example only), all training sets have the same
  size, so ``fit_many`` runs exactly the steps ``fit`` would for every model.
  """
  num_models = _checks.check_int('num_models', num_models, minimum=2)
  n = _checks.check_int('n', n, minimum=2)
  if num_models % 2:
    raise ValueError(f'num_models={num_models} must be even.')
  masks = np.zeros((num_models, n), bool)
  half = n // 2
  for k, kk in enumerate(jax.random.split(key, num_models // 2)):
    perm = np.asarray(jax.random.permutation(kk, n))
    masks[2 * k, perm[:half]] = True
    masks[2 * k + 1, perm[half:2 * half]] = True
  return masks


def shokri_masks(key: jax.Array, n: int, *, num_shadow: int, shadow_size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint training and held-out sets for ``num_shadow`` shadow models.

  ``range(n)`` is split into ``2 * num_shadow`` disjoint parts of ``shadow_size`` examples:
  shadow ``k`` trains on part ``k`` and is evaluated "out" on part ``num_shadow + k``.

  Returns:
    ``(in_masks, out_masks)``, bool ``[num_shadow, n]`` each, all rows pairwise disjoint.
  """
  num_shadow = _checks.check_int('num_shadow', num_shadow, minimum=1)
  shadow_size = _checks.check_int('shadow_size', shadow_size, minimum=1)
  if 2 * num_shadow * shadow_size > n:
    raise ValueError(f'num_shadow={num_shadow} shadow models with shadow_size={shadow_size} '
                     f'need {2 * num_shadow * shadow_size} disjoint examples; only n={n}.')
  parts = data_lib.partition(key, n, [shadow_size] * (2 * num_shadow))
  in_masks = data_lib.masks_from_indices(parts[:num_shadow], n)
  out_masks = data_lib.masks_from_indices(parts[num_shadow:], n)
  return in_masks, out_masks


def shokri_records(shadow_logits, y, in_masks, out_masks):
  """Flattens shadow outputs into attack records.

  Args:
    shadow_logits: ``[K, N, C]`` outputs of the ``K`` shadow models on the shared data.
    y: ``[N]`` labels; in_masks / out_masks: bool ``[K, N]``.

  Returns:
    ``(logits [P, C], labels [P], member [P] bool)`` over every (model, example) pair that
    is in one of the model's two sets.
  """
  shadow_logits = np.asarray(shadow_logits)
  in_masks, out_masks = np.asarray(in_masks, bool), np.asarray(out_masks, bool)
  if shadow_logits.ndim != 3 or shadow_logits.shape[:2] != in_masks.shape:
    raise ValueError(f'shadow_logits has shape {shadow_logits.shape}; expected [K, N, C] '
                     f'with [K, N] = in_masks.shape = {in_masks.shape}.')
  if in_masks.shape != out_masks.shape or (in_masks & out_masks).any():
    raise ValueError('in_masks and out_masks must have the same shape and be disjoint.')
  y = np.asarray(y)
  keep = in_masks | out_masks
  k_idx, n_idx = np.nonzero(keep)
  return (shadow_logits[k_idx, n_idx], y[n_idx], in_masks[k_idx, n_idx])


FEATURES = ('prob', 'logprob')
ORDERS = ('sorted', 'raw', 'sorted+true')


def attack_features(logits, labels=None, *, top_k: int | None = None,
                    transform: str = 'prob', order: str = 'raw') -> jax.Array:
  """Attack-model inputs from a model's outputs.

  Args:
    logits: ``[N, C]``; labels: ``[N]`` true labels (needed for ``order='sorted+true'``).
    top_k: keep the ``top_k`` largest entries (sorted orders only).
    transform: 'prob' (Shokri's probabilities) or 'logprob' (log-softmax, finer near 1).
    order: 'raw' (default: the vector in class order; with one attack model per class this
      is Shokri's "prediction vector + label"), 'sorted' (the vector in decreasing order,
      label-free, ML-Leaks), 'sorted+true' (the true class's entry, then the sorted
      vector).
  """
  _checks.check_choice('transform', transform, FEATURES)
  _checks.check_choice('order', order, ORDERS)
  logits = jnp.asarray(logits)
  _checks.check_array('logits', logits, ndim=2, dtype_kind='f')
  c = logits.shape[-1]
  k = c if top_k is None else _checks.check_int('top_k', top_k, minimum=1, maximum=c)
  logp = jax.nn.log_softmax(logits, axis=-1)
  if order == 'raw':
    feats = logp
  else:
    feats = -jnp.sort(-logp, axis=-1)[:, :k]
    if order == 'sorted+true':
      if labels is None:
        raise ValueError("order='sorted+true' needs labels.")
      true = jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], axis=1)
      feats = jnp.concatenate([true, feats], axis=1)
  return jnp.exp(feats) if transform == 'prob' else feats


class ShokriAttack(NamedTuple):
  """Trained per-class attack models (stacked params, leading axis ``num_classes``)."""
  params: Any
  mean: jax.Array
  std: jax.Array
  top_k: int | None
  transform: str
  order: str


def fit_shokri_attack(logits, labels, member, *, num_classes: int, key: jax.Array,
                      top_k: int | None = None, transform: str = 'prob',
                      order: str = 'raw', hidden: Sequence[int] = (64,),
                      optimizer: optax.GradientTransformation | None = None,
                      num_epochs: int = 30, batch_size: int = 64) -> ShokriAttack:
  """Trains one binary attack MLP per class on shadow records, all in one ``fit_many``.

  Args:
    logits, labels, member: the records of :func:`shokri_records`.
    num_classes: the number of classes ``C`` (one attack model each).
    hidden: hidden widths of the attack MLP (Shokri used a small fully connected net).
    optimizer: default ``optax.adam(1e-3)``.
    num_epochs, batch_size: every class model runs ``min_c |records_c| // batch_size``
      steps per epoch (fit_many's rule for unequal subsets), a fresh permutation each epoch.

  Returns:
    A :class:`ShokriAttack` for :func:`shokri_scores`.
  """
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  labels = np.asarray(labels)
  member = np.asarray(member).astype(np.int32)
  _checks.check_labels('labels', labels, num_classes=num_classes)
  if member.shape != labels.shape:
    raise ValueError(f'member has shape {member.shape}; expected {labels.shape}.')
  counts = np.bincount(labels, minlength=num_classes)
  if counts.min() < batch_size:
    raise ValueError(f'class {int(np.argmin(counts))} has {int(counts.min())} shadow records '
                     f'< batch_size={batch_size}; train more shadow models or lower it.')
  feats = np.asarray(attack_features(logits, labels, top_k=top_k, transform=transform,
                                     order=order))
  mean, std = feats.mean(0), feats.std(0) + 1e-6
  feats = ((feats - mean) / std).astype(np.float32)
  sizes = (feats.shape[1], *[int(h) for h in hidden], 2)
  masks = labels[None, :] == np.arange(num_classes)[:, None]
  res = train_shadow_models(_nets.mlp_apply, lambda k: _nets.mlp_init(k, sizes), feats,
                            member, masks, key=key,
                            optimizer=optimizer or optax.adam(1e-3),
                            batch_size=batch_size, num_epochs=num_epochs)
  return ShokriAttack(res.params, jnp.asarray(mean), jnp.asarray(std), top_k, transform,
                      order)


def shokri_scores(attack: ShokriAttack, logits, labels) -> jax.Array:
  """Member score of each target output from its class's attack model (logit difference
  ``member - non-member``; larger = member)."""
  feats = (attack_features(logits, labels, top_k=attack.top_k, transform=attack.transform,
                           order=attack.order) - attack.mean) / attack.std
  out = jax.vmap(_nets.mlp_apply, in_axes=(0, None))(attack.params, feats)  # [C, N, 2]
  labels = jnp.asarray(labels)
  picked = out[labels, jnp.arange(labels.shape[0])]
  return picked[:, 1] - picked[:, 0]


__all__ = ('shadow_keys', 'train_shadow_models', 'complementary_membership', 'shokri_masks', 'shokri_records',
           'attack_features', 'ShokriAttack', 'fit_shokri_attack', 'shokri_scores')
