r"""DP-SGD on Fashion-MNIST: test accuracy at epsilon in {1, 2, 3, 8}, delta = 1e-5.

    python -m experiments.run --config=experiments/configs/dp_sgd.py --workdir=docs/results  # full FMNIST run (background it)
    python -m experiments.run --config=experiments/configs/dp_sgd.py:mnist --workdir=docs/results  # Abadi et al.'s MNIST setting
    python -m experiments.run --config=experiments/configs/dp_sgd.py:smoke --workdir=/tmp/s

The model is the end-to-end CNN of Papernot et al. 2021 / Tramer & Boneh 2021 (conv 16
8x8 stride 2, max-pool 2 stride 1, conv 32 4x4 stride 2, max-pool, dense 32, dense 10) with
tanh ("tempered sigmoid") activations, 26k parameters; ``model='cnn'`` uses
``jaxsec.models.CNN`` with the configured activation instead. Training is
``jaxsec.privacy.dpsgd.train``: Poisson sampling whose own ``dp_accounting`` event gives
epsilon (PLD), the noise multiplier calibrated to each target epsilon, fixed clipping,
SGD with momentum. Every epsilon is a separate run from the same initialisation.

Published figures (REFERENCES.md): end-to-end CNN 86.0% at eps = 3 (Tramer & Boneh 2021,
40 epochs, batch 2048), tempered sigmoid 86.1% at eps = 2.7 (Papernot et al. 2021),
ScatterNet + linear 89.7% at eps = 3. MNIST: 90 / 95 / 97% at eps 0.5 / 2 / 8 (Abadi 2016).

Results go to ``<workdir>/dp_sgd.json`` (``dp_sgd_mnist.json`` for the MNIST variant)
after every finished epsilon; a run cut off resumes from the per-epsilon checkpoint in
``--config.ckpt_dir`` (bit-identical: the same key draws the same batches and noise).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time

import flax.linen as nn
from flax import serialization
import jax
import ml_collections
import numpy as np
import optax
from scipy import stats

from experiments import common
from jaxsec import io as jio
from jaxsec import losses
from jaxsec import models
from jaxsec import train
from jaxsec.privacy import clipping
from jaxsec.privacy import dpsgd
from jaxsec.privacy import sampling

NAME = 'dp_sgd'

PUBLISHED = {
    'fashion_mnist': [
        {'eps': 3.0, 'accuracy': 0.860, 'setting': 'end-to-end CNN (Tramer & Boneh 2021)'},
        {'eps': 2.7, 'accuracy': 0.861, 'setting': 'tempered sigmoid CNN (Papernot 2021)'},
        {'eps': 3.0, 'accuracy': 0.897, 'setting': 'ScatterNet + linear (Tramer & Boneh)'},
    ],
    'mnist': [
        {'eps': 0.5, 'accuracy': 0.90, 'setting': 'Abadi et al. 2016'},
        {'eps': 2.0, 'accuracy': 0.95, 'setting': 'Abadi et al. 2016'},
        {'eps': 8.0, 'accuracy': 0.97, 'setting': 'Abadi et al. 2016'},
    ],
}

_ACT = {'tanh': nn.tanh, 'relu': nn.relu}


def _model(c):
  if c.model == 'tempered_cnn':
    return models.TemperedCNN(activation=c.activation)
  return models.get('cnn', activation=_ACT[c.activation], **dict(c.cnn_kwargs))


def _normalise(x):
  # public constants of the data set (pixel mean / std over FMNIST train), not private stats
  return (x - 0.2860) / 0.3530


def _config_hash(c, eps, epochs):
  # What determines the mechanism and its result. Not the clipping ``method`` nor
  # ``microbatch_size``: 'vmap', 'ghost' and 'auto' compute the same clipped sum (exact,
  # tested to float rounding) from the same key, so a run is kept across them.
  keep = {k: c[k] for k in ('dataset', 'model', 'activation', 'seed', 'delta', 'accountant',
                            'expected_batch_size', 'learning_rate', 'momentum',
                            'l2_norm_clip', 'train_subset')}
  keep.update(eps=eps, epochs=epochs, cnn=dict(c.cnn_kwargs))
  return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _nonprivate_key(c):
  return json.dumps({k: c[k] for k in ('dataset', 'model', 'activation', 'seed',
                                       'train_subset', 'nonprivate_epochs')}
                    | {'cnn': dict(c.cnn_kwargs)}, sort_keys=True, default=str)


def _load(c):
  xtr, ytr, xte, yte = common.load_splits(c.dataset, train_subset=c.train_subset,
                                           test_subset=c.test_subset)
  return (_normalise(np.asarray(xtr, np.float32)), np.asarray(ytr, np.int32),
          _normalise(np.asarray(xte, np.float32)), np.asarray(yte, np.int32))


#: JSON key of the mean clipped fraction: a non-private diagnostic (older results files
#: call it 'mean_clipped_fraction'; the renderer labels both as non-private).
NONPRIVATE_KEY = 'nonprivate_diagnostic_mean_clipped_fraction'



def _overflow_delta(r: dict, run: dict):
  """The run's overflow term; recomputed for results written before it was recorded."""
  if 'overflow_delta' in run:
    return run['overflow_delta']
  if not all(k in run for k in ('steps', 'sampling_probability', 'max_batch_size')):
    return None
  p = min(1.0, run['steps'] * stats.binom(r['num_train'], run['sampling_probability']).sf(
      run['max_batch_size']))
  return (1.0 + math.exp(min(run['epsilon'], 700.0))) * p


