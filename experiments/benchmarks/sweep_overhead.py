r"""Benchmark: what one sweep point costs on Ray, and a vectorised eps axis against N calls.

    python -m experiments.run --config=experiments/configs/benchmarks/sweep_overhead.py \
        --workdir=docs/results
    python -m experiments.run --config=experiments/configs/benchmarks/sweep_overhead.py:smoke \
        --workdir=/tmp/s

Part 1, the launcher (``launch.backends.run_points``) on ``num_points`` trivial points (a
study that returns at once), against the same points called directly in this process
(``launch.points.run_point``: the study, its result JSON, its TensorBoard scalars): the
local Ray's start, a bare Ray task's round trip, a cold launch (new worker processes import
``experiments.run``, clu, jax), a warm launch (workers reused) and the gathering of the
table and plots. Part 2, the eps axis of a robustness curve: ``num_eps`` values of L_inf PGD
on a small MLP (digits, each feature rescaled to [0, 1]) as one ``jax.jit(jax.vmap(...))``
program over eps, against
``num_eps`` calls of one jitted function (eps traced: compiled once) and against ``num_eps``
separately compiled calls (eps a constant: what independent sweep points pay). The
adversarial examples of the three ways are compared.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np

from experiments.benchmarks import machine

NAME = 'sweep_overhead'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python_seconds(code: str, repeats: int = 3) -> float:
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True)
    best = min(best, time.perf_counter() - t)
  return best


def _launcher(cfg: ml_collections.ConfigDict) -> dict:
  """Part 1: Ray start, bare task round trip, cold / warm launches, direct calls."""
  import ray  # pylint: disable=g-import-not-at-top
  from launch import backends, points  # pylint: disable=g-import-not-at-top
  n = cfg.num_points
  trivial = ml_collections.ConfigDict(cfg.to_dict())
  trivial.mode = 'trivial'
  trivial.resources.cpus = 1.0
  pts = [{'config.seed': i} for i in range(n)]
  out = {'num_points': n, 'ray_cpus': cfg.ray_cpus}
  out['python_start_s'] = _python_seconds('pass', cfg.repeats)
  out['worker_imports_s'] = _python_seconds(
      'import experiments.run, launch.points, experiments.benchmarks.sweep_overhead, '
      'clu.metric_writers', cfg.repeats) - out['python_start_s']
  t = time.perf_counter()
  engine = backends.RayBackend(num_cpus=cfg.ray_cpus)
  owns = engine._owns  # pylint: disable=protected-access
  out['ray_init_s'] = time.perf_counter() - t if owns else None  # None: Ray was running
  tmp = tempfile.mkdtemp(prefix='sweep_overhead-')
  try:
    noop = ray.remote(num_cpus=1)(lambda: None)
    t = time.perf_counter()
    ray.get(noop.remote())
    out['first_bare_task_s'] = time.perf_counter() - t  # a worker process starts
    ray.get([noop.remote() for _ in range(n)])
    t = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    out['bare_task_s'] = (time.perf_counter() - t) / n
    kw = dict(engine=engine, max_retries=0, progress_every_s=1e9)
    for name in ('cold', 'warm'):
      t = time.perf_counter()
      s = backends.run_points(trivial, pts, os.path.join(tmp, name), spec=name, **kw)
      wall = time.perf_counter() - t
      if s['ran'] != n:
        raise RuntimeError(f'{name} launch ran {s["ran"]} of {n} points: {s["failed"]}')
      out[f'launch_{name}_s'] = wall
      out[f'gather_{name}_s'] = s['gather_seconds']
      out[f'per_point_{name}_s'] = wall / n
    t = time.perf_counter()
    s = backends.run_points(trivial, pts, os.path.join(tmp, 'warm'), spec='relaunch', **kw)
    out['relaunch_finished_s'] = time.perf_counter() - t  # nothing to run: check + gather
    d = os.path.join(tmp, 'direct')
    points.run_point(points.point_config(trivial, {'config.seed': -1}),
                     os.path.join(d, 'warmup'), {})  # imports, like a warm worker
    t = time.perf_counter()
    for p in pts:
      points.run_point(points.point_config(trivial, p), os.path.join(d, points.point_name(p)),
                       p)
    out['direct_s'] = time.perf_counter() - t
    out['per_point_direct_s'] = out['direct_s'] / n
  finally:
    engine.close()
    shutil.rmtree(tmp, ignore_errors=True)
  # Ray runs ray_cpus points at once: the overhead per point, all included, against a call.
  out['overhead_per_point_warm_s'] = out['per_point_warm_s'] - out['per_point_direct_s']
  out['overhead_per_point_cold_s'] = out['per_point_cold_s'] - out['per_point_direct_s']
  return out


def _eps_axis(cfg: ml_collections.ConfigDict) -> dict:
  """Part 2: one vmapped PGD program over eps vs separate calls (same examples)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from jaxsec import attacks, models, train  # pylint: disable=g-import-not-at-top
  x, y, xt, yt = common.load_splits('digits', test_subset=cfg.num_images)
  # The loader standardises digits; PGD's box is [0, 1]: rescale each feature to it.
  lo = np.minimum(x.min(0), xt.min(0))
  span = np.maximum(np.maximum(x.max(0), xt.max(0)) - lo, 1e-6)
  x, xt = (x - lo) / span, (xt - lo) / span
  model = models.get('mlp', num_classes=10, hidden=tuple(cfg.hidden))
  k1, k2, k3 = jax.random.split(jax.random.key(cfg.seed), 3)
  params = models.init(model, k1, (1,) + x.shape[1:])
  params = train.fit(model.apply, params, x, y, optimizer=optax.adam(1e-3), key=k2,
                     batch_size=64, num_epochs=cfg.num_epochs, num_classes=10).params
  logits_fn = models.logits_fn(model, params)
  xt, yt = jnp.asarray(xt), jnp.asarray(yt)
  eps = np.linspace(cfg.eps_max / cfg.num_eps, cfg.eps_max, cfg.num_eps).astype(np.float32)
  steps = cfg.pgd_steps

  def one(e):
    attack = attacks.pgd(eps=e, step_size=2.5 * e / steps, num_steps=steps, norm='linf')
    return attack(logits_fn, xt, yt, k3).x_adv

  def timed(fn):
    t = time.perf_counter()
    r = jax.block_until_ready(fn())
    return r, time.perf_counter() - t

  out = {'num_eps': cfg.num_eps, 'num_images': int(xt.shape[0]), 'pgd_steps': steps,
         'hidden': list(cfg.hidden), 'eps': eps.tolist()}
  vm = jax.jit(jax.vmap(one))
  eps_dev = jnp.asarray(eps)
  x_vm, out['vmapped_first_s'] = timed(lambda: vm(eps_dev))
  runs = [timed(lambda: vm(eps_dev))[1] for _ in range(cfg.repeats)]
  out['vmapped_run_s'] = min(runs)
  single = jax.jit(one)
  first = timed(lambda: single(eps_dev[0]))[1]
  out['traced_first_s'] = first
  runs = []
  for _ in range(cfg.repeats):
    t = time.perf_counter()
    x_tr = [jax.block_until_ready(single(e)) for e in eps_dev]
    runs.append(time.perf_counter() - t)
  out['traced_run_s'] = min(runs)
  t = time.perf_counter()
  x_sep = [jax.block_until_ready(jax.jit(lambda e=float(e): one(e))()) for e in eps]
  out['separate_compiled_s'] = time.perf_counter() - t
  x_vm = np.asarray(x_vm)
  out['max_abs_diff_traced'] = float(max(np.max(np.abs(x_vm[i] - np.asarray(a)))
                                         for i, a in enumerate(x_tr)))
  out['max_abs_diff_separate'] = float(max(np.max(np.abs(x_vm[i] - np.asarray(a)))
                                           for i, a in enumerate(x_sep)))
  pred = np.asarray(jax.vmap(lambda xa: jnp.argmax(logits_fn(xa), -1))(x_vm))
  out['robust_accuracy'] = (pred == np.asarray(yt)[None]).mean(axis=1).tolist()
  out['clean_accuracy'] = float((np.asarray(jnp.argmax(logits_fn(xt), -1)) ==
                                 np.asarray(yt)).mean())
  out['speedup_run'] = out['traced_run_s'] / out['vmapped_run_s']
  out['speedup_vs_separate_compiled'] = out['separate_compiled_s'] / out['vmapped_first_s']
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  if cfg.mode == 'trivial':  # one point of part 1's sweeps: nothing to do
    return {'value': float(cfg.seed)}
  if cfg.mode != 'benchmark':
    raise ValueError(f"mode={cfg.mode!r}; expected 'benchmark' or 'trivial'.")
  from jaxsec import io as jio  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)
  launcher = _launcher(cfg)
  print(f'[{NAME}] Ray: {launcher["per_point_warm_s"] * 1e3:.0f} ms per trivial point warm, '
        f'{launcher["per_point_cold_s"] * 1e3:.0f} ms cold, '
        f'{launcher["per_point_direct_s"] * 1e3:.0f} ms direct', flush=True)
  eps_axis = _eps_axis(cfg)
  print(f'[{NAME}] eps axis: {eps_axis["speedup_run"]:.2f}x (vmapped vs {cfg.num_eps} calls), '
        f'{eps_axis["speedup_vs_separate_compiled"]:.2f}x vs separately compiled', flush=True)
  results = {'name': NAME, 'module': f'experiments.benchmarks.{NAME}',
             'variant': cfg.variant, 'config': cfg.to_dict(), 'launcher': launcher,
             'eps_axis': eps_axis, 'machine': machine.finish(info)}
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def _ms(s):
  return 'n/a' if s is None else (f'{1e3 * s:.0f} ms' if s >= 0.01 else f'{1e3 * s:.2f} ms')


