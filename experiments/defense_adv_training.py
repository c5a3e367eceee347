r"""Adversarial training on FMNIST with the reference CNN: clean, FGSM-AT, PGD-AT, fast AT,
TRADES (survey §3.1), each evaluated by FGSM, PGD-20 and the AutoAttack-style ensemble.

    nohup python -m experiments.run --config=experiments/configs/defense_adv_training.py:budget --workdir=docs/results > adv.log 2>&1 &
    python -m experiments.run --config=experiments/configs/defense_adv_training.py:smoke --workdir=/tmp/s

Every method trains the same CNN with the same optimizer (Adam, one-cycle learning rate:
Wong et al.'s cyclic schedule, used for all so that the budgets are equal) for the same
number of epochs; wall time per epoch is measured. Stages run in priority order and the
JSON is rewritten after every stage; a run cut off resumes from the orbax checkpoints and
the stage cache under :func:`defense_common.scratch_dir` (``workdir/defenses``).

Published reference points: Goodfellow et al. 2015 (MNIST maxout): FGSM error 89.4% ->
17.9% with FGSM-AT (alpha = 0.5). Song, Shokri & Mittal 2019 (FMNIST, eps = 0.1, PGD-AT
with 8 steps of 0.02): 90.88% clean, 68.06% under PGD.
"""
from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import defense_common as dc
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec.attacks import evasion
from jaxsec.defenses.training import adversarial

NAME = 'defense_adv_training'
METHODS = ('clean', 'pgd_at', 'fast_at', 'fgsm_at', 'trades')


def objective_for(method: str, cfg):
  eps = cfg.eps
  if method == 'clean':
    return None
  if method == 'fgsm_at':
    return adversarial.fgsm_adversarial_training(eps=eps, alpha=cfg.fgsm_alpha)
  if method == 'pgd_at':
    return adversarial.pgd_adversarial_training(eps=eps, num_steps=cfg.pgd_train_steps,
                                                step_size=cfg.pgd_train_step_size)
  if method == 'fast_at':
    return adversarial.fast_adversarial_training(eps=eps, step_size=cfg.fast_step * eps)
  if method == 'trades':
    return adversarial.trades(beta=cfg.trades_beta, eps=eps, num_steps=cfg.trades_steps,
                              step_size=cfg.trades_step_size)
  raise ValueError(f'method={method!r} is not one of {METHODS}.')


def _shared(cfg):
  return {k: cfg[k] for k in ('seed', 'model_kwargs', 'batch_size', 'learning_rate', 'eps',
                              'n_train', 'epochs')}


