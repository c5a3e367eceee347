"""The machine a benchmark ran on, and whether it was idle enough for its timings to count.

Every benchmark records ``snapshot()`` in its JSON and calls ``require_idle`` before it
times anything: on a CPU backend a run whose 1-minute load average exceeds
``max_load_per_cpu * cpu_count`` waits up to ``wait_s`` for the machine to settle and then
refuses (``RuntimeError`` naming the load), because other processes competing for the cores
bias the ratios against whichever side runs more threads (a README figure of 4.62x measured
at load 9.4 on 2 cores re-measured as 1.72x idle). ``finish`` records the load after the run
and a ``loaded`` flag; ``loaded_note`` is what renderers append to a loaded run's figures.
Smoke variants (the test suite, run under load by design) pass ``max_load_per_cpu=None``.
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
