"""Where sweep points run: Ray tasks (local or a cluster) or submitit jobs (SLURM, local).

``run_sweep`` loads a config file's points (``launch.points.load``), skips the finished ones,
hands the others to a backend, retries a failed point up to ``max_retries`` times, logs
progress (done / running / failed, rate, ETA) through ``absl.logging`` and gathers every
point into one table and one plot per swept axis (``launch.points.gather``).

Ray: each point is ``ray.remote(run_point).options(num_cpus=..., num_gpus=...)`` with the
point's ``config.resources``; Ray places tasks by those resources, so a 2-CPU machine runs
two 1-CPU points at once. Without ``ray_address`` a local Ray is started in this process
(no dashboard, a small object store: results travel as small dicts; the full results are
in the point folders), and reused when one is already running (tests share one).
submitit: each point is one job of ``submitit.AutoExecutor`` (SLURM where ``sbatch`` exists,
else local subprocesses); at most ``max_parallel`` jobs are in flight.
Retries are done here, not by Ray (``max_retries=0`` on the task), so that a failure is
counted, logged with its traceback in ``<point>/sweep_error.txt`` and retried the same way
on both backends; a worker process that dies (segfault, OOM kill) counts as a failure too.
"""
from __future__ import annotations

import collections
import math
import os
import time
from typing import Any, Sequence

from absl import logging
import ml_collections

from jaxsec import io as jio
from launch import points as points_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECT_STORE_BYTES = 128 * 2**20


