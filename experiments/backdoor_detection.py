r"""Backdoor detection and repair on FMNIST: BadNets and the clean-label backdoor against the
reference CNN.

    python -m experiments.run --config=experiments/configs/backdoor_detection.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/backdoor_detection.py:turner_at --workdir=docs/results
    python -m experiments.run --config=experiments/configs/backdoor_detection.py:turner_pgd_at --workdir=docs/results
    python -m experiments.run --config=experiments/configs/backdoor_detection.py:smoke --workdir=/tmp/b

Two backdoors are planted, each in its own copy of the reference CNN trained on an FMNIST
subset: BadNets (Gu, Dolan-Gavitt & Garg 2017: a 3x3 white patch in the bottom-right corner,
a share of the training images of other classes relabelled to the target) and the
label-consistent backdoor (Turner, Tsipras & Madry 2019: a share of the *target-class*
training images made hard by L_inf PGD against a separately trained CNN, then stamped with
the same patch; labels unchanged). The test subset is split into the defender's clean data
(``n_defense`` images: Neural Cleanse's optimisation set, STRIP's overlays and threshold
set, the fine-tuning set) and an evaluation set. Reported for each backdoor:

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

Deviations from the papers, all for a CPU budget: a 20,000-image training subset and 3
epochs; STRIP with 20 overlays per input; Neural Cleanse for a fixed 50 x 10 mini-batch steps
of 32 images for all labels at once, from lambda = 1e-2 (the authors: 1e-3 until an early
stop); fine-pruning prunes the penultimate dense units (the paper: the last convolutional
layer's channels); repairs fine-tune on the defender's 1,000 clean images (fine-pruning 10
epochs, unlearning 2). The clean-label backdoor's PGD runs against a standard CNN
(``cl_surrogate='standard'``); Turner et al. attack an adversarially trained one, whose
perturbations carry features of other classes, so the poisons are hard to learn from their
content: ``cl_surrogate='adversarial'`` (the variant ``turner_at``, its own JSON
``backdoor_detection_turner_at.json``) trains it with the library's adversarial training
(``defenses.training.adversarial``: fast AT, or Madry's PGD-AT in the variant
``turner_pgd_at``) and reports its clean and PGD accuracy next to the standard CNN's. Both with BadNets'
trigger (theirs: a 3x3 black-and-white pattern, ``poisoning.pattern_trigger``, a config
option) and the same poison count as BadNets (3% of the training set, about 30% of the target
class). The per-method deviations are in each module's docstring.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from experiments import defense_common as dc
from jaxsec import attacks
from jaxsec import evaluate
from jaxsec import models
from jaxsec.attacks import poisoning
from jaxsec.defenses.data import activation_clustering_lib as ac
from jaxsec.defenses.data import sanitize
from jaxsec.defenses.inference import strip
from jaxsec.defenses.model import fine_pruning
from jaxsec.defenses.model import neural_cleanse as nc
from jaxsec.defenses.training import adversarial

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


ATTACKS = ('badnets', 'clean_label')
_SHARED = ('seed', 'model_kwargs', 'batch_size', 'learning_rate', 'n_train', 'epochs', 'target',
           'trigger_size')
_ATTACK_FIELDS = {
    'badnets': ('poison_fraction',),
    'clean_label': ('cl_poison_fraction', 'cl_hardening', 'cl_eps', 'cl_norm', 'cl_pgd_steps',
                    'cl_interpolation', 'cl_trigger', 'cl_amplitude', 'cl_all_corners')}
SURROGATES = ('standard', 'adversarial')
AT_METHODS = ('fast', 'pgd')
# the adversarial surrogate's settings: part of the clean-label run's keys only when it is
# used, so that the standard runs keep their checkpoints and cached stages
_AT_FIELDS = ('cl_surrogate', 'cl_at_method', 'cl_at_eps', 'cl_at_step_size', 'cl_at_steps')


def _adversarial(cfg, attack: str) -> bool:
  return attack == 'clean_label' and cfg.cl_surrogate == 'adversarial'


def _run_fields(cfg, attack: str) -> tuple:
  """The config fields that determine the backdoored model of ``attack``."""
  extra = _AT_FIELDS if _adversarial(cfg, attack) else ()
  return _SHARED + _ATTACK_FIELDS[attack] + extra


def _trigger_fn(cfg, attack: str):
  """The attack's trigger as a jnp function (the same at training and test time)."""
  if attack == 'clean_label' and cfg.cl_trigger == 'pattern':
    return functools.partial(poisoning.pattern_trigger, amplitude=cfg.cl_amplitude,
                             all_corners=cfg.cl_all_corners)
  return functools.partial(poisoning.apply_trigger, size=cfg.trigger_size)


