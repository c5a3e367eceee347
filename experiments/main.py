r"""The main job: train the reference CNN, measure clean and robust accuracy, write a report.

    python -m experiments.run --config=experiments/configs/main.py --workdir=workdir/main
    python -m experiments.run --config=experiments/configs/main.py:smoke --workdir=/tmp/s

Trains ``models.CNN`` on Fashion-MNIST (Debian's IDX files, prepared through TFDS), then
evaluates clean test accuracy and robust accuracy under FGSM and PGD (L_inf) at several
eps, each attack built to the contract (``attack(logits_fn, x, y, key)``) and swept over
eps inside one compiled program. Writes ``results.json``, ``report.md``,
``accuracy_vs_eps.png`` and ``adversarial_examples.png`` into ``--workdir``; a run cut
off resumes from its orbax checkpoint. The config lives in experiments/configs/main.py.
"""
from __future__ import annotations

import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxsec import attacks
from jaxsec import data
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import losses as losses_lib
from jaxsec import metrics
from jaxsec import models
from jaxsec import plots
from jaxsec import train

NAME = 'main'


def robust_accuracy(logits_fn, x, y, eps_grid, attack_name, cfg, key):
  """Accuracy under ``attack_name`` for each eps, one compiled program over the eps grid."""
  def attack_at(eps, xb, yb, k):
    if attack_name == 'fgsm':
      atk = attacks.fgsm(eps=eps, bounds=(0.0, 1.0))
    else:
      atk = attacks.pgd(eps=eps, step_size=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                        num_steps=cfg.pgd_steps, norm='linf', bounds=(0.0, 1.0),
                        random_start=True)
    x_adv = atk(logits_fn, xb, yb, k).x_adv
    return jnp.argmax(logits_fn(x_adv), -1) == yb, x_adv

  sweep = jax.vmap(attack_at, in_axes=(0, None, None, None))
  # eps = 0 needs no attack: its accuracy is the clean one on the same images.
  attacked = [e for e in eps_grid if e > 0]
  eps_arr = jnp.asarray(attacked, jnp.float32)
  # Batch at example i: key fold_in(key, i); outputs with the batch axis first.
  correct, advs = evaluate.map_batches(
      lambda xb, yb, k: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), sweep(eps_arr, xb, yb, k)),
      (x, y), batch_size=cfg.attack_batch, key=key, pad=False,
      progress=f'main/{attack_name} eps sweep')
  correct, first_adv = correct.T, np.swapaxes(advs[:cfg.attack_batch], 0, 1)
  acc = dict(zip(attacked, correct.mean(axis=1), strict=True))
  clean = np.mean(np.argmax(np.asarray(logits_fn(jnp.asarray(x))), -1) == np.asarray(y))
  adv = dict(zip(attacked, first_adv, strict=True))
  return (np.asarray([acc[e] if e > 0 else clean for e in eps_grid]),
          np.stack([adv[e] if e > 0 else np.asarray(x[:first_adv.shape[1]])
                    for e in eps_grid]))


def _row(category, attack, setting, metric, value, seconds, **extra):
  return {'category': category, 'attack': attack, 'setting': setting, 'metric': metric,
          'value': float(value), 'seconds': float(seconds), **extra}


