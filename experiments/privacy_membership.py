r"""Membership inference on Fashion-MNIST: threshold attacks, Shokri's shadow models, LiRA
(online / offline, >= 64 shadow models in one vmapped program) and label-only attacks
against the SAME target, one table and a log-log ROC; plus the overfitting sweep
(membership advantage vs generalisation gap, Shokri 2017 / Yeom 2018).

    python -m experiments.run --config=experiments/configs/privacy_membership.py --workdir=docs/results  # ~10-20 min on 2 CPU cores
    python -m experiments.run --config=experiments/configs/privacy_membership.py:smoke --workdir=/tmp/s

Set-up (as the LiRA demo, scaled to CPU): a pool of ``pool_size`` FMNIST training images;
the target trains on a random half of it (members; the other half are the non-members);
``num_shadow`` shadow models of the same architecture and recipe train on halves of the same
pool where every example is IN for exactly half of them (``data.balanced_membership``), all
in ONE ``train.fit_many`` program. Shokri's ``shokri_num_shadow`` shadow models train on
disjoint partitions of the rest of the training split (each with a disjoint held-out half).
LiRA here is augmentation-free (one query per example; the models train without
augmentation). Every stage is checkpointed through orbax (``common.Stages``) under
``--config.cache_dir`` (default ``workdir/cache``, git-ignored) so a run cut off resumes
where it stopped; a stage saved under another config (attack-only settings aside) is
recomputed.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common as exp_common
from jaxsec import data
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import metrics
from jaxsec import models
from jaxsec import plots
from jaxsec import train
from jaxsec.attacks import privacy as priv

NAME = 'privacy_membership'


# Settings of the attacks only (not of any trained model): a change of them reuses the
# cached stages.
ATTACK_ONLY = ('shokri_attack_epochs', 'shokri_hidden', 'shokri_transform', 'shokri_order',
               'fprs')


def _roc_points(scores, labels, num=60):
  """ROC sampled on a log grid of FPRs ('le' convention), for the JSON and the plot."""
  c = metrics.roc_curve(scores, labels)
  grid = np.unique(np.r_[0.0, np.logspace(-4, 0, num)])
  tpr = [metrics._tpr_at(c, float(f), 'le') for f in grid]  # pylint: disable=protected-access
  return grid.tolist(), tpr


def run(cfg: ml_collections.ConfigDict, workdir: str, cache_dir: str | None = None) -> dict:
  """Runs every stage (cached under ``cache_dir``, default ``<workdir>/.cache``)."""
  os.makedirs(workdir, exist_ok=True)
  cache_dir = cache_dir or cfg.get('cache_dir')
  cache = exp_common.Stages(
      os.path.join(cache_dir or os.path.join(workdir, '.cache'), NAME),
      {k: v for k, v in cfg.to_dict().items() if k not in ATTACK_ONLY}, NAME)
  t_start = time.time()
  key = jax.random.key(cfg.seed)
  (k_part, k_target_split, k_target, k_shadow_mem, k_shadow, k_shokri_part, k_shokri,
   k_attack, k_noise, k_sweep) = jax.random.split(key, 10)
  x_all, y_all = data.load(cfg.dataset, 'train')
  x_test, y_test = data.load(cfg.dataset, 'test')
  ds = data.info(cfg.dataset)
  shokri_size = cfg.pool_size // 2
  pool_idx, shokri_idx = data.partition(
      k_part, x_all.shape[0], [cfg.pool_size, 2 * cfg.shokri_num_shadow * shokri_size])
  x, y = x_all[pool_idx], y_all[pool_idx]
  n = x.shape[0]
  model = models.get(cfg.model, num_classes=ds.num_classes, **cfg.model_kwargs.to_dict())
  init_fn = lambda k: models.init(model, k, (1,) + ds.input_shape)
  opt = optax.adam(cfg.learning_rate)
  fit_kw = dict(optimizer=opt, batch_size=cfg.batch_size, num_epochs=cfg.num_epochs)

  # 1. The target: a random half of the pool.
  (target_members,) = data.partition(k_target_split, n, [n // 2])
  target_in = data.masks_from_indices([target_members], n)[0]

  def train_target():
    r = train.fit(model.apply, init_fn(jax.random.fold_in(k_target, 0)), x, y,
                  indices=target_members, key=k_target, progress=True,
                  label='target', **fit_kw)
    out = {'logits': train.predict_logits(model.apply, r.params, x),
           'test_logits': train.predict_logits(model.apply, r.params, x_test)}
    # Label-only attacks (Choquette-Choo 2021) query the target's labels.
    fn = jax.jit(lambda v: jnp.argmax(model.apply(r.params, v), -1))
    # Batch at example i: noise key fold_in(k_noise, i); the last batch at its own size.
    def scores(xb, yb, k):
      return (priv.augmentation_robustness_scores(fn, xb, yb,
                                                  max_shift=cfg.label_only_max_shift),
              priv.noise_robustness_scores(fn, xb, yb, k, sigma=cfg.noise_sigma,
                                           num_samples=cfg.noise_samples))
    out['augment'], out['noise'] = evaluate.map_batches(
        scores, (x, y), batch_size=1000, key=k_noise, pad=False, jit=False,
        progress=f'{NAME}/label-only')
    return out
  tgt = cache.cached('target', train_target, arrays=True)
  logits = tgt['logits']
  train_acc = float(np.mean(np.argmax(logits[target_in], -1) == y[target_in]))
  test_acc = float(np.mean(np.argmax(tgt['test_logits'], -1) == y_test))
  print(f'[{NAME}] target train acc {train_acc:.4f} test acc {test_acc:.4f}', flush=True)

  # 2. LiRA shadow models: every pool example IN for exactly half, one fit_many program.
  shadow_in = data.balanced_membership(k_shadow_mem, cfg.num_shadow, n)

  def train_lira_shadows():
    t = time.time()
    r = priv.train_shadow_models(model.apply, init_fn, x, y, shadow_in, key=k_shadow,
                                 progress=True, label='lira-shadows', **fit_kw)
    jax.block_until_ready(r.params)
    sec = time.time() - t
    lg = train.predict_logits_many(model.apply, r.params, x)
    return {'phi': priv.shadow_confidences(lg, y),
            'train_acc': np.mean(np.argmax(lg, -1) == y[None], axis=1),
            'seconds': np.asarray(sec)}
  sh = cache.cached('lira_shadows', train_lira_shadows, arrays=True)

  # 3. Shokri shadow models on disjoint partitions of the rest of the training split.
  x_sh, y_sh = x_all[shokri_idx], y_all[shokri_idx]
  sh_in, sh_out = priv.shokri_masks(k_shokri_part, x_sh.shape[0],
                                    num_shadow=cfg.shokri_num_shadow, shadow_size=shokri_size)

  def train_shokri_shadows():
    r = priv.train_shadow_models(model.apply, init_fn, x_sh, y_sh, sh_in, key=k_shokri,
                                 progress=True, label='shokri-shadows', **fit_kw)
    return {'logits': train.predict_logits_many(model.apply, r.params, x_sh)}
  shk = cache.cached('shokri_shadows', train_shokri_shadows, arrays=True)
  rec_logits, rec_y, rec_member = priv.shokri_records(shk['logits'], y_sh, sh_in, sh_out)
  shokri_attacks = {
      order: priv.fit_shokri_attack(
          rec_logits, rec_y, rec_member, num_classes=ds.num_classes, key=k_attack,
          hidden=tuple(cfg.shokri_hidden), transform=cfg.shokri_transform, order=order,
          num_epochs=cfg.shokri_attack_epochs, batch_size=min(64, cfg.batch_size))
      for order in dict.fromkeys([cfg.shokri_order, 'sorted'])}

  # 4. Scores of every attack on the same target and candidates.
  lj, yj = jnp.asarray(logits), jnp.asarray(y)
  phi_target = np.asarray(priv.logit_confidence(lj, yj), np.float64)
  scores = {
      'loss threshold (Yeom)': np.asarray(priv.loss_score(lj, yj)),
      'confidence threshold': np.asarray(priv.confidence_score(lj, yj)),
      'entropy threshold': np.asarray(priv.entropy_score(lj, yj)),
      'modified entropy (Song-Mittal)': np.asarray(priv.modified_entropy_score(lj, yj)),
      'Shokri shadow models': np.asarray(priv.shokri_scores(
          shokri_attacks[cfg.shokri_order], lj, yj)),
      'Shokri, sorted vector (ML-Leaks)': np.asarray(priv.shokri_scores(
          shokri_attacks['sorted'], lj, yj)),
      'LiRA online': priv.lira_scores(sh['phi'], shadow_in, phi_target),
      'LiRA online, fixed variance': priv.lira_scores(sh['phi'], shadow_in, phi_target,
                                                      fix_variance=True),
      'LiRA offline': priv.lira_scores(sh['phi'], shadow_in, phi_target, online=False),
      'LiRA offline, fixed variance': priv.lira_scores(sh['phi'], shadow_in, phi_target,
                                                       online=False, fix_variance=True),
      'LiRA global (one Gaussian pair)': priv.lira_scores(
          sh['phi'], shadow_in, phi_target, per_example=False, fix_variance=True),
  }

  scores['label-only: augmentation (Choquette-Choo)'] = tgt['augment']
  scores['label-only: noise robustness'] = tgt['noise']
  scores['gap attack (correct or not)'] = np.asarray(np.argmax(logits, -1) == y, np.float32)

  attacks_out = {}
  for name, s in scores.items():
    rep = metrics.membership_report(s, target_in, fprs=cfg.fprs)
    rep['roc_fpr'], rep['roc_tpr'] = _roc_points(s, target_in)
    attacks_out[name] = rep
    print(f'[{NAME}] {name:42s} AUC {rep["auc"]:.4f} '
          + ' '.join(f'TPR@{f:g} {rep[f"tpr_at_{f:g}_fpr"]:.4f}' for f in cfg.fprs),
          flush=True)

  # Yeom's decision rule with the threshold estimated from Shokri shadows' training loss.
  shadow_losses = np.asarray(priv.cross_entropy_loss(
      jnp.asarray(shk['logits'][sh_in]), jnp.asarray(np.broadcast_to(y_sh, sh_in.shape)[sh_in])))
  tau = priv.yeom_threshold(shadow_losses)
  yeom = metrics.threshold_metrics(
      np.asarray(priv.threshold_predict(scores['loss threshold (Yeom)'], -tau)), target_in)
  yeom['tau'] = tau

  # ROC plot.
  plot_names = ['loss threshold (Yeom)', 'modified entropy (Song-Mittal)',
                'Shokri shadow models', 'LiRA online', 'LiRA online, fixed variance',
                'LiRA offline', 'label-only: augmentation (Choquette-Choo)']
  curves = {}
  for nm in plot_names:
    c = metrics.roc_curve(scores[nm], target_in)
    curves[f'{nm} (AUC {attacks_out[nm]["auc"]:.3f})'] = (c.fpr, c.tpr)
  plots.roc_loglog(os.path.join(workdir, f'{NAME}_roc.png'), curves,
                   title=f'{cfg.model} on {cfg.dataset}: {cfg.num_shadow} shadow models')

  # 5. Overfitting sweep: one fit_many program over training-set sizes, fixed steps.
  sweep = _overfitting_sweep(cfg, model, init_fn, x_all, y_all, x_test, y_test, shokri_idx,
                             pool_idx, k_sweep, cache)

  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'dataset': cfg.dataset, 'model': cfg.model,
      'num_params': int(sum(np.size(l) for l in jax.tree.leaves(init_fn(key)))),
      'pool_size': int(n), 'num_members': int(target_in.sum()),
      'num_nonmembers': int((~target_in).sum()),
      'target_train_accuracy': train_acc, 'target_test_accuracy': test_acc,
      'num_shadow': cfg.num_shadow,
      'shadow_train_seconds': float(sh['seconds']),
      'shadow_mean_train_accuracy': float(np.mean(sh['train_acc'])),
      'attacks': attacks_out, 'attack_order': list(scores), 'yeom_decision': yeom,
      'sweep': sweep,
      'total_seconds': time.time() - t_start,
      'backend': jax.default_backend(),
  }
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def _overfitting_sweep(cfg, model, init_fn, x_all, y_all, x_test, y_test, shokri_idx,
                       pool_idx, key, cache):
  used = np.zeros(x_all.shape[0], bool)
  used[pool_idx] = True
  free = np.nonzero(~used)[0]
  sizes = list(cfg.sweep_sizes)
  k_sets, k_train, k_eval = jax.random.split(key, 3)
  perm = np.asarray(jax.random.permutation(k_sets, free.size))
  sets = [free[perm[:s]] for s in sizes]           # nested, from data no target saw
  masks = data.masks_from_indices(sets, x_all.shape[0])

  def train_sweep():
    r = priv.train_shadow_models(model.apply, init_fn, x_all, y_all, masks, key=k_train,
                                 optimizer=optax.adam(cfg.learning_rate),
                                 batch_size=min(cfg.batch_size, min(sizes)),
                                 num_steps=cfg.sweep_steps)
    ev = np.asarray(jax.random.permutation(k_eval, x_test.shape[0]))[:cfg.sweep_eval]
    tr_logits = train.predict_logits_many(model.apply, r.params, x_all[sets[-1]])
    te_logits = train.predict_logits_many(model.apply, r.params, x_test[ev])
    test_full = train.predict_logits_many(model.apply, r.params, x_test)
    return {'tr_logits': tr_logits, 'te_logits': te_logits, 'ev': ev,
            'test_acc': np.mean(np.argmax(test_full, -1) == y_test[None], 1)}
  sw = cache.cached('sweep', train_sweep, arrays=True)
  out = []
  for m, s in enumerate(sizes):
    tl = jnp.asarray(sw['tr_logits'][m, :s])
    ty = jnp.asarray(y_all[sets[-1]][:s])
    # sets are nested prefixes of one permutation: model m's members are sets[-1][:s].
    el, ey = jnp.asarray(sw['te_logits'][m]), jnp.asarray(y_test[sw['ev']])
    k = min(s, el.shape[0])  # equal numbers of members and non-members
    sc = np.r_[np.asarray(priv.loss_score(tl, ty))[:k], np.asarray(priv.loss_score(el, ey))[:k]]
    lab = np.r_[np.ones(k, bool), np.zeros(k, bool)]
    train_losses = np.asarray(priv.cross_entropy_loss(tl, ty))
    tau = priv.yeom_threshold(train_losses)
    dec = metrics.threshold_metrics(np.asarray(priv.threshold_predict(sc, -tau)), lab)
    train_acc = float(np.mean(np.argmax(tl, -1) == ty))
    test_acc = float(sw['test_acc'][m])
    rep = metrics.membership_report(sc, lab, fprs=cfg.fprs)
    out.append({'train_size': s, 'train_accuracy': train_acc, 'test_accuracy': test_acc,
                'generalization_gap': train_acc - test_acc,
                'mean_train_loss': tau,
                'yeom_advantage': dec['advantage'], 'best_advantage': rep['advantage'],
                'auc': rep['auc'],
                **{f'tpr_at_{f:g}_fpr': rep[f'tpr_at_{f:g}_fpr'] for f in cfg.fprs}})
    print(f'[{NAME}] sweep n={s}: gap {train_acc - test_acc:.3f} Yeom adv '
          f'{dec["advantage"]:.3f} AUC {rep["auc"]:.3f}', flush=True)
  return out


def render_markdown(r: dict) -> str:
  fprs = r['config']['fprs']
  lines = [
      f"## Membership inference on {r['dataset']} ({r['model']}, {r['num_params']:,} "
      'parameters)', '',
      f"Target: trained on {r['num_members']} of {r['pool_size']} pool images "
      f"(train accuracy {100 * r['target_train_accuracy']:.1f}%, test accuracy "
      f"{100 * r['target_test_accuracy']:.1f}%); {r['num_nonmembers']} non-members. "
      f"LiRA: {r['num_shadow']} shadow models (every example IN for half), trained as one "
      f"`fit_many` program in {r['shadow_train_seconds']:.0f} s "
      f"({r['backend']}); augmentation-free (one query per example). TPR at FPR uses the "
      'lowest threshold whose FPR <= the target (`jaxsec.metrics`).', '',
      '| attack | AUC | balanced acc. | ' + ' | '.join(
          f'TPR @ {100 * f:g}% FPR' for f in fprs) + ' |',
      '|---|---|---|' + '---|' * len(fprs),
  ]
  for name in r.get('attack_order', sorted(r['attacks'])):
    a = r['attacks'][name]
    lines.append(f"| {name} | {a['auc']:.4f} | {100 * a['balanced_accuracy']:.2f}% | "
                 + ' | '.join(f"{100 * a[f'tpr_at_{f:g}_fpr']:.2f}%" for f in fprs) + ' |')
  y = r['yeom_decision']
  lines += [
      '', f"Yeom's decision rule (member iff loss <= tau = {y['tau']:.4f}, the Shokri shadow "
      f"models' mean training loss): TPR {100 * y['tpr']:.1f}%, FPR {100 * y['fpr']:.1f}%, "
      f"advantage {y['advantage']:.3f}.", '',
      f"![log-log ROC]({NAME}_roc.png)", '',
      'Overfitting sweep (one `fit_many` program over training-set sizes, '
      f"{r['config']['sweep_steps']} steps each; members vs as many unseen test images):", '',
      '| train size | train acc. | test acc. | gap | Yeom advantage | best advantage | AUC |',
      '|---|---|---|---|---|---|---|',
  ]
  for s in r['sweep']:
    lines.append(f"| {s['train_size']} | {100 * s['train_accuracy']:.1f}% | "
                 f"{100 * s['test_accuracy']:.1f}% | {s['generalization_gap']:.3f} | "
                 f"{s['yeom_advantage']:.3f} | {s['best_advantage']:.3f} | {s['auc']:.3f} |")
  lines.append('')
  return '\n'.join(lines)


def headline(r: dict) -> list:
  a = r['attacks']
  on, glob = a['LiRA online'], a['LiRA global (one Gaussian pair)']
  return [(f"LiRA online ({r['num_shadow']} shadow models) vs global threshold, TPR at 0.1% FPR",
           f"{100 * on['tpr_at_0.001_fpr']:.2f}% vs {100 * glob['tpr_at_0.001_fpr']:.2f}%")]
