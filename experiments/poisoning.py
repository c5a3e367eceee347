r"""Training-data poisoning and sanitisation studies (survey sections 2.3 and 3.1(1)).

    python -m experiments.run --config=experiments/configs/poisoning.py --workdir=docs/results  # full, ~40 min, 2 CPUs
    python -m experiments.run --config=experiments/configs/poisoning.py:smoke --workdir=/tmp/p  # seconds, for tests

Sub-studies (each writes its block of ``<workdir>/poisoning.json`` as soon as it finishes;
a rerun with the same config skips the finished ones):

* ``label_flip`` -- linear SVM on digits (two classes) and breast cancer: test accuracy
  vs. flip fraction, random flips vs. ALFA and the farthest-first / nearest-first flips of
  Xiao et al. (2012, 2015); regularised training (smaller C, noise augmentation) under
  ALFA; each sanitiser's precision / recall and restored accuracy; the Kearns-Li bound.
* ``biggio`` -- Biggio et al. (2012): test error vs. number of injected poison points,
  against flipped copies without optimisation, averaged over random draws of 100 training
  points: on scikit-learn digit pairs (8x8 pixels in [0, 1]), on Fashion-MNIST pairs at the
  paper's 28x28 resolution, and on the same pairs pooled to 7x7.
* ``bilevel`` -- bilevel poisoning of multinomial logistic regression (implicit gradient)
  and of an MLP (unrolled gradient) at 1-10% budget, beside random label noise.
* ``backdoor`` -- BadNets on Fashion-MNIST (MLP trained with ``jaxsec.train.fit``):
  attack success and clean accuracy, then each sanitiser's recall and what retraining on
  its kept set restores.
* ``centroid`` -- Kloft-Laskov greedy poisoning of an online centroid detector and the
  empirical-mean drift test; ``signature`` -- Perdisci-style noise injection.

Writes ``poisoning.json`` and ``poisoning.png`` (rendered from the JSON by
:func:`render_plots`); :func:`render_markdown` renders the tables.
"""
from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn import datasets as skd

from experiments import common
from jaxsec import data
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import learners
from jaxsec.defenses.data import sanitize

NAME = 'poisoning'
STUDIES = ('label_flip', 'biggio', 'bilevel', 'backdoor', 'centroid', 'signature')


# ----------------------------------------------------------------------------- helpers


def _digits_pixels():
  x, y = skd.load_digits(return_X_y=True)
  return (x / 16.0).astype(np.float32), y.astype(np.int32)


def _pair(x, y, pair):
  m = (y == pair[0]) | (y == pair[1])
  return x[m], (y[m] == pair[0]).astype(np.int32)


@jax.jit
def _svm_accuracy(x, y, xt, yt, weight, C):
  s = learners.svm_dual(x, y, C=C, tol=1e-4, sample_weight=weight)
  return jnp.mean(((xt @ s.w + s.b) > 0).astype(jnp.int32) == yt)


def _svm_accuracy_fn(C):
  """Test accuracy of the SVM with constant ``C`` trained on ``(x, y)`` (one program for all C)."""
  return lambda x, y, xt, yt, weight=None: float(_svm_accuracy(
      jnp.asarray(x), jnp.asarray(y), jnp.asarray(xt), jnp.asarray(yt),
      jnp.ones(len(y), jnp.float32) if weight is None else jnp.asarray(weight, jnp.float32),
      jnp.asarray(C, jnp.float32)))


def kearns_li_error(beta):
  """Kearns-Li (1993): with a malicious fraction ``beta`` no learner can guarantee error
  below ``beta / (1 - beta)`` (equivalently, error ``eps`` needs ``beta < eps/(1+eps)``)."""
  beta = np.asarray(beta, float)
  return np.where(beta < 1, beta / np.maximum(1 - beta, 1e-12), np.inf)


def _log(msg):
  print(f'[poisoning] {msg}', flush=True)


# -------------------------------------------------------------------------- label flips


def _flip_dataset(name, cfg):
  if name == 'digits':
    xtr, ytr = data.load('digits', 'train')
    xte, yte = data.load('digits', 'test')
    xtr, ytr = _pair(np.asarray(xtr), np.asarray(ytr), cfg.flip_digit_pair)
    xte, yte = _pair(np.asarray(xte), np.asarray(yte), cfg.flip_digit_pair)
  else:
    xtr, ytr = (np.asarray(a) for a in data.load(name, 'train'))
    xte, yte = (np.asarray(a) for a in data.load(name, 'test'))
  return xtr.astype(np.float32), ytr.astype(np.int32), xte.astype(np.float32), yte


