"""One training engine for one model (``fit``) or many (``fit_many``).

* A pure, jitted step built from ``(apply_fn, objective, optax optimizer)``.
* ``fit`` trains one model; ``fit_many`` trains ``M`` independent models of one
  architecture in one compiled program: ``jax.vmap`` over params, optimizer states, keys
  and per-model index sets into ONE shared data set (the data is never copied ``M`` times;
  each step gathers only the ``[M, batch]`` examples it needs). It is the engine behind
  shadow models, PATE teachers, federated clients and ensembles.
* An epoch is one ``lax.scan`` over steps; the host loop over epochs shows progress and
  checkpoints with orbax, and a run cut off resumes from its last checkpoint with exactly
  the result of an uninterrupted run (the epoch's randomness is ``fold_in(key, epoch)``).
* With a ``jax.sharding.Mesh`` the batch axis is sharded over the mesh axis ``'data'`` and,
  in ``fit_many``, the model axis over ``'model'``.

A training *objective* is ``objective(apply_fn, params, x, y, key) -> losses [B]`` (per
example, so DP-SGD can clip it). ``supervised(loss)`` lifts a ``loss(logits, y)``; defenses
(adversarial training, TRADES, regularisers, distillation) transform objectives.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec import progress as progress_lib

# A forward pass ``apply_fn(params, x, ...) -> logits``. Typed loosely on purpose: callers pass
# flax's ``Module.apply`` (extra keyword arguments, pytree outputs) as well as plain closures.
ApplyFn = Callable[..., Any]
Objective = Callable[[ApplyFn, Any, jax.Array, jax.Array, jax.Array], jax.Array]


@functools.lru_cache(maxsize=256)
def supervised(loss: Callable[[jax.Array, jax.Array], jax.Array] = losses_lib.cross_entropy
               ) -> Objective:
  """Lifts a per-example ``loss(logits, y)`` into an objective.

  Cached: the same ``loss`` gives the same objective object, so repeated ``fit`` calls with
  the same model, loss and optimizer reuse one compiled program.
  """
  def objective(apply_fn, params, x, y, key):
    del key
    return loss(apply_fn(params, x), y)
  return objective


def regularized(objective: Objective, penalty: Callable[[Any], jax.Array],
                strength: float) -> Objective:
  """``objective + strength * penalty(params)`` (added to every example's loss)."""
  def new(apply_fn, params, x, y, key):
    return objective(apply_fn, params, x, y, key) + strength * penalty(params)
  return new


class FitResult(NamedTuple):
  params: Any
  opt_state: Any
  history: dict  # 'loss' per epoch (mean over steps), and 'eval_accuracy' if eval_data


@dataclasses.dataclass(frozen=True)
class _Plan:
  steps_per_epoch: int
  num_epochs: int


class _TrainingPass:
  """``(params, x) -> train_apply_fn(params, x, key)``, carrying ``eval_apply_fn``.

  ``eval_apply_fn`` is the inference-mode pass, for the attacks inside adversarial objectives
  (jaxsec.defenses.training.adversarial runs them in eval mode, as the official codes do).
  """

  def __init__(self, train_apply_fn: Callable[..., Any], key: jax.Array, eval_apply_fn: ApplyFn):
    self.train_apply_fn = train_apply_fn
    self.key = key
    self.eval_apply_fn = eval_apply_fn

  def __call__(self, params: Any, x: jax.Array) -> Any:
    return self.train_apply_fn(params, x, self.key)


def make_step(apply_fn: ApplyFn, objective: Objective, optimizer: optax.GradientTransformation,
              train_apply_fn: Callable | None = None):
  """The pure training step ``(params, opt_state, x, y, key) -> (params, opt_state, loss)``.

  ``train_apply_fn(params, x, key)`` is the training-mode forward pass (dropout); by
  default ``apply_fn`` is used and the key goes to the objective only. With it, the
  objective receives the training pass with attribute ``eval_apply_fn = apply_fn``.
  """
  def loss_fn(params, x, y, key):
    k_fwd, k_obj = jax.random.split(key)
    fwd = apply_fn
    if train_apply_fn is not None:
      fwd = _TrainingPass(train_apply_fn, k_fwd, apply_fn)
    return jnp.mean(objective(fwd, params, x, y, k_obj))

  def step(params, opt_state, x, y, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, loss
  return step


def _epoch_batches(key, index_list, count, steps_per_epoch, batch_size):
  """Batch indices [steps, batch] for one epoch: a fresh permutation of the model's own
  ``count`` valid indices (``index_list`` padded), batches without replacement."""
  scores = jax.random.uniform(key, index_list.shape)
  scores = jnp.where(jnp.arange(index_list.shape[0]) < count, scores, 2.0)
  order = jnp.argsort(scores)
  used = order[:steps_per_epoch * batch_size]
  return index_list[used].reshape(steps_per_epoch, batch_size)


def _check_data(x, y, num_classes=None):
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  _checks.check_labels('y', y, num_classes=num_classes, batch=x.shape[0])
  if x.shape[0] == 0:
    raise ValueError('x is empty; expected at least one training example.')


def _indices_from_masks(masks: np.ndarray, n: int):
  masks = np.asarray(masks)
  if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != n:
    raise ValueError(f'masks has shape {masks.shape} and dtype {masks.dtype}; expected bool '
                     f'[num_models, {n}].')
  counts = masks.sum(1)
  width = int(counts.max())
  index_lists = np.zeros((masks.shape[0], width), np.int32)
  for m in range(masks.shape[0]):
    idx = np.nonzero(masks[m])[0]
    index_lists[m, :idx.size] = idx
  return index_lists, counts.astype(np.int32)


def _plan(min_count, batch_size, num_epochs, num_steps):
  if batch_size > min_count:
    raise ValueError(f'batch_size={batch_size} is larger than the smallest training set '
                     f'({min_count} examples).')
  spe = min_count // batch_size
  if (num_epochs is None) == (num_steps is None):
    raise ValueError('Give exactly one of num_epochs and num_steps, got '
                     f'num_epochs={num_epochs}, num_steps={num_steps}.')
  if num_epochs is not None:
    _checks.check_int('num_epochs', num_epochs, minimum=1)
    return _Plan(spe, num_epochs)
  _checks.check_int('num_steps', num_steps, minimum=1)
  # num_steps is rounded up to whole epochs only if it is a multiple; otherwise use
  # "epochs" of num_steps/ k steps where k divides num_steps and k <= spe.
  k = math.gcd(num_steps, spe) if num_steps > spe else num_steps
  if num_steps > spe:
    # largest divisor of num_steps that is <= spe
    k = max(d for d in range(1, spe + 1) if num_steps % d == 0)
  return _Plan(k, num_steps // k)


def _checkpointer():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def _save(checkpoint_dir, epoch, state):
  ocp = _checkpointer()
  with ocp.CheckpointManager(os.path.abspath(checkpoint_dir),
                             options=ocp.CheckpointManagerOptions(max_to_keep=2)) as mngr:
    mngr.save(epoch, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def _restore(checkpoint_dir, template):
  ocp = _checkpointer()
  path = os.path.abspath(checkpoint_dir)
  if not os.path.isdir(path):
    return None, 0
  with ocp.CheckpointManager(path) as mngr:
    last = mngr.latest_step()
    if last is None:
      return None, 0
    state = mngr.restore(last, args=ocp.args.StandardRestore(template))
  return state, int(last)


# The compiled epoch is cached by jax's own jit cache: the model function, objective,
# optimizer and plan are static arguments of module-level jitted functions (same objects:
# same program), so sequential fits (shadow models, ablations) compile once. On the CPU
# backend, for a model with convolutions, an epoch is a host loop over jitted steps instead
# of one ``lax.scan``: XLA:CPU runs convolutions inside loop bodies several times slower
# (jax-ml/jax#12868); the steps, and so the result, are the same.
_STATIC = ('apply_fn', 'objective', 'optimizer', 'train_apply_fn', 'steps_per_epoch',
           'batch_size', 'many', 'mesh', 'model_axis')
_SHARED = (0, 0, 0, 0, 0, None, None)   # vmap axes: per-model state, shared data (x, y)


def _constrain(a, spec, mesh):
  if mesh is None:
    return a
  return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec))


def _model_sharded(out, mesh, model_axis):
  if model_axis is None:
    return out
  return jax.tree.map(lambda a: _constrain(a, P('model'), mesh), out)


def _epoch_plan(key, index_list, count, steps_per_epoch, batch_size):
  k_perm, k_steps = jax.random.split(key)
  batches = _epoch_batches(k_perm, index_list, count, steps_per_epoch, batch_size)
  return batches, jax.random.split(k_steps, steps_per_epoch)


def _one_step(p, s, idx, k, x, y, *, apply_fn, objective, optimizer, train_apply_fn, mesh):
  # The gathered batch is sharded over the mesh's 'data' axis (a no-op without a mesh).
  step = make_step(apply_fn, objective, optimizer, train_apply_fn)
  return step(p, s, _constrain(x[idx], P('data'), mesh), _constrain(y[idx], P('data'), mesh),
              k)


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _scan_epoch(params, opt_state, keys, index_lists, counts, x, y, *, apply_fn, objective,
                optimizer, train_apply_fn, steps_per_epoch, batch_size, many, mesh,
                model_axis):
  """One epoch as one ``lax.scan`` over steps (vmapped over models when ``many``)."""
  step = functools.partial(_one_step, apply_fn=apply_fn, objective=objective,
                           optimizer=optimizer, train_apply_fn=train_apply_fn, mesh=mesh)

  def one_epoch(params, opt_state, key, index_list, count, x, y):
    batches, step_keys = _epoch_plan(key, index_list, count, steps_per_epoch, batch_size)

    def body(carry, inp):
      p, s = carry
      idx, k = inp
      p, s, loss = step(p, s, idx, k, x, y)
      return (p, s), loss
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                               (batches, step_keys))
    return params, opt_state, jnp.mean(losses)

  # The data are arguments (never baked into the program as constants) shared by all
  # models (in_axes None); the gather inside the vmapped body reads [M, B] examples.
  if many:
    return _model_sharded(jax.vmap(one_epoch, in_axes=_SHARED)(
        params, opt_state, keys, index_lists, counts, x, y), mesh, model_axis)
  return one_epoch(params, opt_state, keys[0], index_lists[0], counts[0], x, y)


@functools.partial(jax.jit, static_argnames=('steps_per_epoch', 'batch_size'))
def _host_plan(keys, index_lists, counts, *, steps_per_epoch, batch_size):
  """Batch indices [M, steps, batch] and step keys [M, steps] of one epoch."""
  return jax.vmap(functools.partial(_epoch_plan, steps_per_epoch=steps_per_epoch,
                                    batch_size=batch_size))(keys, index_lists, counts)


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _host_step(params, opt_state, idx, k, x, y, *, apply_fn, objective, optimizer,
               train_apply_fn, steps_per_epoch, batch_size, many, mesh, model_axis):
  """One training step of every model (batch indices ``idx`` [M, batch], keys ``k`` [M])."""
  del steps_per_epoch, batch_size
  step = functools.partial(_one_step, apply_fn=apply_fn, objective=objective,
                           optimizer=optimizer, train_apply_fn=train_apply_fn, mesh=mesh)
  if many:
    return _model_sharded(jax.vmap(step, in_axes=_SHARED[1:])(params, opt_state, idx, k, x, y),
                          mesh, model_axis)
  return step(params, opt_state, idx[0], k[0], x, y)


def _host_epoch(params, opt_state, keys, index_lists, counts, x, y, **static):
  """The steps of :func:`_scan_epoch`, each its own compiled call (the CPU form)."""
  batches, step_keys = _host_plan(keys, index_lists, counts,
                                  steps_per_epoch=static['steps_per_epoch'],
                                  batch_size=static['batch_size'])
  losses = []
  for t in range(static['steps_per_epoch']):
    params, opt_state, loss = _host_step(params, opt_state, batches[:, t], step_keys[:, t],
                                         x, y, **static)
    losses.append(loss)
  return params, opt_state, jnp.mean(jnp.stack(losses), axis=0)


def _host_loop_pays(apply_fn, params, x, many) -> bool:
  """True on the CPU backend for a model with convolutions (the case of jax-ml/jax#12868);
  elsewhere one ``lax.scan`` per epoch is at least as fast."""
  if jax.default_backend() != 'cpu':
    return False
  one = jax.tree.map(lambda a: a[0], params) if many else params
  jaxpr = jax.make_jaxpr(apply_fn)(one, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
  return 'conv_general_dilated' in str(jaxpr)


def _epoch_fn(use_scan, **static):
  """``epoch(params, opt_state, keys, index_lists, counts, x, y)`` in the scan or host
  form; a static argument that is not hashable (jax's jit cache needs hashes) fails with
  a ValueError naming it."""
  _checks.check_hashable('it is a static argument of the compiled epoch', **static)
  return functools.partial(_scan_epoch if use_scan else _host_epoch, **static)


def _run(*, apply_fn, params, x, y, index_lists, counts, optimizer, keys, batch_size,
         num_epochs, num_steps, objective, train_apply_fn, many, mesh, checkpoint_dir,
         eval_data, progress, label):
  num_models = index_lists.shape[0]
  use_scan = not _host_loop_pays(apply_fn, params, x, many)
  plan = _plan(int(counts.min()), batch_size, num_epochs, num_steps)
  x = jnp.asarray(x)
  y = jnp.asarray(y)

  if mesh is not None:
    if 'data' not in mesh.axis_names:
      raise ValueError(f'mesh has axes {mesh.axis_names}; expected a "data" axis '
                       '(and "model" for fit_many).')
    if batch_size % mesh.shape['data']:
      raise ValueError(f'batch_size={batch_size} is not divisible by the mesh "data" axis '
                       f'size {mesh.shape["data"]}.')
    x = jax.device_put(x, NamedSharding(mesh, P()))
    y = jax.device_put(y, NamedSharding(mesh, P()))

  model_axis = None
  if many and mesh is not None and 'model' in mesh.axis_names:
    if num_models % mesh.shape['model']:
      raise ValueError(f'num_models={num_models} is not divisible by the mesh "model" axis '
                       f'size {mesh.shape["model"]}.')
    model_axis = 'model'

  epoch_fn = _epoch_fn(use_scan, apply_fn=apply_fn, objective=objective, optimizer=optimizer,
                       train_apply_fn=train_apply_fn, steps_per_epoch=plan.steps_per_epoch,
                       batch_size=batch_size, many=many, mesh=mesh, model_axis=model_axis)

  # The jitted epoch donates its params / opt_state buffers; copy so the caller's arrays
  # stay valid.
  params = jax.tree.map(jnp.array, params)
  if many:
    opt_state = jax.vmap(optimizer.init)(params)
  else:
    opt_state = optimizer.init(params)
  if model_axis is not None:
    shard = NamedSharding(mesh, P('model'))
    params = jax.device_put(params, shard)
    opt_state = jax.device_put(opt_state, shard)

  history: dict[str, Any] = {'loss': []}
  if eval_data is not None:
    history['eval_accuracy'] = []
  start = 0
  history_shape = (plan.num_epochs,) + ((num_models,) if many else ())
  if checkpoint_dir is not None:
    template = {'params': params, 'opt_state': opt_state,
                'history_loss': np.zeros(history_shape, np.float32)}
    state, start = _restore(checkpoint_dir, template)
    if state is not None:
      params, opt_state = state['params'], state['opt_state']
      history['loss'] = [np.asarray(l) for l in np.asarray(state['history_loss'])[:start]]
      if progress:
        logging.info('[%s] resumed from %s at epoch %d', label, checkpoint_dir, start)

  # Host-side progress (rate, ETA): the loss is already fetched each epoch for history.
  bar = progress_lib.Progress(label, plan.num_epochs, 'epoch', start=start) if progress else None
  index_lists_j = jnp.asarray(index_lists)
  counts_j = jnp.asarray(counts)
  for epoch in range(start, plan.num_epochs):
    ekeys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, epoch)
    params, opt_state, loss = epoch_fn(params, opt_state, ekeys, index_lists_j, counts_j,
                                       x, y)
    loss = np.asarray(loss)
    history['loss'].append(loss)
    extra = ''
    if eval_data is not None and not many:
      acc = evaluate(apply_fn, params, *eval_data)
      history['eval_accuracy'].append(acc)
      extra = f' eval_acc {acc:.4f}'
    if bar:
      bar.update(1, f'loss {float(np.mean(loss)):.4f}{extra}')
    if checkpoint_dir is not None:
      hl = np.zeros(history_shape, np.float32)
      hl[:epoch + 1] = np.stack(history['loss'])
      _save(checkpoint_dir, epoch + 1,
            {'params': params, 'opt_state': opt_state, 'history_loss': hl})
  history['loss'] = np.stack(history['loss']) if history['loss'] else np.zeros((0,))
  return FitResult(params, opt_state, history)


def _resolve_objective(loss, objective):
  if objective is not None and loss is not None:
    raise ValueError('Give either loss= or objective=, not both.')
  if objective is not None:
    if not callable(objective):
      raise ValueError(f'objective={objective!r} must be callable.')
    return objective
  if loss is None:
    loss = losses_lib.cross_entropy
  if isinstance(loss, str):
    loss = losses_lib.get(loss)
  return supervised(loss)


def fit(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *,
        optimizer: optax.GradientTransformation, key: jax.Array, batch_size: int = 128,
        num_epochs: int | None = None, num_steps: int | None = None,
        loss: Callable | str | None = None, objective: Objective | None = None,
        train_apply_fn: Callable | None = None, indices: np.ndarray | None = None,
        num_classes: int | None = None, mesh: Mesh | None = None,
        checkpoint_dir: str | None = None, eval_data: tuple | None = None,
        progress: bool = False, label: str = 'fit') -> FitResult:
  """Trains one model with minibatch ``optimizer`` steps.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits``.
    params: initial parameters.
    x, y: the training set (float inputs, int labels); ``indices`` restricts training to a
      subset without copying the data.
    optimizer: an optax transformation.
    key: all randomness (batch order, dropout, attacks inside objectives).
    batch_size: examples per step; each epoch is a fresh permutation without replacement,
      ``len(subset) // batch_size`` steps (the remainder is left out of that epoch only).
    num_epochs, num_steps: exactly one of them.
    loss / objective: a ``loss(logits, y)`` or name, or a full objective (see module doc).
    num_classes: if given, labels are checked to lie in ``[0, num_classes)``.
    mesh: optional ``Mesh`` with a ``'data'`` axis: the batch axis is sharded over it.
    checkpoint_dir: orbax checkpoints after every epoch; an existing one is resumed.
    eval_data: optional ``(x, y)`` evaluated after every epoch (history['eval_accuracy']).
    progress: log one ``absl.logging`` INFO line per epoch (loss, epochs/s, ETA).

  Returns:
    FitResult(params, opt_state, history). Deterministic for a key; identical to
    ``fit_many`` with one model on the same index set and key.
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  _check_data(x, y, num_classes)
  _checks.check_int('batch_size', batch_size, minimum=1)
  n = x.shape[0]
  if indices is None:
    indices = np.arange(n)
  masks = np.zeros((1, n), bool)
  masks[0, np.asarray(indices)] = True
  index_lists, counts = _indices_from_masks(masks, n)
  keys = jnp.asarray(key)[None] if jnp.ndim(key) == 0 else key[None]
  return _run(apply_fn=apply_fn, params=params, x=x, y=y, index_lists=index_lists,
              counts=counts, optimizer=optimizer, keys=keys, batch_size=batch_size,
              num_epochs=num_epochs, num_steps=num_steps,
              objective=_resolve_objective(loss, objective), train_apply_fn=train_apply_fn,
              many=False, mesh=mesh, checkpoint_dir=checkpoint_dir, eval_data=eval_data,
              progress=progress, label=label)


def fit_many(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, masks: np.ndarray,
             optimizer: optax.GradientTransformation, keys: jax.Array,
             batch_size: int = 128, num_epochs: int | None = None,
             num_steps: int | None = None, loss: Callable | str | None = None,
             objective: Objective | None = None, train_apply_fn: Callable | None = None,
             num_classes: int | None = None, mesh: Mesh | None = None,
             checkpoint_dir: str | None = None, progress: bool = False,
             label: str = 'fit_many') -> FitResult:
  """Trains ``M`` independent models in one vmapped program.

  Args:
    params: stacked parameters, leading axis ``M`` (e.g. ``jax.vmap(model.init)(keys, x)``
      or :func:`init_many`).
    masks: bool ``[M, N]``: model ``m`` trains on ``x[masks[m]]``. The data set is shared:
      each step gathers ``[M, batch]`` examples, never ``M`` copies of ``x``.
    keys: ``[M]`` keys, one per model. Model ``m`` gets exactly what ``fit`` would give
      with ``indices=nonzero(masks[m])`` and ``key=keys[m]``, provided all subsets have
      the same size (otherwise every model runs ``min_m |subset_m| // batch_size`` steps
      per epoch, drawing a fresh permutation of its own subset each epoch).
    mesh: optional ``Mesh`` with axes ``'model'`` and/or ``'data'``.
    (other arguments as in :func:`fit`)

  Returns:
    FitResult with stacked params / opt_state and history['loss'] of shape [epochs, M].
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  _check_data(x, y, num_classes)
  _checks.check_int('batch_size', batch_size, minimum=1)
  index_lists, counts = _indices_from_masks(masks, x.shape[0])
  if counts.min() == 0:
    raise ValueError(f'masks row {int(np.argmin(counts))} selects no examples.')
  leaves = jax.tree.leaves(params)
  num_models = index_lists.shape[0]
  if any(l.shape[:1] != (num_models,) for l in leaves):
    raise ValueError(f'params leaves must have leading axis num_models={num_models} (from '
                     f'masks); got shapes {[l.shape for l in leaves][:3]}...')
  if keys.shape[:1] != (num_models,):
    raise ValueError(f'keys has shape {keys.shape}; expected [{num_models}] keys.')
  return _run(apply_fn=apply_fn, params=params, x=x, y=y, index_lists=index_lists,
              counts=counts, optimizer=optimizer, keys=keys, batch_size=batch_size,
              num_epochs=num_epochs, num_steps=num_steps,
              objective=_resolve_objective(loss, objective), train_apply_fn=train_apply_fn,
              many=True, mesh=mesh, checkpoint_dir=checkpoint_dir, eval_data=None,
              progress=progress, label=label)


def init_many(init_fn: Callable[[jax.Array], Any], keys: jax.Array) -> Any:
  """Stacked parameters of ``len(keys)`` models: ``jax.vmap(init_fn)(keys)``."""
  return jax.vmap(init_fn)(keys)


def predict_logits(apply_fn: ApplyFn, params: Any, x: Any, *, batch_size: int = 1000
                   ) -> np.ndarray:
  """Logits for ``x`` in jitted batches (the last, smaller batch is padded, not dropped)."""
  f = jax.jit(apply_fn)
  n = x.shape[0]
  outs = []
  for i in range(0, n, batch_size):
    xb = np.asarray(x[i:i + batch_size])
    pad = batch_size - xb.shape[0] if n > batch_size else 0
    if pad:
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
    out = np.asarray(f(params, xb))
    outs.append(out[:out.shape[0] - pad] if pad else out)
  return np.concatenate(outs)


def predict_logits_many(apply_fn: ApplyFn, params: Any, x: Any, *, batch_size: int = 1000
                        ) -> np.ndarray:
  """Logits [M, N, C] of M stacked models on one shared ``x`` (vmapped over models)."""
  f = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
  outs = [np.asarray(f(params, np.asarray(x[i:i + batch_size])))
          for i in range(0, x.shape[0], batch_size)]
  return np.concatenate(outs, axis=1)


def evaluate(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, batch_size: int = 1000
             ) -> float:
  """Clean accuracy of one model on ``(x, y)``."""
  logits = predict_logits(apply_fn, params, x, batch_size=batch_size)
  return float(np.mean(np.asarray(losses_lib.predict(jnp.asarray(logits))) == np.asarray(y)))
