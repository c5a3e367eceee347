r"""Attacks that break sanitisers: Koh, Steinhardt & Liang (Machine Learning 2022) on
scikit-learn digits 1 vs 7, a linear SVM behind the sphere + slab defense.

    python -m experiments.run --config=experiments/configs/ksl_poisoning.py --workdir=docs/results  # ~8 min, 2 CPUs
    python -m experiments.run --config=experiments/configs/ksl_poisoning.py:fmnist --workdir=docs/results  # ~40 min
    python -m experiments.run --config=experiments/configs/ksl_poisoning.py:smoke --workdir=/tmp/s

Per random train / test split of the two digits (8x8 pixels in [0, 1]): the victim is the
weight-decay SVM of ``jaxsec.attacks.poisoning.decoy`` (``l2``; ``C = 1 / (n l2)``); the
defender's sphere + slab radii are the ``percentile``-th percentiles of the clean classes'
distances (the paper's "defender's own bound"; :mod:`feasible_set`). At a budget of
``fraction`` x n injected points for each budget in ``fractions`` (3% as in the paper,
and 10%; label flips: flipped in place) each attack is scored by
the test error of the victim retrained after each sanitiser:

* ``none`` -- no sanitisation;
* ``sphere+slab`` -- the defender's clean-data bounds (clean centroids and radii);
* ``empirical`` -- ``jaxsec.defenses.data.sanitize.sphere`` and ``slab`` on the poisoned
  set with its own centroids, each dropping ``empirical_fraction`` of every class.

Attacks: random flipped copies and ALFA (label flips), Biggio et al.'s 2012 gradient attack
(``svm_gradient.svm_poisoning``), and the three attacks of the paper (influence, KKT,
improved min-max; :mod:`influence`, :mod:`kkt`, :mod:`minmax`), whose poison stays inside
the defender's bounds. The attacker's validation set is the test set (the paper's
default setting). Also reported: the fraction of the poison each sanitiser removes, and
Steinhardt et al.'s certified bound (:func:`minmax.certified_bound`) against the
victim's reached training objective on what the defender keeps (the bound must hold there).

Deviation from the paper (MNIST-1-7: 13,007 28x28 training images, 390 poison points):
the bundled 8x8 digits (~240 training images, 7 poison points), so every number is noisier
and the min-max attack runs a fixed number of steps (see :mod:`minmax`). MNIST is not on
this machine; variant ``fmnist`` (``ksl_poisoning_fmnist.json``) runs at the paper's scale
on Fashion-MNIST T-shirt/top vs Trouser (12,000 train / 2,000 test images, 784 pixels, 360
poison points at 3%), one run on the official split, with fewer decoys, KKT splits and
influence steps, and without Biggio's attack (measured costs in its config).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn import datasets as skd

from experiments import common
from experiments import defense_common as dc
from jaxsec import data
from jaxsec import io as jio
from jaxsec import progress as progress_lib
from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import decoy as decoy_lib
from jaxsec.attacks.poisoning import feasible_set as fs_lib
from jaxsec.attacks.poisoning import influence as influence_lib
from jaxsec.attacks.poisoning import kkt as kkt_lib
from jaxsec.attacks.poisoning import minmax as minmax_lib
from jaxsec.defenses.data import sanitize

NAME = 'ksl_poisoning'
DATASETS = ('digits', 'fmnist')
ATTACKS = ('flipped_copies', 'alfa', 'biggio', 'influence', 'kkt', 'minmax')
DEFENSES = ('none', 'sphere+slab', 'empirical')
LABELS = {'clean': 'clean (no poison)', 'flipped_copies': 'label flip (flipped copies)',
          'alfa': 'label flip (ALFA)', 'biggio': 'Biggio et al. 2012 gradient',
          'influence': 'influence (KSL)', 'kkt': 'KKT (KSL)', 'minmax': 'improved min-max (KSL)'}


def _digits(pair):
  x, y = skd.load_digits(return_X_y=True)
  m = (y == pair[0]) | (y == pair[1])
  return (x[m] / 16.0).astype(np.float32), (y[m] == pair[1]).astype(np.int32)


def _fmnist(pair):
  """The pair's Fashion-MNIST train and test images, flattened (784 pixels in [0, 1]);
  label 1 = ``pair[1]``. Returns ``(x, y, x_test, y_test)``."""
  out = []
  for split in ('train', 'test'):
    x, y = data.load('fashion_mnist', split)
    m = (y == pair[0]) | (y == pair[1])
    out += [np.asarray(x[m], np.float32).reshape(int(m.sum()), -1),
            (y[m] == pair[1]).astype(np.int32)]
  return tuple(out)


def _load(cfg):
  """``(x, y, x_test, y_test)`` of the pair; digits: ``x_test`` is None (each split draws
  its test set from the pair's images)."""
  if cfg.dataset not in DATASETS:
    raise ValueError(f'dataset={cfg.dataset!r}; expected one of {DATASETS}.')
  pair = tuple(cfg.pair)
  num_classes = 10
  if (len(pair) != 2 or pair[0] == pair[1]
      or not all(isinstance(k, int) and 0 <= k < num_classes for k in pair)):
    raise ValueError(f'pair={pair!r}; expected two distinct class indices in '
                     f'[0, {num_classes}).')
  if cfg.dataset == 'digits':
    return _digits(pair) + (None, None)
  return _fmnist(pair)


def _split(arrays, cfg, seed):
  """One split ``(x_train, y_train, x_test, y_test)``. Digits: a random ``n_test`` of the
  pair's images test and the rest (the first ``n_train`` of them if set) train. FMNIST:
  the official train and test splits, subsampled at random to ``n_train`` / ``n_test``
  where these are set (0 = the whole split)."""
  x, y, xt, yt = arrays
  rng = np.random.default_rng(seed)
  if xt is None:
    perm = rng.permutation(len(y))
    te, tr = perm[:cfg.n_test], perm[cfg.n_test:]
    if cfg.n_train:
      tr = tr[:cfg.n_train]
    return x[tr], y[tr], x[te], y[te]
  tr, te = np.arange(len(y)), np.arange(len(yt))
  if 0 < cfg.n_train < len(y):
    tr = np.sort(rng.permutation(len(y))[:cfg.n_train])
  if 0 < cfg.n_test < len(yt):
    te = np.sort(rng.permutation(len(yt))[:cfg.n_test])
  return x[tr], y[tr], xt[te], yt[te]


@functools.partial(jax.jit, static_argnames=('l2', 'tol'))
def _victim(x, y, weight, xt, yt, *, l2, n, tol):
  """The victim on the weighted set: test error, test hinge, reached objective."""
  s = decoy_lib.fit_svm(x, y, l2=l2, n=n, weight=weight, tol=tol)
  err = jnp.mean(((xt @ s.w + s.b) > 0).astype(yt.dtype) != yt)
  return err, jnp.mean(decoy_lib.hinge_losses(s.w, s.b, xt, yt)), decoy_lib.objective(
      s.w, s.b, x, y, l2=l2, n=n, weight=weight)


def _attack_fns(cfg, n, fraction):
  c_svm = 1.0 / (n * cfg.l2)
  box = tuple(cfg.bounds)
  common_kw = dict(fraction=fraction, l2=cfg.l2, percentile=cfg.percentile, bounds=box,
                   tol=cfg.tol)
  decoy_kw = dict(quantiles=tuple(cfg.quantiles), repeats=tuple(cfg.repeats))
  return {
      'flipped_copies': poisoning.flipped_copies(fraction=fraction),
      'alfa': poisoning.alfa(fraction=fraction, C=c_svm),
      'biggio': poisoning.svm_poisoning(fraction=fraction, C=c_svm, bounds=box,
                                        step_size=cfg.biggio_step_size,
                                        num_steps=cfg.biggio_steps, tol=cfg.tol),
      'influence': influence_lib.influence_attack(step_size=cfg.influence_step_size,
                                                  num_steps=cfg.influence_steps, **common_kw),
      'kkt': kkt_lib.kkt_attack(num_splits=cfg.kkt_splits, num_steps=cfg.kkt_steps,
                                **common_kw, **decoy_kw),
      'minmax': minmax_lib.minmax_attack(rho_max=cfg.rho_max, num_steps=cfg.minmax_steps,
                                         burn_frac=cfg.burn_frac, eta=cfg.eta, **common_kw,
                                         **decoy_kw),
  }


def _score(x2, y2, poison, fs, xt, yt, cfg, n) -> dict[str, Any]:
  """Each sanitiser's keep-mask on the poisoned set, and the victim retrained on it."""
  xj, yj = jnp.asarray(x2), jnp.asarray(y2)
  keeps = {
      'none': np.ones(len(y2), bool),
      'sphere+slab': np.asarray(fs_lib.feasible_mask(fs, xj, yj)),
      'empirical': np.asarray(
          sanitize.sphere(xj, yj, num_classes=2, fraction=cfg.empirical_fraction)
          & sanitize.slab(xj, yj, num_classes=2, fraction=cfg.empirical_fraction)),
  }
  out: dict[str, Any] = {}
  for name, keep in keeps.items():
    err, hinge, obj = _victim(xj, yj, jnp.asarray(keep, jnp.float32), jnp.asarray(xt),
                              jnp.asarray(yt), l2=float(cfg.l2), n=n, tol=float(cfg.tol))
    out[name] = {'test_error': float(err), 'test_hinge': float(hinge),
                 'objective': float(obj),
                 'poison_removed': (float(np.mean(~keep[poison])) if poison.any()
                                    else None),
                 'clean_removed': float(np.mean(~keep[~poison]))}
  return out


def _one_split(arrays, cfg, seed, fraction, bar):
  xtr, ytr, xte, yte = _split(arrays, cfg, seed)
  n = len(ytr)
  xj, yj = jnp.asarray(xtr), jnp.asarray(ytr)
  fs = fs_lib.feasible_set(xj, yj, percentile=cfg.percentile, bounds=tuple(cfg.bounds))
  keep_clean = fs_lib.feasible_mask(fs, xj, yj).astype(jnp.float32)
  t0 = time.time()
  bound, _ = minmax_lib.certified_bound(fs, xj, yj, fraction=fraction, l2=cfg.l2,
                                        weight=keep_clean, num_steps=cfg.bound_steps,
                                        eta=cfg.eta, tol=cfg.tol)
  res = {'seed': seed, 'n_train': n, 'n_test': len(yte),
         'n_poison': poisoning.num_poison(fraction, n), 'bound': bound,
         'bound_seconds': time.time() - t0,
         'sphere_radii': np.asarray(fs.sphere_radii).tolist(),
         'slab_radii': np.asarray(fs.slab_radii).tolist(),
         'clean': _score(xtr, ytr, np.zeros(n, bool), fs, xte, yte, cfg, n), 'attacks': {}}
  fns = _attack_fns(cfg, n, fraction)
  key = jax.random.key(seed)
  for k, name in enumerate(cfg.attacks):
    t0 = time.time()
    kw = {} if name in ('flipped_copies', 'alfa') else {'x_val': jnp.asarray(xte),
                                                        'y_val': jnp.asarray(yte)}
    out = fns[name](xj, yj, jax.random.fold_in(key, k), **kw)
    x2, y2 = np.asarray(out.x), np.asarray(out.y)
    poison = np.asarray(out.info['poison_mask'])
    entry = _score(x2, y2, poison, fs, xte, yte, cfg, n)
    entry['seconds'] = time.time() - t0
    entry['poison_in_bounds'] = float(np.mean(np.asarray(
        fs_lib.feasible_mask(fs, jnp.asarray(x2[poison]), jnp.asarray(y2[poison])))))
    for extra in ('residual', 'bias_residual', 'decoy_index', 'n_pos', 'val_error'):
      if extra in out.info:
        entry[extra] = np.asarray(out.info[extra]).item()
    res['attacks'][name] = entry
    bar.update(extra=f'{name}: error {entry["sphere+slab"]["test_error"]:.3f} behind '
                     f'sphere+slab ({entry["seconds"]:.1f} s)')
  return res


def _summary(splits, attacks):
  out = {}
  for name in ('clean',) + tuple(attacks):
    rows = [s['clean'] if name == 'clean' else s['attacks'][name] for s in splits]
    out[name] = {}
    for d in DEFENSES:
      e: dict[str, Any] = {'test_error': float(np.mean([r[d]['test_error'] for r in rows])),
           'test_error_std': float(np.std([r[d]['test_error'] for r in rows])),
           'test_hinge': float(np.mean([r[d]['test_hinge'] for r in rows])),
           'objective': float(np.mean([r[d]['objective'] for r in rows]))}
      removed = [r[d]['poison_removed'] for r in rows if r[d]['poison_removed'] is not None]
      e['poison_removed'] = float(np.mean(removed)) if removed else None
      out[name][d] = e
    if name != 'clean':
      out[name]['below_bound'] = all(s['attacks'][name]['sphere+slab']['objective']
                                     <= s['bound'] + 1e-4 for s in splits)
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  unknown = set(cfg.attacks) - set(ATTACKS)
  if unknown:
    raise ValueError(f'attacks={tuple(cfg.attacks)} has unknown {sorted(unknown)}; expected '
                     f'a subset of {ATTACKS}.')
  arrays = _load(cfg)
  bar = progress_lib.Progress(NAME, total=len(cfg.fractions) * cfg.num_splits *
                             len(cfg.attacks), unit='attack')
  budgets = {}
  for f in cfg.fractions:
    splits = [_one_split(arrays, cfg, cfg.seed + s, float(f), bar)
              for s in range(cfg.num_splits)]
    budgets[f'{f:g}'] = {'fraction': float(f), 'splits': splits,
                         'bound_mean': float(np.mean([s['bound'] for s in splits])),
                         'summary': _summary(splits, cfg.attacks)}
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common.device_info(), 'budgets': budgets}
  jio.write_json_atomic(os.path.join(workdir, f'{result_stem(cfg.variant)}.json'), results)
  return results


