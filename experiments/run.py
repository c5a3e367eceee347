r"""The one entry point: run a study from its config file.

    python -m experiments.run --config=experiments/configs/main.py --workdir=workdir/main
    python -m experiments.run --config=experiments/configs/dp_sgd.py:smoke --workdir=/tmp/s \
        --config.num_epochs=2

``--config=<file>:<arg>`` calls the file's ``get_config(arg)`` (``arg``: a variant name and
``key=value`` overrides, see ``experiments/configs/base.py``); any field can then be set as
``--config.<dotted.field>=value``, and the config is locked, so a misspelt field is an error
naming it. ``config.study`` names the module ``experiments.<study>`` whose
``run(config, workdir) -> dict`` does the work; ``run_config`` is that call as a function
(the sweep launcher calls it per point). Besides the study's own JSON, every scalar of the
returned dict is written as TensorBoard events under ``<workdir>/tensorboard/<name>/``
(``clu.metric_writers``; lists of numbers become series over their index).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import os
import sys
from typing import Any, Iterator

from absl import app
from absl import flags
from absl import logging
import ml_collections


def load_study(study: str):
  """The module ``experiments.<study>``; an unknown study is a ``ValueError`` naming it."""
  if not isinstance(study, str) or not study:
    raise ValueError(f'config.study={study!r}; expected the name of a module under '
                     'experiments/ (e.g. "main", "dp_sgd", "benchmarks.dp_speed").')
  name = f'experiments.{study}'
  try:
    mod = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name is not None and name.startswith(e.name):
      raise ValueError(f'Unknown study config.study={study!r}: there is no module {name} '
                       '(experiments/<study>.py).') from e
    raise
  if not callable(getattr(mod, 'run', None)):
    raise ValueError(f'Study {name} has no run(config, workdir) function.')
  return mod


def _scalars(prefix: str, value: Any) -> Iterator[tuple[str, int, float]]:
  """(tag, step, value) for every finite number in a results dict; lists of numbers are
  series over their index, dicts and other lists are walked."""
  if isinstance(value, bool) or value is None or isinstance(value, str):
    return
  if isinstance(value, numbers.Real):
    if math.isfinite(float(value)):
      yield prefix, 0, float(value)
  elif isinstance(value, dict):
    for k, v in value.items():
      if k == 'config':
        continue  # the inputs, not a measurement
      yield from _scalars(f'{prefix}/{k}' if prefix else str(k), v)
  elif isinstance(value, (list, tuple)):
    if value and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
      for i, v in enumerate(value):
        if math.isfinite(float(v)):
          yield prefix, i, float(v)
    else:
      for i, v in enumerate(value):
        yield from _scalars(f'{prefix}/{i}', v)


def tensorboard_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  name = config.study + ('' if config.variant == 'full' else f'_{config.variant}')
  return os.path.join(workdir, 'tensorboard', name)


def write_scalars(logdir: str, results: dict) -> int:
  """Writes the scalars of ``results`` as TensorBoard events; returns how many."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  by_step: dict[int, dict[str, float]] = {}
  for tag, step, v in _scalars('', results):
    by_step.setdefault(step, {})[tag] = v
  writer = metric_writers.create_default_writer(
      logdir, just_logging=jax.process_index() > 0, asynchronous=False)
  for step in sorted(by_step):
    writer.write_scalars(step, by_step[step])
  writer.flush()
  writer.close()
  return sum(len(s) for s in by_step.values())


def run_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs ``experiments.<config.study>.run(config, workdir)`` and records its scalars.

  Returns the study's results dict. Errors in the config (no study, unknown study) are
  ``ValueError``s naming the field.
  """
  if 'study' not in config:
    raise ValueError('The config has no field "study" (the module experiments.<study> to '
                     'run); build configs with experiments.configs.base.build.')
  mod = load_study(config.study)
  if not isinstance(workdir, str) or not workdir:
    raise ValueError(f'workdir={workdir!r}; expected a folder path.')
  os.makedirs(workdir, exist_ok=True)
  logging.info('running experiments.%s (variant %s) into %s', config.study, config.variant,
               workdir)
  results = mod.run(config, workdir)
  if isinstance(results, dict):
    logdir = tensorboard_dir(config, workdir)
    n = write_scalars(logdir, results)
    logging.info('wrote %d scalars to %s', n, logdir)
  return results


class _DropLibraryInfo(logging.logging.Filter):
  """Keeps INFO progress lines of jaxsec/experiments; drops the INFO chatter of orbax /
  TensorFlow / etils (orbax logs every checkpoint step)."""

  _NOISY = tuple(f'{os.sep}{m}{os.sep}' for m in (
      'orbax', 'tensorflow', 'tensorflow_datasets', 'etils', 'absl', 'jax', 'clu'))

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or not any(
        s in record.pathname for s in self._NOISY)


def check_override(config: ml_collections.ConfigDict, path: str) -> None:
  """A ``--config.<path>`` override must name a field: else a ``ValueError`` naming it."""
  node, parts = config, path.split('.')
  for i, p in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ValueError(f'--config.{path}: field {".".join(parts[:i + 1])!r} is not in the '
                       f'{config.get("study", "")!r} config; known fields there: {known}.')
    node = node[p]


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of ``path[:arg]`` (what ``--config=path[:arg]`` loads)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ValueError(f'--config={spec!r}: no config file {path!r}.')
  module_spec = importlib.util.spec_from_file_location('_study_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _parse_flags(argv: list[str]) -> list[str]:
  """absl parsing; a ``--config.<field>`` that names no field is a usage error naming it
  (ml_collections fails there with a bare AttributeError deep in its parser)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError):
    specs = [a.split('=', 1)[1] for a in argv[1:] if a.startswith('--config=')]
    if not specs:
      raise
    config = load_config_file(specs[-1])
    for a in argv[1:]:
      if a.startswith('--config.'):
        try:
          check_override(config, a[len('--config.'):].split('=', 1)[0])
        except ValueError as e:
          sys.exit(f'FATAL Flags parsing error: {e}')
    raise


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; use --config.<field>=value.')
  logging.get_absl_handler().addFilter(_DropLibraryInfo())
  if not flags.FLAGS['verbosity'].present:  # absl's default is WARNING: show progress
    logging.set_verbosity(logging.INFO)
  from launch import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_flags_or_env()
  run_config(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  from launch import distributed as _distributed  # noqa: F401  (its flags, before parsing)
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Study config file[:arg], e.g. experiments/configs/main.py:smoke.',
      lock_config=True)
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Where the results (JSON, figures, '
                                 'checkpoints, TensorBoard events) go.')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=_parse_flags)