def _method_cfg(method, cfg):
  keys = {'fgsm_at': ('fgsm_alpha',), 'pgd_at': ('pgd_train_steps', 'pgd_train_step_size'),
          'trades': ('trades_beta', 'trades_steps', 'trades_step_size'),
          'fast_at': ('fast_step',), 'clean': ()}[method]
  return {k: cfg[k] for k in keys}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  x, y, xt, yt = dc.load_fmnist(cfg.n_train, cfg.n_test, cfg.seed)
  key = jax.random.key(cfg.seed)
  apply_fn, p0 = dc.reference_cnn(cfg, key, x.shape[1:])
  steps = cfg.epochs * (x.shape[0] // cfg.batch_size)
  scratch = dc.scratch_dir(workdir)
  cache = dc.Cache(scratch, NAME)
  fgsm_atk = evasion.fgsm(eps=cfg.eps)
  pgd_atk = evasion.pgd(eps=cfg.eps, num_steps=cfg.eval_pgd_steps,
                        step_size=cfg.eval_pgd_step_size, random_start=True)
  n_aa = min(cfg.n_autoattack, xt.shape[0])
  # One file per variant ('budget' and 'smoke' keep the plain name).
  out = f"{workdir}/{NAME}{'' if cfg.variant in ('budget', 'smoke') else '_' + cfg.variant}.json"
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'n_train': int(x.shape[0]), 'n_test': int(xt.shape[0]), 'n_autoattack': n_aa,
             'device': common.device_info(), 'methods': {}}

  for method in cfg.methods:
    stage_cfg = (_shared(cfg), _method_cfg(method, cfg))
    tag = dc.tag_of(*stage_cfg)
    hit = cache.get(method, stage_cfg)
    if hit is not None:
      results['methods'][method] = hit
      continue
    dc.log(f'{NAME}: training {method}')
    opt = optax.adam(optax.cosine_onecycle_schedule(steps, cfg.learning_rate))
    params, tinfo = dc.train_timed(
        apply_fn, p0, x, y, optimizer=opt, key=jax.random.fold_in(key, 2),
        num_epochs=cfg.epochs, batch_size=cfg.batch_size,
        objective=objective_for(method, cfg),
        checkpoint_dir=dc.ckpt_dir(scratch, NAME, method, tag), label=method)
    logits_fn = lambda z, p=params: apply_fn(p, z)
    k_eval = jax.random.fold_in(key, 3)
    r = {'train': tinfo}
    x_f, _ = evaluate.run_attack(fgsm_atk, logits_fn, xt, yt, k_eval,
                                 batch_size=cfg.eval_batch, progress=f'{NAME}/{method} FGSM')
    r['fgsm'] = dc.attack_summary(logits_fn, xt, yt, x_f, eps=cfg.eps)
    t0 = time.time()
    x_p, _ = evaluate.run_attack(pgd_atk, logits_fn, xt, yt, k_eval,
                                 batch_size=cfg.eval_batch, progress=f'{NAME}/{method} PGD')
    r['pgd'] = dc.attack_summary(logits_fn, xt, yt, x_p, eps=cfg.eps)
    r['pgd']['seconds'] = time.time() - t0
    r['clean_accuracy'] = r['pgd']['clean_accuracy']
    dc.log(f'{NAME}: {method} clean {r["clean_accuracy"]:.4f} fgsm '
           f'{r["fgsm"]["robust_accuracy"]:.4f} pgd {r["pgd"]["robust_accuracy"]:.4f}')
    if method in tuple(cfg.autoattack_methods):
      t0 = time.time()
      aa = evasion.run_auto_attack(logits_fn, xt[:n_aa], yt[:n_aa],
                                   jax.random.fold_in(key, 4), eps=cfg.eps,
                                   version=cfg.autoattack_version,
                                   batch_size=cfg.eval_batch)
      pgd_sub = float(np.mean(dc.predictions(logits_fn, x_p[:n_aa]) == yt[:n_aa]))
      r['autoattack'] = {'version': cfg.autoattack_version,
                         'robust_accuracy': aa['robust_accuracy'],
                         'clean_accuracy': aa['clean_accuracy'],
                         'pgd_robust_accuracy_same_points': pgd_sub,
                         'stages': aa['stages'], 'seconds': time.time() - t0}
      dc.log(f'{NAME}: {method} autoattack {aa["robust_accuracy"]:.4f} '
             f'(pgd on the same points {pgd_sub:.4f})')
    cache.put(method, stage_cfg, r)
    results['methods'][method] = r
    jio.write_json_atomic(out, results)

  clean_epoch = results['methods'].get('clean', {}).get('train', {}).get('seconds_per_epoch')
  for r in results['methods'].values():
    spe = r['train'].get('seconds_per_epoch')
    r['train']['relative_to_clean'] = spe / clean_epoch if (spe and clean_epoch) else None
  jio.write_json_atomic(out, results)
  return results


_LABELS = {'clean': 'clean training', 'fgsm_at': 'FGSM-AT (alpha=0.5)',
           'pgd_at': 'PGD-AT (Madry)', 'fast_at': 'fast AT (FGSM-RS)', 'trades': 'TRADES'}