def result_stem(variant: str) -> str:
  """The JSON's file stem (:func:`defense_common.result_stem`)."""
  return dc.result_stem(NAME, variant)


def data_label(c: dict) -> str:
  """``digits 1 vs 7`` / ``Fashion-MNIST T-shirt/top vs Trouser`` (configs written before
  the ``dataset`` field are digits)."""
  a, b = c['pair']
  if c.get('dataset', 'digits') == 'digits':
    return f'digits {a} vs {b}'
  names = data.info('fashion_mnist').class_names
  return f'Fashion-MNIST {names[a]} vs {names[b]}'


def _budgets(r: dict) -> list:
  """``(fraction, entry)`` by increasing budget."""
  return sorted(((b['fraction'], b) for b in r['budgets'].values()), key=lambda t: t[0])


def render_markdown(r: dict) -> str:
  c = r['config']
  f0, b0 = _budgets(r)[0]
  s0 = b0['splits'][0]
  if c.get('dataset', 'digits') == 'digits':
    split = (f'{len(b0["splits"])} random splits ({s0["n_train"]} train / {s0["n_test"]} '
             'test)')
  else:
    split = (f'Fashion-MNIST\'s train / test split of the pair ({s0["n_train"]} train / '
             f'{s0["n_test"]} test images, 784 pixels), {len(b0["splits"])} seed(s)')
  lines = [dc.heading('Attacks that break sanitisers (Koh, Steinhardt & Liang 2022): '
                      f'{data_label(c)}, linear SVM, sphere + slab', r, NAME),
           '',
           f'{split}, victim: SVM with weight decay {c["l2"]:g}. "sphere+slab": the defender\'s '
           f'clean-data radii at the {c["percentile"]:g}th percentile (the attacks\' feasible '
           'set); "empirical": sphere and slab on the poisoned set, each dropping '
           f'{100 * c["empirical_fraction"]:g}% of every class. Test error mean over splits; '
           '"removed": fraction of the poison each sanitiser drops; objective: the victim\'s '
           'training objective (mean hinge over the kept points, normalised by the clean n, '
           'plus weight decay) after the sphere+slab sanitiser; bound: Steinhardt et al.\'s '
           'certified upper bound on it for any poison inside the defender\'s bounds (min-max, '
           f'{c["bound_steps"]} steps), which limits the training objective, not the test '
           'error the attacks aim at.']
  if c.get('left_out'):
    lines += ['', f'Not run in this variant: {c["left_out"]}']
  for f, b in _budgets(r):
    summ = b['summary']
    ok = all(e.get('below_bound', True) for e in summ.values())
    lines += ['', f'Budget {100 * f:g}% ({b["splits"][0]["n_poison"]} poison points); every '
              f'attack below the bound: {"yes" if ok else "NO"}.', '',
              '| attack | no defense | sphere+slab | removed | empirical | removed '
              '| objective / bound |', '|---|---|---|---|---|---|---|']
    for name in ('clean',) + tuple(k for k in ATTACKS if k in summ):
      e = summ[name]
      lines.append(
          f'| {LABELS.get(name, name)} | {dc.fmt(e["none"]["test_error"])} | '
          f'{dc.fmt(e["sphere+slab"]["test_error"])} | '
          f'{dc.fmt(e["sphere+slab"]["poison_removed"], digits=0)} | '
          f'{dc.fmt(e["empirical"]["test_error"])} | '
          f'{dc.fmt(e["empirical"]["poison_removed"], digits=0)} | '
          f'{e["sphere+slab"]["objective"]:.3f} / {b["bound_mean"]:.3f} |')
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row (variants 'full' and 'fmnist'): test error behind sphere + slab for each
  attack that ran."""
  if r.get('variant') not in ('full', 'fmnist'):
    return []
  c = r['config']
  f0, b0 = _budgets(r)[0]
  s = b0['summary']
  err = lambda k: dc.fmt(s[k]['sphere+slab']['test_error'])  # noqa: E731
  parts = [f'{label} {err(k)}' for k, label in
           (('influence', 'influence'), ('kkt', 'KKT'), ('minmax', 'min-max')) if k in s]
  flips = [f'{label} {err(k)}' for k, label in
           (('flipped_copies', 'label flip'), ('alfa', 'ALFA'), ('biggio', 'Biggio')) if k in s]
  if r['variant'] == 'full':      # the digits row as it has been (ALFA not listed)
    flips = [p for p in flips if not p.startswith('ALFA')]
  where = (f'digits {c["pair"][0]}/{c["pair"][1]}' if c.get('dataset', 'digits') == 'digits'
           else data_label(c))
  return [(f'KSL sanitiser-breaking attacks vs sphere+slab ({where}, {100 * f0:g}% poison), '
           'cpu', 'test error: ' + '; '.join(', '.join(g) for g in (parts, flips, [
               f'clean {err("clean")}']) if g))]