def _accounted(r: dict, run: dict) -> bool:
  """Whether a finished run may be kept on resume: its Poisson overflow term is known and
  within what :class:`PoissonSampler` accepts today (runs recorded before the term was
  accounted, with a larger one, are trained again)."""
  term = _overflow_delta(r, run)
  return term is not None and term <= sampling.DEFAULT_MAX_OVERFLOW_DELTA_FRACTION * run['delta']


def _clipped_fraction(run: dict):
  return run.get(NONPRIVATE_KEY, run.get('mean_clipped_fraction'))


def run_one(c, eps, epochs, xtr, ytr, xte, yte, ckpt_dir):
  model = _model(c)
  params0 = models.init(model, jax.random.key(c.seed), (1,) + xtr.shape[1:])
  n = xtr.shape[0]
  steps = int(round(epochs * n / c.expected_batch_size))
  sampler = sampling.PoissonSampler(dataset_size=n, num_steps=steps,
                                    expected_batch_size=c.expected_batch_size)
  sigma = sampler.calibrate(eps, c.delta, accountant=c.accountant)
  lf = clipping.from_model(model.apply, losses.cross_entropy)
  opt = optax.sgd(c.learning_rate, momentum=c.momentum)
  tag = _config_hash(c, eps, epochs)
  path = os.path.join(ckpt_dir, f'{tag}.msgpack') if ckpt_dir else None
  start, params, opt_state = 0, params0, None
  if path and os.path.exists(path):
    template = {'step': 0, 'params': params0, 'opt_state': opt.init(params0)}
    with open(path, 'rb') as f:
      st = serialization.from_bytes(template, f.read())
    start, params, opt_state = int(st['step']), st['params'], st['opt_state']
    print(f'  resuming eps={eps} at step {start}/{steps}', flush=True)

  def cb(t, p, extra):
    if path:
      jio.write_bytes_atomic(path, serialization.to_bytes(
          {'step': t, 'params': p, 'opt_state': extra['opt_state']}))

  t0 = time.time()
  res = dpsgd.train(lf, params, (xtr, ytr), optimizer=opt, sampler=sampler,
                    key=jax.random.key(c.seed + 1), l2_norm_clip=c.l2_norm_clip,
                    delta=c.delta, noise_multiplier=sigma, accountant=c.accountant,
                    method=c.method, microbatch_size=c.microbatch_size or None,
                    steps_per_call=c.steps_per_call, callback=cb, start_step=start,
                    opt_state=opt_state, verbose=c.variant != 'smoke')
  acc = train.evaluate(model.apply, res.params, xte, yte)
  return {
      'target_epsilon': eps, 'epsilon': res.epsilon, 'delta': c.delta,
      # the delta to report: c.delta plus the Poisson overflow term of max_batch_size
      'reported_delta': res.delta, 'overflow_delta': res.overflow_delta,
      'accountant': c.accountant, 'noise_multiplier': res.noise_multiplier,
      'epochs': epochs, 'steps': steps, 'sampling_probability': sampler.q,
      'max_batch_size': sampler.batch_size, 'test_accuracy': acc,
      'train_seconds': time.time() - t0, 'resumed_from_step': start,
      # computed from the training batches without noise: NOT covered by (eps, delta)
      NONPRIVATE_KEY: float(np.mean(res.nonprivate_diagnostics['clipped_fraction'])),
      'device': common.device_info(),
  }