def study_label_flip(cfg, key):
  out = {'datasets': {}}
  acc_c = _svm_accuracy_fn(cfg.flip_C)
  acc_reg = _svm_accuracy_fn(cfg.reg_C)
  for name in cfg.flip_datasets:
    t0 = time.time()
    xtr, ytr, xte, yte = _flip_dataset(name, cfg)
    k_split, k_rand, k_noise, k_roni = jax.random.split(jax.random.fold_in(key, len(name)), 4)
    perm = np.asarray(jax.random.permutation(k_split, len(ytr)))
    if cfg.flip_subset:
      perm = perm[:cfg.flip_subset]
    n_trust = int(round(cfg.trusted_fraction * len(perm)))
    xv, yv = xtr[perm[:n_trust]], ytr[perm[:n_trust]]    # defender's trusted validation
    x, y = xtr[perm[n_trust:]], ytr[perm[n_trust:]]
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    rows = []
    for f in cfg.flip_fractions:
      po = poisoning.alfa(fraction=f, C=cfg.flip_C, num_iters=cfg.alfa_iters)(xj, yj)
      y_alfa = po.y
      y_rand = [poisoning.random_label_flip(fraction=f)(xj, yj, k).y
                for k in jax.random.split(jax.random.fold_in(k_rand, int(1000 * f)),
                                          cfg.flip_random_seeds)]
      rand = [acc_c(x, yr, xte, yte) for yr in y_rand]
      # the baselines of Xiao et al. (2012, 2015), against the same SVM
      dist = {o: poisoning.distance_label_flip(fraction=f, order=o, C=cfg.flip_C)(xj, yj).y
              for o in ('farthest', 'nearest')}
      xa, ya = sanitize.noise_augment(xj, y_alfa, k_noise, sigma=cfg.noise_sigma,
                                      copies=cfg.noise_copies)
      rows.append({
          'fraction': f, 'num_flipped': poisoning.num_poison(f, len(y)),
          'random_accuracy': float(np.mean(rand)), 'random_accuracy_std': float(np.std(rand)),
          'alfa_accuracy': acc_c(x, y_alfa, xte, yte),
          'alfa_iterations': int(po.info['iterations']),
          'farthest_first_accuracy': acc_c(x, dist['farthest'], xte, yte),
          'nearest_first_accuracy': acc_c(x, dist['nearest'], xte, yte),
          'alfa_accuracy_reg_C': acc_reg(x, y_alfa, xte, yte),
          'random_accuracy_reg_C': acc_reg(
              x, poisoning.random_label_flip(fraction=f)(xj, yj, k_rand).y, xte, yte),
          'alfa_accuracy_noise_aug': acc_c(xa, ya, xte, yte),
          'kearns_li_error_bound': float(kearns_li_error(f)),
      })
      r = rows[-1]
      _log(f'label_flip {name} f={f}: random {r["random_accuracy"]:.3f} '
           f'ALFA {r["alfa_accuracy"]:.3f} ({r["alfa_iterations"]} it) farthest '
           f'{r["farthest_first_accuracy"]:.3f} nearest {r["nearest_first_accuracy"]:.3f}')
    # sanitisers against ALFA at one budget
    f = cfg.sanitize_flip_fraction
    po = poisoning.alfa(fraction=f, C=cfg.flip_C, num_iters=cfg.alfa_iters)(xj, yj)
    poison = np.asarray(po.info['poison_mask'])
    yp = po.y
    svm_fn = learners.svm_train_fn(C=cfg.flip_C, tol=1e-3)

    def score_fn(p, xx, yy):
      return jnp.mean(((xx @ p['params']['linear']['kernel'][:, 0] +
                        p['params']['linear']['bias'][0]) > 0).astype(jnp.int32) == yy)
    masks = {
        'sphere': sanitize.sphere(xj, yp, num_classes=2, fraction=f),
        'slab': sanitize.slab(xj, yp, num_classes=2, fraction=f),
        'knn': sanitize.knn_label_sanitize(xj, yp, num_classes=2, k=cfg.knn_k,
                                           eta=cfg.knn_eta),
        'roni': sanitize.roni(xj, yp, train_fn=svm_fn, score_fn=score_fn,
                              x_val=jnp.asarray(xv), y_val=jnp.asarray(yv), key=k_roni,
                              base_size=cfg.roni_base, num_trials=cfg.roni_trials),
        'spectral': sanitize.spectral_signatures(xj, yp, num_classes=2, fraction=f),
    }
    san = {'fraction': f, 'poisoned_accuracy': acc_c(x, yp, xte, yte), 'defenses': {}}
    for dname, keep in masks.items():
      keep = np.asarray(keep)
      pr = sanitize.precision_recall(keep, poison)
      pr['restored_accuracy'] = acc_c(x, yp, xte, yte, weight=keep.astype(np.float32))
      san['defenses'][dname] = pr
    relabel = sanitize.knn_relabel(xj, yp, num_classes=2, k=cfg.knn_k, eta=cfg.knn_eta)
    san['defenses']['knn_relabel'] = {
        'restored_accuracy': acc_c(x, relabel, xte, yte),
        'labels_fixed': int(np.sum(np.asarray(relabel == yj) & poison)),
        'labels_broken': int(np.sum(np.asarray(relabel != yj) & ~poison)),
        'num_poison': int(poison.sum())}
    out['datasets'][name] = {'n_train': int(len(y)), 'n_test': int(len(yte)), 'n_trusted': n_trust,
                 'C': cfg.flip_C, 'reg_C': cfg.reg_C, 'curve': rows, 'sanitize': san,
                 'seconds': time.time() - t0}
  return out


# ------------------------------------------------------------------------------ Biggio


def _pool(x, factor):
  """Mean-pools [N, H, W] images by ``factor`` (H, W divisible) and flattens: [N, HW/f^2]."""
  n, h, w = x.shape
  x = x.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
  return x.reshape(n, -1)