def survey_table(cfg, model, params, x_train, y_train, x_test, y_test, key) -> list:
  """The survey's attack families, measured on the trained model (rows of Table 1).

  Evasion rows attack the first ``num_images`` test images; minimal-perturbation rows report
  the median norm over successful examples of the correctly classified ones. The privacy
  rows use training images as members and test images as non-members (the model was
  trained on the whole training split), and the test split as the extraction query pool.
  """
  t = cfg.table
  eps = t.eps
  rows = []
  t_start = time.time()

  def add(row):  # one progress line per finished row (10 rows)
    rows.append(row)
    logging.info('[main/table] row %d/10 %s: %s %.4f (%.1fs; %.0fs elapsed)', len(rows),
                 row['attack'], row['metric'], row['value'], row['seconds'],
                 time.time() - t_start)
  logits_fn = models.logits_fn(model, params)
  ks = jax.random.split(key, 8)
  n = min(t.num_images, x_test.shape[0])
  xe, ye = x_test[:n], y_test[:n]
  def batched(fn, xs, label=None):   # the old runner's behaviour: no padding
    return evaluate.map_batches(fn, xs, batch_size=cfg.attack_batch, pad=False,
                                progress=label)

  def attack(atk, xs, ys, k, label):  # every batch with the same key k (as before)
    return evaluate.run_attack(atk, logits_fn, xs, ys, k, batch_size=cfg.attack_batch,
                               fold_key=False, pad=False, progress=label)
  pred = lambda xx: batched(lambda a: jnp.argmax(logits_fn(a), -1), (xx,))
  correct = pred(xe) == ye

  def l2(a, b):
    return np.sqrt(np.sum((np.asarray(a) - np.asarray(b)).reshape(len(a), -1) ** 2, axis=1))

  # 1. APGD-CE (Croce & Hein 2020).
  t0 = time.time()
  adv, _ = attack(attacks.apgd(eps=eps, num_steps=t.apgd_steps, loss='ce'), xe, ye, ks[0],
                  'main/table APGD-CE')
  add(_row('evasion, white-box', f'APGD-CE ({t.apgd_steps} steps)',
           f'L_inf eps={eps:g}, {n} images', 'robust accuracy',
           np.mean(pred(adv) == ye), time.time() - t0))
  # 2. AutoAttack-style ensemble (host driver: each stage only on still-robust points).
  t0 = time.time()
  aa = attacks.run_auto_attack(logits_fn, xe, ye, ks[1], eps=eps,
                               version=t.autoattack_version, batch_size=cfg.attack_batch)
  add(_row('evasion, white-box',
           f'AutoAttack-style ({t.autoattack_version}: '
           + ', '.join(s_['name'] for s_ in aa['stages']) + ')',
           f'L_inf eps={eps:g}, {n} images', 'robust accuracy',
           aa['robust_accuracy'], time.time() - t0, gradients=int(aa['gradients'])))
  # 3. DeepFool L2 (Moosavi-Dezfooli 2016): minimal perturbation.
  t0 = time.time()
  nd = min(t.deepfool_images, n)
  adv, info = attack(attacks.deepfool(norm='l2'), xe[:nd], ye[:nd], ks[2],
                     'main/table DeepFool')
  ok = info['success'] & correct[:nd]
  add(_row('evasion, white-box', 'DeepFool-L2 (overshoot 0.02)',
           f'minimal, {nd} images', 'median L2 (success rate)',
           np.median(l2(adv, xe[:nd])[ok]) if ok.any() else np.nan, time.time() - t0,
           success_rate=float(ok.sum() / max(correct[:nd].sum(), 1))))
  # 4. C&W L2 (Carlini & Wagner 2017).
  t0 = time.time()
  nc = min(t.cw_images, n)
  cw = attacks.carlini_wagner_l2(
      num_binary_steps=t.cw_binary_steps, num_steps=t.cw_steps, learning_rate=0.01,
      initial_const=1.0)
  adv, info = attack(cw, xe[:nc], ye[:nc], ks[3], 'main/table C&W-L2')
  ok = info['success'] & correct[:nc]
  add(_row('evasion, white-box',
           f'C&W-L2 ({t.cw_binary_steps} x {t.cw_steps} steps)',
           f'minimal, {nc} images', 'median L2 (success rate)',
           np.median(l2(adv, xe[:nc])[ok]) if ok.any() else np.nan, time.time() - t0,
           success_rate=float(ok.sum() / max(correct[:nc].sum(), 1))))
  # 5. JSMA (Papernot 2016), targeted at a random other class, gamma = 14.5%.
  t0 = time.time()
  nj = min(t.jsma_images, n)
  tgt = (ye[:nj] + np.asarray(jax.random.randint(ks[4], (nj,), 1, 10))) % 10
  _, info = attack(attacks.jsma(), xe[:nj], tgt.astype(np.int32), ks[4],
                   'main/table JSMA')
  ok = info['success'] & correct[:nj]
  add(_row('evasion, white-box', 'JSMA (targeted, random target)',
           f'gamma=14.5%, {nj} images', 'success rate (features changed)',
           ok.sum() / max(correct[:nj].sum(), 1), time.time() - t0,
           features_changed=float(np.mean(info['features_changed_frac'][ok]))
           if ok.any() else float('nan')))
  # 6. Universal adversarial perturbation (Moosavi-Dezfooli 2017), fitted on training
  #    images, evaluated on the test images.
  t0 = time.time()
  uap = attacks.universal_perturbation(xi=eps, norm='linf',
                                       max_passes=t.universal_max_passes)
  v, _ = uap.fit(logits_fn, jnp.asarray(x_train[:t.universal_fit_images]), ks[5])
  fooled = pred(np.asarray(uap.apply(jnp.asarray(xe), v))) != pred(xe)
  add(_row('evasion, universal', 'UAP (Alg. 1, DeepFool inner steps)',
           f'L_inf xi={eps:g}, fit on {t.universal_fit_images} train, '
           f'{n} test images', 'fooling rate', np.mean(fooled), time.time() - t0))
  t0 = time.time()
  uap = attacks.universal_perturbation_sgd(xi=eps, norm='linf', num_steps=t.universal_sgd_steps)
  v, _ = jax.jit(uap.fit, static_argnums=0)(logits_fn,
                                            jnp.asarray(x_train[:t.universal_fit_images]),
                                            ks[5])
  fooled = pred(np.asarray(uap.apply(jnp.asarray(xe), v))) != pred(xe)
  add(_row('evasion, universal', 'UAP (SGD, Shafahi 2020)',
           f'L_inf xi={eps:g}, fit on {t.universal_fit_images} train, '
           f'{n} test images', 'fooling rate', np.mean(fooled), time.time() - t0))
  # 7. Transfer (black-box): PGD-20 on an independently trained MLP surrogate.
  t0 = time.time()
  sur = models.get('mlp', num_classes=10, hidden=(256, 256))
  sp = models.init(sur, ks[6], (1,) + x_train.shape[1:])
  ns = min(t.surrogate_train, x_train.shape[0])
  sp = train.fit(sur.apply, sp, x_train[-ns:], y_train[-ns:], optimizer=optax.adam(1e-3),
                 key=ks[6], batch_size=128, num_epochs=t.surrogate_epochs).params
  sur_fn = models.logits_fn(sur, sp)
  adv, _ = evaluate.run_attack(attacks.pgd(eps=eps, step_size=2.5 * eps / 20, num_steps=20),
                               sur_fn, xe, ye, ks[6], batch_size=cfg.attack_batch,
                               fold_key=False, pad=False, progress='main/table transfer PGD')
  add(_row('evasion, transfer (black-box)', 'PGD-20 on an MLP surrogate',
           f'L_inf eps={eps:g}, {n} images', 'robust accuracy of the CNN',
           np.mean(pred(adv) == ye), time.time() - t0))
  # 8. Membership inference, loss threshold (Yeom et al. 2018).
  t0 = time.time()
  nm = min(t.mia_members, x_train.shape[0], x_test.shape[0])
  lossf = jax.jit(lambda a, b: -losses_lib.cross_entropy(logits_fn(a), b))
  s_in = batched(lossf, (x_train[:nm], y_train[:nm]))
  s_out = batched(lossf, (x_test[-nm:], y_test[-nm:]))
  scores = np.concatenate([s_in, s_out])
  labels = np.concatenate([np.ones(nm, bool), np.zeros(nm, bool)])
  add(_row('privacy, membership inference', 'loss threshold (Yeom 2018)',
           f'{nm} train members vs {nm} test non-members', 'AUC (TPR at 1% FPR)',
           metrics.auc(scores, labels), time.time() - t0,
           tpr_at_1pct_fpr=metrics.tpr_at_fpr(scores, labels, 0.01),
           advantage=metrics.membership_advantage(scores, labels)))
  # 9. Model extraction by retraining on the victim's labels (label-only API).
  t0 = time.time()
  nq = min(t.extraction_queries, x_test.shape[0] // 2)
  xq, xh = x_test[:nq], x_test[nq:]
  stolen = models.get(cfg.model, num_classes=10, **cfg.model_kwargs.to_dict())
  st = models.init(stolen, ks[7], (1,) + x_test.shape[1:])
  st = train.fit(stolen.apply, st, xq, pred(xq).astype(np.int32), optimizer=optax.adam(1e-3),
                 key=ks[7], batch_size=128, num_epochs=t.extraction_epochs).params
  st_pred = batched(lambda a: jnp.argmax(stolen.apply(st, a), -1), (xh,))
  add(_row('privacy, model extraction', 'retraining on label queries',
           f'{nq} queries, same architecture', 'fidelity on held-out (accuracy)',
           np.mean(st_pred == pred(xh)), time.time() - t0,
           accuracy=float(np.mean(st_pred == y_test[nq:]))))
  for r in rows:
    print(f"[table] {r['attack']}: {r['metric']} {r['value']:.4f} ({r['seconds']:.0f}s)",
          flush=True)
  return rows


def _seeds(cfg) -> tuple[int, ...]:
  """The trained seeds: ``config.seeds`` (a vectorised axis, one ``fit_many`` program) when
  non-empty, which then replaces ``config.seed``; else ``(config.seed,)``."""
  seeds = tuple(cfg.seeds)
  if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(
      set(seeds)) != len(seeds):
    raise ValueError(f'config.seeds={seeds!r}; expected distinct ints >= 0 (or () to train '
                     'config.seed only).')
  return seeds or (cfg.seed,)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  seeds = _seeds(cfg)
  key = jax.random.key(seeds[0])
  # Per seed: init, train, FGSM and PGD keys (the same as a run with config.seed = seed).
  seed_keys = [jax.random.split(jax.random.key(s), 4) for s in seeds]
  ds = data.info(cfg.dataset)
  x_train, y_train, x_test, y_test = common.load_splits(
      cfg.dataset, train_subset=cfg.train_subset, test_subset=cfg.eval_subset)

  train_kw = dict(num_classes=ds.num_classes, input_shape=ds.input_shape,
                  learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                  num_epochs=cfg.num_epochs, label='main/train')
  if cfg.seeds:  # the seed axis as one vmapped training program
    model, stacked, result, train_time = common.train_classifiers(
        cfg.model, cfg.model_kwargs, x_train, y_train,
        init_keys=jnp.stack([k[0] for k in seed_keys]),
        train_keys=jnp.stack([k[1] for k in seed_keys]),
        checkpoint_dir=os.path.join(workdir, 'checkpoints_seeds-' + '-'.join(map(str, seeds))),
        **train_kw)
    params_of = [jax.tree.map(lambda a, m=m: a[m], stacked) for m in range(len(seeds))]
    loss_of = list(np.asarray(result.history['loss']).T)
  else:
    model, params, result, train_time = common.train_classifier(
        cfg.model, cfg.model_kwargs, x_train, y_train, init_key=seed_keys[0][0],
        train_key=seed_keys[0][1], checkpoint_dir=os.path.join(workdir, 'checkpoints'),
        **train_kw)
    params_of, loss_of = [params], [np.asarray(result.history['loss'])]

  xa, ya = x_test[:cfg.attack_subset], y_test[:cfg.attack_subset]
  per_seed, attack_time = [], 0.0
  for s, p, k, loss in zip(seeds, params_of, seed_keys, loss_of, strict=True):
    clean_s = train.evaluate(model.apply, p, x_test, y_test)
    print(f'{f"seed {s}: " if cfg.seeds else ""}clean test accuracy {clean_s:.4f} '
          f'({train_time:.0f}s training)', flush=True)
    logits_fn = models.logits_fn(model, p)
    t1 = time.time()
    acc_fgsm, adv_fgsm = robust_accuracy(logits_fn, xa, ya, cfg.eps, 'fgsm', cfg, k[2])
    acc_pgd, adv_pgd = robust_accuracy(logits_fn, xa, ya, cfg.eps, 'pgd', cfg, k[3])
    attack_time += time.time() - t1
    for e, a, b in zip(cfg.eps, acc_fgsm, acc_pgd, strict=True):
      print(f'eps {e:.3f}: FGSM {a:.4f}  PGD-{cfg.pgd_steps} {b:.4f}', flush=True)
    per_seed.append({'seed': s, 'clean_accuracy': clean_s, 'fgsm_accuracy': acc_fgsm.tolist(),
                     'pgd_accuracy': acc_pgd.tolist(), 'train_loss': loss.tolist(),
                     'adv': (adv_fgsm, adv_pgd)})
  # The report, plots and survey table: the first seed's model.
  params, first = params_of[0], per_seed[0]
  clean, (adv_fgsm, adv_pgd) = first['clean_accuracy'], first['adv']
  acc_fgsm, acc_pgd = np.asarray(first['fgsm_accuracy']), np.asarray(first['pgd_accuracy'])
  logits_fn = models.logits_fn(model, params)

  # Adversarial example grid at grid_eps (the eps in the sweep closest to it).
  gi = int(np.argmin(np.abs(np.asarray(cfg.eps) - cfg.grid_eps)))
  n_show = min(8, xa.shape[0])
  rows = [xa[:n_show], adv_fgsm[gi, :n_show], adv_pgd[gi, :n_show]]
  preds = [np.argmax(np.asarray(logits_fn(jnp.asarray(r))), -1) for r in rows]
  plots.accuracy_vs_eps(os.path.join(workdir, 'accuracy_vs_eps.png'), cfg.eps,
                        {'FGSM': acc_fgsm, f'PGD-{cfg.pgd_steps}': acc_pgd},
                        title=f'{cfg.model} on {cfg.dataset} (clean {clean:.3f})')
  plots.image_grid(os.path.join(workdir, 'adversarial_examples.png'), rows, preds,
                   row_titles=['clean', f'FGSM eps={cfg.eps[gi]:g}',
                               f'PGD eps={cfg.eps[gi]:g}'],
                   labels=ya[:n_show], class_names=ds.class_names)

  t2 = time.time()
  table = (survey_table(cfg, model, params, x_train, y_train, x_test, y_test,
                        jax.random.fold_in(key, 7)) if cfg.table.enabled else [])
  table_time = time.time() - t2

  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'dataset': cfg.dataset, 'model': cfg.model,
      'num_params': int(sum(np.size(l) for l in jax.tree.leaves(params))),
      'clean_accuracy': clean, 'num_test': int(x_test.shape[0]),
      'num_attacked': int(xa.shape[0]),
      'eps': list(cfg.eps), 'fgsm_accuracy': acc_fgsm.tolist(),
      'pgd_accuracy': acc_pgd.tolist(), 'pgd_steps': cfg.pgd_steps,
      'train_seconds': train_time, 'attack_seconds': attack_time,
      'table': table, 'table_seconds': table_time,
      'train_loss': loss_of[0].tolist(),
      'backend': jax.default_backend(), 'devices': len(jax.devices()),
      # One row per (seed, eps): launch.sweep's table has one row per vectorised value.
      'vectorized': {'axes': ['seed', 'eps'], 'rows': [
          {'seed': r['seed'], 'eps': e, 'clean_accuracy': r['clean_accuracy'],
           'fgsm_accuracy': a, 'pgd_accuracy': b, 'final_train_loss': r['train_loss'][-1]}
          for r in per_seed
          for e, a, b in zip(cfg.eps, r['fgsm_accuracy'], r['pgd_accuracy'], strict=True)]},
  }
  if cfg.seeds:
    results['per_seed'] = [{k: v for k, v in r.items() if k != 'adv'} for r in per_seed]
  jio.write_json_atomic(os.path.join(workdir, 'results.json'), results)
  jio.write_text_atomic(os.path.join(workdir, 'report.md'), render_markdown(results))
  return results


