"""The points of a sweep: loading a config file's ``get_hyper``, one point's run, the table.

A point is a dict of overrides ``{'config.<dotted.field>': value}`` from ``get_hyper(h)``
(``launch.hyper.Hyper``). ``point_config`` applies them to a locked copy of the config, so
an override of a field that does not exist is a ``ValueError`` naming it. A point runs in
``<sweep workdir>/<point_name>/`` and is finished when ``POINT_FILE`` exists there, written
atomically after the study returned; ``gather`` reads those files into one table (CSV and
JSON) and draws one plot per swept axis. Nothing here imports Ray, submitit or defines
flags: a worker unpickling ``run_point`` imports only this module.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import socket
import time
import traceback
from typing import Any, Sequence

import ml_collections

from experiments.configs import base as configs_base
from jaxsec import io as jio
from launch import hyper

POINT_FILE = 'sweep_point.json'
# A study that ran a vectorised axis (``h.vectorized``) returns
# ``result[VECTORIZED] = {'axes': ['seed', 'eps'], 'rows': [{'seed': 0, 'eps': 0.1,
# <metric>: value, ...}, ...]}``: one row per value (per combination of the axes); ``gather``
# turns each into a table row (the axes as columns ``seed``, ``eps``, the metrics as
# ``result.<metric>`` over the point's own scalars).
VECTORIZED = 'vectorized'
ERROR_FILE = 'sweep_error.txt'
STARTED_FILE = 'sweep_started.json'
MAX_PLOTTED_METRICS = 6


def split_spec(spec: str) -> tuple[str, str | None]:
  """``'experiments/configs/main.py:smoke'`` -> ``('experiments/configs/main.py', 'smoke')``."""
  if '.py:' in spec:
    path, arg = spec.split('.py:', 1)
    return path + '.py', arg
  return spec, None


def load_module(path: str):
  if not os.path.isfile(path):
    raise ValueError(f'config file {path!r} does not exist.')
  name = 'jaxsec_config_' + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ValueError(f'config file {path!r} cannot be loaded as Python.')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _exists(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:
    return False


def study_module(study: Any) -> str:
  """The module that runs ``config.study``: ``experiments.<study>`` (``'main'``,
  ``'benchmarks.dp_speed'``), else ``study`` itself as a module path (a study outside
  experiments/, e.g. the launcher's tests). Raises ValueError naming an unknown study.
  """
  if not isinstance(study, str) or not study:
    raise ValueError(f'config.study={study!r}; expected the name of a module under '
                     'experiments/ (e.g. "main").')
  name = f'experiments.{study}'
  if _exists(name):
    return name
  if '.' in study and _exists(study):
    return study
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'experiments')
  known = sorted(f[:-3] for f in os.listdir(here) if f.endswith('.py')
                 and not f.startswith('_')) if os.path.isdir(here) else []
  raise ValueError(f'unknown study config.study={study!r}: no module {name!r}. '
                   f'Studies: {", ".join(known)}.')


def load(spec: str, config: ml_collections.ConfigDict | None = None
         ) -> tuple[ml_collections.ConfigDict, list[dict], Any]:
  """Loads a config file: ``(config, points, module)``; every point already validated.

  Args:
    spec: ``path.py`` or ``path.py:arg``; ``arg`` goes to ``get_config(arg)``.
    config: the config to sweep over when already built (the CLI's
      ``--config`` flag, with its ``--config.x=...`` overrides); else ``get_config(arg)``.
  """
  path, arg = split_spec(spec)
  mod = load_module(path)
  if config is None:
    if not hasattr(mod, 'get_config'):
      raise ValueError(f'config file {path!r} defines no get_config(arg).')
    config = mod.get_config(arg) if arg is not None else mod.get_config()
  if not hasattr(mod, 'get_hyper'):
    raise ValueError(f'config file {path!r} defines no get_hyper(h): nothing to sweep '
                     '(run a single config with python -m experiments.run).')
  params = inspect.signature(mod.get_hyper).parameters
  points = mod.get_hyper(hyper.Hyper(), arg) if len(params) > 1 else mod.get_hyper(hyper.Hyper())
  if not isinstance(points, (list, tuple)) or not points or not all(
      isinstance(p, dict) for p in points):
    raise ValueError(f'get_hyper of {path!r} returned {points!r}; expected a non-empty list '
                     'of dicts {"config.<field>": value}.')
  for key in ('study', 'resources'):
    if key not in config:
      raise ValueError(f'config of {path!r} has no field {key!r} (see experiments/configs/'
                       'base.py).')
  for p in points:
    c = point_config(config, p)
    study_module(c.study)
    resources(c)
  return config, [dict(p) for p in points], mod


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  if not isinstance(key, str) or not key.startswith('config.') or len(key) <= 7:
    raise ValueError(f'sweep key {key!r} must be "config.<dotted.field>".')
  parts = key[len('config.'):].split('.')
  node = configs_base.field_parent(config, parts, lambda i, fields: ValueError(
      f"sweep axis {key!r}: {'.'.join(['config'] + parts[:i])} has no field {parts[i]!r}"
      + (f' (fields: {", ".join(fields)})' if fields else '') + '.'))
  old = node[parts[-1]]
  value = configs_base.coerce(old, value)
  if isinstance(value, tuple) and old is not None and not isinstance(old, tuple):
    raise ValueError(f'sweep axis {key!r}={value!r}: {key} is a {type(old).__name__} '
                     'field; a tuple (h.vectorized) needs a tuple-valued field such as '
                     'config.seeds.')
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError, AttributeError) as e:
    raise ValueError(f'sweep axis {key!r}={value!r}: {e}') from e


def point_config(config: ml_collections.ConfigDict, overrides: dict
                 ) -> ml_collections.ConfigDict:
  """A locked copy of ``config`` with ``overrides`` applied (unknown field: ValueError)."""
  c = copy.deepcopy(config)
  c.lock()
  for k, v in overrides.items():
    _set(c, k, v)
  return c


def resources(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """``(cpus, gpus)`` from ``config.resources``; both non-negative numbers."""
  r = config.resources
  out = []
  for name in ('cpus', 'gpus'):
    v = r.get(name, 0.0) if hasattr(r, 'get') else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
      raise ValueError(f'config.resources.{name}={v!r}; expected a number >= 0.')
    out.append(float(v))
  return out[0], out[1]


def _is_scalar(v: Any) -> bool:
  return isinstance(v, (bool, int, float, str)) or v is None


def _short(v: Any) -> str:
  if isinstance(v, float):
    v = f'{v:g}'
  return re.sub(r'[^A-Za-z0-9.+-]+', '_', str(v)).strip('_')[:20]


def point_name(overrides: dict) -> str:
  """Readable prefix (``seed=1,model=mlp`` -> ``seed1-model_mlp``) plus a stable hash."""
  blob = json.dumps(overrides, sort_keys=True, default=repr)
  digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
  parts = [f'{k.rsplit(".", 1)[-1]}{_short(v) if not isinstance(v, str) else "_" + _short(v)}'
           for k, v in sorted(overrides.items()) if _is_scalar(v)]
  prefix = '-'.join(parts)[:80].strip('-') or 'point'
  return f'{prefix}-{digest}'


def is_finished(point_dir: str) -> bool:
  return os.path.isfile(os.path.join(point_dir, POINT_FILE))


def run_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs ``config.study`` in this process: ``experiments.run.run_config`` for a study
  under experiments/ (its TensorBoard scalars included), else the module's ``run``."""
  name = study_module(config.study)
  if name.startswith('experiments.'):
    from experiments import run as entry  # pylint: disable=g-import-not-at-top
    return entry.run_config(config, workdir)
  return importlib.import_module(name).run(config, workdir)


def run_point(config: ml_collections.ConfigDict, point_dir: str, overrides: dict,
              attempt: int = 0) -> dict:
  """Runs one point (inside a Ray task or a submitit job) and writes ``POINT_FILE``.

  Returns the record written: overrides, the study's result, seconds, host, attempt.
  """
  os.makedirs(point_dir, exist_ok=True)
  jio.write_json_atomic(os.path.join(point_dir, STARTED_FILE), {
      'attempt': attempt, 'host': socket.gethostname(), 'pid': os.getpid(),
      'started_at': time.time()})
  config = copy.deepcopy(config)
  config.lock()
  t0 = time.time()
  result = run_study(config, point_dir)
  record = {'name': os.path.basename(point_dir), 'overrides': overrides,
            'result': result if isinstance(result, dict) else {'result': result},
            'seconds': time.time() - t0, 'host': socket.gethostname(), 'pid': os.getpid(),
            'attempt': attempt, 'finished_at': time.time()}
  jio.write_json_atomic(os.path.join(point_dir, POINT_FILE), record)
  return {k: v for k, v in record.items() if k != 'result'}


def started(point_dir: str, attempt: int) -> bool:
  """Whether ``attempt`` of the point has started (the backend may still queue it)."""
  try:
    return jio.read_json(os.path.join(point_dir, STARTED_FILE)).get('attempt') == attempt
  except (OSError, ValueError):
    return False


def write_error(point_dir: str, attempt: int, error: BaseException | str) -> None:
  text = (''.join(traceback.format_exception(error)) if isinstance(error, BaseException)
          else str(error))
  os.makedirs(point_dir, exist_ok=True)
  with open(os.path.join(point_dir, ERROR_FILE), 'a') as f:
    f.write(f'--- attempt {attempt} at {time.ctime()} ---\n{text}\n')


def flatten(d: Any, prefix: str = '') -> dict:
  """Scalars (numbers, bools, strings) of a nested dict, keyed ``a.b.c``."""
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(flatten(v, f'{prefix}{k}.'))
  elif isinstance(d, (bool, int, float, str)) or d is None:
    out[prefix[:-1]] = d
  return out


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def gather(workdir: str, points: Sequence[dict], *, metrics: Sequence[str] | None = None,
           failed: dict | None = None) -> dict:
  """Reads every point's ``POINT_FILE`` into ``results.csv`` / ``results.json`` and plots.

  Args:
    workdir: the sweep folder.
    points: the sweep's points (overrides), in order; unfinished ones get an empty row.
    metrics: result keys (dotted) to plot; default: every numeric scalar of the results
      that is not the same for all points (``config.sweep_metrics`` chooses).
    failed: ``{point_name: error}`` of points that failed every attempt in this launch.

  A point whose result holds ``VECTORIZED`` rows (a vectorised axis) gives one table row
  per entry, its axes as columns and axes of the table; their metrics are plotted first.

  Returns:
    ``{'rows', 'axes', 'metrics', 'csv', 'json', 'plots'}``.
  """
  failed = failed or {}
  rows, found, vec_axes, vec_found = [], [], [], []
  for p in points:
    name = point_name(p)
    row = {'point': name}
    row.update({k[len('config.'):]: v for k, v in p.items()})
    path = os.path.join(workdir, name, POINT_FILE)
    if os.path.isfile(path):
      rec = jio.read_json(path)
      row.update(status='done', seconds=rec.get('seconds'), attempt=rec.get('attempt'))
      result = rec.get('result', {})
      vec = {}
      if isinstance(result, dict):  # the study's copy of its inputs is not a measurement
        vec = result.get(VECTORIZED) or {}
        result = {k: v for k, v in result.items() if k not in ('config', VECTORIZED)}
      res = flatten(result)
      row.update({f'result.{k}': v for k, v in res.items()})
      found.extend(k for k, v in res.items() if _is_number(v))
      if vec.get('rows'):  # one table row per value of the vectorised axes
        axes_here = list(vec.get('axes', ()))
        vec_axes.extend(axes_here)
        for sub in vec['rows']:
          r = dict(row)
          r.update({a: sub[a] for a in axes_here})
          r.update({f'result.{k}': v for k, v in flatten(
              {k: v for k, v in sub.items() if k not in axes_here}).items()})
          vec_found.extend(k for k, v in flatten(sub).items()
                           if _is_number(v) and k not in axes_here)
          rows.append(r)
        continue
    else:
      row['status'] = 'failed' if name in failed else 'not run'
      if name in failed:
        row['error'] = str(failed[name]).strip().splitlines()[-1][:300] if str(
            failed[name]).strip() else 'failed'
    rows.append(row)
  keys = list(dict.fromkeys([*(k for p in points for k in p),
                             *(f'config.{a}' for a in vec_axes)]))
  axes = [k for k in keys if len({json.dumps(r.get(k[len('config.'):]), sort_keys=True,
                                             default=repr) for r in rows}) > 1]
  if metrics is None:  # every numeric scalar that differs between points (else all)
    found = list(dict.fromkeys(vec_found + found))  # the per-value measurements first
    varying = [m for m in found if len({json.dumps(r.get(f'result.{m}')) for r in rows
                                        if r['status'] == 'done'}) > 1]
    metrics = varying or found
  else:
    metrics = list(metrics)
  columns = list(dict.fromkeys(k for r in rows for k in r))
  csv_path = os.path.join(workdir, 'results.csv')
  tmp = csv_path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    w.writeheader()
    for r in rows:
      w.writerow({k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
                  for k, v in r.items()})
  os.replace(tmp, csv_path)
  json_path = os.path.join(workdir, 'results.json')
  jio.write_json_atomic(json_path, {'axes': axes, 'metrics': metrics, 'rows': rows})
  plots = [plot_axis(workdir, rows, axis, metrics[:MAX_PLOTTED_METRICS]) for axis in axes
           if all(_is_scalar(r.get(axis[len('config.'):])) for r in rows)
           ]  # dict- or tuple-valued axes: table only
  return {'rows': rows, 'axes': axes, 'metrics': metrics, 'csv': csv_path, 'json': json_path,
          'plots': [p for p in plots if p]}


def plot_axis(workdir: str, rows: list[dict], axis: str, metrics: Sequence[str]) -> str | None:
  """One figure for ``axis``: each metric against the axis value, every finished point as a
  dot and the mean over the other axes as a line. Returns the PNG path (None: nothing)."""
  col = axis[len('config.'):]
  done = [r for r in rows if r.get('status') == 'done']
  metrics = [m for m in metrics if any(_is_number(r.get(f'result.{m}')) for r in done)]
  if not done or not metrics:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  values = list(dict.fromkeys(json.dumps(r.get(col), default=repr) for r in rows))
  numeric = all(_is_number(json.loads(v)) for v in values if v != 'null')
  if numeric:
    pos = {v: json.loads(v) for v in values}
  else:
    pos = {v: i for i, v in enumerate(values)}
  ncol = min(3, len(metrics))
  nrow = -(-len(metrics) // ncol)
  fig, axs = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False)
  for ax, m in zip(axs.flat, metrics, strict=False):  # the grid may have spare cells
    pts = [(pos[json.dumps(r.get(col), default=repr)], r[f'result.{m}']) for r in done
           if _is_number(r.get(f'result.{m}'))]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.6)
    xs = sorted({p[0] for p in pts})
    ax.plot(xs, [sum(y for x, y in pts if x == x0) / sum(1 for x, _ in pts if x == x0)
                 for x0 in xs], marker='o', label='mean over the other axes')
    if len(pts) > len(xs):
      ax.legend(fontsize=7)
    if not numeric:
      ax.set_xticks(list(pos.values()))
      ax.set_xticklabels([json.loads(v) if v != 'null' else 'None' for v in values],
                         rotation=30)
    ax.set_xlabel(col)
    ax.set_ylabel(m)
  for ax in list(axs.flat)[len(metrics):]:
    ax.axis('off')
  fig.suptitle(f'{os.path.basename(os.path.abspath(workdir))}: metrics vs {col}')
  fig.tight_layout()
  path = os.path.join(workdir, f'plot_{re.sub(r"[^A-Za-z0-9_.-]+", "_", col)}.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