def _biggio_setting(name, cfg):
  """``(pairs, n_val, C values, points, steps, step size, loader)`` of one Biggio data set;
  ``loader(pair)`` gives ``(x, y, x_test, y_test)``, ``x_test = None`` when the test points
  come from ``x``."""
  if name == 'digits':
    xall, yall = _digits_pixels()
    return (cfg.biggio_pairs, cfg.biggio_val, cfg.biggio_C, cfg.biggio_points,
            cfg.biggio_steps, cfg.biggio_step_size,
            lambda pair: _pair(xall, yall, pair) + (None, None))
  if name not in ('fashion_mnist', 'fashion_mnist_7x7'):
    raise ValueError(f'Unknown biggio dataset {name!r}; expected digits, fashion_mnist or '
                     'fashion_mnist_7x7.')
  factor = 4 if name.endswith('7x7') else 1
  xtr, ytr = (np.asarray(a) for a in data.load('fashion_mnist', 'train'))
  xte, yte = (np.asarray(a) for a in data.load('fashion_mnist', 'test'))

  def loader(pair):
    x, y = _pair(xtr[..., 0], ytr, pair)
    xt, yt = _pair(xte[..., 0], yte, pair)
    return _pool(x, factor), y, _pool(xt, factor), yt
  cs = cfg.biggio_fmnist_7x7_C if factor > 1 else cfg.biggio_fmnist_C
  return (cfg.biggio_fmnist_pairs, cfg.biggio_fmnist_val, cs, cfg.biggio_fmnist_points,
          cfg.biggio_fmnist_steps, cfg.biggio_fmnist_step_size, loader)


def study_biggio(cfg, key):
  out = {'pairs': [], 'n_train': cfg.biggio_train, 'runs': cfg.biggio_runs,
         'datasets': list(cfg.biggio_datasets)}
  n = cfg.biggio_train
  for dname in cfg.biggio_datasets:
    pairs, n_val, cs, points, steps, step_size, loader = _biggio_setting(dname, cfg)
    src = 0 if dname == 'digits' else 1     # 28x28 and 7x7 share their draws
    runs = {}
    for pair in pairs:
      x, y, xt, yt = loader(pair)
      splits = []
      for r in range(cfg.biggio_runs):        # one train / validation / test draw per run
        k = jax.random.fold_in(jax.random.fold_in(key, src * 100 + pair[0] * 10 + pair[1]), r)
        perm = np.asarray(jax.random.permutation(k, len(y)))
        tr, va = perm[:n], perm[n:n + n_val]
        if xt is None:
          te_x, te_y = x[perm[n + n_val:]], y[perm[n + n_val:]]
        else:
          te = np.arange(len(yt))
          if cfg.biggio_fmnist_test:
            te = np.sort(np.asarray(jax.random.permutation(
                jax.random.fold_in(k, 1), len(yt)))[:cfg.biggio_fmnist_test])
          te_x, te_y = xt[te], yt[te]
        splits.append((k, x[tr], y[tr], x[va], y[va], te_x, te_y))
      runs[pair] = splits
    for C in cs:
      atk = poisoning.svm_poisoning(num_points=points, C=C, step_size=step_size,
                                    num_steps=steps, bounds=(0.0, 1.0))
      base = poisoning.flipped_copies(fraction=points / n)
      acc = _svm_accuracy_fn(C)
      for pair in pairs:
        t0 = time.time()
        errors, base_errors, hinge0 = [], [], None
        for k, xtr, ytr, xva, yva, te_x, te_y in runs[pair]:
          out_p = atk(jnp.asarray(xtr), jnp.asarray(ytr), k, x_val=jnp.asarray(xva),
                      y_val=jnp.asarray(yva))
          errors.append([1.0 - acc(out_p.x[:n + i], out_p.y[:n + i], te_x, te_y)
                         for i in range(points + 1)])
          xb, yb, _ = base(jnp.asarray(xtr), jnp.asarray(ytr), k)
          base_errors.append([1.0 - acc(xb[:n + i], yb[:n + i], te_x, te_y)
                              for i in range(points + 1)])
          if hinge0 is None:
            hinge0 = np.asarray(out_p.info['val_loss'][0]).tolist()
        e = np.asarray(errors)
        out['pairs'].append({
            'dataset': dname, 'pair': list(pair), 'C': C, 'n_features': int(xtr.shape[1]),
            'n_val': int(len(yva)), 'n_test': int(len(te_y)), 'steps': steps,
            'step_size': step_size,
            'test_error': e.mean(0).tolist(), 'test_error_std': e.std(0).tolist(),
            'test_error_runs': e.tolist(),
            'flipped_copies_test_error': np.mean(base_errors, 0).tolist(),
            'val_hinge_first_point': hinge0, 'seconds': time.time() - t0})
        _log(f'biggio {dname} {pair} C={C:g} ({len(errors)} runs): error {e[:, 0].mean():.3f}'
             f' -> 1 pt {e[:, min(1, points)].mean():.3f} -> {points} pts '
             f'{e[:, -1].mean():.3f} (flipped copies {np.mean(base_errors, 0)[-1]:.3f})')
  return out


# ----------------------------------------------------------------------------- bilevel


def _mlp(cfg):
  model = models.get('mlp', num_classes=10, hidden=(cfg.mlp_hidden,))
  init_fn = lambda k: models.init(model, k, (1, 64))
  train_fn = learners.unrolled_gd(model.apply, init_fn, num_steps=cfg.mlp_steps,
                                  learning_rate=cfg.mlp_lr, momentum=cfg.mlp_momentum)
  return model.apply, train_fn


def _mean_test_accuracy(apply_fn, train_fn, xte, yte, keys):
  """Returns `(x, y) -> mean test accuracy` over one training run per key."""
  @jax.jit
  def test_acc(xx, yy, k):
    p = train_fn(xx, yy, k)
    return jnp.mean(jnp.argmax(apply_fn(p, xte), -1) == yte)

  return lambda xx, yy: float(np.mean([float(test_acc(xx, yy, k)) for k in keys]))


