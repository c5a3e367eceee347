r"""Gradient-descent evasion with and without the mimicry term (Biggio et al., ECML PKDD 2013):
evasion rate against the L1 budget ``d_max`` on scikit-learn's digits, "3" (malicious) vs
"7" (benign), for a linear SVM, two RBF SVMs and an MLP.

    python -m experiments.run --config=experiments/configs/evasion_mimicry.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/evasion_mimicry.py:smoke --workdir=/tmp/s

The paper's MNIST "3 vs 7" setting on scikit-learn's 8x8 digits (64 pixels scaled to [0, 1];
the 3s are the malicious class 1, the 7s the benign class 0), split in half (train / test)
with the config's seed. Perfect knowledge: the attack descends the discriminant of the
classifier it is scored on, from every malicious test digit, with the density term over the
benign training digits (Gaussian kernel, bandwidth ``h``). Classifiers: a linear SVM
(``jaxsec.attacks.poisoning.learners.svm_dual``, the SMO dual solver), RBF SVMs
(scikit-learn ``SVC``, exported to arrays: ``mimicry.svm_decision_fn``) with
``gamma='scale'`` and a narrow ``gamma`` (a discriminant that is flat away from its support
vectors, the case for which the paper argues the mimicry term), and an MLP (the logit
margin). For each classifier and each ``lam`` the ``d_max`` grid is one vmapped program.

Reported per classifier, ``lam`` and ``d_max``: the evasion rate (the fraction of malicious
test digits classified benign at ``x_adv``), the mean kernel density at ``x_adv``, and how
much ``x_adv`` looks like a 7: the fraction that a 5-nearest-neighbour classifier of all ten
digits (fitted on the training half of the full data set, independent of the attacked
model) labels "7", and the mean L1 distance to the nearest benign training digit.
Deviations: digits instead of MNIST (64 instead of 784 pixels, so ``d_max`` is on another
scale); ``lam`` is chosen per classifier relative to the scale of its discriminant; only
the perfect-knowledge setting (no surrogate / limited-knowledge attacker).
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as common_lib
from experiments import defense_common as dc
from jaxsec import io as jio
from jaxsec import models
from jaxsec import progress as progress_lib
from jaxsec.attacks.evasion import mimicry
from jaxsec.attacks.poisoning import learners

NAME = 'evasion_mimicry'


def load(seed: int, n_features_check: int = 64):
  """Digits 3 (label 1) and 7 (label 0) in [0, 1], halved into train / test; and all ten
  classes of the same split (for the look-alike judge). Returns a dict of arrays."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  data, target = load_digits(return_X_y=True)
  x = (np.asarray(data) / 16.0).astype(np.float32)
  target = np.asarray(target)
  assert x.shape[1] == n_features_check
  perm = np.random.default_rng(seed).permutation(x.shape[0])
  half = x.shape[0] // 2
  tr, te = perm[:half], perm[half:]

  def pick(idx):
    m = (target[idx] == 3) | (target[idx] == 7)
    return x[idx][m], (target[idx][m] == 3).astype(np.int32)
  xtr, ytr = pick(tr)
  xte, yte = pick(te)
  return {'x_train': xtr, 'y_train': ytr, 'x_test': xte, 'y_test': yte,
          'x_all_train': x[tr], 'y_all_train': target[tr]}


def classifiers(cfg, data: dict, key: jax.Array) -> dict:
  """``name -> (logits_fn, test accuracy, lam grid)``."""
  from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
  xtr, ytr = data['x_train'], data['y_train']
  xte, yte = data['x_test'], data['y_test']
  out: dict[str, Any] = {}
  sol = jax.jit(lambda a, b: learners.svm_dual(a, b, C=cfg.svm_c, tol=1e-4))(
      jnp.asarray(xtr), jnp.asarray(ytr))
  params = sol.params
  lin = lambda x: learners.linear_apply(params, x)  # noqa: E731
  out['linear_svm'] = lin
  for name, gamma in cfg.rbf_gammas.items():
    gam = 1.0 / (xtr.shape[1] * float(xtr.var())) if gamma == 'scale' else float(gamma)
    svc = SVC(C=cfg.svm_c, kernel='rbf', gamma=gam).fit(xtr, ytr)     # scikit-learn's 'scale'
    out[name] = mimicry.svm_decision_fn(svc.support_vectors_, svc.dual_coef_,
                                        svc.intercept_, gamma=gam)
  model = models.get('mlp', num_classes=2, hidden=tuple(cfg.mlp_hidden))
  train_fn = learners.unrolled_gd(                # full-batch heavy-ball GD, one program
      model.apply, lambda k: models.init(model, k, (1, xtr.shape[1])),
      num_steps=cfg.mlp_steps, learning_rate=cfg.mlp_lr, momentum=0.9, remat=False)
  mlp_params = jax.jit(train_fn)(jnp.asarray(xtr), jnp.asarray(ytr),
                                 jax.random.fold_in(key, 1))
  out['mlp'] = models.logits_fn(model, mlp_params)
  res = {}
  for name, fn in out.items():
    z = np.asarray(fn(jnp.asarray(xte)))
    pred = (z[:, 0] > 0) if z.shape[-1] == 1 else np.argmax(z, -1) == 1
    res[name] = (fn, float(np.mean(pred.astype(np.int32) == yte)),
                 tuple(cfg.lams[name]))
  return res