def _describe_trigger(cfg, attack: str) -> str:
  if attack == 'clean_label' and cfg.cl_trigger == 'pattern':
    return (f'3x3 black-and-white pattern (Turner et al.), amplitude {cfg.cl_amplitude:.3g}, '
            + ('all four corners' if cfg.cl_all_corners else 'bottom right'))
  return f'{cfg.trigger_size}x{cfg.trigger_size} white patch, bottom right'


def _at_objective(cfg):
  """The surrogate's adversarial-training objective (Madry et al.'s min-max loss): fast AT
  (FGSM from a random start, Wong et al. 2020) or PGD-AT with ``cl_at_steps`` steps."""
  if cfg.cl_at_method == 'fast':
    return adversarial.fast_adversarial_training(eps=cfg.cl_at_eps,
                                                 step_size=cfg.cl_at_step_size)
  return adversarial.pgd_adversarial_training(eps=cfg.cl_at_eps, num_steps=cfg.cl_at_steps,
                                              step_size=cfg.cl_at_step_size)


def _surrogate(cfg, model, x, y, key, scratch, kind='standard'):
  """The clean-label attacker's own CNN, trained on the clean training subset from the same
  initialisation: plainly (``kind='standard'``, Adam at a constant rate) or adversarially
  (``'adversarial'``: :func:`_at_objective`, Adam with the one-cycle rate that
  experiments/defense_adv_training.py uses for every method, Wong et al.'s schedule)."""
  p0 = models.init(model, jax.random.fold_in(key, 8), (1,) + x.shape[1:])
  shared = {k: cfg[k] for k in _SHARED}
  if kind == 'adversarial':
    steps = cfg.epochs * (x.shape[0] // cfg.batch_size)
    opt = optax.adam(optax.cosine_onecycle_schedule(max(steps, 1), cfg.learning_rate))
    objective, stage = _at_objective(cfg), 'surrogate-at'
    tag = dc.tag_of(shared, {k: cfg[k] for k in _AT_FIELDS})
  else:
    opt, objective, stage, tag = optax.adam(cfg.learning_rate), None, 'surrogate', dc.tag_of(
        shared)
  params, info = dc.train_timed(
      model.apply, p0, x, y, optimizer=opt, objective=objective,
      key=jax.random.fold_in(key, 9), num_epochs=cfg.epochs, batch_size=cfg.batch_size,
      checkpoint_dir=dc.ckpt_dir(scratch, NAME, stage, tag), label=f'{kind} surrogate')
  return params, info


def _robustness(cfg, model, params, x, y, key, label) -> dict:
  """Clean and L_inf PGD accuracy (``cl_at_eval_steps`` steps of eps / 4 from a random
  start, at the adversarial training's ``cl_at_eps``) of a surrogate on the first
  ``cl_at_eval_n`` evaluation images."""
  n = min(cfg.cl_at_eval_n, int(y.size))
  logits_fn = lambda z: model.apply(params, z)
  atk = attacks.pgd(eps=cfg.cl_at_eps, num_steps=cfg.cl_at_eval_steps,
                    step_size=cfg.cl_at_eps / 4, random_start=True)
  t0 = time.time()
  x_adv, _ = evaluate.run_attack(atk, logits_fn, x[:n], y[:n], key, batch_size=min(n, 250),
                                 progress=f'{NAME}/{label} surrogate PGD')
  s = dc.attack_summary(logits_fn, x[:n], y[:n], x_adv, eps=cfg.cl_at_eps)
  return {'clean_accuracy': s['clean_accuracy'], 'pgd_accuracy': s['robust_accuracy'],
          'eps': float(cfg.cl_at_eps), 'pgd_steps': int(cfg.cl_at_eval_steps), 'n': n,
          'seconds': time.time() - t0}


def _poison(cfg, attack, model, x, y, key, scratch, evaluation):
  """``(x_p, y_p, poison_mask, summary)`` of one backdoor on the clean subset ``(x, y)``;
  ``evaluation = (xe, ye)`` scores the clean-label attacker's CNN."""
  trig = _trigger_fn(cfg, attack)
  summary: dict[str, Any] = {'attack': attack, 'trigger': _describe_trigger(cfg, attack)}
  if attack == 'badnets':
    atk = poisoning.badnets(fraction=cfg.poison_fraction, target_label=cfg.target,
                            num_classes=10, size=cfg.trigger_size)
    po = atk(jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, 1))
  else:
    kw: dict[str, Any] = {}
    if cfg.cl_hardening == 'pgd':
      sp, sinfo = _surrogate(cfg, model, x, y, key, scratch, cfg.cl_surrogate)
      kw = {'attack': attacks.pgd(eps=cfg.cl_eps, num_steps=cfg.cl_pgd_steps, norm=cfg.cl_norm),
            'logits_fn': lambda z: model.apply(sp, z)}
      xe, ye = evaluation
      k_eval = jax.random.fold_in(key, 11)
      summary.update(surrogate=cfg.cl_surrogate, surrogate_train=sinfo,
                     surrogate_robustness=_robustness(cfg, model, sp, xe, ye, k_eval,
                                                      cfg.cl_surrogate))
      if cfg.cl_surrogate == 'adversarial':   # the standard CNN, for comparison
        ref, _ = _surrogate(cfg, model, x, y, key, scratch, 'standard')
        summary['standard_surrogate_robustness'] = _robustness(cfg, model, ref, xe, ye, k_eval,
                                                               'standard')
    elif cfg.cl_hardening == 'interpolation':
      kw = {'interpolation': cfg.cl_interpolation}
    atk = poisoning.clean_label_backdoor(fraction=cfg.cl_poison_fraction,
                                         target_label=cfg.target, num_classes=10,
                                         trigger=trig, **kw)
    t0 = time.time()
    po = atk(jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, 10))
    idx = np.asarray(po.info['base_index'])
    d = (np.asarray(po.info['hardened']) - x[idx]).reshape(idx.size, -1)
    summary.update(hardening=cfg.cl_hardening, hardening_seconds=time.time() - t0,
                   hardening_linf=float(np.abs(d).max()),
                   hardening_l2_mean=float(np.sqrt((d ** 2).sum(1)).mean()))
    if 'hardening_success' in po.info:
      summary['hardening_success'] = float(np.mean(np.asarray(po.info['hardening_success'])))
  x_p, y_p = np.asarray(po.x), np.asarray(po.y)
  poison = np.asarray(po.info['poison_mask'])
  summary.update(n_train=int(y.size), n_poison=int(poison.sum()), target=cfg.target,
                 labels_changed=int(np.sum(y_p != y)),
                 share_of_target_class=float(poison.sum() / np.sum(y_p == cfg.target)))
  return x_p, y_p, poison, summary