def study_bilevel(cfg, key):
  x, y = _digits_pixels()
  perm = np.asarray(jax.random.permutation(key, len(y)))
  tr = perm[:cfg.bilevel_train]
  va = perm[cfg.bilevel_train:cfg.bilevel_train + cfg.bilevel_val]
  te = perm[cfg.bilevel_train + cfg.bilevel_val:]
  xtr, ytr = jnp.asarray(x[tr]), jnp.asarray(y[tr])
  xv, yv = jnp.asarray(x[va]), jnp.asarray(y[va])
  xte, yte = jnp.asarray(x[te]), jnp.asarray(y[te])
  mlp_apply, mlp_train = _mlp(cfg)
  learners_ = {
      'logreg': (learners.linear_apply,
                 learners.logreg_train_fn(num_classes=10, l2=cfg.logreg_l2,
                                          num_steps=cfg.logreg_newton_steps, implicit=True),
                 1),
      'mlp': (mlp_apply, mlp_train, cfg.mlp_eval_seeds),
  }
  out = {'n_train': len(tr), 'n_val': len(va), 'n_test': len(te), 'steps': cfg.bilevel_steps,
         'step_size': cfg.bilevel_step_size, 'learners': {}}
  for lname in cfg.bilevel_learners:
    apply_fn, train_fn, seeds = learners_[lname]
    evaluate = _mean_test_accuracy(    # keys apart from the attack's
        apply_fn, train_fn, xte, yte, jax.random.split(jax.random.key(cfg.seed + 123), seeds))

    rows = []
    clean = evaluate(xtr, ytr)
    for b in cfg.bilevel_budgets:
      t0 = time.time()
      k = jax.random.fold_in(key, int(1000 * b))
      atk = poisoning.bilevel_poisoning(
          train_fn=train_fn, apply_fn=apply_fn, fraction=b, num_classes=10,
          num_steps=cfg.bilevel_steps, step_size=cfg.bilevel_step_size, bounds=(0.0, 1.0))
      po = atk(xtr, ytr, k, x_val=xv, y_val=yv)
      xc, yc, _ = poisoning.flipped_copies(fraction=b, num_classes=10)(
          xtr, ytr, jax.random.split(k)[0])
      yr = poisoning.random_label_flip(fraction=b, num_classes=10)(xtr, ytr, k).y
      rows.append({
          'budget': b, 'num_poison': poisoning.num_poison(b, len(tr)),
          'bilevel_accuracy': evaluate(po.x, po.y),
          'flipped_copies_accuracy': evaluate(xc, yc),
          'random_flip_accuracy': evaluate(xtr, yr),
          'val_loss_start': float(po.info['objective'][0]),
          'val_loss_best': float(np.max(np.asarray(po.info['objective']))),
          'kearns_li_error_bound': float(kearns_li_error(
              poisoning.num_poison(b, len(tr)) / (len(tr) + poisoning.num_poison(b, len(tr))))),
          'seconds': time.time() - t0})
      _log(f'bilevel {lname} budget {b}: bilevel {rows[-1]["bilevel_accuracy"]:.3f} '
           f'copies {rows[-1]["flipped_copies_accuracy"]:.3f} '
           f'random {rows[-1]["random_flip_accuracy"]:.3f} (clean {clean:.3f})')
    out['learners'][lname] = {'clean_accuracy': clean, 'rows': rows,
                              'gradient': 'implicit' if lname == 'logreg' else 'unrolled'}
  return out


# ---------------------------------------------------------------------------- backdoor


def _backdoor_data(cfg, key):
  if cfg.backdoor_dataset == 'digits_images':
    x, y = _digits_pixels()
    x = x.reshape((-1, 8, 8, 1))
    perm = np.asarray(jax.random.permutation(key, len(y)))
    tr, te = perm[:cfg.backdoor_train], perm[cfg.backdoor_train:
                                             cfg.backdoor_train + cfg.backdoor_test]
    return x[tr], y[tr], x[te], y[te]
  xtr, ytr = data.load(cfg.backdoor_dataset, 'train')
  xte, yte = data.load(cfg.backdoor_dataset, 'test')
  k1, k2 = jax.random.split(key)
  a = np.asarray(jax.random.permutation(k1, len(ytr)))[:cfg.backdoor_train]
  b = np.asarray(jax.random.permutation(k2, len(yte)))[:cfg.backdoor_test]
  return (np.asarray(xtr)[a], np.asarray(ytr)[a].astype(np.int32), np.asarray(xte)[b],
          np.asarray(yte)[b].astype(np.int32))