def _judge(data: dict, k: int):
  from sklearn.neighbors import KNeighborsClassifier  # pylint: disable=g-import-not-at-top
  return KNeighborsClassifier(n_neighbors=k).fit(data['x_all_train'], data['y_all_train'])


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  key = jax.random.key(cfg.seed)
  data = load(cfg.seed)
  mal = data['x_test'][data['y_test'] == 1][:cfg.max_attacked or None]
  benign = jnp.asarray(data['x_train'][data['y_train'] == 0])
  judge = _judge(data, cfg.judge_k)
  clfs = classifiers(cfg, data, key)
  xm = jnp.asarray(mal)
  ym = jnp.ones(mal.shape[0], jnp.int32)
  grid = jnp.asarray(cfg.d_max, jnp.float32)
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common_lib.device_info(), 'n_attacked': int(mal.shape[0]),
             'n_benign_samples': int(benign.shape[0]),
             'judge_accuracy_on_test_7s_and_3s': float(np.mean(
                 judge.predict(data['x_test']) == np.where(data['y_test'] == 1, 3, 7))),
             'classifiers': {}}
  bar = progress_lib.Progress(NAME, len(clfs), unit='classifier')
  for name, (fn, acc, lams) in clfs.items():
    entry = {'test_accuracy': acc, 'lams': {}}

    def one(lam, dm, fn=fn):
      return mimicry.mimicry_evasion(
          d_max=dm, norm='l1', lam=lam, bandwidth=cfg.bandwidth, target_samples=benign,
          step_size=cfg.step_size, max_steps=cfg.max_steps, tol=cfg.tol)(fn, xm, ym)
    t0 = time.time()                     # the (lam, d_max) grid: one program per classifier
    out = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))(
        jnp.asarray(lams, jnp.float32), grid)
    xa_all = np.asarray(out.x_adv)
    sec = time.time() - t0
    for j, lam in enumerate(lams):
      xa = xa_all[j]
      looks7 = [float(np.mean(judge.predict(xa[i]) == 7)) for i in range(xa.shape[0])]
      nn = [float(np.mean(np.min(np.abs(xa[i][:, None] - np.asarray(benign)[None]).sum(-1),
                                 1))) for i in range(xa.shape[0])]
      entry['lams'][str(lam)] = {
          'lam': float(lam), 'd_max': [float(v) for v in cfg.d_max],
          'evasion_rate': np.asarray(out.info['success'][j]).mean(1).tolist(),
          'mean_density': np.asarray(out.info['density'][j]).mean(1).tolist(),
          'mean_discriminant': np.asarray(out.info['discriminant'][j]).mean(1).tolist(),
          'judged_seven': looks7, 'mean_l1_to_nearest_benign': nn,
          'max_l1': np.asarray(out.info['distance'][j]).max(1).tolist(),
          'max_steps_used': int(np.asarray(out.info['steps'][j]).max())}
      dc.log(f'{NAME}: {name} lam={lam}: evasion '
             f'{np.round(entry["lams"][str(lam)]["evasion_rate"], 2).tolist()}')
    entry['seconds'] = sec
    bar.update(extra=f'{name} ({sec:.1f} s)')
    results['classifiers'][name] = entry
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  title = dc.heading('Gradient-descent evasion with mimicry (Biggio et al. 2013): digits 3 '
                     'vs 7', r, NAME)
  intro = (f'scikit-learn digits (8x8, [0, 1]), 3 = malicious vs 7 = benign; '
           f'{r["n_attacked"]} malicious test digits attacked with perfect knowledge, L1 '
           f'budget d_max, Gaussian density over {r["n_benign_samples"]} benign training '
           f'digits (h = {c["bandwidth"]}), step {c["step_size"]}, up to {c["max_steps"]} '
           'steps. Evasion rate = fraction classified benign; "looks like 7" = fraction a '
           f'{c["judge_k"]}-NN ten-digit classifier labels 7 (its accuracy on the test 3s '
           f'and 7s: {dc.fmt(r["judge_accuracy_on_test_7s_and_3s"])}).')
  lines = [title, '', intro, '']
  dm = c['d_max']
  for name, e in r['classifiers'].items():
    lines += [f'**{name}** (test accuracy {dc.fmt(e["test_accuracy"])})', '']
    header = ['lam', 'quantity'] + [f'd_max {v:g}' for v in dm]
    rows = []
    for lam, s in sorted(e['lams'].items(), key=lambda kv: kv[1]['lam']):
      rows.append([lam, 'evasion rate'] + [dc.fmt(v) for v in s['evasion_rate']])
      rows.append([lam, 'looks like 7'] + [dc.fmt(v) for v in s['judged_seven']])
      rows.append([lam, 'mean density'] + [f'{v:.3f}' for v in s['mean_density']])
    lines += common_lib.md_table(header, rows) + ['']
  return '\n'.join(lines)
