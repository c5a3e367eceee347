"""Small helpers shared by the experiment apps (flags live only in experiments/ and launch/)."""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any, Iterable

from absl import logging
import jax
import ml_collections
import numpy as np
import optax

from experiments.configs import base as configs_base
from jaxsec import data
from jaxsec import models
from jaxsec import train


def apply_overrides(cfg: ml_collections.ConfigDict, items: Iterable[str]
                    ) -> ml_collections.ConfigDict:
  """Applies ``key=value`` overrides (``--set model_kwargs.dense=256``) to ``cfg``.

  Values are parsed as Python literals when possible (numbers, tuples, booleans), else
  kept as strings. Unknown keys raise ``ValueError`` naming them: a typo in a sweep must
  not silently run the default config.
  """
  overrides = {}
  for item in items:
    if '=' not in item:
      raise ValueError(f'override {item!r} must look like key=value.')
    key, raw = item.split('=', 1)
    overrides[key] = configs_base.parse_value(raw)
  return configs_base.apply_overrides(ml_collections.ConfigDict(cfg.to_dict()), overrides)


def command(study: str, variant: str = 'full', workdir: str = 'docs/results') -> str:
  """The command that writes a study's results (as the docs print it)."""
  return (f"python -m experiments.run --config=experiments/configs/{study.replace('.', '/')}.py"
          + ('' if variant == 'full' else f':{variant}') + f' --workdir={workdir}')


def device_info() -> dict:
  """What ran the experiment (stored in results JSON next to wall times)."""
  d = jax.devices()
  return {'platform': d[0].platform, 'device_kind': d[0].device_kind,
          'num_devices': len(d), 'jax': jax.__version__}


def pct(v) -> str:
  """A fraction as a percentage for the docs tables ('n/a' for None / inf / nan)."""
  return 'n/a' if v is None or not math.isfinite(v) else f'{100 * v:.1f}%'


def num(v, d: int = 3) -> str:
  """A number with ``d`` decimals for the docs tables ('n/a' for None / inf / nan)."""
  return 'n/a' if v is None or not math.isfinite(v) else f'{v:.{d}f}'


def l2_norms(a) -> np.ndarray:
  """The L2 norm of each row of ``a`` ``[B, ...]`` (numpy, e.g. perturbation sizes)."""
  a = np.asarray(a).reshape(a.shape[0], -1)
  return np.sqrt(np.sum(a * a, axis=1))