def run(config: ml_collections.ConfigDict, workdir: str, ckpt_dir: str | None = None
        ) -> dict:
  c = config
  ckpt_dir = common.checkpoint_dir(c, ckpt_dir, NAME)  # default: c.ckpt_dir
  if len(c.epochs) != len(c.epsilons):
    raise ValueError(f'epochs {tuple(c.epochs)} and epsilons {tuple(c.epsilons)} differ in '
                     'length.')
  out_path = os.path.join(workdir, c.output_name + '.json')
  xtr, ytr, xte, yte = _load(c)
  results = {'name': c.output_name, 'variant': c.variant, 'dataset': c.dataset,
             'model': c.model, 'activation': c.activation,
             'num_params': int(sum(l.size for l in jax.tree_util.tree_leaves(
                 models.init(_model(c), jax.random.key(0), (1,) + xtr.shape[1:])))),
             'num_train': int(xtr.shape[0]), 'num_test': int(xte.shape[0]),
             'config': c.to_dict(),
             'published': PUBLISHED.get(c.dataset, []), 'runs': []}
  if os.path.exists(out_path):
    # Resume: keep each finished run whose own settings (the hash of everything that
    # determines it) are unchanged, and the non-private reference if its settings are.
    prev = jio.read_json(out_path)
    pc = ml_collections.ConfigDict(prev.get('config', {}))
    try:
      for r in prev.get('runs', []):
        if (r['target_epsilon'] in c.epsilons
            and c.epochs[list(c.epsilons).index(r['target_epsilon'])] == r['epochs']
            and _config_hash(pc, r['target_epsilon'], r['epochs'])
            == _config_hash(c, r['target_epsilon'], r['epochs'])
            and _accounted(prev, r)):
          results['runs'].append({'device': prev.get('device'), **r})
      npv = prev.get('nonprivate')
      if npv and _nonprivate_key(pc) == _nonprivate_key(c):
        results['nonprivate'] = {'device': prev.get('device'), **npv}
    except (KeyError, AttributeError):   # an older layout: recompute everything
      results['runs'], results['nonprivate'] = [], None
  done = {r['target_epsilon'] for r in results['runs']}
  if c.nonprivate_epochs and not results.get('nonprivate'):
    model = _model(c)
    t0 = time.time()
    fr = train.fit(model.apply, models.init(model, jax.random.key(c.seed),
                                            (1,) + xtr.shape[1:]),
                   xtr, ytr, optimizer=optax.adam(1e-3), key=jax.random.key(c.seed + 2),
                   batch_size=128, num_epochs=c.nonprivate_epochs)
    results['nonprivate'] = {'epochs': c.nonprivate_epochs,
                             'test_accuracy': train.evaluate(model.apply, fr.params, xte,
                                                             yte),
                             'train_seconds': time.time() - t0,
                             'device': common.device_info()}
    jio.write_json_atomic(out_path, results)
  for eps, epochs in zip(c.epsilons, c.epochs, strict=True):
    if eps in done:
      continue
    print(f'DP-SGD eps={eps} epochs={epochs}', flush=True)
    results['runs'].append(run_one(c, eps, epochs, xtr, ytr, xte, yte, ckpt_dir))
    print(f'  -> test accuracy {results["runs"][-1]["test_accuracy"]:.4f}', flush=True)
    jio.write_json_atomic(out_path, results)
  results['runs'].sort(key=lambda r: r['target_epsilon'])
  jio.write_json_atomic(out_path, results)
  return results