def _backdoor(cfg, attack, model, data, key, scratch, cache, out, save):
  """Plants one backdoor, trains on it, runs the detectors and the repairs; fills ``out``."""
  x, y, xd, yd, xe, ye = data
  trig = _trigger_fn(cfg, attack)

  def trigger(z):
    return np.asarray(trig(jnp.asarray(z)))
  x_p, y_p, poison, summary = _poison(cfg, attack, model, x, y, key, scratch, (xe, ye))
  out['poison'] = summary
  base = {k: cfg[k] for k in _run_fields(cfg, attack)}
  prefix = f'{attack}_at' if _adversarial(cfg, attack) else attack   # stage-cache names
  dc.log(f'{NAME}/{attack}: training the CNN on {y.size} images, {int(poison.sum())} poisoned')
  p0 = models.init(model, jax.random.fold_in(key, 2), (1,) + x.shape[1:])
  stage = 'backdoored' if attack == 'badnets' else f'{attack}-backdoored'
  params, tinfo = dc.train_timed(
      model.apply, p0, x_p, y_p, optimizer=optax.adam(cfg.learning_rate),
      key=jax.random.fold_in(key, 3), num_epochs=cfg.epochs, batch_size=cfg.batch_size,
      checkpoint_dir=dc.ckpt_dir(scratch, NAME, stage, dc.tag_of(base)),
      label=f'{attack} backdoored')
  logits_fn = lambda z: model.apply(params, z)
  out['train'] = tinfo
  out['before'] = _measure(model, params, xe, ye, trigger, cfg.target)
  dc.log(f'{NAME}/{attack}: before repair {out["before"]}')
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
  for name, (fields, compute) in stages.items():
    stage_cfg = (base, {k: cfg[k] for k in fields})
    det_cfg.append(stage_cfg)
    hit = cache.get(f'{prefix}_{name}', stage_cfg)
    if hit is None:
      dc.log(f'{NAME}/{attack}: {name} detection')
      hit = compute()
      cache.put(f'{prefix}_{name}', stage_cfg, hit)
    if name == 'training_set':
      det.update(hit)
    else:
      det[name] = hit
    out['detection'] = det
    save()

  rep_cfg = (det_cfg, {k: cfg[k] for k in ('unlearn_epochs', 'unlearn_learning_rate',
                                           'prune_fraction', 'prune_max_drop',
                                           'finetune_epochs', 'finetune_learning_rate')})
  rep = cache.get(f'{prefix}_repair', rep_cfg)
  if rep is None:
    rep = {}
    dc.log(f'{NAME}/{attack}: fine-pruning')
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
    label = det['neural_cleanse']['repair_label']
    dc.log(f'{NAME}/{attack}: Neural Cleanse unlearning (label {label})')
    t0 = time.time()
    p_nc, _ = nc.unlearn(model.apply, params, xd, yd,
                         np.asarray(det['neural_cleanse']['mask'], np.float32),
                         np.asarray(det['neural_cleanse']['pattern'], np.float32),
                         key=jax.random.fold_in(key, 7),
                         optimizer=optax.adam(cfg.unlearn_learning_rate),
                         num_epochs=cfg.unlearn_epochs, batch_size=cfg.batch_size)
    rep['nc_unlearning'] = {**_measure(model, p_nc, xe, ye, trigger, cfg.target),
                            'label': label, 'seconds': time.time() - t0}
    cache.put(f'{prefix}_repair', rep_cfg, rep)
  out['repair'] = rep
  dc.log(f'{NAME}/{attack}: repair {rep}')
  save()


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  for attack in cfg.attacks:
    if attack not in ATTACKS:
      raise ValueError(f'attacks contains {attack!r}; expected names from {ATTACKS}.')
  if cfg.cl_surrogate not in SURROGATES:
    raise ValueError(f'cl_surrogate={cfg.cl_surrogate!r}; expected one of {SURROGATES}.')
  if cfg.cl_at_method not in AT_METHODS:
    raise ValueError(f'cl_at_method={cfg.cl_at_method!r}; expected one of {AT_METHODS}.')
  if cfg.cl_surrogate == 'adversarial' and cfg.cl_hardening != 'pgd':
    raise ValueError(f"cl_surrogate='adversarial' needs cl_hardening='pgd' (the surrogate is "
                     f'what PGD attacks); got cl_hardening={cfg.cl_hardening!r}.')
  # a variant other than full / smoke (turner_at) writes backdoor_detection_<variant>.json
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(
      cfg, workdir, NAME, 'attacks', variant_file=True)
  model = models.get('cnn', **cfg.model_kwargs.to_dict())
  data = (x, y, xt[:cfg.n_defense], yt[:cfg.n_defense], xt[cfg.n_defense:],
          yt[cfg.n_defense:])
  for attack in cfg.attacks:
    results['attacks'][attack] = {}
    _backdoor(cfg, attack, model, data, key, scratch, cache, results['attacks'][attack], save)
  return results


