r"""Objective vs output perturbation (Chaudhuri, Monteleoni, Sarwate 2011): the
privacy-utility curve of regularised logistic regression on breast cancer and digits.

    python -m experiments.run --config=experiments/configs/dp_erm.py --workdir=docs/results  # full run (a few minutes)
    python -m experiments.run --config=experiments/configs/dp_erm.py:smoke --workdir=/tmp/s

Records are the library's standardised features (standardisation statistics are treated
as public), with a constant bias feature appended and every record scaled into the unit
l2 ball (a per-record map). Binary breast cancer is one eps-DP classifier; the 10-class
digits is one-vs-rest with eps / 10 per class (one record enters every class' problem).
Each (method, eps) is repeated ``reps`` times with fresh noise; the table shows the mean
and standard deviation of test accuracy next to the non-private ERM optimum. CMS 2011's
finding, which this run checks, is that objective perturbation dominates output
perturbation at every eps.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsec import data
from jaxsec import io as jio
from jaxsec.privacy import perturbation as pt

NAME = 'dp_erm'


_METHODS = {'objective': pt.objective_perturbation, 'output': pt.output_perturbation}


def _fit(method, x, y, key, num_classes, eps, lam, loss):
  if num_classes == 2:
    yb = jnp.where(y == 1, 1.0, -1.0)
    w = method(x, yb, key, eps=eps, regularization=lam, loss=loss).weights
    return lambda xx: (xx @ w > 0).astype(jnp.int32)
  w, _ = pt.one_vs_rest(method, x, y, key, num_classes=num_classes, eps=eps,
                        regularization=lam, loss=loss)
  return lambda xx: jnp.argmax(xx @ w, axis=1)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  out = {'name': NAME, 'variant': c.variant, 'loss': c.loss, 'reps': c.reps,
         'datasets': {}, 'config': c.to_dict()}
  key = jax.random.key(c.seed)
  for di, ds in enumerate(c.datasets):
    t0 = time.time()
    xtr, ytr = data.load(ds, 'train')
    xte, yte = data.load(ds, 'test')
    k = int(max(ytr.max(), yte.max())) + 1
    xtr, _ = pt.prepare_erm_data(xtr, np.zeros(len(ytr), np.int32))
    xte, _ = pt.prepare_erm_data(xte, np.zeros(len(yte), np.int32))
    ytr, yte = jnp.asarray(ytr, jnp.int32), jnp.asarray(yte, jnp.int32)
    lam = c.regularization[ds]
    # non-private optimum of the same objective
    if k == 2:
      base = pt.erm(xtr, jnp.where(ytr == 1, 1.0, -1.0), regularization=lam, loss=c.loss)
      pred = (xte @ base.weights > 0).astype(jnp.int32)
    else:
      ws = [pt.erm(xtr, jnp.where(ytr == j, 1.0, -1.0), regularization=lam,
                   loss=c.loss).weights for j in range(k)]
      pred = jnp.argmax(xte @ jnp.stack(ws, 1), axis=1)
    nonpriv = float(jnp.mean(pred == yte))
    rows = []
    for mi, m in enumerate(c.methods):
      for ei, eps in enumerate(c.epsilons):
        accs = []
        for r in range(c.reps):
          kk = jax.random.fold_in(key, ((di * 10 + mi) * 100 + ei) * 1000 + r)
          predict = _fit(_METHODS[m], xtr, ytr, kk, k, eps, lam, c.loss)
          accs.append(float(jnp.mean(predict(xte) == yte)))
        rows.append({'method': m, 'epsilon': eps, 'mean_accuracy': float(np.mean(accs)),
                     'std_accuracy': float(np.std(accs)), 'accuracies': accs})
        print(ds, m, eps, f'{np.mean(accs):.3f} +- {np.std(accs):.3f}', flush=True)
    out['datasets'][ds] = {'num_train': int(xtr.shape[0]), 'num_test': int(xte.shape[0]),
                           'dim': int(xtr.shape[1]), 'num_classes': k,
                           'regularization': lam, 'nonprivate_accuracy': nonpriv,
                           'rows': rows, 'seconds': time.time() - t0}
  jio.write_json_atomic(os.path.join(workdir, NAME + '.json'), out)
  return out


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  lines = [f"## Objective vs output perturbation (CMS 2011), {r['loss']} regression", '',
           f"Mean +- std test accuracy over {r['reps']} noise draws; eps-DP (delta = 0) "
           'under replace-one adjacency.', '']
  for ds, d in r['datasets'].items():
    eps = sorted({x['epsilon'] for x in d['rows']})
    lines += [f"**{ds}** (n = {d['num_train']}, d = {d['dim']} incl. bias, "
              f"{d['num_classes']} classes, Lambda = {d['regularization']:g}; non-private "
              f"{100 * d['nonprivate_accuracy']:.1f}%)", '',
              '| method | ' + ' | '.join(f'eps={e:g}' for e in eps) + ' |',
              '|---|' + '---|' * len(eps)]
    for m in dict.fromkeys(x['method'] for x in d['rows']):
      cells = []
      for e in eps:
        x = next(x for x in d['rows'] if x['method'] == m and x['epsilon'] == e)
        cells.append(f"{100 * x['mean_accuracy']:.1f} +- {100 * x['std_accuracy']:.1f}%")
      lines.append(f'| {m} perturbation | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return '\n'.join(lines)