def study_backdoor(cfg, key):
  xtr, ytr, xte, yte = _backdoor_data(cfg, key)
  model = models.get('mlp', num_classes=10, hidden=(cfg.backdoor_hidden,))
  k_init, k_fit, k_atk = jax.random.split(jax.random.fold_in(key, 7), 3)
  params0 = models.init(model, k_init, (1,) + xtr.shape[1:])
  tgt = cfg.backdoor_target
  other = yte != tgt

  def fit(x, y, keep=None):
    idx = None if keep is None else np.flatnonzero(np.asarray(keep))
    return train.fit(model.apply, params0, np.asarray(x), np.asarray(y),
                     optimizer=optax.adam(cfg.backdoor_lr), key=k_fit,
                     batch_size=cfg.backdoor_batch, num_epochs=cfg.backdoor_epochs,
                     indices=idx, num_classes=10).params

  def measure(params, trigger):
    clean = train.evaluate(model.apply, params, xte, yte)
    xt = np.asarray(trigger(jnp.asarray(xte[other])))
    pred = np.argmax(np.asarray(train.predict_logits(model.apply, params, xt)), -1)
    return clean, float(np.mean(pred == tgt))

  def features(params, x):
    _, st = model.apply(params, jnp.asarray(x), capture_intermediates=True,
                        mutable=['intermediates'])
    return jax.nn.relu(st['intermediates']['dense0']['__call__'][0])

  t0 = time.time()
  p_clean = fit(xtr, ytr)
  # The trigger badnets stamps (its defaults), applied at test time.
  trigger = functools.partial(poisoning.apply_trigger, size=cfg.backdoor_size)
  clean_acc, clean_succ = measure(p_clean, trigger)
  out = {'dataset': cfg.backdoor_dataset, 'n_train': int(len(ytr)), 'n_test': int(len(yte)),
         'model': f'mlp({cfg.backdoor_hidden})', 'epochs': cfg.backdoor_epochs,
         'target': tgt, 'trigger': f'{cfg.backdoor_size}x{cfg.backdoor_size} white patch, '
         'bottom right', 'clean_model': {'clean_accuracy': clean_acc,
                                         'attack_success': clean_succ}, 'rows': []}
  _log(f'backdoor clean model: acc {clean_acc:.3f}, trigger->target {clean_succ:.3f}')
  for f in cfg.backdoor_fractions:
    atk = poisoning.badnets(fraction=f, target_label=tgt, num_classes=10,
                            size=cfg.backdoor_size)
    po = atk(jnp.asarray(xtr), jnp.asarray(ytr), k_atk)
    p = fit(po.x, po.y)
    acc, succ = measure(p, trigger)
    out['rows'].append({'fraction': f, 'clean_accuracy': acc, 'attack_success': succ})
    _log(f'backdoor f={f}: clean acc {acc:.3f}, success {succ:.3f}')
  # sanitisers at one poison rate
  f = cfg.backdoor_sanitize_fraction
  atk = poisoning.badnets(fraction=f, target_label=tgt, num_classes=10,
                          size=cfg.backdoor_size)
  po = atk(jnp.asarray(xtr), jnp.asarray(ytr), k_atk)
  poison = np.asarray(po.info['poison_mask'])
  p = fit(po.x, po.y)
  acc, succ = measure(p, trigger)
  feats = features(p, po.x)
  # Tran et al. remove 1.5 eps per class, eps the poisoned share of a class: the defender's
  # bound here is the poison count over the smallest possible poisoned class (all poison in
  # the class with the fewest clean points), used for every class.
  counts = np.bincount(np.asarray(po.y)[~poison], minlength=10)
  eps_class = int(poison.sum()) / (counts.min() + int(poison.sum()))
  remove = min(0.95, 1.5 * eps_class)
  masks = {
      'sphere': sanitize.sphere(po.x, po.y, num_classes=10, fraction=remove),
      'slab': sanitize.slab(po.x, po.y, num_classes=10, fraction=remove),
      'knn': sanitize.knn_label_sanitize(po.x, po.y, num_classes=10, k=10, eta=0.5),
      'spectral_signatures': sanitize.spectral_signatures(feats, po.y, num_classes=10,
                                                          fraction=remove),
      'robust_pca': sanitize.robust_pca(feats, po.y, num_classes=10, fraction=remove,
                                        rank=cfg.backdoor_pca_rank),
  }
  san = {'fraction': f, 'class_contamination_bound': eps_class, 'removal_fraction': remove,
         'poisoned_clean_accuracy': acc,
         'poisoned_attack_success': succ, 'defenses': {}}
  for dname, keep in masks.items():
    keep = np.asarray(keep)
    pr = sanitize.precision_recall(keep, poison)
    pr['clean_accuracy'] = pr['attack_success'] = None
    if cfg.backdoor_retrain:
      pk = fit(po.x, po.y, keep=keep)
      pr['clean_accuracy'], pr['attack_success'] = measure(pk, trigger)
    san['defenses'][dname] = pr
    _log(f'backdoor sanitiser {dname}: recall {pr["recall"]:.3f} precision '
         f'{pr["precision"]:.3f} -> acc {pr["clean_accuracy"]} success '
         f'{pr["attack_success"]}')
  out['sanitize'] = san
  out['seconds'] = time.time() - t0
  return out


# ---------------------------------------------------------------------------- centroid