def render_markdown(r: dict) -> str:
  from experiments import common  # pylint: disable=g-import-not-at-top
  cmd = common.command(f'benchmarks.{NAME}', r.get('variant', 'full'))
  m = r.get('machine', {})
  note = machine.loaded_note(m)
  la, ea = r['launcher'], r['eps_axis']
  lines = [
      f'## Sweep overhead: Ray per point, vectorised eps axis (`{cmd}`)', '',
      f"{m.get('cpu_count')} CPU cores, JAX {m.get('jax_version')} on "
      f"{m.get('jax_backend')}{note}.", '',
      f"### The launcher: {la['num_points']} trivial points on a local Ray with "
      f"{la['ray_cpus']} CPUs", '',
      '| what | time |', '|---|---|',
      f"| Ray start (`ray.init`, no dashboard) | {_ms(la['ray_init_s'])} |",
      f"| first bare Ray task (a worker process starts) | {_ms(la['first_bare_task_s'])} |",
      f"| bare Ray task round trip (warm) | {_ms(la['bare_task_s'])} |",
      f"| imports of a fresh worker (experiments.run, clu, jax) | "
      f"{_ms(la['worker_imports_s'])} |",
      f"| per point, cold launch (new workers) | {_ms(la['per_point_cold_s'])} |",
      f"| per point, warm launch (workers reused) | {_ms(la['per_point_warm_s'])} |",
      f"| per point, direct call in one process | {_ms(la['per_point_direct_s'])} |",
      f"| overhead per point, warm / cold | {_ms(la['overhead_per_point_warm_s'])} / "
      f"{_ms(la['overhead_per_point_cold_s'])} |",
      f"| gathering the table and plots | {_ms(la['gather_warm_s'])} |",
      f"| re-launch of a finished sweep | {_ms(la['relaunch_finished_s'])} |", '',
      'A point through the launcher costs its task round trip, the result JSON and '
      'TensorBoard scalars (also paid by a direct call), and once per worker the imports; '
      'points of a few seconds or more hide it.', '',
      f"### The eps axis: {ea['num_eps']} values of L_inf PGD-{ea['pgd_steps']} on "
      f"{ea['num_images']} digits images (MLP {tuple(ea['hidden'])})", '',
      '| way | first call (compile + run) | run |', '|---|---|---|',
      f"| one vmapped program over eps | {ea['vmapped_first_s']:.2f} s | "
      f"{_ms(ea['vmapped_run_s'])} |",
      f"| {ea['num_eps']} calls of one jitted function (eps traced) | "
      f"{ea['traced_first_s']:.2f} s (one call) | {_ms(ea['traced_run_s'])} |",
      f"| {ea['num_eps']} separately compiled calls (eps constant) | "
      f"{ea['separate_compiled_s']:.2f} s (all) | |", '',
      f"Vectorised: {ea['speedup_run']:.2f}x faster than {ea['num_eps']} calls of the "
      f"compiled attack, {ea['speedup_vs_separate_compiled']:.2f}x faster than "
      f"{ea['num_eps']} separately compiled points, compilation included; the adversarial "
      f"examples agree to {max(ea['max_abs_diff_traced'], ea['max_abs_diff_separate']):.1e}. "
      f"Robust accuracy from {ea['robust_accuracy'][0]:.3f} (eps {ea['eps'][0]:.3g}) to "
      f"{ea['robust_accuracy'][-1]:.3f} (eps {ea['eps'][-1]:.3g}); clean "
      f"{ea['clean_accuracy']:.3f}.", '']
  return '\n'.join(lines)


def headline(r: dict) -> list:
  note = machine.loaded_note(r.get('machine'))
  la, ea = r['launcher'], r['eps_axis']
  return [
      (f"Ray launcher overhead per sweep point (warm, {la['ray_cpus']} CPUs)",
       f"{_ms(la['overhead_per_point_warm_s'])} (cold {_ms(la['overhead_per_point_cold_s'])})"
       + note),
      (f"{ea['num_eps']}-value eps axis of PGD as one vmapped program vs "
       f"{ea['num_eps']} calls", f"{ea['speedup_run']:.2f}x" + note)]
