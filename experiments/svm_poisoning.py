r"""Biggio, Nelson & Laskov (ICML 2012): one poison point against a linear and an RBF SVM.

    python -m experiments.run --config=experiments/configs/svm_poisoning.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/svm_poisoning.py:smoke --workdir=/tmp/s

The paper's protocol: a small training set (100 points), C = 1 (and a C = 100 control),
one attack point started as a copy of a random training point with its label flipped and
moved by normalised gradient ascent of the validation hinge loss
(``jaxsec.attacks.poisoning.svm_poisoning``: the gradient through the SVM's KKT conditions,
eqs. (7)-(10), with ``dK/dx_c`` of the kernel). Along the path the SVM is retrained exactly
on ``D u {x_c}`` every ``eval_every`` steps and scored on the validation and test sets (the
paper's Figure 2: the validation hinge loss and the test classification error against the
iteration), for the linear kernel and the RBF kernel side by side. Data: scikit-learn's
8x8 digits on the paper's MNIST pairs 7/1, 9/8, 4/0 (MNIST is not on this machine),
Fashion-MNIST pairs at 28x28, and the paper's Figure 1 two-Gaussian problem, where the
validation loss of the retrained SVM is also computed on a grid of attack points (the
surface the gradient ascent climbs) to check that the path ends at a local maximum.

Deviations: digits / Fashion-MNIST instead of MNIST; fixed step counts (the paper stops when
the loss stops increasing; the attack's kept point is the best one seen); the RBF width is
scikit-learn's ``'scale'`` rule on each image data set (the paper gives gamma only for the
Gaussian problem); the hinge loss is the validation mean (the paper sums).
"""
from __future__ import annotations

import functools
import itertools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments import defense_common as dc
from jaxsec import data
from jaxsec import io as jio
from jaxsec import progress as progress_lib
from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import learners

NAME = 'svm_poisoning'
DATASETS = ('gaussian2d', 'digits', 'fashion_mnist')


# ----------------------------------------------------------------------------- data


def _two_class(x, y, pair):
  """Rows of classes ``pair``; label 1 for ``pair[0]``, 0 for ``pair[1]``."""
  m = (y == pair[0]) | (y == pair[1])
  return x[m], (y[m] == pair[0]).astype(np.int32)


def _gaussians(n, seed):
  """The paper's Figure 1 data: class 1 ~ N((1.5, 0), I), class 0 ~ N((-1.5, 0), I)."""
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = rng.normal(size=(n, 2)) + np.stack([3.0 * y - 1.5, np.zeros(n)], 1)
  return x.astype(np.float32), y


def load(name: str, cfg: ml_collections.ConfigDict):
  """``(pool, loader)``: the data set's inputs (for the RBF 'scale' rule) and
  ``loader(pair) -> (x, y, x_test, y_test)`` (``x_test`` None: test from the pair's rest)."""
  if name == 'digits':
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    pixels, target = load_digits(return_X_y=True)
    x, y = np.asarray(pixels, np.float32) / np.float32(16.0), np.asarray(target)
    return x, lambda pair: _two_class(x, y, pair) + (None, None)
  if name == 'fashion_mnist':
    xtr, ytr = (np.asarray(a) for a in data.load('fashion_mnist', 'train'))
    xte, yte = (np.asarray(a) for a in data.load('fashion_mnist', 'test'))
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return xtr, lambda pair: _two_class(xtr, ytr, pair) + _two_class(xte, yte, pair)
  if name == 'gaussian2d':
    s = cfg.gaussian2d
    n = s.n_train + s.n_val
    pool = _gaussians(n, cfg.seed)
    test = _gaussians(s.n_test, cfg.seed + 1)
    return pool[0], lambda pair: pool + test
  raise ValueError(f'Unknown dataset {name!r}; expected one of {DATASETS}.')


def _r(a, digits: int = 5) -> list:
  """A float array as a JSON list rounded to ``digits`` decimals (keeps the file small)."""
  return np.round(np.asarray(a, np.float64), digits).tolist()


def rbf_gamma(spec, pool: np.ndarray) -> float:
  """``gamma``: a number, or ``'scale'`` = ``1 / (d var(pool))`` (scikit-learn's rule)."""
  if spec == 'scale':
    return float(1.0 / (pool.shape[1] * pool.var()))
  return float(spec)


# -------------------------------------------------------------------------- scoring


