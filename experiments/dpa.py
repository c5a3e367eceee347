r"""DPA and bagging on FMNIST: certified accuracy vs poisoned training points.

    python -m experiments.run --config=experiments/configs/dpa.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/dpa.py:cpu --workdir=docs/results
    python -m experiments.run --config=experiments/configs/dpa.py:smoke --workdir=/tmp/s

Levine & Feizi (ICLR 2021): the training set is split into ``k`` parts by a hash of each
image (``jaxsec.defenses.training.partition_aggregation.partition``), one base classifier is trained
per part (all ``k`` as ONE ``jaxsec.train.fit_many`` program on one copy of the data), and
the plurality vote is certified against ``floor((n_c - n_c' - 1[c' < c]) / 2)`` inserted or
removed training images. The curve is the paper's Figure (MNIST, k = 1200 / 3000) in
shape: the fraction of test images classified correctly with certificate >= b, against b;
larger k certifies larger b at a lower clean accuracy.

Bagging (Jia, Cao & Gong, AAAI 2021; ``jaxsec.defenses.training.bagging``) next to it:
``bagging_num_models`` base models, each on ``k`` training images drawn with replacement,
all trained as one ``fit_many`` program; the certified poisoning size from Clopper-Pearson
bounds on the vote shares at ``alpha = bagging_alpha / N_test`` (simultaneous over the test
set, as the authors). The paper's MNIST runs: k = 30 / 50 / 100, 1,000 base models, a CNN.

Deviations from the paper (Sec. 5; its datasets are MNIST, CIFAR-10 and GTSRB, not FMNIST):
the base classifier is the small reference CNN of ``jaxsec.models`` (paper: Network-in-
Network), trained ``epochs`` passes over each part with Adam (paper: SGD, 200 epochs, data
augmentation); the hash is SHA-256 of the image bytes (paper: pixel sum mod k); each part
is padded with zero-weight rows to a fixed capacity so that all base models share one
training schedule (see the module docstring).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import defense_common as dc
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train as train_lib
from jaxsec.defenses.training import bagging
from jaxsec.defenses.training import partition_aggregation as pa

NAME = 'dpa'


def _budgets(k: int) -> list[int]:
  """Every poison budget that can be certified with k votes: 0 .. k // 2."""
  return list(range(k // 2 + 1))


def _one_k(k, x, y, xt, yt, cfg, key, ckpt):
  model = models.get(cfg.model, **cfg.model_kwargs.to_dict())
  capacity = math.ceil(cfg.capacity_factor * x.shape[0] / k)
  init_fn = lambda kk: models.init(model, kk, (1,) + x.shape[1:])

  def apply_fn(p, z) -> Any:
    return model.apply(p, z)
  dc.log(f'{NAME}: training {k} base models ({x.shape[0]} images, capacity {capacity})')
  t0 = time.time()
  ens = pa.train(apply_fn, init_fn, x, y, num_partitions=k, num_classes=10,
                 capacity=capacity, optimizer=optax.adam(cfg.learning_rate), key=key,
                 batch_size=cfg.batch_size, num_epochs=cfg.epochs, checkpoint_dir=ckpt,
                 progress=True)
  jax.block_until_ready(ens.params)
  sec = time.time() - t0
  t1 = time.time()
  logits = train_lib.predict_logits_many(apply_fn, ens.params, xt,
                                         batch_size=cfg.eval_batch)     # [k, N, 10]
  votes = np.argmax(logits, -1)
  counts = np.stack([(votes == c).sum(0) for c in range(10)], -1).astype(np.int32)
  cert = pa.certify(counts)
  pred, rad = np.asarray(cert.prediction), np.asarray(cert.radius)
  budgets = _budgets(k)
  acc = pa.certified_accuracy(pred, rad, yt, budgets)
  above = [b for b, a in zip(budgets, acc, strict=True) if a >= 0.5]
  return {
      'num_partitions': k, 'capacity': capacity,
      'part_sizes': {'min': int(ens.sizes.min()), 'max': int(ens.sizes.max()),
                     'mean': float(ens.sizes.mean())},
      'train_seconds': sec, 'eval_seconds': time.time() - t1,
      'final_loss_mean': float(np.mean(np.asarray(ens.history['loss'])[-1])),
      'base_accuracy_mean': float(np.mean(votes == yt[None])),
      'ensemble_accuracy': float(np.mean(pred == yt)),
      # the authors' "median certified robustness": the largest b certified for >= 50%
      'median_certified': max(above) if above else None,
      'budgets': budgets, 'certified_accuracy': [float(a) for a in acc]}


def _one_bag_size(k, x, y, xt, yt, cfg, key, ckpt):
  model = models.get(cfg.model, **cfg.model_kwargs.to_dict())
  init_fn = lambda kk: models.init(model, kk, (1,) + x.shape[1:])
  dc.log(f'{NAME}: training {cfg.bagging_num_models} bagged models of {k} images each')
  t0 = time.time()
  ens = bagging.train(model.apply, init_fn, x, y, num_models=cfg.bagging_num_models,
                      subsample_size=k, optimizer=optax.adam(cfg.bagging_learning_rate),
                      key=key, num_epochs=cfg.bagging_epochs, num_classes=10,
                      checkpoint_dir=ckpt, progress=True)
  jax.block_until_ready(ens.params)
  sec = time.time() - t0
  counts = pa.vote_counts(model.apply, ens.params, xt, num_classes=10,
                          batch_size=cfg.eval_batch)
  cert = bagging.certify(counts, n=x.shape[0], subsample_size=k,
                         alpha=cfg.bagging_alpha / xt.shape[0])
  budgets = [int(b) for b in cfg.bagging_budgets]
  acc = pa.certified_accuracy(cert.prediction, cert.radius, yt, budgets)
  acc0 = float(np.mean((cert.prediction == yt) & (cert.radius >= 0)))
  above = sorted(int(r) for r in cert.radius if r >= 0)
  return {'subsample_size': k, 'num_models': cfg.bagging_num_models, 'train_seconds': sec,
          'base_accuracy_mean': float(np.mean(
              counts[np.arange(len(yt)), yt] / cfg.bagging_num_models)),
          'ensemble_accuracy': float(np.mean(cert.prediction == yt)),
          'abstain_rate': float(np.mean(cert.radius < 0)),
          'median_certified': (int(np.median(np.where(cert.radius >= 0, cert.radius, -1)))
                               if above else None),
          'budgets': budgets, 'certified_accuracy': [float(a) for a in acc],
          'certified_accuracy_at_0': acc0}


def _figure(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for k, e in results['partitions'].items():
    ax.plot(e['budgets'], 100 * np.asarray(e['certified_accuracy']), label=f'DPA k = {k}')
  for k, e in results.get('bagging', {}).items():
    ax.plot(e['budgets'], 100 * np.asarray(e['certified_accuracy']), '--',
            label=f'bagging k = {k}')
  ax.set_xlabel('poisoned training images (insertions + deletions)')
  ax.set_ylabel('certified accuracy (%)')
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title('DPA and bagging on FMNIST', fontsize=9)
  fig.savefig(path, format='png', dpi=110, bbox_inches='tight')
  plt.close(fig)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  x, y, xt, yt = dc.load_fmnist(cfg.n_train, cfg.n_test, cfg.seed)
  key = jax.random.key(cfg.seed)
  scratch = dc.scratch_dir(workdir)
  cache = dc.Cache(scratch, NAME)
  base = {k: cfg[k] for k in ('seed', 'model', 'model_kwargs', 'batch_size', 'learning_rate',
                              'n_train', 'epochs', 'capacity_factor')}
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common.device_info(), 'partitions': {}}
  for k in cfg.num_partitions:
    stage = f'k_{k}'
    stage_cfg = (base, k, cfg.n_test)
    hit = cache.get(stage, stage_cfg)
    if hit is None:
      tag = dc.tag_of(base, k)
      hit = _one_k(int(k), x, y, xt, yt, cfg, jax.random.fold_in(key, int(k)),
                   dc.ckpt_dir(scratch, NAME, stage, tag))
      cache.put(stage, stage_cfg, hit)
    dc.log(f'{NAME}: k={k}: clean {hit["ensemble_accuracy"]:.3f}, median certified '
           f'{hit["median_certified"]}')
    results['partitions'][str(k)] = hit
    jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  bag_base = {k: cfg[k] for k in ('seed', 'model', 'model_kwargs', 'n_train',
                                  'bagging_num_models', 'bagging_epochs',
                                  'bagging_learning_rate')}
  results['bagging'] = {}
  for k in cfg.bagging_subsample_sizes:
    stage = f'bagging_{k}'
    stage_cfg = (bag_base, int(k), cfg.n_test, cfg.bagging_alpha, list(cfg.bagging_budgets))
    hit = cache.get(stage, stage_cfg)
    if hit is None:
      hit = _one_bag_size(int(k), x, y, xt, yt, cfg, jax.random.fold_in(key, 10_000 + int(k)),
                          dc.ckpt_dir(scratch, NAME, stage, dc.tag_of(bag_base, k)))
      cache.put(stage, stage_cfg, hit)
    dc.log(f'{NAME}: bagging k={k}: clean {hit["ensemble_accuracy"]:.3f}, median certified '
           f'{hit["median_certified"]}')
    results['bagging'][str(k)] = hit
    jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  _figure(results, os.path.join(workdir, f'{NAME}.png'))
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  cols = sorted({int(b) for b in c['table_budgets']})
  lines = [f'### Deep Partition Aggregation on FMNIST: certified accuracy vs poisoned '
           f'training images (variant {r["variant"]})', '',
           f'`{common.command(NAME, r["variant"])}`', '',
           f'Levine & Feizi (2021): k base {c["model"]}s, one per hash partition of '
           f'{"all" if not c["n_train"] else c["n_train"]} training images, '
           f'{c["epochs"]} epochs each, all trained as one `fit_many` program; plurality '
           f'vote on {"all" if not c["n_test"] else c["n_test"]} test images. Certified '
           'accuracy at b: correct and certified against any b inserted or removed training '
           'images; "median certified b" is the largest b certified for at least half of '
           'the test set (the paper\'s Table 1 metric, MNIST k = 1200 / 3000).', '',
           '| k | ' + ' | '.join(f'b = {b}' for b in cols)
           + ' | median certified b | mean base acc | part size min / max | train s |',
           '|---|' + '---|' * (len(cols) + 4)]
  for k, e in r['partitions'].items():
    acc = dict(zip(e['budgets'], e['certified_accuracy'], strict=True))
    lines.append(f'| {k} | ' + ' | '.join(dc.fmt(acc.get(b)) for b in cols) + ' | '
                 f'{e["median_certified"] if e["median_certified"] is not None else "-"} | '
                 f'{dc.fmt(e["base_accuracy_mean"])} | {e["part_sizes"]["min"]} / '
                 f'{e["part_sizes"]["max"]} | {e["train_seconds"]:.0f} |')
  bags = r.get('bagging', {})
  if bags:
    bcols = [int(b) for b in c['bagging_budgets']]
    lines += ['', f'Bagging (Jia et al. 2021): {c["bagging_num_models"]} base models, each on '
              f'k images drawn with replacement, {c["bagging_epochs"]} full-bag epochs; '
              f'certified at alpha = {c["bagging_alpha"]} / N_test (a "-1" radius abstains).',
              '', '| k | ' + ' | '.join(f'r = {b}' for b in bcols)
              + ' | median certified r | abstain | mean base acc | train s |',
              '|---|' + '---|' * (len(bcols) + 4)]
    for k, e in bags.items():
      acc = dict(zip(e['budgets'], e['certified_accuracy'], strict=True))
      lines.append(f'| {k} | ' + ' | '.join(dc.fmt(acc.get(b)) for b in bcols) + ' | '
                   f'{e["median_certified"] if e["median_certified"] is not None else "-"} | '
                   f'{dc.fmt(e["abstain_rate"])} | {dc.fmt(e["base_accuracy_mean"])} | '
                   f'{e["train_seconds"]:.0f} |')
  lines += ['', f'![certified accuracy vs poisoned images]({NAME}.png)',
            '', 'A budget above k / 2 cannot be certified (its cell is "-").']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: clean and median certified poison count per k (variants 'cpu', 'full')."""
  if r.get('variant') not in ('cpu', 'full'):
    return []
  parts = '; '.join(f"k={k}: {100 * p['ensemble_accuracy']:.1f}% clean, median {p['median_certified']}"
                    for k, p in sorted(r['partitions'].items(), key=lambda kv: int(kv[0])))
  bags = '; '.join(f"bagging k={k}: median {b['median_certified']}"
                   for k, b in sorted(r.get('bagging', {}).items(), key=lambda kv: int(kv[0])))
  base = r['config']['model']
  return [(f'Certified poisoning defenses on FMNIST ({base} base models, {r["variant"]}): DPA '
           'clean accuracy and median certified poisoned-image count', parts
           + (f'; {bags}' if bags else ''))]