_TITLES = {'badnets': 'BadNets (Gu et al. 2017)',
           'clean_label': 'Clean-label backdoor (Turner et al. 2019)'}


_AT_WORDS = {'fast': 'fast adversarial training (FGSM from a random start, step {step:.3g}; Wong '
                     'et al. 2020)',
             'pgd': 'PGD adversarial training ({steps} steps of {step:.3g}; Madry et al. 2018)'}


def _title(p) -> str:
  t = _TITLES[p['attack']]
  return t + (', adversarially trained attacker CNN' if p.get('surrogate') == 'adversarial'
              else '')


def _surrogate_line(c, p) -> str:
  """The clean-label attacker's CNN and its clean / PGD accuracy (absent in older JSON)."""
  if 'surrogate_robustness' not in p:
    return ''
  r = p['surrogate_robustness']

  def acc(m):
    return (f'clean accuracy {dc.fmt(m["clean_accuracy"])}, PGD-{m["pgd_steps"]} accuracy '
            f'{dc.fmt(m["pgd_accuracy"])} at L_inf eps {m["eps"]:.3g}')
  if p.get('surrogate') == 'adversarial':
    how = _AT_WORDS[c['cl_at_method']].format(step=c['cl_at_step_size'], steps=c['cl_at_steps'])
    line = (f"The attacker's CNN, trained {c['epochs']} epoch(s) by {how} at L_inf eps "
            f"{c['cl_at_eps']:.3g}: {acc(r)} on {r['n']} evaluation images")
    ref = p.get('standard_surrogate_robustness')
    return line + (f' (the standard CNN: {acc(ref)}).' if ref else '.')
  return f"The attacker's (standard) CNN: {acc(r)} on {r['n']} evaluation images."