def render_markdown(r: dict) -> str:
  c = r['config']
  mk = c['model_kwargs']
  lines = [f'### Adversarial training on FMNIST (CNN conv {tuple(mk["features"])} dense '
           f'{mk["dense"]}, L_inf eps={c["eps"]}, variant {r["variant"]})', '',
           f'{r["n_train"]} training images, {c["epochs"]} epochs each (Adam, one-cycle lr '
           f'{c["learning_rate"]}); evaluated on {r["n_test"]} test images: FGSM, PGD-'
           f'{c["eval_pgd_steps"]} (step {c["eval_pgd_step_size"]}, random start); the '
           f'AutoAttack-style ensemble ({c["autoattack_version"]}) on the first '
           f'{r["n_autoattack"]}. PGD-AT trains on PGD-{c["pgd_train_steps"]} (step '
           f'{c["pgd_train_step_size"]}); TRADES beta={c["trades_beta"]} with '
           f'{c["trades_steps"]} KL steps.', '',
           '| method | clean acc | FGSM error | PGD acc | AutoAttack acc (PGD on same points) '
           '| s / epoch | x clean |', '|---|---|---|---|---|---|---|']
  for m in METHODS:
    if m not in r['methods']:
      continue
    e = r['methods'][m]
    aa = e.get('autoattack')
    aa_s = (f'{dc.fmt(aa["robust_accuracy"])} ({dc.fmt(aa["pgd_robust_accuracy_same_points"])})'
            if aa else '-')
    t = e['train']
    lines.append(f'| {_LABELS[m]} | {dc.fmt(e["clean_accuracy"])} | '
                 f'{dc.fmt(e["fgsm"]["error_rate"])} | {dc.fmt(e["pgd"]["robust_accuracy"])} '
                 f'| {aa_s} | {dc.fmt(t.get("seconds_per_epoch"), pct=False)} | '
                 f'{dc.fmt(t.get("relative_to_clean"), pct=False, digits=2)} |')
  lines += ['', 'Published: Goodfellow 2015 (MNIST) FGSM error 89.4% -> 17.9% with FGSM-AT; '
            'Song et al. 2019 (FMNIST, eps 0.1) PGD-AT 90.88% clean / 68.06% PGD. Wall '
            'times include compilation; they were measured on '
            + (r['device']['device_kind'] if r.get('device') else 'the shared CPU')
            + ' (this run).']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README rows: the wide PGD-AT run and one trade-off row for the full table (the CPU
  'pgd_at' and 'budget' runs are in docs/RESULTS.md only)."""
  c = r['config']
  where = f" ({r['device']['device_kind']})" if r.get('device') else ''
  if r['variant'] == 'pgd_at_wide':
    mk = c['model_kwargs']
    rows = []
    for m, x in r['methods'].items():
      aa = x.get('autoattack')
      fig = f"{100 * x['clean_accuracy']:.1f}% / {100 * x['pgd']['robust_accuracy']:.1f}%"
      if aa:
        fig += f" / {100 * aa['robust_accuracy']:.1f}% (first {r['n_autoattack']} test images)"
      rows.append((f"{_LABELS.get(m, m)}, FMNIST CNN {tuple(mk['features'])}/{mk['dense']}, "
                   f"eps={c['eps']:g}, {c['epochs']} epochs{where}: clean / "
                   f"PGD-{c['eval_pgd_steps']}" + (' / AutoAttack-style' if aa else ''), fig))
    return rows
  if r['variant'] == 'full':
    parts = [f"{_LABELS.get(m, m)} {100 * x['clean_accuracy']:.1f} / "
             f"{100 * x['pgd']['robust_accuracy']:.1f}"
             for m in METHODS if (x := r['methods'].get(m))]
    return [(f"Adversarial-training trade-off, FMNIST CNN, eps={c['eps']:g}, {c['epochs']} "
             f"epochs{where}: clean % / PGD-{c['eval_pgd_steps']} %", '; '.join(parts))]
  return []
