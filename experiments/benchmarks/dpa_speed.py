r"""Benchmark: DPA's k base models as ONE ``fit_many`` program vs k sequential ``fit`` calls.

    python -m experiments.run --config=experiments/configs/benchmarks/dpa_speed.py --workdir=docs/results  # writes dpa_speed.json
    python -m experiments.run --config=experiments/configs/benchmarks/dpa_speed.py:device --workdir=docs/results  # a GPU: dpa_speed_device.json
    python -m experiments.run --config=experiments/configs/benchmarks/dpa_speed.py:smoke --workdir=/tmp/s

Deep Partition Aggregation (Levine & Feizi 2021) trains one base model per hash partition
of the training set. ``partition_aggregation.train`` trains all ``k`` as one vmapped
``jaxsec.train.fit_many`` program on one shared, padded copy of the data (each step
gathers ``[k, batch]`` rows); the anchor (the authors' ``train_*_nin_baseline.py``) trains
them one after another. Here the same ``k`` models (same layout, initialisations and batch
keys: ``partition_aggregation.train_part`` is ``train(...).params[m]``) are trained (a)
with one ``train`` call and (b) with ``k`` ``train_part`` calls on one layout put on the
device (compiled once, reused), each mode in its own subprocess so that its peak resident
memory (``ru_maxrss``) is its own; a baseline subprocess loads the data and builds the
layout and the model without training. The layout's size is reported beside the memory
above the baseline (``k`` copies of the data would be ``k`` times it). Wall times include
compilation and the layout (hash, content order, padding), which each mode builds once.
"""
from __future__ import annotations

import math
import os
import time

import ml_collections

from experiments import common
from experiments.benchmarks import machine

NAME = 'dpa_speed'


def child(cfg: ml_collections.ConfigDict, mode: str) -> dict:
  """Runs one mode in this process and returns its timings, peak memory and a checksum of
  each trained model (sum of |params|), which must agree between the two modes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxsec import models  # pylint: disable=g-import-not-at-top
  from jaxsec.defenses.training import partition_aggregation as pa  # pylint: disable=g-import-not-at-top
  if mode not in ('many', 'sequential', 'baseline'):
    raise ValueError(f'mode={mode!r} must be many, sequential or baseline.')
  x, y = machine.train_images(cfg.dataset, cfg.n_train, cfg.seed)
  k = cfg.num_partitions
  capacity = math.ceil(cfg.capacity_factor * x.shape[0] / k)
  model = models.get(cfg.model, num_classes=10, **cfg.model_kwargs.to_dict())
  init_fn = lambda kk: models.init(model, kk, (1,) + x.shape[1:])  # noqa: E731
  kw = dict(optimizer=optax.adam(cfg.learning_rate), key=jax.random.key(cfg.seed),
            batch_size=cfg.batch_size, num_epochs=cfg.num_epochs)
  abs_sum = lambda p: jnp.sum(jnp.stack([jnp.sum(jnp.abs(l)) for l in jax.tree.leaves(p)]))  # noqa: E731
  out = {'mode': mode, 'capacity': capacity}
  t0 = time.time()            # every mode lays the data out once (train does it inside)
  if mode == 'many':
    r = pa.train(model.apply, init_fn, x, y, num_partitions=k, num_classes=10,
                 capacity=capacity, **kw)
    jax.block_until_ready(r.params)
    out['final_loss'] = float(np.mean(r.history['loss'][-1]))
    out['checksums'] = [float(v) for v in jax.vmap(abs_sum)(r.params)]
    out.update(machine.child_stats(t0))
    return out
  lay = pa.partition_layout(x, y, num_partitions=k, num_classes=10, capacity=capacity)
  out['layout_rows'] = int(lay.x.shape[0])
  out['layout_mib'] = (lay.x.nbytes + lay.y.nbytes) / 2**20
  if mode == 'sequential':
    lay = lay._replace(x=jnp.asarray(lay.x), y=jnp.asarray(lay.y))   # one device copy
    losses, sums = [], []
    for m in range(k):
      r = pa.train_part(model.apply, init_fn, lay, m, **kw)
      jax.block_until_ready(r.params)
      losses.append(float(r.history['loss'][-1]))
      sums.append(float(abs_sum(r.params)))
      if m == 0:
        out['first_model_seconds'] = time.time() - t0
    out['final_loss'] = float(np.mean(losses))
    out['checksums'] = sums
  else:
    jax.block_until_ready(init_fn(jax.random.key(0)))
  out.update(machine.child_stats(t0))
  return out


def _spawn(cfg, mode):
  return machine.spawn('experiments.benchmarks.dpa_speed', mode, cfg.to_dict(), name=NAME)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)   # before any timing
  base, many, seq = (_spawn(cfg, mode) for mode in ('baseline', 'many', 'sequential'))
  diff = max(abs(a - b) / max(abs(a), 1e-12)
             for a, b in zip(many['checksums'], seq['checksums'], strict=True))
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'num_partitions': cfg.num_partitions, 'capacity': many['capacity'],
      'layout_mib': base['layout_mib'], **machine.mode_results(base, many, seq),
      'max_relative_checksum_difference': diff,
      'nproc': os.cpu_count(),
      'machine': machine.finish(info),
  }
  print(f'[{NAME}] speed-up of one fit_many program over {cfg.num_partitions} sequential '
        f'fits: {results["speedup"]:.2f}x; above baseline: fit_many '
        f'{results["fit_many_extra_rss_mib"]:.0f} MiB, sequential '
        f'{results["sequential_extra_rss_mib"]:.0f} MiB, layout {base["layout_mib"]:.0f} MiB',
        flush=True)
  return machine.save_results(workdir, NAME, cfg.variant, results)


def render_markdown(r: dict) -> str:
  c = r['config']
  m, s = r['fit_many'], r['sequential_fit']
  dev = m.get('device', m['backend'])
  cmd = common.command('benchmarks.dpa_speed', r['variant'])
  k = r['num_partitions']
  lines = [
      f"## DPA base models: {k} x {c['model']} {dict(c['model_kwargs'])}, {r['capacity']} "
      f"rows per part, {c['num_epochs']} epochs, {dev} (`{cmd}`)", '',
      *machine.mode_table(r, ('one `fit_many` program (`partition_aggregation.train`)',
                              f'{k} x `train_part` (`fit`), one after another',
                              'baseline (data, layout, model; no training)')), '',
      f"Speed-up: **{r['speedup']:.2f}x** ({m['backend']}, {r['nproc']} cores"
      f"{machine.loaded_note(r.get('machine'))}). The shared layout (the training set, "
      f"ordered and padded) is {r['layout_mib']:.0f} MiB: {k} copies would be "
      f"{k * r['layout_mib']:.0f} MiB. Wall times include compilation and the layout; "
      f"the sequential mode's first model took {s['first_model_seconds']:.1f} s. The same "
      "models either way up to float rounding (largest relative difference of a model's sum "
      f"|params|: {r['max_relative_checksum_difference']:.1e})."
      + machine.synthetic_note(c), '']
  return '\n'.join(lines)


def headline(r: dict) -> list:
  return machine.speedup_headline(
      f"{r['num_partitions']} DPA base models: one fit_many program vs sequential fits", r)


if __name__ == '__main__':  # internal (see _spawn): one mode in its own process
  machine.child_main(child)
