r"""Training-engine benchmark.

    python -m experiments.run --config=experiments/configs/benchmarks/train_speed.py --workdir=docs/results  # full
    python -m experiments.run --config=experiments/configs/benchmarks/train_speed.py:smoke --workdir=docs/results

(i) Training throughput (images/s) of the reference CNN: jaxsec's jitted ``fit`` (one
    ``lax.scan`` per epoch) against a plain PyTorch CPU loop over the same architecture,
    batch size and optimizer, run side by side in this process (ratio > 1: jaxsec faster).
(ii) ``fit_many`` of M MLPs on digits (one vmapped program) against M sequential jitted
    ``fit`` calls (compiled once, reused), ratio and peak memory (each mode in its own
    subprocess, peak RSS from ``getrusage``), plus the data's own size for comparison.

Writes ``<workdir>/train_speed.json`` and prints the ratios.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import optax

from jaxsec import data
from jaxsec import models
from jaxsec import train

from experiments import common
from experiments.benchmarks import machine

NAME = 'train_speed'


def _jax_cnn_throughput(cfg, x, y):
  m = models.get('cnn')
  p = models.init(m, jax.random.key(0), (1, 28, 28, 1))
  kw = dict(optimizer=optax.adam(1e-3), batch_size=cfg.cnn_batch, num_steps=cfg.cnn_steps)
  train.fit(m.apply, p, x, y, key=jax.random.key(0), **kw)  # compile
  best = float('inf')
  for r in range(cfg.repeats):
    t = time.perf_counter()
    out = train.fit(m.apply, p, x, y, key=jax.random.key(r), **kw)
    jax.block_until_ready(out.params)
    best = min(best, time.perf_counter() - t)
  return cfg.cnn_steps * cfg.cnn_batch / best


def _torch_cnn_throughput(cfg, x, y):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, f'torch not importable: {e}'
  torch.manual_seed(0)
  # Same device class as JAX's: a GPU run compares against PyTorch on that GPU.
  dev = torch.device('cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available()
                     else 'cpu')
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
  net = nn.Sequential(
      nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).to(dev)
  yt = torch.from_numpy(y.astype(np.int64)).to(dev)
  lossf = nn.CrossEntropyLoss()
  g = torch.Generator().manual_seed(0)

  def epoch(steps):
    perm = torch.randperm(xt.shape[0], generator=g).to(dev)
    for s in range(steps):
      idx = perm[s * cfg.cnn_batch:(s + 1) * cfg.cnn_batch]
      opt.zero_grad(set_to_none=True)
      loss = lossf(net(xt[idx]), yt[idx])
      loss.backward()
      opt.step()
    sync()

  epoch(2)
  best = float('inf')
  for _ in range(cfg.repeats):
    t = time.perf_counter()
    epoch(cfg.cnn_steps)
    best = min(best, time.perf_counter() - t)
  where = (torch.cuda.get_device_name(dev) if dev.type == 'cuda'
           else f'CPU, {torch.get_num_threads()} threads')
  return cfg.cnn_steps * cfg.cnn_batch / best, f'torch {torch.__version__}, {where}'


def _many_child(mode: str, cfg_json: str) -> dict:
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  x, y = data.load('digits', 'train')
  m = models.get('mlp', num_classes=10, hidden=tuple(cfg.mlp_hidden))
  M = cfg.num_models
  keys = jax.random.split(jax.random.key(0), M)
  init = lambda k: models.init(m, k, (1, 64))
  # Each model trains on its own random half of the data (shadow-model style).
  masks = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (M, x.shape[0])))
  # Both sides compile each epoch into one lax.scan (fit picks it for a model without
  # convolutions, where the CPU while-loop penalty of jax#12868 does not apply), so the
  # sequential baseline pays no per-step dispatch: vmap vs. a well-written sequential loop.
  kw = dict(optimizer=optax.sgd(0.05, momentum=0.9), batch_size=cfg.mlp_batch,
            num_epochs=cfg.mlp_epochs)
  base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  if mode == 'many':
    ps = train.init_many(init, keys)
    run = lambda: train.fit_many(m.apply, ps, x, y, masks=masks, keys=keys, **kw).params
  else:
    def run():
      out = []
      for i in range(M):
        out.append(train.fit(m.apply, init(keys[i]), x, y,
                             indices=np.nonzero(masks[i])[0], key=keys[i], **kw).params)
      return out
  jax.block_until_ready(run())  # compile (sequential: compiled once, reused by all M)
  best = float('inf')
  for _ in range(cfg.repeats):
    t = time.perf_counter()
    jax.block_until_ready(run())
    best = min(best, time.perf_counter() - t)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  out = {'seconds': best, 'peak_rss_mb': peak / 1024, 'rss_before_mb': base_rss / 1024,
         'data_mb': x.nbytes / 2**20}
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    out['device_peak_mb'] = stats['peak_bytes_in_use'] / 2**20
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)
  n = cfg.cnn_steps * cfg.cnn_batch + 1024
  if cfg.cnn_data == 'fashion_mnist':
    x, y = data.load('fashion_mnist', 'train')
    x, y = np.asarray(x[:n]), np.asarray(y[:n])
  elif cfg.cnn_data == 'synthetic':
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
  else:
    raise ValueError(f"cnn_data={cfg.cnn_data!r}; expected 'fashion_mnist' or 'synthetic'.")
  jax_ips = _jax_cnn_throughput(cfg, x, y)
  torch_ips, torch_info = _torch_cnn_throughput(cfg, x, y)
  print(f'CNN training: jaxsec {jax_ips:.0f} img/s; PyTorch {torch_ips or float("nan"):.0f} '
        f'img/s ({torch_info}); ratio {jax_ips / torch_ips if torch_ips else float("nan"):.2f}x',
        flush=True)
  res = {}
  for mode in ('many', 'sequential'):
    out = subprocess.run(
        [sys.executable, '-m', 'experiments.benchmarks.train_speed', mode,
         json.dumps(cfg.to_dict())],
        check=True, capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
  ratio = res['sequential']['seconds'] / res['many']['seconds']
  print(f'fit_many of {cfg.num_models} MLPs: {res["many"]["seconds"]:.2f}s vs sequential '
        f'{res["sequential"]["seconds"]:.2f}s -> {ratio:.2f}x; peak RSS '
        f'{res["many"]["peak_rss_mb"]:.0f} MB vs {res["sequential"]["peak_rss_mb"]:.0f} MB '
        f'(data {res["many"]["data_mb"]:.2f} MB)', flush=True)
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'backend': jax.default_backend(), 'device': str(jax.devices()[0].device_kind),
      'cpu_count': os.cpu_count(),
      'cnn_jax_images_per_s': jax_ips, 'cnn_torch_images_per_s': torch_ips,
      'cnn_torch_info': torch_info,
      'cnn_ratio_jax_over_torch': (jax_ips / torch_ips) if torch_ips else None,
      'fit_many': res['many'], 'sequential_fit': res['sequential'],
      'fit_many_speedup': ratio, 'machine': machine.finish(info),
  }
  return machine.save_results(workdir, NAME, cfg.variant, results)


def render_markdown(r: dict) -> str:
  variant = r.get('variant', 'full')
  cmd = common.command('benchmarks.train_speed', variant)
  lines = [f'## Training engine speed, {r.get("device", r["backend"])} (`{cmd}`)', '',
           f"Backend {r['backend']} ({r.get('device', 'n/a')}), {r['cpu_count']} CPU cores; "
           f"CNN data: {r['config'].get('cnn_data', 'fashion_mnist')}.", '',
           '| what | jaxsec | baseline | ratio |', '|---|---|---|---|']
  if r['cnn_torch_images_per_s']:
    lines.append(f"| reference CNN training, images/s | {r['cnn_jax_images_per_s']:.0f} | "
                 f"{r['cnn_torch_images_per_s']:.0f} (PyTorch loop: {r['cnn_torch_info']}) | "
                 f"{r['cnn_ratio_jax_over_torch']:.2f}x |")
  else:
    lines.append(f"| reference CNN training, images/s | {r['cnn_jax_images_per_s']:.0f} | "
                 f"n/a ({r['cnn_torch_info']}) | n/a |")
  m, s = r['fit_many'], r['sequential_fit']
  n = r['config']['num_models']
  lines.append(f"| {n} MLPs on digits, seconds | {m['seconds']:.2f} (fit_many) | "
               f"{s['seconds']:.2f} ({n} sequential jitted fits) | {r['fit_many_speedup']:.2f}x |")
  lines.append(f"| peak host RSS, MB | {m['peak_rss_mb']:.0f} | {s['peak_rss_mb']:.0f} | "
               f"data {m['data_mb']:.2f} MB |")
  if 'device_peak_mb' in m and 'device_peak_mb' in s:
    lines.append(f"| peak accelerator memory, MB | {m['device_peak_mb']:.1f} | "
                 f"{s['device_peak_mb']:.1f} | data {m['data_mb']:.2f} MB |")
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  where = f"{r.get('device', r['backend'])}"
  note = machine.loaded_note(r.get('machine') or {'jax_backend': r['backend']})
  rows = []
  if r['cnn_torch_images_per_s']:
    rows.append((f'CNN training throughput vs a PyTorch loop ({where})',
                 f"{r['cnn_ratio_jax_over_torch']:.2f}x ({r['cnn_jax_images_per_s']:.0f} vs "
                 f"{r['cnn_torch_images_per_s']:.0f} img/s){note}"))
  rows.append((f"fit_many of {r['config']['num_models']} MLPs vs sequential jitted fits "
               f'({where})', f"{r['fit_many_speedup']:.2f}x{note}"))
  return rows


if __name__ == '__main__':  # internal (see run): one measurement in its own process
  print(json.dumps(_many_child(sys.argv[1], sys.argv[2])), flush=True)