def study_centroid(cfg, key):
  d, n = cfg.centroid_dim, cfg.centroid_window
  k_tr, k_in, k_mix, k_run = jax.random.split(key, 4)
  xtr = jax.random.normal(k_tr, (n, d))
  st = poisoning.centroid_init(xtr)
  radius = float(np.quantile(np.linalg.norm(np.asarray(xtr - st.center), axis=1), 0.95))
  target = st.center + cfg.centroid_target_radii * radius * jnp.eye(d)[0]
  t = cfg.centroid_points
  out = {'dim': d, 'window': n, 'radius': radius,
         'target_distance_radii': cfg.centroid_target_radii, 'rules': {}}
  checkpoints = sorted({int(i) for i in np.linspace(1, t, 7)})
  for rule in poisoning.centroid.RULES:
    _, info = poisoning.centroid_stream(st, jnp.zeros((t, d)), k_run, radius=radius,
                                        rule=rule, is_attack=jnp.ones((t,), bool),
                                        target=target)
    dist = np.asarray(info['target_distance'])
    disp = (cfg.centroid_target_radii * radius - dist) / radius
    reached = np.flatnonzero(dist <= radius)
    out['rules'][rule] = {
        'points': checkpoints, 'displacement_radii': [float(disp[i - 1]) for i in checkpoints],
        'bound_i_over_n': [i / n for i in checkpoints],
        'points_to_accept_target': int(reached[0]) + 1 if reached.size else None,
        'all_accepted': bool(np.asarray(info['accepted']).all())}
  # mixed traffic, then the empirical-mean test on the stream
  m = cfg.centroid_stream
  mix = []
  for nu in cfg.centroid_mix:
    innocent = jax.random.normal(jax.random.fold_in(k_in, int(100 * nu)), (m, d))
    is_att = jax.random.uniform(jax.random.fold_in(k_mix, int(100 * nu)), (m,)) < nu
    _, info = poisoning.centroid_stream(st, innocent, k_run, radius=radius, rule='average',
                                        is_attack=is_att, target=target)
    stream = jnp.concatenate([xtr, info['sent']])
    keep = np.asarray(sanitize.empirical_mean_test(
        stream, reference_size=n, window=cfg.mean_test_window,
        alpha=cfg.mean_test_alpha))[n:]
    att = np.asarray(is_att)
    dist = np.asarray(info['target_distance'])
    mix.append({'attack_fraction': nu, 'final_displacement_radii':
                float((cfg.centroid_target_radii * radius - dist[-1]) / radius),
                'innocent_false_alarm_rate_end': float(np.mean(
                    np.linalg.norm(np.asarray(innocent[-50:] - info['center'][-1]), axis=1)
                    > radius)),
                'mean_test_recall': float(np.mean(~keep[att])) if att.any() else None,
                'mean_test_false_positive_rate': float(np.mean(~keep[~att]))
                if (~att).any() else None})
  out['mixed'] = mix
  return out


# --------------------------------------------------------------------------- signature


def study_signature(cfg, key):
  v = cfg.sig_vocab
  inv, fake = [0, 1, 2, 3], [4, 5, 6, 7]
  ks = jax.random.split(key, 5)

  def background(k, n):
    x = np.asarray(jax.random.bernoulli(k, cfg.sig_background, (n, v))).astype(np.float32)
    x[:, :8] = 0
    return x
  innoc = background(ks[0], cfg.sig_innocuous)
  worms = background(ks[1], cfg.sig_worms)
  worms[:, inv] = 1
  variants = background(ks[2], 200)          # fresh worm instances (the invariants)
  variants[:, inv] = 1
  fresh = background(ks[3], 500)
  rows = []
  for f in cfg.sig_fractions:
    atk = poisoning.signature_noise_poisoning(fraction=f, invariant_tokens=inv,
                                              fake_tokens=fake)
    xs = atk(jnp.asarray(worms), jnp.ones(len(worms), jnp.int32), ks[4]).x
    sig = poisoning.conjunction_signature(xs, jnp.asarray(innoc), coverage=cfg.sig_coverage)
    tokens = np.flatnonzero(np.asarray(sig)).tolist()
    rows.append({'noise_fraction': f, 'signature_tokens': tokens,
                 'keeps_true_invariants': set(inv) <= set(tokens),
                 'signature_generated': bool(tokens),
                 'variant_detection_rate': float(np.mean(np.asarray(
                     poisoning.signature_matches(sig, jnp.asarray(variants))))),
                 'false_positive_rate': float(np.mean(np.asarray(
                     poisoning.signature_matches(sig, jnp.asarray(fresh)))))})
  return {'vocab': v, 'coverage': cfg.sig_coverage, 'invariants': inv, 'fake': fake,
          'critical_fraction': 1.0 / cfg.sig_coverage - 1.0, 'rows': rows}


# -------------------------------------------------------------------------------- run

_FUNCS = {'label_flip': study_label_flip, 'biggio': study_biggio, 'bilevel': study_bilevel,
          'backdoor': study_backdoor, 'centroid': study_centroid,
          'signature': study_signature}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f'{NAME}.json')
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(), 'studies': {}}
  if os.path.exists(path):
    old = jio.read_json(path)
    new_cfg = jio.json_roundtrip(cfg.to_dict())
    for name, res in old.get('studies', {}).items():   # resume: a study whose own config
      if (name in cfg.studies and old.get('variant') == cfg.variant and      # is unchanged
          study_config(old.get('config', {}), name) == study_config(new_cfg, name)):
        results['studies'][name] = res
  key = jax.random.key(cfg.seed)
  for name in cfg.studies:
    if name not in _FUNCS:
      raise ValueError(f'Unknown study {name!r}; expected one of {STUDIES}.')
    if name in results['studies']:
      _log(f'{name}: done already, skipped')
      continue
    t0 = time.time()
    # each study's key is fixed by its name, so running a subset gives the same numbers
    res = _FUNCS[name](cfg, jax.random.fold_in(key, STUDIES.index(name)))
    res['seconds'] = time.time() - t0
    results['studies'][name] = res
    results['backend'] = jax.default_backend()
    jio.write_json_atomic(path, results)
    _log(f'{name}: {res["seconds"]:.0f}s')
  results = jio.read_json(path)
  try:
    render_plots(results, os.path.join(workdir, f'{NAME}.png'))
  except Exception as e:  # plotting must never lose the numbers  pylint: disable=broad-except
    _log(f'plot failed: {e!r}')
  return results