def md_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
  """The lines of a docs (markdown) table: ``header``, its separator and one line per row
  of already formatted cells."""
  header = list(header)
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def load_splits(dataset: str, *, train_subset: int = 0, test_subset: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(x_train, y_train, x_test, y_test)`` of ``dataset``, each split cut to its first
  ``train_subset`` / ``test_subset`` examples (0 keeps the whole split; more than the
  split holds is an error, not a silent cap)."""
  for name, v in (('train_subset', train_subset), ('test_subset', test_subset)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
      raise ValueError(f'{name}={v!r} must be a non-negative int (0 = the whole split).')
  x_train, y_train = data.load(dataset, 'train')
  x_test, y_test = data.load(dataset, 'test')
  for name, v, n in (('train_subset', train_subset, x_train.shape[0]),
                     ('test_subset', test_subset, x_test.shape[0])):
    if v > n:
      raise ValueError(f'{name}={v} exceeds the {n} examples of {dataset!r}\'s '
                       f'{name[:-7]} split.')
  if train_subset:
    x_train, y_train = x_train[:train_subset], y_train[:train_subset]
  if test_subset:
    x_test, y_test = x_test[:test_subset], y_test[:test_subset]
  return x_train, y_train, x_test, y_test


def train_classifier(model_name: str, model_kwargs: Any, x_train, y_train, *,
                     num_classes: int, input_shape: tuple[int, ...], init_key: jax.Array,
                     train_key: jax.Array, learning_rate: float, batch_size: int,
                     num_epochs: int, label: str, checkpoint_dir: str | None = None,
                     progress: bool = True) -> tuple[Any, Any, train.FitResult, float]:
  """The experiments' standard classifier: ``models.get(model_name, **model_kwargs)``
  initialised with ``init_key`` and trained by ``jaxsec.train.fit`` with Adam on a cosine
  decay from ``learning_rate`` to 0 over ``num_epochs`` epochs of ``len(x) // batch_size``
  steps (resumable from ``checkpoint_dir`` when given).

  Returns ``(model, params, fit_result, train_seconds)``.
  """
  kw = model_kwargs.to_dict() if isinstance(model_kwargs, ml_collections.ConfigDict) else dict(
      model_kwargs)
  model = models.get(model_name, num_classes=num_classes, **kw)
  params = models.init(model, init_key, (1,) + tuple(input_shape))
  steps = x_train.shape[0] // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, steps * num_epochs)
  t0 = time.time()
  result = train.fit(model.apply, params, x_train, y_train, optimizer=optax.adam(schedule),
                     key=train_key, batch_size=batch_size, num_epochs=num_epochs,
                     num_classes=num_classes, checkpoint_dir=checkpoint_dir,
                     progress=progress, label=label)
  return model, result.params, result, time.time() - t0


def train_from_config(cfg: ml_collections.ConfigDict, x_train, y_train, **kwargs
                      ) -> tuple[Any, Any, train.FitResult, float]:
  """:func:`train_classifier` of the model and training fields that
  ``configs.base.reference_cnn`` sets on ``cfg`` (``dataset``, ``model``, ``model_kwargs``,
  ``learning_rate``, ``batch_size``, ``num_epochs``); ``kwargs``: the keys, ``label``, ..."""
  ds = data.info(cfg.dataset)
  return train_classifier(cfg.model, cfg.model_kwargs, x_train, y_train,
                          num_classes=ds.num_classes, input_shape=ds.input_shape,
                          learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                          num_epochs=cfg.num_epochs, **kwargs)


def train_and_order(cfg: ml_collections.ConfigDict, splits, *, init_key: jax.Array,
                    train_key: jax.Array, order_key: jax.Array, label: str,
                    checkpoint_dir: str | None):
  """:func:`train_from_config`, then the test set in a fixed random order (``order_key``).

  Returns ``(model, params, train_seconds, logits_fn, clean_accuracy, order, correct)``:
  ``order`` a permutation of the test indices, ``correct`` those the model classifies
  correctly, in that order (the images minimal-perturbation statistics use).
  """
  x_train, y_train, x_test, y_test = splits
  model, params, _, train_seconds = train_from_config(
      cfg, x_train, y_train, init_key=init_key, train_key=train_key, label=label,
      checkpoint_dir=checkpoint_dir)
  test_logits = train.predict_logits(model.apply, params, x_test)
  clean_acc = float(np.mean(np.argmax(test_logits, -1) == y_test))
  print(f'clean test accuracy {clean_acc:.4f}', flush=True)
  order = np.asarray(jax.random.permutation(order_key, x_test.shape[0]))
  correct = order[np.argmax(test_logits[order], -1) == y_test[order]]
  return model, params, train_seconds, models.logits_fn(model, params), clean_acc, order, correct


def train_classifiers(model_name: str, model_kwargs: Any, x_train, y_train, *,
                      num_classes: int, input_shape: tuple[int, ...], init_keys: jax.Array,
                      train_keys: jax.Array, learning_rate: float, batch_size: int,
                      num_epochs: int, label: str, checkpoint_dir: str | None = None,
                      progress: bool = True) -> tuple[Any, Any, train.FitResult, float]:
  """``train_classifier`` for ``len(init_keys)`` seeds as ONE ``jaxsec.train.fit_many``
  program (a vectorised seed axis): model ``m`` is initialised with ``init_keys[m]`` and
  trained with ``train_keys[m]`` on the whole of ``x_train``, which is what
  ``train_classifier`` gives with those keys (float tolerance: the vmapped program may
  reassociate sums).

  Returns ``(model, stacked_params, fit_result, train_seconds)``; parameters and
  ``history['loss']`` (``[epochs, M]``) have the model axis ``M``.
  """
  kw = model_kwargs.to_dict() if isinstance(model_kwargs, ml_collections.ConfigDict) else dict(
      model_kwargs)
  model = models.get(model_name, num_classes=num_classes, **kw)
  params = train.init_many(lambda k: models.init(model, k, (1,) + tuple(input_shape)),
                           init_keys)
  steps = x_train.shape[0] // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, steps * num_epochs)
  masks = np.ones((len(init_keys), x_train.shape[0]), bool)
  t0 = time.time()
  apply_fn: Any = model.apply  # flax's apply, (params, x) -> logits here
  result = train.fit_many(apply_fn, params, x_train, y_train, masks=masks,
                          optimizer=optax.adam(schedule), keys=train_keys,
                          batch_size=batch_size, num_epochs=num_epochs,
                          num_classes=num_classes, checkpoint_dir=checkpoint_dir,
                          progress=progress, label=label)
  return model, result.params, result, time.time() - t0


def checkpoint_dir(cfg: ml_collections.ConfigDict, given: str | None, name: str,
                   field: str = 'ckpt_dir') -> str | None:
  """The folder a study checkpoints into: ``given`` when not None, else ``cfg.<field>``
  (None: no checkpoints; '': ``<system temp dir>/jaxsec_<name>/<variant>``), created."""
  d = cfg.get(field) if given is None else given
  if d == '':
    d = os.path.join(tempfile.gettempdir(), f'jaxsec_{name}', cfg.variant)
  if d:
    os.makedirs(d, exist_ok=True)
  return d


def subdir(root: str | None, name: str) -> str | None:
  """``root/name``, or None when ``root`` is None (no checkpointing)."""
  return None if root is None else os.path.join(root, name)


class Stages:
  """Results of a study's finished stages, checkpointed through orbax so that a run cut off
  resumes stage by stage.

  Stage ``name`` lives in ``<directory>/<name>/`` as an ``orbax.checkpoint.CheckpointManager``
  (one step per :meth:`put`, the latest kept) with two items: ``value`` (JSON, or a dict of
  arrays with ``arrays=True``) and ``config`` (the JSON config the stage was computed
  under). Orbax writes a step atomically (a temporary directory renamed when complete), so a
  crash never leaves a half-written stage. A stage saved under another config is ignored
  (recomputed and overwritten). ``directory=None`` keeps results in memory only.
  """

  def __init__(self, directory: str | None, config: dict | ml_collections.ConfigDict,
               label: str = 'stages'):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.dir = None if directory is None else os.path.abspath(directory)
    cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    self.config = json.loads(json.dumps(cfg, default=str))
    self.label = label
    self.memory = {}

  def _manager(self, name):
    ocp = self._ocp
    if self.dir is None:
      raise ValueError(f'stage {name!r}: no directory (directory=None keeps stages in memory).')
    return ocp.CheckpointManager(os.path.join(self.dir, name), item_names=('value', 'config'),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=1))

  def get(self, name: str, *, arrays: bool = False) -> Any:
    """The saved value of stage ``name`` under this config, else None."""
    if name in self.memory or self.dir is None or not os.path.isdir(
        os.path.join(self.dir, name)):
      return self.memory.get(name)
    ocp = self._ocp
    with self._manager(name) as mngr:
      step = mngr.latest_step()
      if step is None:
        return None
      saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      if saved['config'] != self.config:
        logging.info('[%s] %s: saved under another config, recomputing', self.label, name)
        return None
      restore = ocp.args.StandardRestore() if arrays else ocp.args.JsonRestore()
      value = mngr.restore(step, args=ocp.args.Composite(value=restore))['value']
    logging.info('[%s] %s: restored from %s', self.label, name, self.dir)
    self.memory[name] = value
    return value

  def put(self, name: str, value: Any, *, arrays: bool = False) -> None:
    """Saves stage ``name`` (a JSON-able value, or a dict of arrays with ``arrays=True``)."""
    self.memory[name] = value
    if self.dir is None:
      return
    ocp = self._ocp
    with self._manager(name) as mngr:
      step = (mngr.latest_step() or 0) + 1
      save = (ocp.args.StandardSave({k: np.asarray(v) for k, v in value.items()}) if arrays
              else ocp.args.JsonSave(json.loads(json.dumps(value, default=_json_default))))
      mngr.save(step, args=ocp.args.Composite(value=save,
                                              config=ocp.args.JsonSave(self.config)))
      mngr.wait_until_finished()

  def cached(self, name: str, fn, *, arrays: bool = False) -> Any:
    """``get(name)``, or ``fn()`` put under ``name`` (timed in the log)."""
    value = self.get(name, arrays=arrays)
    if value is None:
      t = time.time()
      value = fn()
      self.put(name, value, arrays=arrays)
      logging.info('[%s] %s: %.0fs', self.label, name, time.time() - t)
    return value


def _json_default(o):
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.generic):
    return o.item()
  return str(o)