def _poison_line(c, p) -> str:
  if p['attack'] == 'badnets':
    return (f'{_TITLES["badnets"]}: {p["trigger"]}, target label {p["target"]}, '
            f'{p["n_poison"]} of {p["n_train"]} training images of other classes stamped and '
            f'relabelled ({dc.fmt(p["share_of_target_class"])} of the target class).')
  how = {'pgd': (f'L_{c["cl_norm"][1:]} PGD (eps {c["cl_eps"]:.3g}, {c["cl_pgd_steps"]} '
                 'steps) against '
                 + ('an adversarially trained' if p.get('surrogate') == 'adversarial'
                    else 'a separately trained') + ' CNN'
                 + (f' (which then misclassifies {dc.fmt(p["hardening_success"])} of them)'
                    if 'hardening_success' in p else '')),
         'interpolation': f'pixel-space interpolation (tau {c["cl_interpolation"]:g}) towards '
                          'images of other classes',
         'none': 'no hardening (the trigger alone)'}[p['hardening']]
  return (f'{_TITLES["clean_label"]}: {p["n_poison"]} of {p["n_train"]} training images, all '
          f'of the target class {p["target"]} ({dc.fmt(p["share_of_target_class"])} of it), '
          f'made hard by {how}, then stamped with the {p["trigger"]}; '
          f'{p["labels_changed"]} labels changed.')