_STUDY_KEYS = {
    'label_flip': ('flip_', 'alfa_', 'reg_C', 'noise_', 'sanitize_flip', 'knn_', 'roni_',
                   'trusted_'),
    'biggio': ('biggio_',), 'bilevel': ('bilevel_', 'logreg_', 'mlp_'),
    'backdoor': ('backdoor_',), 'centroid': ('centroid_', 'mean_test_'), 'signature': ('sig_',)}


def study_config(config: dict, study: str) -> dict:
  """The part of a config one study depends on (its keys and the seed)."""
  return {k: v for k, v in config.items()
          if k == 'seed' or any(k.startswith(p) for p in _STUDY_KEYS[study])}


# ------------------------------------------------------------------------------ render


def _pct(v):
  return '-' if v is None else f'{100 * v:.1f}%'


def render_markdown(results: dict) -> str:
  s = results.get('studies', {})
  lines = ['## Training-data poisoning (survey 2.3) and sanitisation (3.1(1))', '',
           f"Variant `{results.get('variant')}`; `{common.command(NAME)}`. "
           'Figure: `poisoning.png`.', '']
  table = common.md_table

  def section(title, header, rows):
    return [title, ''] + table(header, rows) + ['']

  if 'label_flip' in s:
    first = next(iter(s['label_flip']['datasets'].values()))
    lines += [f"### Label flipping vs a linear SVM (test accuracy; SVM C={first['C']:g} unless "
              'stated)', '']
    lines += table(
        ['data', 'flipped', 'random', 'farthest-first', 'nearest-first', 'ALFA',
         f'ALFA, SVM C={first["reg_C"]:g}', 'ALFA + noise aug.', 'Kearns-Li error floor'],
        [[f"{name} (n={r['n_train']})", _pct(row['fraction'])]
         + [_pct(row.get(k)) for k in ('random_accuracy', 'farthest_first_accuracy',
                                       'nearest_first_accuracy', 'alfa_accuracy',
                                       'alfa_accuracy_reg_C', 'alfa_accuracy_noise_aug')]
         + [_pct(min(1.0, row['kearns_li_error_bound']))]
         for name, r in s['label_flip']['datasets'].items() for row in r['curve']])
    lines += ['', 'Sanitisers against ALFA (precision / recall of the removed set, '
              'accuracy of the SVM retrained on the kept set):', '']
    rows = []
    for name, r in s['label_flip']['datasets'].items():
      san = r['sanitize']
      for dn, d in san['defenses'].items():
        if dn == 'knn_relabel':
          scored = [f"k-NN relabel (fixed {d['labels_fixed']}/{d['num_poison']}, broke "
                    f"{d['labels_broken']})", '-', '-', '-']
        else:
          scored = [dn, _pct(d['precision']), _pct(d['recall']), d['removed']]
        rows.append([name, _pct(san['fraction']), _pct(san['poisoned_accuracy'])] + scored
                    + [_pct(d['restored_accuracy'])])
    lines += table(['data', 'flipped', 'poisoned acc.', 'defense', 'precision', 'recall',
                    'removed', 'restored acc.'], rows)
    lines.append('')
  if 'biggio' in s:
    b = s['biggio']
    rows = []
    for r in b['pairs']:
      e = r['test_error']
      rows.append([f"{r.get('dataset', 'digits')} (d={r.get('n_features', 64)})",
                   f"{r['pair'][0]} vs {r['pair'][1]}", f"{r['C']:g}",
                   f"{r.get('steps', b.get('steps'))} x {r.get('step_size', b.get('step_size'))}"]
                  + [_pct(e[i]) if i < len(e) else '-' for i in (0, 1, 2, 5)]
                  + [f'{_pct(e[-1])} ({len(e) - 1})',
                     _pct(r['flipped_copies_test_error'][-1])])
    lines += section(f"### Biggio et al. (2012) SVM poisoning: test error vs injected points "
                     f"(n_train={b['n_train']}, mean of {b.get('runs', 1)} runs)",
                     ['data', 'pair', 'C', 'steps x size', '0 pts', '1 pt', '2 pts', '5 pts',
                      'max pts', 'flipped copies, max pts'], rows)
  if 'bilevel' in s:
    b = s['bilevel']
    lines += section(
        '### Bilevel poisoning on digits (10 classes, pixels in [0, 1]): test accuracy',
        ['learner (gradient)', 'clean', 'budget', 'bilevel', 'flipped copies', 'random flips',
         'Kearns-Li error floor'],
        [[f"{ln} ({r['gradient']})", _pct(r['clean_accuracy']),
          f"{_pct(row['budget'])} ({row['num_poison']})"]
         + [_pct(row[k]) for k in ('bilevel_accuracy', 'flipped_copies_accuracy',
                                   'random_flip_accuracy', 'kearns_li_error_bound')]
         for ln, r in b['learners'].items() for row in r['rows']])
  if 'backdoor' in s:
    b = s['backdoor']
    lines += [f"### BadNets on {b['dataset']} ({b['model']}, {b['epochs']} epochs, "
              f"{b['n_train']} training images, target class {b['target']}, trigger "
              f"{b['trigger']})", '']
    lines += table(['poisoned', 'clean accuracy', 'attack success'],
                   [[0, _pct(b['clean_model']['clean_accuracy']),
                     _pct(b['clean_model']['attack_success'])]]
                   + [[_pct(row[k]) for k in ('fraction', 'clean_accuracy', 'attack_success')]
                      for row in b['rows']])
    san = b['sanitize']
    lines += ['', f"Sanitisers at {_pct(san['fraction'])} poison (removal "
              f"{_pct(san['removal_fraction'])} per class where applicable; poisoned model: "
              f"{_pct(san['poisoned_clean_accuracy'])} clean, "
              f"{_pct(san['poisoned_attack_success'])} success):", '']
    lines += table(['defense', 'precision', 'recall', 'removed', 'clean acc. after',
                    'success after'],
                   [[dn, _pct(d['precision']), _pct(d['recall']), d['removed'],
                     _pct(d['clean_accuracy']), _pct(d['attack_success'])]
                    for dn, d in san['defenses'].items()]) + ['']
  if 'centroid' in s:
    c = s['centroid']
    lines += section(
        f"### Kloft-Laskov greedy poisoning of a centroid detector (d={c['dim']}, "
        f"n={c['window']}, target {c['target_distance_radii']:g} radii away)",
        ['rule', 'displacement (radii) after points', 'bound i/n',
         'points until the target is accepted'],
        [['infinite horizon' if rule == 'infinite' else f'{rule}-out',
          ', '.join(f"{i}: {v:.2f}" for i, v in zip(r['points'], r['displacement_radii'],
                                                     strict=True)),
          ', '.join(f'{v:.2f}' for v in r['bound_i_over_n']), r['points_to_accept_target']]
         for rule, r in c['rules'].items()])
    lines += table(
        ['attack share of stream', 'displacement (radii)', 'innocent false alarms at end',
         'mean-test recall', 'mean-test false positives'],
        [[_pct(r['attack_fraction']), f"{r['final_displacement_radii']:.2f}",
          _pct(r['innocent_false_alarm_rate_end']), _pct(r['mean_test_recall']),
          _pct(r['mean_test_false_positive_rate'])] for r in c['mixed']]) + ['']
  if 'signature' in s:
    g = s['signature']
    lines += section(
        f"### Noise injection vs a conjunction signature (coverage {g['coverage']}, "
        f"critical noise fraction {g['critical_fraction']:.3f})",
        ['noise flows', 'signature tokens', 'keeps true invariants', 'worm detection',
         'false positives'],
        [[_pct(r['noise_fraction']), r['signature_tokens'], r['keeps_true_invariants'],
          _pct(r['variant_detection_rate']), _pct(r['false_positive_rate'])]
         for r in g['rows']])
  return '\n'.join(lines)


