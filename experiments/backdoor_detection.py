r"""Backdoor detection and repair on FMNIST: BadNets against the reference CNN.

    python -m experiments.run --config=experiments/configs/backdoor_detection.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/backdoor_detection.py:smoke --workdir=/tmp/b

A BadNets backdoor (Gu, Dolan-Gavitt & Garg 2017: a 3x3 white patch in the bottom-right
corner, a share of the training images relabelled to the target) is planted in the reference
CNN trained on an FMNIST subset. The test subset is split into the defender's clean data
(``n_defense`` images: Neural Cleanse's optimisation set, STRIP's overlays and threshold
set, the fine-tuning set) and an evaluation set. Reported:

* detection of the poisoned *training* points by activation clustering (Chen et al. 2019;
  per-class 2-means on ICA-reduced penultimate activations) and spectral signatures (Tran,
  Li & Madry 2018): ROC AUC of their scores and precision / recall of their removal masks;
* detection of triggered *test* inputs by STRIP (Gao et al. 2019): AUC, and the true / false
  positive rates at the paper's threshold (normal fit of the clean entropies, FRR 1%);
* Neural Cleanse (Wang et al. 2019): the L1 norm of every label's reversed mask, the MAD
  anomaly index and the flagged label;
* clean accuracy and attack success (triggered non-target evaluation images classified as
  the target) before and after repair: pruning alone and fine-pruning (Liu et al. 2018; the
  dormant penultimate units pruned up to a 4% clean-accuracy drop, then fine-tuning), and
  Neural Cleanse unlearning with the reversed trigger of the flagged label (of the label with
  the largest anomaly index when none is flagged).

Deviations from the papers, all for a CPU budget (the full run took 14 minutes on a 2-core CPU
shared with other jobs, the CNN's training restored from its checkpoint): a 20,000-image training
subset and 3 epochs; STRIP with 20 overlays per input; Neural Cleanse for a fixed 50 x 10
mini-batch steps of 32 images for all labels at once, from lambda = 1e-2 (the authors: 1e-3
until an early stop); fine-pruning prunes the penultimate dense units (the paper: the last
convolutional layer's channels); repairs fine-tune on the defender's 1,000 clean images
(fine-pruning 10 epochs, unlearning 2). The per-method deviations are in each module's docstring.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from experiments import defense_common as dc
from jaxsec import models
from jaxsec.attacks import poisoning
from jaxsec.defenses.data import activation_clustering_lib as ac
from jaxsec.defenses.data import sanitize
from jaxsec.defenses.inference import strip
from jaxsec.defenses.model import fine_pruning
from jaxsec.defenses.model import neural_cleanse as nc

NAME = 'backdoor_detection'
_HEAD = ('params', 'head', 'kernel')


def _features(model, params, x, batch_size=1000):
  f = jax.jit(functools.partial(model.apply, penultimate=True))
  return np.concatenate([np.asarray(f(params, x[i:i + batch_size]))
                         for i in range(0, x.shape[0], batch_size)])


def _measure(model, params, x, y, trigger, target):
  f = lambda z: model.apply(params, z)
  other = y != target
  return {'clean_accuracy': float(np.mean(dc.predictions(f, x) == y)),
          'attack_success': float(np.mean(dc.predictions(f, trigger(x[other])) == target))}


def _auc(labels, scores):
  return float(roc_auc_score(np.asarray(labels, bool), np.asarray(scores, np.float64)))


def _training_set_detection(cfg, feats, y_p, poison):
  k = 10
  t0 = time.time()
  r = ac.activation_clusters(feats, y_p, num_classes=k, num_dims=cfg.ac_dims,
                             reduce=cfg.ac_reduce, criterion=cfg.ac_criterion, seed=cfg.seed)
  ac_sec = time.time() - t0
  t0 = time.time()
  ss = np.asarray(sanitize.spectral_signature_scores(jnp.asarray(feats), jnp.asarray(y_p),
                                                     num_classes=k))
  # Tran et al. remove 1.5 eps per class for a poison bound eps: here the poison count over
  # the smallest class it could all sit in (the bound the poisoning study uses).
  counts = np.bincount(y_p[~poison], minlength=k)
  eps = float(poison.sum()) / (counts.min() + float(poison.sum()))
  removal = min(0.95, cfg.spectral_removal * eps)
  ss_keep = np.asarray(sanitize.spectral_signatures(jnp.asarray(feats), jnp.asarray(y_p),
                                                    num_classes=k, fraction=removal))
  ss_sec = time.time() - t0
  return {
      'activation_clustering': {
          'auc': _auc(poison, r['score']), 'seconds': ac_sec,
          'flagged_classes': np.flatnonzero(r['flagged']).tolist(),
          'relative_size_target': r['relative_size'][cfg.target].tolist(),
          'silhouette': [None if np.isnan(s) else float(s) for s in r['silhouette']],
          **sanitize.precision_recall(~r['poison'], poison)},
      'spectral_signatures': {
          'auc': _auc(poison, ss), 'seconds': ss_sec, 'removal_fraction': removal,
          **sanitize.precision_recall(ss_keep, poison)}}


def _strip(cfg, logits_fn, xd, xe, ye, trigger, key):
  t0 = time.time()
  score = strip.strip_score(logits_fn, xd, num_samples=cfg.strip_samples, key=key)
  # the paper's threshold from the defender's own clean data (its entropies' normal fit)
  t = strip.strip_threshold(np.asarray(score(xd)), cfg.strip_frr)
  other = ye != cfg.target
  clean = np.asarray(score(xe))
  troj = np.asarray(score(trigger(xe[other])))
  labels = np.r_[np.zeros(clean.size), np.ones(troj.size)]
  return {'auc': _auc(labels, np.r_[clean, troj]), 'threshold': t,
          'tpr': float(np.mean(troj > t)), 'fpr': float(np.mean(clean > t)),
          'mean_entropy_clean': float(-clean.mean()), 'mean_entropy_trojan': float(-troj.mean()),
          'n_clean': int(clean.size), 'n_trojan': int(troj.size), 'seconds': time.time() - t0}


def _neural_cleanse(cfg, logits_fn, xd, key):
  t0 = time.time()
  r = nc.detect(logits_fn, xd, num_classes=10, key=key, num_epochs=cfg.nc_epochs,
                steps_per_epoch=cfg.nc_steps_per_epoch, batch_size=cfg.nc_batch,
                init_cost=cfg.nc_init_cost)
  lab = r.infected if r.infected is not None else int(np.argmax(r.anomaly_index))
  m = np.asarray(r.triggers.mask[lab])
  s = cfg.trigger_size
  h, w = m.shape
  corner = float(m[h - s - 1:, w - s - 1:].sum() / max(m.sum(), 1e-12))
  return {'l1': np.asarray(r.triggers.l1).tolist(),
          'success': np.asarray(r.triggers.success).tolist(),
          'anomaly_index': np.asarray(r.anomaly_index).tolist(), 'flagged': list(r.flagged),
          'infected': r.infected, 'repair_label': lab, 'mask_share_at_trigger': corner,
          'mask': m.tolist(), 'pattern': np.asarray(r.triggers.pattern[lab]).tolist(),
          'seconds': time.time() - t0}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(cfg, workdir, NAME,
                                                                     'detection')
  model = models.get('cnn', **cfg.model_kwargs.to_dict())
  def trigger(z):
    return np.asarray(poisoning.apply_trigger(jnp.asarray(z), size=cfg.trigger_size))
  xd, yd = xt[:cfg.n_defense], yt[:cfg.n_defense]
  xe, ye = xt[cfg.n_defense:], yt[cfg.n_defense:]
  atk = poisoning.badnets(fraction=cfg.poison_fraction, target_label=cfg.target,
                          num_classes=10, size=cfg.trigger_size)
  po = atk(jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, 1))
  x_p, y_p = np.asarray(po.x), np.asarray(po.y)
  poison = np.asarray(po.info['poison_mask'])
  results['poison'] = {'n_train': int(y.size), 'n_poison': int(poison.sum()),
                       'target': cfg.target, 'trigger': f'{cfg.trigger_size}x'
                       f'{cfg.trigger_size} white patch, bottom right',
                       'share_of_target_class': float(poison.sum() / np.sum(y_p == cfg.target))}
  base = {k: cfg[k] for k in ('seed', 'model_kwargs', 'batch_size', 'learning_rate', 'n_train',
                              'epochs', 'poison_fraction', 'target', 'trigger_size')}
  dc.log(f'{NAME}: training the CNN on {y.size} images, {int(poison.sum())} poisoned')
  p0 = models.init(model, jax.random.fold_in(key, 2), (1,) + x.shape[1:])
  params, tinfo = dc.train_timed(
      model.apply, p0, x_p, y_p, optimizer=optax.adam(cfg.learning_rate),
      key=jax.random.fold_in(key, 3), num_epochs=cfg.epochs, batch_size=cfg.batch_size,
      checkpoint_dir=dc.ckpt_dir(scratch, NAME, 'backdoored', dc.tag_of(base)),
      label='backdoored')
  logits_fn = lambda z: model.apply(params, z)
  results['train'] = tinfo
  results['before'] = _measure(model, params, xe, ye, trigger, cfg.target)
  dc.log(f'{NAME}: before repair {results["before"]}')
  save()

  # one cached stage per detector, each keyed by the settings it depends on
  stages = {
      'training_set': (('ac_dims', 'ac_reduce', 'ac_criterion', 'spectral_removal'),
                       lambda: _training_set_detection(cfg, _features(model, params, x_p),
                                                       y_p, poison)),
      'strip': (('n_test', 'n_defense', 'strip_samples', 'strip_frr'),
                lambda: _strip(cfg, logits_fn, xd, xe, ye, trigger,
                               jax.random.fold_in(key, 4))),
      'neural_cleanse': (('n_test', 'n_defense', 'nc_epochs', 'nc_steps_per_epoch',
                          'nc_batch', 'nc_init_cost'),
                         lambda: _neural_cleanse(cfg, logits_fn, xd,
                                                 jax.random.fold_in(key, 5)))}
  det_cfg: list = [base]
  det = {}
  for stage, (fields, compute) in stages.items():
    stage_cfg = (base, {k: cfg[k] for k in fields})
    det_cfg.append(stage_cfg)
    hit = cache.get(stage, stage_cfg)
    if hit is None:
      dc.log(f'{NAME}: {stage} detection')
      hit = compute()
      cache.put(stage, stage_cfg, hit)
    if stage == 'training_set':
      det.update(hit)
    else:
      det[stage] = hit
    results['detection'] = det
    save()

  rep_cfg = (det_cfg, {k: cfg[k] for k in ('unlearn_epochs', 'unlearn_learning_rate',
                                           'prune_fraction', 'prune_max_drop',
                                           'finetune_epochs', 'finetune_learning_rate')})
  rep = cache.get('repair', rep_cfg)
  if rep is None:
    rep = {}
    dc.log(f'{NAME}: fine-pruning')
    feats = lambda p, z: model.apply(p, z, penultimate=True)
    t0 = time.time()
    p_fp, info = fine_pruning.fine_prune(
        model.apply, params, xd, yd, feature_fn=feats, path=_HEAD,
        key=jax.random.fold_in(key, 6), optimizer=optax.adam(cfg.finetune_learning_rate),
        fraction=cfg.prune_fraction, max_accuracy_drop=cfg.prune_max_drop,
        num_epochs=cfg.finetune_epochs, batch_size=cfg.batch_size)
    p_pr = fine_pruning.prune(params, _HEAD, info['pruned'])
    rep['pruning'] = {**_measure(model, p_pr, xe, ye, trigger, cfg.target),
                      'units_pruned': info['num_pruned']}
    rep['fine_pruning'] = {**_measure(model, p_fp, xe, ye, trigger, cfg.target),
                           'units_pruned': info['num_pruned'],
                           'units': int(info['pruned'].size),
                           'prefix_accuracy': info.get('prefix_accuracy'),
                           'seconds': time.time() - t0}
    dc.log(f'{NAME}: Neural Cleanse unlearning (label {det["neural_cleanse"]["repair_label"]})')
    t0 = time.time()
    p_nc, _ = nc.unlearn(model.apply, params, xd, yd,
                         np.asarray(det['neural_cleanse']['mask'], np.float32),
                         np.asarray(det['neural_cleanse']['pattern'], np.float32),
                         key=jax.random.fold_in(key, 7),
                         optimizer=optax.adam(cfg.unlearn_learning_rate),
                         num_epochs=cfg.unlearn_epochs, batch_size=cfg.batch_size)
    rep['nc_unlearning'] = {**_measure(model, p_nc, xe, ye, trigger, cfg.target),
                            'label': det['neural_cleanse']['repair_label'],
                            'seconds': time.time() - t0}
    cache.put('repair', rep_cfg, rep)
  results['repair'] = rep
  dc.log(f'{NAME}: repair {rep}')
  save()
  return results


def render_markdown(r: dict) -> str:
  c, d, p = r['config'], r['detection'], r['poison']
  arg = '' if r['variant'] == 'full' else f':{r["variant"]}'
  a, s, st, ncr = (d['activation_clustering'], d['spectral_signatures'], d['strip'],
                   d['neural_cleanse'])
  lines = [f'## Backdoor detection and repair on FMNIST (variant {r["variant"]}; `python -m '
           f'experiments.run --config=experiments/configs/backdoor_detection.py{arg} '
           '--workdir=docs/results`)', '',
           f'BadNets: {p["trigger"]}, target label {p["target"]}, {p["n_poison"]} of '
           f'{p["n_train"]} training images poisoned ({dc.fmt(p["share_of_target_class"])} of '
           f'the target class); reference CNN {c["model_kwargs"]["features"]} / '
           f'{c["model_kwargs"]["dense"]}, {c["epochs"]} epoch(s). Defender: '
           f'{c["n_defense"]} clean test images; evaluation on the other '
           f'{c["n_test"] - c["n_defense"]}.', '',
           '| detector | what it scores | ROC AUC | at its threshold |', '|---|---|---|---|',
           f'| activation clustering ({c["ac_reduce"]}, {c["ac_dims"]} dims, '
           f'{c["ac_criterion"]}) | training points | {a["auc"]:.3f} | precision '
           f'{dc.fmt(a["precision"])}, recall {dc.fmt(a["recall"])}; flagged classes '
           f'{a["flagged_classes"]} |',
           f'| spectral signatures (remove {dc.fmt(s["removal_fraction"])} per class) | '
           f'training points | {s["auc"]:.3f} | precision {dc.fmt(s["precision"])}, recall '
           f'{dc.fmt(s["recall"])} |',
           f'| STRIP ({c["strip_samples"]} overlays, FRR {c["strip_frr"]:g}) | test inputs '
           f'({st["n_trojan"]} triggered vs {st["n_clean"]} clean) | {st["auc"]:.3f} | TPR '
           f'{dc.fmt(st["tpr"])}, FPR {dc.fmt(st["fpr"])} |', '',
           f'Neural Cleanse ({c["nc_epochs"]} x {c["nc_steps_per_epoch"]} steps): flagged '
           f'labels {ncr["flagged"]} (infected: {ncr["infected"]}; the largest index is '
           f'label {ncr["repair_label"]}, whose trigger the unlearning uses); its reversed mask '
           f'(L1 {ncr["l1"][ncr["repair_label"]]:.1f}; the trigger has {c["trigger_size"] ** 2} pixels) puts '
           f'{dc.fmt(ncr["mask_share_at_trigger"])} of its L1 mass '
           'on the trigger corner (and one pixel around it).', '',
           '| label | ' + ' | '.join(str(i) for i in range(len(ncr['l1']))) + ' |',
           '|---|' + '---|' * len(ncr['l1']),
           '| mask L1 | ' + ' | '.join(f'{v:.1f}' for v in ncr['l1']) + ' |',
           '| anomaly index | ' + ' | '.join(f'{v:.2f}' for v in ncr['anomaly_index']) + ' |',
           '', '| model | clean accuracy | attack success |', '|---|---|---|']
  rows = [('backdoored', r['before'])]
  rep = r['repair']
  rows += [(f'pruning ({rep["pruning"]["units_pruned"]} dormant units)', rep['pruning']),
           (f'fine-pruning (+ {c["finetune_epochs"]} epoch(s) fine-tuning)',
            rep['fine_pruning']),
           (f'Neural Cleanse unlearning (label {rep["nc_unlearning"]["label"]}, '
            f'{c["unlearn_epochs"]} epoch(s))', rep['nc_unlearning'])]
  for name, m in rows:
    lines.append(f'| {name} | {dc.fmt(m["clean_accuracy"])} | {dc.fmt(m["attack_success"])} |')
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: detection AUCs and the repairs' attack success (variant 'full')."""
  if r.get('variant') != 'full':
    return []
  d, rep = r['detection'], r['repair']
  return [('Backdoor detection / repair, BadNets on the FMNIST CNN (cpu): AUC of activation '
           'clustering / spectral signatures / STRIP; attack success and clean accuracy '
           'before, after fine-pruning, after NC unlearning',
           f"AUC {d['activation_clustering']['auc']:.2f} / "
           f"{d['spectral_signatures']['auc']:.2f} / {d['strip']['auc']:.2f}; NC flags "
           f"{d['neural_cleanse']['flagged']}; ASR {dc.fmt(r['before']['attack_success'])} -> "
           f"{dc.fmt(rep['fine_pruning']['attack_success'])} / "
           f"{dc.fmt(rep['nc_unlearning']['attack_success'])} at clean "
           f"{dc.fmt(r['before']['clean_accuracy'])} -> "
           f"{dc.fmt(rep['fine_pruning']['clean_accuracy'])} / "
           f"{dc.fmt(rep['nc_unlearning']['clean_accuracy'])}")]