@functools.partial(jax.jit, static_argnames=('kernel',))
def _retrained_scores(x, y, points, weights, yc, x_val, y_val, x_test, y_test, C, gamma, tol,
                      *, kernel):
  """For each attack point in ``points`` [T, d] with sample weight ``weights`` [T] (0: the
  clean SVM): the SVM retrained exactly on ``D u {(point, yc)}``, its validation hinge loss
  and validation / test errors ([T] each; one vmapped program)."""
  ya = jnp.concatenate([y, jnp.asarray(yc, y.dtype)[None]])

  def one(p, wc):
    xa = jnp.concatenate([x, p[None]], 0)
    weight = jnp.ones((xa.shape[0],), xa.dtype).at[-1].set(wc)
    sol = learners.svm_dual(xa, ya, C=C, tol=tol, kernel=kernel, gamma=gamma,
                            sample_weight=weight)
    fv = learners.svm_decision(sol.alpha, sol.b, xa, ya, x_val, kernel=kernel, gamma=gamma)
    ft = learners.svm_decision(sol.alpha, sol.b, xa, ya, x_test, kernel=kernel, gamma=gamma)
    sv = 2.0 * y_val.astype(fv.dtype) - 1.0
    return (jnp.mean(jax.nn.relu(1.0 - sv * fv)),
            jnp.mean((fv > 0).astype(jnp.int32) != y_val),
            jnp.mean((ft > 0).astype(jnp.int32) != y_test))
  return jax.vmap(one)(points, weights)


# ------------------------------------------------------------------------------ run


def _draws(name, cfg, pair, loader, key):
  """``runs`` train / validation / test draws of one pair."""
  s = cfg[name]
  n = s.get('n_train', cfg.n_train)
  x, y, xt, yt = loader(pair)
  out = []
  for r in range(s.get('runs', cfg.runs)):
    k = jax.random.fold_in(jax.random.fold_in(key, pair[0] * 10 + pair[1]), r)
    perm = np.asarray(jax.random.permutation(k, len(y)))
    tr, va = perm[:n], perm[n:n + s.n_val]
    if xt is None:
      te_x, te_y = x[perm[n + s.n_val:]], y[perm[n + s.n_val:]]
    else:
      te = np.arange(len(yt))
      if s.n_test:
        te = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(k, 1),
                                                       len(yt)))[:s.n_test])
      te_x, te_y = xt[te], yt[te]
    out.append((k, x[tr], y[tr], x[va], y[va], te_x, te_y))
  return out


