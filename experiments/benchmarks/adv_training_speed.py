r"""Wall time of one training step (and per FMNIST epoch) of adversarial training vs clean.

    python -m experiments.run --config=experiments/configs/benchmarks/adv_training_speed.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/benchmarks/adv_training_speed.py:smoke --workdir=/tmp/s

One jitted ``train.make_step`` per method (reference CNN, batch 128): clean, FGSM-AT
(alpha = 0.5), fast AT (FGSM-RS), PGD-AT with k steps for several k, TRADES with k steps.
Each step is compiled first, then timed over ``repeats`` rounds of ``steps`` steps; the
rounds of all methods are interleaved so that a changing machine load hits every method
alike, and the fastest round is reported (the least disturbed one, as ``timeit``
advises; the median is kept in the JSON too). Expected ratios to clean training: at most
about k + 1 for PGD-AT with k steps (k input-gradient passes plus the training pass),
about 2 for fast AT, 3 for FGSM-AT (attack + clean + adversarial pass), k + 2 for TRADES
(the training pass runs on the clean and the adversarial batch). An input-gradient pass
skips the weight gradients, so by FLOPs it costs about 2/3 of a training pass and PGD-AT
is nearer (2k + 3) / 3 on compute-bound hardware. Writes
``<workdir>/adv_training_speed.json``.
"""
from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
import optax

from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.defenses.training import adversarial

from experiments import common
from experiments.benchmarks import machine

NAME = 'adv_training_speed'


def objectives(cfg):
  out = {'clean': (None, 0),
         'fgsm_at': (adversarial.fgsm_adversarial_training(eps=cfg.eps), 1),
         'fast_at': (adversarial.fast_adversarial_training(eps=cfg.eps), 1)}
  for k in cfg.pgd_steps:
    out[f'pgd_at_{k}'] = (adversarial.pgd_adversarial_training(eps=cfg.eps, num_steps=k), k)
  out[f'trades_{cfg.trades_steps}'] = (adversarial.trades(eps=cfg.eps,
                                                          num_steps=cfg.trades_steps),
                                       cfg.trades_steps)
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)
  model = models.get('cnn', **cfg.model_kwargs.to_dict())
  key = jax.random.key(0)
  params = models.init(model, key, (1, 28, 28, 1))
  b = cfg.batch_size
  x = jax.random.uniform(jax.random.fold_in(key, 1), (cfg.steps, b, 28, 28, 1))
  y = jax.random.randint(jax.random.fold_in(key, 2), (cfg.steps, b), 0, 10)
  opt = optax.adam(1e-3)
  runners = {}
  # As fit does for a CNN: one scan per round on accelerators; on CPU a host loop of
  # jitted steps, because XLA:CPU runs convolutions inside while-loop bodies several times
  # slower (jax-ml/jax#12868), which would inflate every method alike and hide the ratios.
  use_scan = jax.default_backend() != 'cpu'
  for name, (obj, k) in objectives(cfg).items():
    step = train.make_step(model.apply, obj or train.supervised(), opt)
    if use_scan:
      def many(p, s, key, step=step):     # cfg.steps steps in one program, like fit's epoch
        def body(c, inp):
          p, s = c
          p, s, l = step(p, s, inp[0], inp[1], inp[2])
          return (p, s), l
        (p, s), l = jax.lax.scan(body, (p, s), (x, y, jax.random.split(key, cfg.steps)))
        return p, s, l
      f = jax.jit(many)
    else:
      jstep = jax.jit(step)

      def f(p, s, key, jstep=jstep):
        keys = jax.random.split(key, cfg.steps)
        for t in range(cfg.steps):
          p, s, l = jstep(p, s, x[t], y[t], keys[t])
        return p, s, l
    t0 = time.time()
    jax.block_until_ready(f(params, opt.init(params), key))
    runners[name] = (f, k, time.time() - t0)
  times = {n: [] for n in runners}
  for r in range(cfg.repeats):
    for name, (f, _, _) in runners.items():
      s = opt.init(params)
      t0 = time.time()
      jax.block_until_ready(f(params, s, jax.random.fold_in(key, r)))
      times[name].append((time.time() - t0) / cfg.steps)
  steps_per_epoch = cfg.epoch_examples // b
  clean = float(np.min(times['clean']))
  res = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
         'device': str(jax.devices()[0].device_kind),
         'loop': 'scan' if use_scan else 'host', 'methods': {}, 'machine': info}
  for name, (_, k, compile_s) in runners.items():
    best = float(np.min(times[name]))
    res['methods'][name] = {'attack_steps': k, 'seconds_per_step': best,
                            'median_seconds_per_step': float(np.median(times[name])),
                            'seconds_per_epoch': best * steps_per_epoch,
                            'relative_to_clean': best / clean, 'compile_seconds': compile_s,
                            'rounds': times[name]}
  pgd_names = [n for n in res['methods'] if n.startswith('pgd_at_')]
  if pgd_names:
    ref = res['methods'][pgd_names[-1]]['seconds_per_step']
    res['fast_at_relative_to_' + pgd_names[-1]] = res['methods']['fast_at'][
        'seconds_per_step'] / ref
  machine.finish(info)
  jio.write_json_atomic(f'{workdir}/{NAME}.json', res)
  return res


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = [f'### Adversarial training cost per epoch (reference CNN, batch {c["batch_size"]}, '
           f'{c["epoch_examples"]} images / epoch, {r["device"]}, {r.get("loop", "scan")} loop; '
           f'`{common.command("benchmarks." + NAME, r["variant"])}`)'
           f'{machine.loaded_note(r.get("machine"))}',
           '',
           '| method | attack steps k | s / step (fastest round) | s / epoch | x clean | expected x clean |',
           '|---|---|---|---|---|---|']
  for name, m in r['methods'].items():
    k = m['attack_steps']
    exp = {'clean': '1', 'fgsm_at': '3', 'fast_at': '2'}.get(
        name, f'{(2 * k + 3) / 3:.1f} - {k + 1}' if name.startswith('pgd') else f'~{k + 2}')
    lines.append(f'| {name} | {k} | {m["seconds_per_step"]:.3f} | '
                 f'{m["seconds_per_epoch"]:.0f} | {m["relative_to_clean"]:.2f} | {exp} |')
  for k, v in r.items():
    if k.startswith('fast_at_relative_to_'):
      lines += ['', f'Fast AT costs {v:.2f} x {k[len("fast_at_relative_to_"):]} per epoch.']
  return '\n'.join(lines) + '\n'