def render_plots(results: dict, path: str) -> None:
  """Draws the label-flip, Biggio and bilevel curves with the Kearns-Li floor."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  s = results.get('studies', {})
  panels = [k for k in ('label_flip', 'biggio', 'bilevel') if k in s]
  if not panels:
    return
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
  for ax, name in zip(axes[0], panels, strict=True):
    if name == 'label_flip':
      for dn, r in s[name]['datasets'].items():
        f = [row['fraction'] for row in r['curve']]
        ax.plot(f, [1 - row['random_accuracy'] for row in r['curve']], 'o--',
                label=f'{dn} random')
        ax.plot(f, [1 - row['alfa_accuracy'] for row in r['curve']], 's-', label=f'{dn} ALFA')
        if 'farthest_first_accuracy' in r['curve'][0]:
          ax.plot(f, [1 - row['farthest_first_accuracy'] for row in r['curve']], '^:',
                  label=f'{dn} farthest-first')
      beta = np.linspace(0, max(max(row['fraction'] for row in r['curve']), 0.01), 50)
      ax.plot(beta, np.minimum(kearns_li_error(beta), 1), 'k:',
              label='Kearns-Li floor b/(1-b)')
      ax.set_xlabel('fraction of labels flipped')
      ax.set_ylabel('SVM test error')
      ax.set_title('label flipping')
    elif name == 'biggio':
      groups = {}                  # mean over pairs of each (data set, C)
      for r in s[name]['pairs']:
        groups.setdefault((r.get('dataset', 'digits'), r['C']), []).append(r['test_error'])
      for (dn, c), errs in groups.items():
        m = np.mean(errs, 0)
        ax.plot(range(len(m)), m, 'o-', label=f'{dn}, C={c:g} (mean of {len(errs)} pairs)')
      n = s[name]['n_train']
      k = np.arange(max(len(r['test_error']) for r in s[name]['pairs']))
      ax.plot(k, np.minimum(kearns_li_error(k / (n + k)), 1), 'k:', label='Kearns-Li floor')
      ax.set_xlabel('poison points injected')
      ax.set_ylabel('test error')
      ax.set_title(f'Biggio SVM poisoning (n={n})')
    else:
      for ln, r in s[name]['learners'].items():
        b = [0.0] + [row['budget'] for row in r['rows']]
        e0 = [1 - r['clean_accuracy']]
        ax.plot(b, e0 + [1 - row['bilevel_accuracy'] for row in r['rows']], 's-',
                label=f'{ln} bilevel')
        ax.plot(b, e0 + [1 - row['random_flip_accuracy'] for row in r['rows']], 'o--',
                label=f'{ln} random flips')
      bb = np.linspace(0, max(b), 50)
      ax.plot(bb, kearns_li_error(bb / (1 + bb)), 'k:', label='Kearns-Li floor')
      ax.set_xlabel('poison budget (fraction of n)')
      ax.set_ylabel('test error')
      ax.set_title('bilevel poisoning, digits')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path + '.tmp.png', dpi=110)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)
