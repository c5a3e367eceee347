"""Small helpers shared by the experiment apps (flags live only in experiments/ and launch/)."""
from __future__ import annotations

import ast
import math
import os
import tempfile
import time
from typing import Any, Iterable

import jax
import ml_collections
import numpy as np
import optax

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
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for item in items:
    if '=' not in item:
      raise ValueError(f'override {item!r} must look like key=value.')
    key, raw = item.split('=', 1)
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = cfg
    parts = key.split('.')
    for p in parts[:-1]:
      if p not in node:
        raise ValueError(f'override key {key!r}: {p!r} is not in the config.')
      node = node[p]
    if parts[-1] not in node:
      raise ValueError(f'override key {key!r} is not in the config; known keys: '
                       f'{sorted(node.keys())}.')
    old = node[parts[-1]]
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[parts[-1]] = value
  return cfg


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
