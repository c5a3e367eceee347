"""The machine a benchmark ran on, and whether it was idle enough for its timings to count.

Every benchmark records ``snapshot()`` in its JSON and calls ``require_idle`` before it
times anything: on a CPU backend a run whose 1-minute load average exceeds
``max_load_per_cpu * cpu_count`` waits up to ``wait_s`` for the machine to settle and then
refuses (``RuntimeError`` naming the load), because other processes competing for the cores
bias the ratios against whichever side runs more threads (a README figure of 4.62x measured
at load 9.4 on 2 cores re-measured as 1.72x idle). ``finish`` records the load after the run
and a ``loaded`` flag; ``loaded_note`` is what renderers append to a loaded run's figures.
Smoke variants (the test suite, run under load by design) pass ``max_load_per_cpu=None``.
The rest is what the benchmarks share: a mode in its own process (``spawn``, ``child_stats``,
``child_main``), their data (``train_images``), results (``mode_results``, ``save_results``)
and docs (``mode_table``, ``synthetic_note``, ``speedup_headline``).
"""
from __future__ import annotations

import os
import platform
import time

DEFAULT_MAX_LOAD_PER_CPU = 0.25


def _load() -> list[float]:
  return list(os.getloadavg()) if hasattr(os, 'getloadavg') else [float('nan')] * 3


def snapshot() -> dict:
  """Platform, cores, JAX backend and devices, and the load average now."""
  import jax  # pylint: disable=g-import-not-at-top  (shadow_speed's parent stays JAX-free)
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'jax_backend': jax.default_backend(),
          'jax_version': jax.__version__, 'devices': [str(d) for d in jax.devices()],
          'load_average': _load()}


def threshold(max_load_per_cpu: float | None, cpu_count: int | None = None) -> float | None:
  if max_load_per_cpu is None:
    return None
  if not max_load_per_cpu > 0:
    raise ValueError(f'max_load_per_cpu={max_load_per_cpu!r}; expected a positive number '
                     'or None (no check).')
  return max_load_per_cpu * (cpu_count or os.cpu_count() or 1)


def require_idle(max_load_per_cpu: float | None, *, wait_s: float = 120.0,
                 poll_s: float = 5.0, name: str = 'benchmark') -> dict:
  """Waits for the machine to be idle, then returns ``snapshot()``; refuses if it is not.

  Only CPU timings are checked (on an accelerator the host load matters little and is
  recorded only). ``max_load_per_cpu=None`` records without checking.
  """
  info = snapshot()
  limit = threshold(max_load_per_cpu, info['cpu_count'])
  info['max_load'] = limit
  if limit is None or info['jax_backend'] != 'cpu':
    return info
  deadline = time.monotonic() + wait_s
  while info['load_average'][0] > limit and time.monotonic() < deadline:
    print(f'[{name}] 1-minute load {info["load_average"][0]:.2f} > {limit:.2f} '
          f'({max_load_per_cpu} x {info["cpu_count"]} CPUs); waiting for an idle machine '
          f'({deadline - time.monotonic():.0f} s left)', flush=True)
    time.sleep(poll_s)
    info['load_average'] = _load()
  if info['load_average'][0] > limit:
    raise RuntimeError(
        f'{name}: 1-minute load average {info["load_average"][0]:.2f} exceeds '
        f'{limit:.2f} ({max_load_per_cpu} per CPU on {info["cpu_count"]} CPUs) after '
        f'waiting {wait_s:.0f} s; timings on a loaded machine are not comparable. Stop the '
        'other work, or set max_load_per_cpu=None in the config to record a flagged run.')
  return info


def finish(info: dict) -> dict:
  """Adds the load after the run and the ``loaded`` flag (load above the idle threshold)."""
  info['load_average_after'] = _load()
  info['loaded'] = is_loaded(info)
  return info


def _start_load(info: dict | None):
  """The load when timing started, or None where the JSON did not record it.

  Runs written by ``require_idle`` (``max_load`` key) and the older dp_speed format (a
  ``load_average_after`` beside it) hold the load at the start; older attack_speed JSON
  holds only the load at the end, which includes the benchmark's own threads.
  """
  if not info or not info.get('load_average'):
    return None
  if 'max_load' not in info and 'load_average_after' not in info:
    return None
  return info['load_average'][0]


def is_loaded(info: dict | None) -> bool:
  """True when a CPU run started above the idle threshold (0.25 per CPU by default)."""
  load = _start_load(info)
  if load is None or info.get('jax_backend', 'cpu') != 'cpu':
    return False
  return bool(load > threshold(DEFAULT_MAX_LOAD_PER_CPU, info.get('cpu_count')))


def loaded_note(info: dict | None) -> str:
  """'' for an idle run; a warning naming the load for a loaded or unrecorded one."""
  if info and info.get('jax_backend', 'cpu') != 'cpu':
    return ''
  if _start_load(info) is None:
    return ' (load at start not recorded)'
  if is_loaded(info):
    return (f" (LOADED machine: load {info['load_average'][0]:.1f} on "
            f"{info.get('cpu_count')} CPUs; not a valid figure)")
  return ''


