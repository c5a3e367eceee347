"""Deep Partition Aggregation: certified defense against general poisoning.

Levine & Feizi, "Deep Partition Aggregation: Provable Defenses against General Poisoning
Attacks", ICLR 2021. The training set is split into ``k`` parts by a hash of each
example's *content* (never its position), one base model is trained on each part, and the
ensemble predicts the plurality vote (ties: the smaller class index). Inserting or deleting
one training example changes exactly one part, so it can change at most one vote, and so
the prediction at ``x`` cannot change under any poisoning of at most

    rho(x) = floor((n_c - max_{c' != c} (n_c' + 1[c' < c])) / 2)

insertions plus deletions (the paper's Theorem 1, ``|T (-) T'| <= rho``), where ``n_c`` is
the number of base models voting ``c`` and ``c`` the winner. Changing only the label of an
example touches one part too (the hash is of ``x`` alone, as the authors hash image
pixels), so ``rho`` label flips are also certified. The rule is transcribed from the
authors' ``SupContrast/certify.py`` (github.com/alevine0/DPA): stable sort of the vote
counts, ``(val - valsecond - (idxsecond <= idx)) // 2``.

The certificate needs each base model to be a deterministic function of its part's
*contents*. :func:`train` therefore (i) orders every part by content (as the authors'
``partition_data_norm_hash.py`` lexsorts each part), (ii) seeds model ``m`` from
``fold_in(key, m)`` only (the authors seed by partition index), and (iii) pads every part to
a fixed ``capacity`` with zero-weight rows so that the training schedule of ``jaxsec.train.
fit_many`` (steps per epoch from the smallest part) does not depend on the other parts'
sizes. All ``k`` models train as ONE vmapped program on one copy of the data
(:func:`partition_layout`); :func:`train_part` trains one of them alone, the same model
(after an insertion or deletion only the touched part's model needs retraining).

Deviations from the paper: the partition hash is SHA-256 of the example's bytes (the
authors use the pixel sum mod ``k``; both depend on content only; SHA-256 also balances
parts); padded rows add zero to the loss, so a batch's mean runs over ``batch_size`` rows
of which only the real ones count.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec import train as train_lib


class Certificate(NamedTuple):
  """Per test point: the ensemble's ``prediction`` and ``radius``, the number of poisoned
  training examples (insertions + deletions) it is certified against."""
  prediction: Any
  radius: Any


class PartitionModels(NamedTuple):
  """The trained ensemble: stacked ``params`` (leading axis ``num_partitions``), the
  ``partition_ids`` of the training examples (in the caller's order), each part's
  ``sizes``, and ``fit_many``'s ``history``."""
  params: Any
  partition_ids: np.ndarray
  sizes: np.ndarray
  history: dict


def _digests(x: np.ndarray) -> list[bytes]:
  """SHA-256 of each example's raw bytes (C order); includes dtype and shape so that two
  arrays with the same bytes but different meaning never collide by construction."""
  head = f'{x.dtype.str}{x.shape[1:]}'.encode()
  return [hashlib.sha256(head + np.ascontiguousarray(row).tobytes()).digest() for row in x]


def partition(x: Any, *, num_partitions: int) -> np.ndarray:
  """Part index in ``[0, num_partitions)`` of every example, from a hash of its content.

  The part of an example depends on its bytes only (not on its position or on the other
  examples), so inserting or removing one example changes exactly one part's contents.

  Args:
    x: examples ``[N, ...]`` (any numeric dtype; the hash is of the raw bytes, so cast
      before partitioning, never after).
    num_partitions: ``k >= 1``.

  Returns:
    int32 ``[N]`` part indices.
  """
  _checks.check_int('num_partitions', num_partitions, minimum=1)
  x = np.asarray(x)
  if x.ndim < 1:
    raise ValueError(f'x has shape {x.shape}; expected [N, ...] examples.')
  return np.array([int.from_bytes(d[:8], 'big') % num_partitions for d in _digests(x)],
                  dtype=np.int32).reshape(x.shape[:1])


def content_order(x: Any, y: Any) -> np.ndarray:
  """A permutation sorting the examples by (content hash, label): the order of any subset
  under it depends only on that subset's contents (exact duplicates are interchangeable)."""
  x, y = np.asarray(x), np.asarray(y)
  dig = _digests(x)
  return np.array(sorted(range(x.shape[0]), key=lambda i: (dig[i], int(y[i]))), np.int64)


@functools.lru_cache(maxsize=64)
def _padded_objective(num_classes: int):
  """Cross-entropy that gives padding rows (label ``num_classes``) zero loss."""
  def objective(apply_fn, params, x, y, key):
    del key
    real = y < num_classes
    return jnp.where(real, losses_lib.cross_entropy(apply_fn(params, x),
                                                    jnp.where(real, y, 0)), 0.0)
  return objective


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_and_keys(init_fn, key, num_partitions):
  """Stacked initial params ``init_fn(fold_in(k0, m))`` and batch keys ``fold_in(k1, m)``
  (one compiled program: an eager vmapped Flax init compiles op by op)."""
  k_init, k_fit = jax.random.split(key)
  parts = jnp.arange(num_partitions)
  params = jax.vmap(lambda m: init_fn(jax.random.fold_in(k_init, m)))(parts)
  return params, jax.vmap(lambda m: jax.random.fold_in(k_fit, m))(parts)


class PartitionLayout(NamedTuple):
  """The training arrays all ``k`` base models share: ``x``, ``y`` ordered by part and by
  content within a part, then zero-weight padding rows (label ``num_classes``); ``masks``
  ``[k, rows]`` (row ``m``: part ``m``'s examples plus padding, exactly ``capacity``
  rows); ``ids`` and ``sizes`` as in :class:`PartitionModels`."""
  x: Any
  y: Any
  masks: np.ndarray
  ids: np.ndarray
  sizes: np.ndarray
  num_classes: int


def partition_layout(x: Any, y: Any, *, num_partitions: int, num_classes: int,
                     capacity: int) -> PartitionLayout:
  """Partitions ``(x, y)`` by content hash and lays the parts out for :func:`train` /
  :func:`train_part`: one copy of the data, each part ordered by content and padded to
  ``capacity`` rows of zero weight (see :func:`train` for the arguments)."""
  _checks.check_int('num_partitions', num_partitions, minimum=1)
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_int('capacity', capacity, minimum=1)
  x = np.asarray(x)
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  _checks.check_labels('y', y, num_classes=num_classes, batch=x.shape[0])
  y = np.asarray(y)
  ids = partition(x, num_partitions=num_partitions)
  sizes = np.bincount(ids, minlength=num_partitions)
  if sizes.max() > capacity:
    raise ValueError(f'capacity={capacity} is smaller than the largest part '
                     f'({int(sizes.max())} examples, part {int(np.argmax(sizes))}); expected '
                     'capacity >= every part size.')
  order = content_order(x, y)
  order = order[np.argsort(ids[order], kind='stable')]   # by part, content order within
  n = x.shape[0]
  # Padding rows are shared by all parts; their number is rounded up so that training
  # sets of nearby sizes (a sweep over poisoned sets) reuse one compiled program.
  pad = int(-(n + capacity - sizes.min()) // capacity * -capacity - n)
  xs = np.concatenate([x[order], np.zeros((pad,) + x.shape[1:], x.dtype)])
  ys = np.concatenate([y[order].astype(np.int32), np.full((pad,), num_classes, np.int32)])
  masks = np.zeros((num_partitions, n + pad), bool)
  masks[ids[order], np.arange(n)] = True
  for m in range(num_partitions):
    masks[m, n:n + capacity - sizes[m]] = True
  return PartitionLayout(xs, ys, masks, ids, sizes, num_classes)


def train(apply_fn: train_lib.ApplyFn,
          init_fn: Callable[[jax.Array], Any], x: Any, y: Any, *, num_partitions: int,
          num_classes: int, capacity: int, optimizer: optax.GradientTransformation,
          key: jax.Array, batch_size: int = 128, num_epochs: int | None = None,
          num_steps: int | None = None, mesh=None, checkpoint_dir: str | None = None,
          progress: bool = False) -> PartitionModels:
  """Trains the ``k`` base models of DPA as one ``jaxsec.train.fit_many`` program.

  Base model ``m`` is trained from ``init_fn(fold_in(key0, m))`` on the examples with
  ``partition(x)[i] == m``, ordered by content, padded to ``capacity`` rows of zero weight,
  with batch keys ``fold_in(key1, m)`` (``key0, key1`` derived from ``key``): it is a
  deterministic function of its part's contents, as the certificate requires.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits``.
    init_fn: ``init_fn(key) -> params`` of one base model.
    x, y: the training set (float inputs, int labels in ``[0, num_classes)``).
    num_partitions: ``k``.
    num_classes: number of classes.
    capacity: rows every part is padded to (``>= batch_size``, ``>=`` the largest part).
      Fix it in advance (e.g. ``2 * N // k``): the schedule of all models depends on it,
      so it must not change with the poisoned set.
    optimizer, batch_size, num_epochs, num_steps, mesh, checkpoint_dir, progress: as in
      ``jaxsec.train.fit_many`` (an epoch is a pass over ``capacity`` rows).

  Returns:
    PartitionModels(params stacked over parts, partition_ids, sizes, history).
  """
  _checks.check_int('num_partitions', num_partitions, minimum=1)
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_int('batch_size', batch_size, minimum=1)
  _checks.check_int('capacity', capacity, minimum=batch_size)
  lay = partition_layout(x, y, num_partitions=num_partitions, num_classes=num_classes,
                         capacity=capacity)
  params, keys = _init_and_keys(init_fn, key, num_partitions)
  fit = train_lib.fit_many(apply_fn, params, lay.x, lay.y, masks=lay.masks,
                           optimizer=optimizer, keys=keys, batch_size=batch_size,
                           num_epochs=num_epochs, num_steps=num_steps,
                           objective=_padded_objective(num_classes), mesh=mesh,
                           checkpoint_dir=checkpoint_dir, progress=progress, label='dpa')
  return PartitionModels(fit.params, lay.ids, lay.sizes, fit.history)


def train_part(apply_fn: train_lib.ApplyFn, init_fn: Callable[[jax.Array], Any],
               layout: PartitionLayout, part: int, *, optimizer: optax.GradientTransformation,
               key: jax.Array, batch_size: int = 128, num_epochs: int | None = None,
               num_steps: int | None = None) -> train_lib.FitResult:
  """Trains base model ``part`` alone (``jaxsec.train.fit`` on its rows of ``layout``).

  The same model as ``train(...).params[part]`` with the same arguments (``fit_many`` gives
  each model what ``fit`` would, all parts having ``capacity`` rows): an insertion or
  deletion changes one part, and only that part's model needs retraining. Pass the same
  ``optimizer`` object to every call so that jax reuses one compiled program.
  """
  _checks.check_int('part', part, minimum=0, maximum=layout.masks.shape[0] - 1)
  _checks.check_int('batch_size', batch_size, minimum=1,
                    maximum=int(layout.masks[part].sum()))
  k_init, k_fit = jax.random.split(key)
  return train_lib.fit(apply_fn, init_fn(jax.random.fold_in(k_init, part)), layout.x,
                       layout.y, indices=np.flatnonzero(layout.masks[part]),
                       optimizer=optimizer, key=jax.random.fold_in(k_fit, part),
                       batch_size=batch_size, num_epochs=num_epochs, num_steps=num_steps,
                       objective=_padded_objective(layout.num_classes))


def vote_counts(apply_fn: train_lib.ApplyFn, params: Any, x: Any, *,
                num_classes: int, batch_size: int = 1000) -> np.ndarray:
  """Votes ``[N, num_classes]``: how many base models (stacked ``params``) predict each
  class (a model's vote is its argmax, ties to the smaller index)."""
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_int('batch_size', batch_size, minimum=1)
  logits = train_lib.predict_logits_many(apply_fn, params, x, batch_size=batch_size)
  if logits.shape[-1] != num_classes:
    raise ValueError(f'the base models output {logits.shape[-1]} logits; expected '
                     f'num_classes={num_classes}.')
  votes = np.argmax(logits, axis=-1)                                  # [M, N]
  return np.stack([(votes == c).sum(0) for c in range(num_classes)], -1).astype(np.int32)


def certify(counts: Any) -> Certificate:
  """Plurality prediction and DPA certificate from vote counts ``[..., K]`` (Theorem 1).

  ``prediction = argmax counts`` with ties to the smaller class index; ``radius =
  floor((n_c - max_{c' != c}(n_c' + 1[c' < c])) / 2)``: no poisoning of at most ``radius``
  inserted plus removed training examples changes the prediction, and some ``radius + 1``
  changed votes can. Equal to the authors' ``certify.py`` (stable sort, runner-up ``c'``,
  ``(n_c - n_c' - 1[c' < c]) // 2``). Pure and jittable.
  """
  counts = jnp.asarray(counts)
  if not jnp.issubdtype(counts.dtype, jnp.integer) or counts.ndim < 1 or counts.shape[-1] < 2:
    raise ValueError(f'counts has shape {counts.shape} and dtype {counts.dtype}; expected '
                     'integer vote counts [..., K] with K >= 2.')
  if _checks.is_concrete(counts) and counts.size and int(jnp.min(counts)) < 0:
    raise ValueError(f'counts contains {int(jnp.min(counts))}; expected counts >= 0.')
  pred = jnp.argmax(counts, axis=-1)
  n_c = jnp.take_along_axis(counts, pred[..., None], axis=-1)[..., 0]
  cls = jnp.arange(counts.shape[-1])
  rival = jnp.where(cls == pred[..., None], jnp.iinfo(counts.dtype).min,
                    counts + (cls < pred[..., None]).astype(counts.dtype))
  return Certificate(pred, (n_c - jnp.max(rival, axis=-1)) // 2)


def certified_accuracy(prediction: Any, radius: Any, y: Any, budgets: Sequence[int]
                       ) -> np.ndarray:
  """Fraction of examples predicted correctly AND certified against each budget ``b`` of
  poisoned training examples (``radius >= b``); ``[len(budgets)]``, non-increasing in b."""
  pred, rad, y = np.asarray(prediction), np.asarray(radius), np.asarray(y)
  if not (pred.shape == rad.shape == y.shape) or y.ndim != 1:
    raise ValueError(f'prediction, radius and y have shapes {pred.shape}, {rad.shape}, '
                     f'{y.shape}; expected three equal shapes [N].')
  for b in budgets:
    _checks.check_int('budgets entry', b, minimum=0)
  correct = pred == y
  return np.array([np.mean(correct & (rad >= b)) for b in budgets], np.float64)