def _section(c, a) -> list:
  d, p = a['detection'], a['poison']
  ac_, s, st, ncr = (d['activation_clustering'], d['spectral_signatures'], d['strip'],
                     d['neural_cleanse'])
  sur = _surrogate_line(c, p)
  lines = [f'### {_title(p)}', '', _poison_line(c, p) + (f' {sur}' if sur else ''), '',
           '| detector | what it scores | ROC AUC | at its threshold |', '|---|---|---|---|',
           f'| activation clustering ({c["ac_reduce"]}, {c["ac_dims"]} dims, '
           f'{c["ac_criterion"]}) | training points | {ac_["auc"]:.3f} | precision '
           f'{dc.fmt(ac_["precision"])}, recall {dc.fmt(ac_["recall"])}; flagged classes '
           f'{ac_["flagged_classes"]} |',
           f'| spectral signatures (remove {dc.fmt(s["removal_fraction"])} per class) | '
           f'training points | {s["auc"]:.3f} | precision {dc.fmt(s["precision"])}, recall '
           f'{dc.fmt(s["recall"])} |',
           f'| STRIP ({c["strip_samples"]} overlays, FRR {c["strip_frr"]:g}) | test inputs '
           f'({st["n_trojan"]} triggered vs {st["n_clean"]} clean) | {st["auc"]:.3f} | TPR '
           f'{dc.fmt(st["tpr"])}, FPR {dc.fmt(st["fpr"])} |', '',
           f'Neural Cleanse ({c["nc_epochs"]} x {c["nc_steps_per_epoch"]} steps): flagged '
           f'labels {ncr["flagged"]} (infected: {ncr["infected"]}; the largest index is '
           f'label {ncr["repair_label"]}, whose trigger the unlearning uses); its reversed mask '
           f'(L1 {ncr["l1"][ncr["repair_label"]]:.1f}; the trigger has '
           f'{c["trigger_size"] ** 2} pixels) puts {dc.fmt(ncr["mask_share_at_trigger"])} of '
           'its L1 mass on the bottom-right trigger corner (and one pixel around it).', '',
           '| label | ' + ' | '.join(str(i) for i in range(len(ncr['l1']))) + ' |',
           '|---|' + '---|' * len(ncr['l1']),
           '| mask L1 | ' + ' | '.join(f'{v:.1f}' for v in ncr['l1']) + ' |',
           '| anomaly index | ' + ' | '.join(f'{v:.2f}' for v in ncr['anomaly_index']) + ' |',
           '', '| model | clean accuracy | attack success |', '|---|---|---|']
  rep = a['repair']
  rows = [('backdoored', a['before']),
          (f'pruning ({rep["pruning"]["units_pruned"]} dormant units)', rep['pruning']),
          (f'fine-pruning (+ {c["finetune_epochs"]} epoch(s) fine-tuning)',
           rep['fine_pruning']),
          (f'Neural Cleanse unlearning (label {rep["nc_unlearning"]["label"]}, '
           f'{c["unlearn_epochs"]} epoch(s))', rep['nc_unlearning'])]
  for name, m in rows:
    lines.append(f'| {name} | {dc.fmt(m["clean_accuracy"])} | {dc.fmt(m["attack_success"])} |')
  return lines + ['']


def render_markdown(r: dict) -> str:
  c = r['config']
  arg = '' if r['variant'] == 'full' else f':{r["variant"]}'
  lines = [f'## Backdoor detection and repair on FMNIST (variant {r["variant"]}; `python -m '
           f'experiments.run --config=experiments/configs/backdoor_detection.py{arg} '
           '--workdir=docs/results`)', '',
           f'Reference CNN {c["model_kwargs"]["features"]} / {c["model_kwargs"]["dense"]}, '
           f'{c["epochs"]} epoch(s) on {c["n_train"]} FMNIST training images, one model per '
           f'backdoor (target label {c["target"]}). Defender: {c["n_defense"]} clean test '
           f'images; evaluation on the other {c["n_test"] - c["n_defense"]}; attack success = '
           'triggered evaluation images of other classes classified as the target.', '']
  for a in r['attacks'].values():
    lines += _section(c, a)
  return '\n'.join(lines).rstrip() + '\n'


def headline(r: dict) -> list:
  """README rows: detection AUCs and the repairs' attack success per backdoor ('full')."""
  if r.get('variant') != 'full':
    return []
  rows = []
  for name, a in r['attacks'].items():
    d, rep = a['detection'], a['repair']
    rows.append((
        f'Backdoor detection / repair, {_TITLES[name]} on the FMNIST CNN (cpu): AUC of '
        'activation clustering / spectral signatures / STRIP; attack success and clean '
        'accuracy before, after fine-pruning, after NC unlearning',
        f"AUC {d['activation_clustering']['auc']:.2f} / "
        f"{d['spectral_signatures']['auc']:.2f} / {d['strip']['auc']:.2f}; NC flags "
        f"{d['neural_cleanse']['flagged']}; ASR {dc.fmt(a['before']['attack_success'])} -> "
        f"{dc.fmt(rep['fine_pruning']['attack_success'])} / "
        f"{dc.fmt(rep['nc_unlearning']['attack_success'])} at clean "
        f"{dc.fmt(a['before']['clean_accuracy'])} -> "
        f"{dc.fmt(rep['fine_pruning']['clean_accuracy'])} / "
        f"{dc.fmt(rep['nc_unlearning']['clean_accuracy'])}"))
  return rows