def peak_rss_mib() -> float:
  """This process's peak resident memory in MiB (``getrusage``; Linux reports KiB)."""
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def spawn(module: str, mode: str, config: dict, *, name: str = 'benchmark') -> dict:
  """Runs ``python -m <module> <mode> <config as JSON>`` from the repository root (so that
  its peak memory is its own) and returns the JSON object it prints last on stdout;
  ``RuntimeError`` with the end of its stderr when it fails."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ)
  env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
  p = subprocess.run([sys.executable, '-m', module, mode, json.dumps(config)],
                     capture_output=True, text=True, cwd=root, env=env, check=False)
  lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
  if p.returncode or not lines:
    raise RuntimeError(f'{mode} run failed (rc {p.returncode}): {p.stderr[-2000:]}')
  res = json.loads(lines[-1])
  print(f'[{name}] {mode}: {res["seconds"]:.1f}s, peak RSS {res["peak_rss_mib"]:.0f} MiB',
        flush=True)
  return res


def child_stats(t0: float) -> dict:
  """What a benchmark's child process reports at its end: seconds since ``t0``, peak RSS,
  backend, device kind and (on an accelerator) peak device memory."""
  import jax  # pylint: disable=g-import-not-at-top
  out = {'seconds': time.time() - t0, 'peak_rss_mib': peak_rss_mib(),
         'backend': jax.default_backend(), 'device': str(jax.devices()[0].device_kind)}
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    out['device_peak_mib'] = stats['peak_bytes_in_use'] / 2**20
  return out


def train_images(dataset: str, n: int, seed: int):
  """``(x, y)``: the first ``n`` training examples of ``dataset`` (``n = 0``: all), or for
  ``dataset='synthetic'`` ``n`` uniform-noise 28x28x1 images with labels uniform in 0..9
  drawn by ``seed`` (a lent accelerator has no TFDS; timings do not depend on pixels)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxsec import data  # pylint: disable=g-import-not-at-top
  if dataset == 'synthetic':
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
    return x, rng.integers(0, 10, size=n).astype(np.int32)
  x, y = data.load(dataset, 'train')
  return x[:n or None], y[:n or None]


def mode_results(base: dict, many: dict, seq: dict) -> dict:
  """The fields of a fit_many-vs-sequential benchmark's results that :func:`mode_table` and
  :func:`speedup_headline` read: the three modes' reports (:func:`child_stats` and more),
  the speed-up of ``fit_many`` and each mode's peak RSS above the baseline."""
  return {'baseline': base, 'fit_many': many, 'sequential_fit': seq,
          'speedup': seq['seconds'] / many['seconds'],
          'fit_many_extra_rss_mib': many['peak_rss_mib'] - base['peak_rss_mib'],
          'sequential_extra_rss_mib': seq['peak_rss_mib'] - base['peak_rss_mib']}


def save_results(workdir: str, name: str, variant: str, results: dict) -> dict:
  """Writes ``results`` to ``workdir/<name>.json`` (``<name>_<variant>.json`` for a variant
  other than ``full`` and ``smoke``, e.g. ``device``) and returns them."""
  from jaxsec import io as jio  # pylint: disable=g-import-not-at-top
  suffix = '' if variant in ('full', 'smoke') else f'_{variant}'
  return jio.save_results(workdir, f'{name}{suffix}', results)


def synthetic_note(config: dict) -> str:
  """What a docs paragraph appends for a run on :func:`train_images`' synthetic images."""
  return (' Synthetic images (no TFDS on the accelerator).'
          if config.get('dataset') == 'synthetic' else '')


def mode_table(r: dict, labels: tuple[str, str, str]) -> list[str]:
  """The docs table of a fit_many-vs-sequential benchmark (``r['fit_many']``,
  ``r['sequential_fit']``, ``r['baseline']`` and their RSS above the baseline): wall time
  and memory per mode, ``labels`` naming the three rows."""
  nan = float('nan')
  rows = [('fit_many', r['fit_many_extra_rss_mib']),
          ('sequential_fit', r['sequential_extra_rss_mib'])]
  lines = ['| mode | wall time (s) | peak RSS (MiB) | above baseline (MiB) | peak device memory '
           '(MiB) |', '|---|---|---|---|---|']
  for (key, extra), label in zip(rows, labels[:2], strict=True):
    m = r[key]
    lines.append(f"| {label} | {m['seconds']:.1f} | {m['peak_rss_mib']:.0f} | {extra:.0f} | "
                 f"{m.get('device_peak_mib', nan):.0f} |")
  b = r['baseline']
  return lines + [f"| {labels[2]} | {b['seconds']:.1f} | {b['peak_rss_mib']:.0f} | 0 | - |"]


def speedup_headline(what: str, r: dict) -> list:
  """The README headline row of a benchmark with ``r['speedup']`` of ``r['fit_many']``."""
  m = r['fit_many']
  note = loaded_note(r.get('machine') or {'jax_backend': m['backend']})
  return [(f"{what} ({m.get('device', m['backend'])})", f"{r['speedup']:.2f}x{note}")]


def child_main(child) -> None:
  """A benchmark module's ``__main__`` (see :func:`spawn`): ``child(config, mode)`` with
  the mode and the JSON config from the command line, its result printed as JSON."""
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  print(json.dumps(child(ml_collections.ConfigDict(json.loads(sys.argv[2])), sys.argv[1])),
        flush=True)