def _surface(cfg, kernel, C, gamma, draw, yc, bounds):
  """Validation hinge loss and error of the SVM retrained with the attack point at each
  node of a ``grid x grid`` lattice over ``bounds^2`` (the paper's Figure 1 colours)."""
  _, x, y, xv, yv, xt, yt = draw
  g = np.linspace(bounds[0], bounds[1], cfg.gaussian2d.grid, dtype=np.float32)
  hinge, verr = [], []
  for gy in g:                       # one grid row per call: one compiled program
    row = np.stack([g, np.full_like(g, gy)], 1)
    h, e, _ = _retrained_scores(x, y, row, np.ones(len(g), np.float32), yc, xv, yv, xt, yt,
                                C, gamma, cfg.tol, kernel=kernel)
    hinge.append(np.asarray(h))
    verr.append(np.asarray(e))
  return g, np.stack(hinge), np.stack(verr)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  key = jax.random.key(cfg.seed)
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common.device_info(), 'gammas': {}, 'curves': [], 'surfaces': {}}
  for d in cfg.datasets:
    if d not in DATASETS:
      raise ValueError(f'Unknown dataset {d!r}; expected one of {DATASETS}.')
  jobs = [(d, pair, kern, C) for d in cfg.datasets for pair in cfg[d].pairs
          for kern in cfg.kernels for C in cfg.Cs]
  bar = progress_lib.Progress(NAME, len(jobs), unit='pair x kernel')
  for d in cfg.datasets:
    s = cfg[d]
    pool, loader = load(d, cfg)
    gamma = rbf_gamma(s.rbf_gamma, pool)
    results['gammas'][d] = gamma
    dkey = jax.random.fold_in(key, DATASETS.index(d))
    draws = {tuple(p): _draws(d, cfg, tuple(p), loader, dkey) for p in s.pairs}
    idx = sorted(set(range(0, s.steps + 1, cfg.eval_every)) | {s.steps})
    for kernel, C in itertools.product(cfg.kernels, cfg.Cs):
      gam = gamma if kernel == 'rbf' else None
      atk = poisoning.svm_poisoning(num_points=1, C=C, step_size=s.step_size,
                                    num_steps=s.steps, bounds=tuple(s.bounds), tol=cfg.tol,
                                    kernel=kernel, gamma=gam)
      for pair in s.pairs:
        t0 = time.time()
        rows = {'val_hinge': [], 'val_error': [], 'test_error': [], 'clean_val_error': [],
                'clean_test_error': [], 'retrained_val_hinge': []}
        for draw in draws[tuple(pair)]:
          k, x, y, xv, yv, xt, yt = draw
          out = atk(jnp.asarray(x), jnp.asarray(y), k, x_val=jnp.asarray(xv),
                    y_val=jnp.asarray(yv))
          path = np.asarray(out.info['path'][0])
          yc = int(out.y[-1])
          # row 0: the clean SVM (the attack point at weight 0), then the path's points
          pts = np.concatenate([path[:1], path[idx]])
          wts = np.concatenate([[0.0], np.ones(len(idx))]).astype(np.float32)
          hinge, verr, terr = (np.asarray(a) for a in _retrained_scores(
              x, y, pts, wts, yc, xv, yv, xt, yt, C, gam or 0.0, cfg.tol, kernel=kernel))
          cv, ct = verr[0], terr[0]
          hinge, verr, terr = hinge[1:], verr[1:], terr[1:]
          rows['val_hinge'].append(np.asarray(out.info['val_loss'][0]).tolist())
          rows['retrained_val_hinge'].append(np.asarray(hinge).tolist())
          rows['val_error'].append(np.asarray(verr).tolist())
          rows['test_error'].append(np.asarray(terr).tolist())
          rows['clean_val_error'].append(float(cv))
          rows['clean_test_error'].append(float(ct))
          if (d == 'gaussian2d' and C == cfg.Cs[0]
              and d not in results['surfaces'].get(kernel, {})):
            g, hs, es = _surface(cfg, kernel, C, gam or 0.0, draw, yc, tuple(s.bounds))
            end = path[-1]
            near = (np.abs(g[None, :] - end[0]) <= 2 * (g[1] - g[0]))  # 5x5 nodes around
            near_y = (np.abs(g[:, None] - end[1]) <= 2 * (g[1] - g[0]))
            local = hs[near_y[:, 0]][:, near[0]]
            results['surfaces'].setdefault(kernel, {})[d] = {
                'grid': _r(g), 'val_hinge': _r(hs), 'val_error': _r(es),
                'path': _r(path), 'train_x': _r(x), 'train_y': y.tolist(),
                'attack_label': yc, 'grid_max_val_hinge': float(hs.max()),
                'local_grid_max_val_hinge': float(local.max()) if local.size else None,
                'final_val_hinge': float(np.asarray(out.info['val_loss'][0])[-1])}
        e = {k2: np.asarray(v) for k2, v in rows.items()}
        _, x, y, xv, yv, xt, yt = draws[tuple(pair)][0]
        te, vh = e['test_error'].mean(0), e['val_hinge'].mean(0)
        entry = {'dataset': d, 'pair': list(pair), 'kernel': kernel, 'gamma': gam, 'C': C,
                 'n_train': int(len(y)), 'n_val': int(len(yv)),
                 'n_test': int(len(yt)), 'n_features': int(x.shape[1]), 'steps': s.steps,
                 'step_size': s.step_size, 'iterations': idx,
                 'val_hinge': _r(vh),
                 'retrained_val_hinge': _r(e['retrained_val_hinge'].mean(0)),
                 'val_error': _r(e['val_error'].mean(0)),
                 'test_error': _r(te),
                 'test_error_std': _r(e['test_error'].std(0)),
                 'clean_val_error': float(e['clean_val_error'].mean()),
                 'clean_test_error': float(e['clean_test_error'].mean()),
                 'runs': {k2: _r(v) for k2, v in e.items() if k2 != 'val_hinge'},
                 'seconds': time.time() - t0}
        results['curves'].append(entry)
        bar.update(extra=f'{d} {tuple(pair)} {kernel} C={C:g}: test error clean '
                   f'{e["clean_test_error"].mean():.3f} -> start {te[0]:.3f} -> end {te[-1]:.3f}')
        dc.log(f'{NAME}: {d} {tuple(pair)} {kernel} C={C:g}: val hinge {vh[0]:.3f} -> {vh[-1]:.3f}, '
               f'test error {te[0]:.3f} -> {te[-1]:.3f} ({time.time() - t0:.1f} s)')
  results['backend'] = jax.default_backend()
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  try:
    render_plots(results, os.path.join(workdir, f'{NAME}.png'))
  except Exception as e:  # plotting must never lose the numbers  pylint: disable=broad-except
    dc.log(f'{NAME}: plot failed: {e!r}')
  return results


# --------------------------------------------------------------------------- render


