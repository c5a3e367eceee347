r"""DP-FTRL, BandMF and DP-SGD on Fashion-MNIST at one (epsilon, delta), same model, batch,
clip, epochs.

    python -m experiments.run --config=experiments/configs/dp_ftrl.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/dp_ftrl.py:smoke --workdir=/tmp/s

DP-SGD (``jaxsec.privacy.dpsgd.train``): Poisson sampling with expected batch B, its noise
multiplier calibrated to the target with its own event (RDP and PLD both reported; training
uses ``c.accountant``), add/remove-one adjacency, amplification by sampling. DP-FTRL
(``jaxsec.privacy.dpftrl.train``, Kairouz et al. 2021): one data-independent permutation,
visited in order every epoch in N // B batches, tree restarted each epoch, the node noise
multiplier calibrated with dp_accounting's ``SingleEpochTreeAggregationDpEvent`` (RDP),
replace-with-zero adjacency, no amplification claimed. BandMF
(``jaxsec.privacy.banded_mf.train``, Choquette-Choo et al. 2023): noise ``C^{-1} z`` of a
b-banded Toeplitz strategy (jax_privacy's optimiser, prefix-sum workload) on batches drawn by
cyclic Poisson sampling with k = b groups, accounted as DP-SGD over ``ceil(T / b)`` steps
(their Thm. 4; ``c.accountant``), zero-out adjacency; b is chosen among ``c.mf_bands`` by the
prefix-sum RMSE at each b's calibrated noise (their Sec. 5), from public quantities only.
All start from the same initialisation with the same optimizer (SGD with momentum; for
DP-FTRL that is DP-FTRLM). The model is the dp_sgd study's (tempered-sigmoid CNN, 26k
parameters).

Published (Kairouz et al. 2021, Fig. 3 / Table): DP-FTRLM is competitive with DP-SGD at
eps ~ 2-4 on MNIST / EMNIST / CIFAR-10 and better when few epochs are allowed.
Results go to ``<workdir>/dp_ftrl.json`` after each method (a rerun keeps finished ones).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import dp_sgd
from jaxsec import io as jio
from jaxsec import losses
from jaxsec import models
from jaxsec import train
from jaxsec.privacy import banded_mf
from jaxsec.privacy import clipping
from jaxsec.privacy import dpftrl
from jaxsec.privacy import dpsgd
from jaxsec.privacy import sampling

NAME = 'dp_ftrl'
METHODS = ('dp_sgd', 'dp_ftrl', 'banded_mf')


def _model(c):
  if c.model == 'mlp':            # the smoke variant's (compiles in a second)
    return models.get('mlp', hidden=tuple(c.mlp_hidden))
  return dp_sgd._model(c)         # pylint: disable=protected-access


def _hash(c, method, seed):
  keep = {k: c[k] for k in ('dataset', 'model', 'activation', 'delta', 'epsilon',
                            'accountant', 'batch_size', 'epochs', 'learning_rate',
                            'momentum', 'l2_norm_clip', 'train_subset', 'test_subset')}
  keep.update(seed=seed, method=method, cnn=dict(c.cnn_kwargs), mlp=tuple(c.mlp_hidden))
  if method == 'banded_mf':           # (the other methods' hashes are unchanged)
    keep.update(mf_bands=tuple(c.mf_bands), mf_optimizer_steps=c.mf_optimizer_steps)
  return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _run_sgd(c, seed, model, params0, lf, xtr, ytr, xte, yte):
  n = xtr.shape[0]
  steps = int(round(c.epochs * n / c.batch_size))
  sampler = sampling.PoissonSampler(dataset_size=n, num_steps=steps,
                                    expected_batch_size=c.batch_size)
  sigmas = {a: sampler.calibrate(c.epsilon, c.delta, accountant=a)
            for a in dict.fromkeys((c.accountant,) + tuple(c.report_accountants))}
  t0 = time.time()
  res = dpsgd.train(lf, params0, (xtr, ytr),
                    optimizer=optax.sgd(c.learning_rate, momentum=c.momentum),
                    sampler=sampler, key=jax.random.key(seed + 1),
                    l2_norm_clip=c.l2_norm_clip, delta=c.delta,
                    noise_multiplier=sigmas[c.accountant], accountant=c.accountant,
                    steps_per_call=c.steps_per_call, verbose=c.variant != 'smoke')
  return {'method': 'dp_sgd', 'epsilon': res.epsilon, 'reported_delta': res.delta,
          'accountant': c.accountant, 'neighboring_relation': 'ADD_OR_REMOVE_ONE',
          'noise_multiplier': res.noise_multiplier,
          **{f'noise_multiplier_{a}': v for a, v in sigmas.items()},
          'steps': steps, 'sampling_probability': sampler.q,
          'test_accuracy': train.evaluate(model.apply, res.params, xte, yte),
          'train_seconds': time.time() - t0,
          'nonprivate_diagnostic_mean_clipped_fraction': float(
              np.mean(res.nonprivate_diagnostics['clipped_fraction']))}


def _run_ftrl(c, seed, model, params0, lf, xtr, ytr, xte, yte):
  spe = xtr.shape[0] // c.batch_size
  sigma = dpftrl.calibrate(c.epsilon, c.delta, steps_per_epoch=spe, epochs=c.epochs)
  t0 = time.time()
  res = dpftrl.train(lf, params0, (xtr, ytr),
                     optimizer=optax.sgd(c.learning_rate, momentum=c.momentum),
                     batch_size=c.batch_size, epochs=c.epochs, key=jax.random.key(seed + 1),
                     l2_norm_clip=c.l2_norm_clip, delta=c.delta, noise_multiplier=sigma,
                     steps_per_call=c.steps_per_call, verbose=c.variant != 'smoke')
  return {'method': 'dp_ftrl', 'epsilon': res.epsilon, 'reported_delta': res.delta,
          'accountant': 'rdp (SingleEpochTreeAggregationDpEvent)',
          'neighboring_relation': res.neighboring_relation,
          'noise_multiplier': res.noise_multiplier, 'steps': spe * c.epochs,
          'steps_per_epoch': spe, 'tree_depth': dpftrl.tree_depth(spe),
          'test_accuracy': train.evaluate(model.apply, res.params, xte, yte),
          'train_seconds': time.time() - t0,
          'nonprivate_diagnostic_mean_clipped_fraction': res.nonprivate_mean_clipped_fraction}


def _run_bandmf(c, seed, model, params0, lf, xtr, ytr, xte, yte):
  n = xtr.shape[0]
  steps = int(round(c.epochs * n / c.batch_size))     # DP-SGD's number of steps
  t0 = time.time()
  choices = banded_mf.select_bands(tuple(c.mf_bands), dataset_size=n, num_steps=steps,
                                   expected_batch_size=c.batch_size,
                                   target_epsilon=c.epsilon, delta=c.delta,
                                   accountant=c.accountant,
                                   max_optimizer_steps=c.mf_optimizer_steps)
  best = min(choices, key=lambda ch: ch.rmse)
  select_seconds = time.time() - t0
  for ch in choices:
    print(f'  b={ch.bands}: sigma {ch.noise_multiplier:.3f}, prefix-sum rmse {ch.rmse:.2f}',
          flush=True)
  sampler = sampling.CyclicPoissonSampler(dataset_size=n, num_steps=steps,
                                          cycle_length=best.bands,
                                          expected_batch_size=c.batch_size)
  t0 = time.time()
  res = banded_mf.train(lf, params0, (xtr, ytr),
                        optimizer=optax.sgd(c.learning_rate, momentum=c.momentum),
                        sampler=sampler, coef=best.coef, key=jax.random.key(seed + 1),
                        l2_norm_clip=c.l2_norm_clip, delta=c.delta,
                        noise_multiplier=best.noise_multiplier, accountant=c.accountant,
                        steps_per_call=c.steps_per_call, verbose=c.variant != 'smoke')
  return {'method': 'banded_mf', 'epsilon': res.epsilon, 'reported_delta': res.delta,
          'accountant': c.accountant, 'neighboring_relation': res.neighboring_relation,
          'noise_multiplier': res.noise_multiplier, 'steps': steps, 'bands': best.bands,
          'cycle_length': sampler.cycle_length, 'sampling_probability': sampler.q,
          'participations': sampler.participations(), 'coef': list(res.coef),
          'band_selection': [{'bands': ch.bands, 'noise_multiplier': ch.noise_multiplier,
                              'mean_squared_error': ch.mean_squared_error,
                              'rmse': ch.rmse} for ch in choices],
          'selection_seconds': select_seconds,
          'test_accuracy': train.evaluate(model.apply, res.params, xte, yte),
          'train_seconds': time.time() - t0,
          'nonprivate_diagnostic_mean_clipped_fraction': res.nonprivate_mean_clipped_fraction}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  seeds = tuple(c.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds={seeds!r}: expected one or more distinct integer seeds.')
  if c.seed != 0:                  # the base config's single seed: this study has seeds
    raise ValueError(f"seed={c.seed}: this study runs the seeds in 'seeds' (now {seeds}); "
                     f"set --config.seeds='({c.seed},)' instead.")
  out_path = os.path.join(workdir, c.output_name + '.json')
  xtr, ytr, xte, yte = dp_sgd._load(c)   # pylint: disable=protected-access
  model = _model(c)
  init = {s: models.init(model, jax.random.key(s), (1,) + xtr.shape[1:]) for s in seeds}
  lf = clipping.from_model(model.apply, losses.cross_entropy)
  results = {'name': c.output_name, 'variant': c.variant, 'dataset': c.dataset,
             'model': c.model, 'num_params': int(sum(
                 l.size for l in jax.tree_util.tree_leaves(init[seeds[0]]))),
             'num_train': int(xtr.shape[0]), 'num_test': int(xte.shape[0]),
             'target_epsilon': c.epsilon, 'delta': c.delta, 'epochs': c.epochs,
             'batch_size': c.batch_size, 'seeds': list(seeds), 'config': c.to_dict(),
             'runs': []}
  if os.path.exists(out_path):     # resume: a finished (method, seed) whose config is unchanged
    prev = jio.read_json(out_path)
    for r in prev.get('runs', []):
      seed = r.get('seed', 0)        # (runs written before seeds existed are seed 0)
      if seed in seeds and r.get('config_hash') == _hash(c, r.get('method'), seed):
        results['runs'].append({**r, 'seed': seed})
  runners = {'dp_sgd': _run_sgd, 'dp_ftrl': _run_ftrl, 'banded_mf': _run_bandmf}
  for seed in seeds:               # the initialisation is key(seed), the training key seed + 1
    for method in c.methods:
      if any(r['method'] == method and r['seed'] == seed for r in results['runs']):
        continue
      print(f'{method} seed={seed} eps={c.epsilon} epochs={c.epochs} batch={c.batch_size}',
            flush=True)
      r = runners[method](c, seed, model, init[seed], lf, xtr, ytr, xte, yte)
      r.update(seed=seed, config_hash=_hash(c, method, seed), device=common.device_info())
      print(f'  -> sigma {r["noise_multiplier"]:.3f}, test accuracy {r["test_accuracy"]:.4f}',
            flush=True)
      results['runs'].append(r)
      jio.write_json_atomic(out_path, results)
  results['summary'] = _summary(results['runs'])
  jio.write_json_atomic(out_path, results)
  return results


def _summary(runs: list) -> dict:
  """Per method: test accuracy over the seeds (mean, sample std with n - 1, min, max)."""
  out = {}
  for m in dict.fromkeys(r['method'] for r in runs):
    acc = np.asarray([r['test_accuracy'] for r in runs if r['method'] == m])
    out[m] = {'seeds': len(acc), 'mean': float(acc.mean()),
              'std': float(acc.std(ddof=1)) if len(acc) > 1 else None,
              'min': float(acc.min()), 'max': float(acc.max())}
  return out


def render_markdown(r: dict) -> str:
  """The docs section, rendered from the results JSON."""
  mf = [x for x in r['runs'] if x['method'] == 'banded_mf']
  lines = [f"## DP-FTRL vs DP-SGD{' vs BandMF' if mf else ''} on {r['dataset']} "
           f"({r['model']}, {r['num_params']} parameters)", '',
           f"Target eps = {r['target_epsilon']:g}, delta = {r['delta']:g}; all methods: "
           f"batch {r['batch_size']}, {r['epochs']} epochs, the same initialisation and "
           f"optimizer; {r['num_train']} training, {r['num_test']} test examples. DP-SGD: "
           'Poisson sampling, add/remove-one adjacency; DP-FTRL: one fixed order, the tree '
           'restarted each epoch, replace-with-zero adjacency, no amplification.'
           + (' BandMF (Choquette-Choo et al. 2023): correlated noise of a b-banded '
              'Toeplitz strategy, cyclic Poisson sampling over k = b groups, accounted as '
              'DP-SGD over ceil(steps / b) participations (their Thm. 4), zero-out '
              '(replace-with-zero) adjacency.' if mf else ''), '']
  rows = []
  for x in r['runs']:
    sig = f"{x['noise_multiplier']:.3f}"
    if x['method'] == 'dp_sgd':
      sig += ' (' + ', '.join(f"{a.upper()} {x[f'noise_multiplier_{a}']:.3f}"
                              for a in ('rdp', 'pld') if f'noise_multiplier_{a}' in x) + ')'
    elif x['method'] == 'banded_mf':
      sig += (f" (of z; {x['bands']} bands, q = {x['sampling_probability']:.4g}, "
              f"{x['participations']} participations)")
    else:
      sig += f" (per tree node; depth {x['tree_depth']})"
    rows.append([x['method'], x.get('seed', 0), f"{x['epsilon']:.3f}", x['accountant'], sig,
                 x['steps'],
                 common.pct(x['test_accuracy']), f"{x['train_seconds']:.0f}",
                 x['device']['device_kind']])
  lines += common.md_table(['method', 'seed', 'accounted eps', 'accountant',
                            'noise multiplier', 'steps', 'test accuracy', 'train time (s)',
                            'device'], rows)
  summ = r.get('summary') or _summary(r['runs'])
  if any(v['seeds'] > 1 for v in summ.values()):
    lines += ['', 'Over seeds (initialisation key(seed), training key(seed + 1)): '
              + '; '.join(f"{m} {100 * v['mean']:.1f}%"
                          + (f" +- {100 * v['std']:.1f}" if v['std'] is not None else '')
                          + f" ({v['seeds']} seeds, {100 * v['min']:.1f}-{100 * v['max']:.1f})"
                          for m, v in summ.items()) + ' (mean +- sample std, range).']
  for x in mf:
    lines += ['', 'BandMF bands chosen before training by the prefix-sum RMSE of the noise '
              "at each b's calibrated noise multiplier (public quantities only): "
              + '; '.join(f"b = {ch['bands']}: sigma {ch['noise_multiplier']:.3f}, RMSE "
                          f"{ch['rmse']:.2f}" for ch in x['band_selection']) + '.']
  fr = [f"{x['method']} (seed {x.get('seed', 0)}): "
        f"{x['nonprivate_diagnostic_mean_clipped_fraction']:.2f}" for x in r['runs']]
  if fr:
    lines += ['', 'Non-private diagnostic (from the training batches without noise; not '
              'covered by (epsilon, delta)): mean fraction of clipped examples: '
              + ', '.join(fr) + '.']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: test accuracy of DP-FTRL and DP-SGD at the target epsilon (variant 'full')."""
  if r.get('variant') != 'full':
    return []
  summ = r.get('summary') or _summary(r['runs'])
  n = min(v['seeds'] for v in summ.values())
  return [(f"DP-SGD vs DP-FTRL vs BandMF on FMNIST at eps {r['target_epsilon']:g} "
           f"(delta {r['delta']:g}, {r['epochs']} epochs, "
           f"{n} seed{'s' if n > 1 else ''}{', mean' if n > 1 else ''}, cpu)",
           ', '.join(f"{label} {100 * summ[m]['mean']:.1f}%"
                     for m, label in (('dp_sgd', 'DP-SGD'), ('dp_ftrl', 'DP-FTRL'),
                                      ('banded_mf', 'BandMF')) if m in summ))]
