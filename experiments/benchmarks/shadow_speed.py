r"""Benchmark: M shadow models as ONE ``train.fit_many`` program vs one after another.

    python -m experiments.run --config=experiments/configs/benchmarks/shadow_speed.py --workdir=docs/results  # writes shadow_speed.json
    python -m experiments.run --config=experiments/configs/benchmarks/shadow_speed.py:smoke --workdir=/tmp/s

The anchors (ART, TF Privacy, Privacy Meter, the LiRA code) train shadow models in a Python
loop or in separate processes. Here the same ``M`` MLPs (LiRA membership: every example of
the pool IN for half of them) are trained (a) with one ``fit_many`` call and (b) with ``M``
``fit`` calls, each mode in its own subprocess so that its peak resident memory
(``ru_maxrss``) is its own; a third subprocess that only loads the data and builds the model
gives the baseline memory. Training sets all have the same size
(``complementary_membership``), so both modes do exactly the same steps and return the same
models. Wall times include compilation (what a user waits for); the
sequential mode also reports its first call (compilation + one model) separately.
"""
from __future__ import annotations

import os
import time

import ml_collections

from experiments import common
from experiments.benchmarks import machine

NAME = 'shadow_speed'


def child(cfg: ml_collections.ConfigDict, mode: str) -> dict:
  """Runs one mode in this process and returns its timings and peak memory."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxsec import models, train  # pylint: disable=g-import-not-at-top
  from jaxsec.attacks import privacy as priv  # pylint: disable=g-import-not-at-top
  x, y = machine.train_images(cfg.dataset, cfg.pool_size, cfg.seed)
  model = models.get('mlp', num_classes=10, hidden=tuple(cfg.hidden))
  init_fn = lambda k: models.init(model, k, (1,) + x.shape[1:])
  # Every example IN for half the models, every model on exactly pool_size / 2 examples.
  masks = priv.complementary_membership(jax.random.key(cfg.seed), cfg.num_models, x.shape[0])
  key = jax.random.key(cfg.seed + 1)
  kw = dict(optimizer=optax.adam(1e-3), batch_size=cfg.batch_size, num_epochs=cfg.num_epochs)
  out = {'mode': mode}
  t0 = time.time()
  if mode == 'many':
    r = priv.train_shadow_models(model.apply, init_fn, x, y, masks, key=key, **kw)
    jax.block_until_ready(r.params)
    out['final_loss'] = float(np.mean(r.history['loss'][-1]))
  elif mode == 'sequential':
    init_keys, train_keys = priv.shadow_keys(key, cfg.num_models)
    losses = []
    for m in range(cfg.num_models):
      r = train.fit(model.apply, init_fn(init_keys[m]), x, y,
                    indices=np.nonzero(masks[m])[0], key=train_keys[m], **kw)
      jax.block_until_ready(r.params)
      losses.append(float(r.history['loss'][-1]))
      if m == 0:
        out['first_model_seconds'] = time.time() - t0
    out['final_loss'] = float(np.mean(losses))
  elif mode != 'baseline':
    raise ValueError(f'mode={mode!r} must be many, sequential or baseline.')
  out.update(machine.child_stats(t0))
  return out


def _spawn(cfg, mode):
  return machine.spawn('experiments.benchmarks.shadow_speed', mode, cfg.to_dict(), name=NAME)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)
  base = _spawn(cfg, 'baseline')
  many = _spawn(cfg, 'many')
  seq = _spawn(cfg, 'sequential')
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'num_models': cfg.num_models, 'examples_per_model': cfg.pool_size // 2,
      **machine.mode_results(base, many, seq),
      'nproc': os.cpu_count(),
      'load_average_1min': os.getloadavg()[0],
      'machine': machine.finish(info),
  }
  print(f'[{NAME}] speed-up of fit_many over sequential fit: {results["speedup"]:.2f}x',
        flush=True)
  return machine.save_results(workdir, NAME, cfg.variant, results)


def render_markdown(r: dict) -> str:
  c = r['config']
  m, s = r['fit_many'], r['sequential_fit']
  cmd = common.command('benchmarks.shadow_speed', r['variant'])
  lines = [
      f"## Shadow-model training: {r['num_models']} MLPs (hidden {tuple(c['hidden'])}), "
      f"{r['examples_per_model']} examples each, {c['num_epochs']} epochs, "
      f"{m.get('device', m['backend'])} (`{cmd}`)", '',
      *machine.mode_table(r, ('one `fit_many` program',
                              f"{r['num_models']} x `fit`, one after another",
                              'baseline (data + model, no training)')), '',
      f"Speed-up: **{r['speedup']:.2f}x** ({m['backend']}, {r['nproc']} cores, 1-minute load "
      f"average {r['load_average_1min']:.1f} when it finished). Wall times include "
      f"compilation; the sequential mode's first model took {s['first_model_seconds']:.1f} s."
      + machine.synthetic_note(c), '']
  return '\n'.join(lines)


def headline(r: dict) -> list:
  return machine.speedup_headline(
      f"{r['num_models']} LiRA shadow MLPs: one fit_many program vs sequential fits", r)


if __name__ == '__main__':  # internal (see _spawn): one mode in its own process
  machine.child_main(child)