def render_markdown(r: dict) -> str:
  title = dc.heading('Biggio et al. (2012) poisoning of linear and RBF SVMs, one point',
                     r, NAME)
  intro = ('One attack point (a flipped copy of a training point) moved by gradient ascent '
           'of the validation hinge loss through the SVM\'s KKT conditions; C = 1 is the '
           'paper\'s setting, a larger C the control (one point\'s weight alpha_c <= C: its '
           'influence on an RBF SVM, k <= 1, is bounded by C; on a linear one it grows with '
           f'|x_c|); mean over {r["config"]["runs"]} train / validation draws (gaussian2d: '
           'one). Errors are those of the SVM retrained on the training set plus the attack '
           'point at that iteration. RBF gamma per data set: '
           + ', '.join(f'{d} {g:.4g}' for d, g in r['gammas'].items()) + '.')
  rows = []
  for c in r['curves']:
    te = np.asarray(c['test_error'])
    rows.append([c['dataset'], '/'.join(map(str, c['pair'])), c['kernel'], f"{c['C']:g}",
                 f"{c['n_train']}/{c['n_val']}/{c['n_test']}",
                 dc.fmt(c['clean_test_error']), dc.fmt(float(te[0])),
                 dc.fmt(float(te[-1])), dc.fmt(float(te.max())),
                 f"{c['val_hinge'][0]:.3f} -> {c['val_hinge'][-1]:.3f}",
                 f"{c['iterations'][-1]} x {c['step_size']:g}"])
  lines = [title, '', intro, '']
  lines += common.md_table(
      ['data', 'pair', 'kernel', 'C', 'train/val/test', 'clean test error',
       'test error, flipped copy (it. 0)', 'test error, last iteration', 'max along path',
       'validation hinge, first -> last', 'steps x size'], rows) + ['']
  surf = r.get('surfaces', {})
  if surf:
    lines += ['Two-Gaussian problem (the paper\'s Figure 1): the validation hinge loss of the '
              f'SVM (C = {r["config"]["Cs"][0]:g}) retrained with the attack point at each '
              'node of a grid over the box, against where the gradient ascent ended.', '']
    lines += common.md_table(
        ['kernel', 'grid', 'grid max', 'grid max within 2 nodes of the end',
         'attack\'s last point'],
        [[kern, f"{len(v['grid'])}x{len(v['grid'])}", f"{v['grid_max_val_hinge']:.3f}",
          common.num(v['local_grid_max_val_hinge']), f"{v['final_val_hinge']:.3f}"]
         for kern, sd in surf.items() for v in sd.values()]) + ['']
  lines += [f'![svm poisoning]({NAME}.png)', '']
  return '\n'.join(lines)


def render_plots(r: dict, path: str) -> None:
  """Validation hinge and test error against the iteration (linear vs RBF, mean over the
  pairs of each data set), and the two-Gaussian validation-loss surfaces with the paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  datasets = list(dict.fromkeys(c['dataset'] for c in r['curves']))
  surf = [(k, v) for k, sd in r.get('surfaces', {}).items() for v in sd.values()]
  ncol = max(len(datasets), len(surf), 1)
  fig, axes = plt.subplots(3, ncol, figsize=(4.5 * ncol, 11), squeeze=False)
  for j, d in enumerate(datasets):
    combos = dict.fromkeys((c['kernel'], c['C']) for c in r['curves'] if c['dataset'] == d)
    for kern, C in combos:
      cs = [c for c in r['curves']
            if c['dataset'] == d and c['kernel'] == kern and c['C'] == C]
      style = '-' if kern == 'linear' else '--'
      clean = np.mean([c['clean_test_error'] for c in cs])
      h = np.mean([c['val_hinge'] for c in cs], 0)
      axes[0, j].plot(np.arange(len(h)), h, style, label=f'{kern}, C={C:g}')
      axes[1, j].plot(cs[0]['iterations'], np.mean([c['test_error'] for c in cs], 0),
                      style, label=f'{kern}, C={C:g} (clean {clean:.3f})')
    axes[0, j].set_title(f'{d}: validation hinge loss (mean over pairs)')
    axes[1, j].set_title(f'{d}: test error (retrained)')
    for i in (0, 1):
      axes[i, j].set_xlabel('iteration')
      axes[i, j].grid(alpha=0.3)
      axes[i, j].legend(fontsize=7)
  for j in range(ncol):
    axes[2, j].axis('off')
  for j, (kern, v) in enumerate(surf):
    ax = axes[2, j]
    ax.axis('on')
    g = np.asarray(v['grid'])
    im = ax.contourf(g, g, np.asarray(v['val_hinge']), levels=20, cmap='viridis')
    fig.colorbar(im, ax=ax)
    tx, ty = np.asarray(v['train_x']), np.asarray(v['train_y'])
    ax.scatter(tx[:, 0], tx[:, 1], c=ty, cmap='coolwarm', s=10, edgecolors='k')
    p = np.asarray(v['path'])
    ax.plot(p[:, 0], p[:, 1], 'w-', lw=1.5)
    ax.plot(p[-1, 0], p[-1, 1], 'w*', ms=10)
    ax.set_title(f'two Gaussians, {kern}: val. hinge surface, path')
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path + '.tmp.png', dpi=100)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)