def render_markdown(r: dict) -> str:
  lines = [
      f"# jaxsec main report: {r['model']} on {r['dataset']}",
      '',
      f"Clean test accuracy: **{100 * r['clean_accuracy']:.2f}%** on {r['num_test']} test "
      f"images ({r['num_params']:,} parameters, {r['train_seconds']:.0f} s of training on "
      f"{r['devices']} {r['backend']} device(s)).",
      '',
      f"Robust accuracy on the first {r['num_attacked']} test images (L_inf, bounds [0, 1]; "
      f"PGD: {r['pgd_steps']} steps of 2.5*eps/steps, random start):",
      '',
      '| eps | FGSM | PGD |',
      '|---|---|---|',
  ]
  for e, a, b in zip(r['eps'], r['fgsm_accuracy'], r['pgd_accuracy'], strict=True):
    lines.append(f'| {e:g} | {100 * a:.2f}% | {100 * b:.2f}% |')
  lines += ['', '![accuracy vs eps](accuracy_vs_eps.png)', '',
            '![clean and adversarial examples](adversarial_examples.png)', '']
  if r.get('table'):
    lines += ['## Survey Table 1, measured on this model', '',
              f"The attack families of the survey run against the trained {r['model']} "
              f"({r.get('table_seconds', 0):.0f} s in all). Defenses, poisoning and DP "
              'need their own training runs: see docs/RESULTS.md.', '',
              '| family | attack | setting | metric | value | s |', '|---|---|---|---|---|---|']
    for row in r['table']:
      v = row['value']
      if 'median L2' in row['metric']:
        val = f"{v:.3f} ({100 * row['success_rate']:.1f}%)"
      elif row['metric'].startswith('success rate'):
        val = f"{100 * v:.1f}% ({100 * row['features_changed']:.2f}%)"
      elif row['metric'].startswith('AUC'):
        val = f"{v:.3f} ({100 * row['tpr_at_1pct_fpr']:.2f}%)"
      elif row['metric'].startswith('fidelity'):
        val = f"{100 * v:.1f}% ({100 * row['accuracy']:.1f}%)"
      else:
        val = f'{100 * v:.1f}%'
      lines.append(f"| {row['category']} | {row['attack']} | {row['setting']} | "
                   f"{row['metric']} | {val} | {row['seconds']:.0f} |")
    lines.append('')
  return '\n'.join(lines)


def headline(r: dict) -> list:
  i = min(range(len(r['eps'])), key=lambda j: abs(r['eps'][j] - 0.1))
  rows = [(f"reference CNN on {r['dataset']}: clean test accuracy",
           f"{100 * r['clean_accuracy']:.2f}% ({r['train_seconds']:.0f} s training, "
           f"{r['backend']})"),
          (f"... robust accuracy, L_inf eps={r['eps'][i]:g}",
           f"FGSM {100 * r['fgsm_accuracy'][i]:.1f}%, PGD-{r['pgd_steps']} "
           f"{100 * r['pgd_accuracy'][i]:.1f}%")]
  for row in r.get('table', []):
    if row['attack'].startswith('AutoAttack'):
      rows.append((f"... AutoAttack-style, {row['setting']}", f"{100 * row['value']:.1f}%"))
  return rows