def _fmt_s(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(round(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else (
      f'{s // 60}m{s % 60:02d}s' if s >= 60 else f'{s}s')


class RayBackend:
  """Points as Ray tasks; ``address=None`` starts (or reuses) a local Ray."""

  def __init__(self, address: str | None = None, num_cpus: int | None = None):
    import ray  # pylint: disable=g-import-not-at-top
    self._ray = ray
    self._owns = False
    if not ray.is_initialized():
      if address:
        ray.init(address=address, log_to_driver=True)
      else:
        # Local workers import launch/, experiments/ and tests/ from this checkout.
        paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
        for p in (os.getcwd(), ROOT):
          if p not in paths:
            paths.insert(0, p)
        os.environ['PYTHONPATH'] = os.pathsep.join(paths)
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, log_to_driver=True)
      self._owns = True
    self.total = ray.cluster_resources()
    # Any: ray's typed overloads of remote() miscount run_point's optional `attempt`.
    self._remote: Any = ray.remote(points_lib.run_point)
    self.max_parallel = None  # Ray queues tasks by their resources

  def check(self, cpus: float, gpus: float) -> None:
    for name, want in (('CPU', cpus), ('GPU', gpus)):
      have = self.total.get(name, 0.0)
      if want > have:
        raise ValueError(f'a point asks for {want:g} {name}s (config.resources) but the Ray '
                         f'cluster has {have:g}; it would wait forever.')

  def submit(self, config, point_dir, overrides, attempt, cpus, gpus):
    return self._remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                name=os.path.basename(point_dir)).remote(
                                    config, point_dir, overrides, attempt)

  def wait(self, handles: list, timeout: float) -> list:
    if not handles:
      return []
    ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
    if ready:
      ready, _ = self._ray.wait(handles, num_returns=len(handles), timeout=0)
    return ready

  def result(self, handle) -> dict:
    return self._ray.get(handle)

  def close(self) -> None:
    if self._owns:
      self._ray.shutdown()


class SubmititBackend:
  """Points as submitit jobs: SLURM through ``sbatch``, or local subprocesses."""

  def __init__(self, folder: str, *, cluster: str | None = None, max_parallel: int = 0,
               timeout_min: int = 24 * 60, slurm_partition: str | None = None,
               setup: Sequence[str] = ()):
    import submitit  # pylint: disable=g-import-not-at-top
    self._submitit = submitit
    self._executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    self.cluster = self._executor.cluster
    self._kw: dict[str, Any] = {'timeout_min': timeout_min, 'name': 'jaxsec-sweep'}
    if slurm_partition:
      self._kw['slurm_partition'] = slurm_partition
    if setup and self.cluster in ('local', 'slurm'):
      self._kw[f'{self.cluster}_setup'] = list(setup)
    if max_parallel < 0:
      raise ValueError(f'max_parallel={max_parallel}; expected >= 0 (0: no limit on SLURM, '
                       'the CPU count locally).')
    if not max_parallel and self.cluster in ('local', 'debug'):
      max_parallel = os.cpu_count() or 1
    self.max_parallel = max_parallel or None

  def check(self, cpus: float, gpus: float) -> None:
    del cpus, gpus

  def submit(self, config, point_dir, overrides, attempt, cpus, gpus):
    self._executor.update_parameters(cpus_per_task=max(1, math.ceil(cpus)),
                                     gpus_per_node=math.ceil(gpus), **self._kw)
    if self.cluster == 'local':
      # submitit's local jobs inherit the environment; keep this checkout importable.
      paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
      if ROOT not in paths:
        os.environ['PYTHONPATH'] = os.pathsep.join([ROOT] + paths)
    return self._executor.submit(points_lib.run_point, config, point_dir, overrides, attempt)

  def wait(self, handles: list, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
      done = [h for h in handles if h.done()]
      if done or time.monotonic() >= deadline:
        return done
      time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

  def result(self, handle) -> dict:
    return handle.result()

  def close(self) -> None:
    pass


def run_sweep(spec: str, workdir: str, *, config: ml_collections.ConfigDict | None = None,
              backend: str = 'ray', ray_address: str | None = None,
              num_cpus: int | None = None, max_retries: int = 2, max_parallel: int = 0,
              submitit_cluster: str | None = None, timeout_min: int = 24 * 60,
              slurm_partition: str | None = None, progress_every_s: float = 30.0,
              dry_run: bool = False) -> dict:
  """Runs every unfinished point of ``spec``'s ``get_hyper``; returns a summary.

  Args:
    spec: ``experiments/configs/<study>.py[:arg]``.
    workdir: the sweep folder; point ``p`` runs in ``<workdir>/<point_name(p)>``.
    config: the base config when already built (CLI flag); default ``get_config(arg)``.
    backend: ``'ray'`` or ``'submitit'``.
    ray_address: ``None`` (local Ray in this process), ``'auto'`` or ``'host:port'``.
    num_cpus: CPUs of the local Ray (None: all).
    max_retries: attempts after the first for a failing point.
    max_parallel: submitit jobs in flight (0: unlimited on SLURM, CPU count locally).
    submitit_cluster: ``None`` (SLURM if available, else local), ``'slurm'``, ``'local'``,
      ``'debug'`` (in this process, for pdb).
    timeout_min, slurm_partition: submitit job parameters.
    progress_every_s: seconds between progress lines while nothing finishes.
    dry_run: list the points and their folders, run nothing.

  Returns:
    ``{'points', 'skipped', 'ran', 'failed', 'retries', 'table', ...}``; ``failed`` names
    the points that failed every attempt (their rows say ``failed``).
  """
  config, points, _ = points_lib.load(spec, config)
  return run_points(config, points, workdir, spec=spec, backend=backend,
                    ray_address=ray_address, num_cpus=num_cpus, max_retries=max_retries,
                    max_parallel=max_parallel, submitit_cluster=submitit_cluster,
                    timeout_min=timeout_min, slurm_partition=slurm_partition,
                    progress_every_s=progress_every_s, dry_run=dry_run)


def run_points(config: ml_collections.ConfigDict, points: Sequence[dict], workdir: str, *,
               spec: str = '<points>', backend: str = 'ray', ray_address: str | None = None,
               num_cpus: int | None = None, max_retries: int = 2, max_parallel: int = 0,
               submitit_cluster: str | None = None, timeout_min: int = 24 * 60,
               slurm_partition: str | None = None, progress_every_s: float = 30.0,
               dry_run: bool = False, engine=None) -> dict:
  """``run_sweep`` on points given as a list (overrides of ``config``); ``engine``: an
  already started backend to reuse (else one is started and closed here)."""
  if backend not in ('ray', 'submitit'):
    raise ValueError(f"backend={backend!r}; expected 'ray' or 'submitit'.")
  if not isinstance(max_retries, int) or max_retries < 0:
    raise ValueError(f'max_retries={max_retries!r}; expected an int >= 0.')
  points = [dict(p) for p in points]
  for p in points:  # every override and study checked before anything starts
    c = points_lib.point_config(config, p)
    points_lib.study_module(c.study)
    points_lib.resources(c)
  os.makedirs(workdir, exist_ok=True)
  metrics = config.get('sweep_metrics', None)
  metrics = list(metrics) if metrics else None
  names = [points_lib.point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise ValueError(f'{spec}: the same point is listed twice.')
  todo = [(n, p) for n, p in zip(names, points, strict=True)
          if not points_lib.is_finished(os.path.join(workdir, n))]
  jio.write_json_atomic(os.path.join(workdir, 'sweep.json'), {
      'spec': spec, 'config': config.to_dict(), 'backend': backend,
      'points': [{'name': n, 'overrides': p} for n, p in zip(names, points, strict=True)]})
  logging.info('sweep %s: %d points, %d finished already, %d to run (%s) in %s', spec,
               len(points), len(points) - len(todo), len(todo), backend, workdir)
  summary: dict[str, Any] = {'points': len(points), 'skipped': len(points) - len(todo), 'ran': 0,
                             'failed': [], 'retries': 0, 'workdir': workdir}
  if dry_run:
    for n, p in todo:
      print(f'{n}: {p}', flush=True)
    return summary
  failed: dict[str, str] = {}
  if todo:
    own = engine is None
    if own and backend == 'ray':
      engine = RayBackend(ray_address, num_cpus)
    elif own:
      engine = SubmititBackend(os.path.join(workdir, '_submitit'), cluster=submitit_cluster,
                               max_parallel=max_parallel, timeout_min=timeout_min,
                               slurm_partition=slurm_partition)
    try:
      failed = _schedule(engine, config, workdir, todo, max_retries, progress_every_s,
                         summary)
    finally:
      if own:
        engine.close()
  summary['failed'] = sorted(failed)
  t = time.monotonic()
  table = points_lib.gather(workdir, points, metrics=metrics, failed=failed)
  summary.update(table=table['csv'], json=table['json'], plots=table['plots'],
                 axes=table['axes'], metrics=table['metrics'],
                 gather_seconds=time.monotonic() - t)
  logging.info('sweep %s: %d ran, %d skipped, %d failed; table %s', spec, summary['ran'],
               summary['skipped'], len(failed), table['csv'])
  return summary


def _schedule(engine, config, workdir, todo, max_retries, progress_every_s, summary):
  """Runs ``todo`` on ``engine`` with retries; returns ``{name: last error}`` of failures."""
  pending = collections.deque((n, p, 0) for n, p in todo)
  inflight: dict[Any, tuple[str, dict, int]] = {}
  configs = {n: points_lib.point_config(config, p) for n, p in todo}
  for c in configs.values():
    engine.check(*points_lib.resources(c))
  failed: dict[str, str] = {}
  done = errors = 0
  total = len(todo)
  t0 = last = time.monotonic()

  def progress():
    elapsed = time.monotonic() - t0
    rate = done / elapsed if elapsed > 0 else 0.0
    left = total - done - len(failed)
    eta = left / rate if rate > 0 else float('inf')
    running = sum(points_lib.started(os.path.join(workdir, n), a)
                  for n, _, a in inflight.values())
    logging.info('sweep: %d/%d done, %d running, %d waiting, %d failed (%d errors retried); '
                 '%.2f points/min, elapsed %s, ETA %s', done, total, running,
                 len(pending) + len(inflight) - running, len(failed), errors - len(failed),
                 60 * rate, _fmt_s(elapsed), _fmt_s(eta))

  while pending or inflight:
    while pending and (engine.max_parallel is None or len(inflight) < engine.max_parallel):
      n, p, attempt = pending.popleft()
      cpus, gpus = points_lib.resources(configs[n])
      h = engine.submit(configs[n], os.path.join(workdir, n), p, attempt, cpus, gpus)
      inflight[h] = (n, p, attempt)
    finished = engine.wait(list(inflight), timeout=progress_every_s)
    for h in finished:
      n, p, attempt = inflight.pop(h)
      try:
        engine.result(h)
      except Exception as e:  # pylint: disable=broad-except  (any failure of the point)
        errors += 1
        points_lib.write_error(os.path.join(workdir, n), attempt, e)
        last_line = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        if attempt < max_retries:
          summary['retries'] += 1
          logging.warning('sweep: point %s failed (attempt %d of %d): %s; retrying', n,
                          attempt + 1, max_retries + 1, last_line)
          pending.append((n, p, attempt + 1))
        else:
          failed[n] = f'{type(e).__name__}: {e}'
          logging.error('sweep: point %s failed all %d attempts: %s (see %s)', n,
                        max_retries + 1, last_line,
                        os.path.join(workdir, n, points_lib.ERROR_FILE))
      else:
        done += 1
        summary['ran'] += 1
    if finished or time.monotonic() - last >= progress_every_s:
      progress()
      last = time.monotonic()
  return failed