def _device(run: dict) -> str:
  d = run.get('device')
  return d['device_kind'] if d else 'unrecorded'


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  lines = [f"## DP-SGD on {r['dataset']} ({r['model']}, {r['activation']}, "
           f"{r['num_params']} parameters)", '',
           f"Poisson sampling accounted by its own dp_accounting event "
           f"({r['runs'][0]['accountant'].upper() if r['runs'] else ''}); delta = "
           f"{r['runs'][0]['delta'] if r['runs'] else ''}; {r['num_train']} training, "
           f"{r['num_test']} test examples.", '',
           '| target eps | accounted eps | sigma | epochs | steps | test accuracy | '
           'train time (s) | device |', '|---|---|---|---|---|---|---|---|']
  for x in r['runs']:
    lines.append(f"| {x['target_epsilon']:g} | {x['epsilon']:.3f} | "
                 f"{x['noise_multiplier']:.3f} | {x['epochs']} | {x['steps']} | "
                 f"{100 * x['test_accuracy']:.2f}% | {x['train_seconds']:.0f} | "
                 f"{_device(x)} |")
  if r.get('nonprivate'):
    npv = r['nonprivate']
    lines.append(f"| inf (non-private, {npv['epochs']} epochs Adam) | - | - | "
                 f"{npv['epochs']} | - | {100 * npv['test_accuracy']:.2f}% | "
                 f"{npv['train_seconds']:.0f} | {_device(npv)} |")
  terms = [(x, _overflow_delta(r, x)) for x in r['runs']]
  terms = [(x, t) for x, t in terms if t is not None]
  if terms:
    lines += ['', 'Reported delta = delta + the Poisson batch-overflow term (1 + e^eps) '
              'P[some batch > max_batch_size]: ' + ', '.join(
                  f"target eps {x['target_epsilon']:g}: {x['delta']:g} + {t:.2g}"
                  for x, t in terms) + '.']
    if any(t > 0.01 * x['delta'] for x, t in terms):
      lines[-1] += (' A term above 1% of delta (runs recorded before the overflow term '
                    'was accounted) is refused now; rerun those with the current default '
                    'max_batch_size.')
  fracs = [(x['target_epsilon'], _clipped_fraction(x)) for x in r['runs']
           if _clipped_fraction(x) is not None]
  if fracs:
    lines += ['', 'Non-private diagnostic (computed from the training batches without '
              'noise; not covered by (epsilon, delta), for debugging only): mean fraction '
              'of clipped examples: ' + ', '.join(f'target eps {e:g}: {f:.2f}'
                                                   for e, f in fracs) + '.']
  if r.get('published'):
    lines += ['', 'Published: ' + '; '.join(
        f"{100 * p['accuracy']:.1f}% at eps={p['eps']:g} ({p['setting']})"
        for p in r['published'])]
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  runs = sorted(r['runs'], key=lambda x: x['target_epsilon'])
  accs = ', '.join(f"eps {x['epsilon']:.2f}: {100 * x['test_accuracy']:.2f}%" for x in runs)
  kinds = sorted({_device(x) for x in runs})
  where = f", {' + '.join(kinds)}" if kinds else ''
  stale = [(x, t) for t, x in ((_overflow_delta(r, x), x) for x in runs)
           if t is not None and t > 0.01 * x['delta']]
  if stale:   # recorded before the overflow term was accounted: say what was really spent
    accs += ' (delta spent with the Poisson overflow term: ' + ', '.join(
        f"eps {x['epsilon']:.2f}: {x['delta'] + t:.3g}" for x, t in stale) + (
        '; recorded before the term was accounted, rerun pending)')
  return [(f"DP-SGD on {r['dataset']} ({r['model']}{where}), delta={runs[0]['delta']:g}"
           if runs else f"DP-SGD on {r['dataset']}", accs or 'no finished run')]
