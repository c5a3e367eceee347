r"""Interval bound propagation on FMNIST: verified vs PGD accuracy (Gowal et al. 2018).

    python -m experiments.run --config=experiments/configs/ibp.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/ibp.py:smoke --workdir=/tmp/ibp

A small CNN is trained twice on the same data and key: normally (``train.fit``,
cross-entropy) and with IBP (``jaxsec.defenses.training.ibp``: ``kappa CE(z) + (1 -
kappa) CE(z_hat(eps))`` with the paper's schedules, eps ramped from 0 to ``1.1 eps_test``
and kappa from 1 to 0.5 after a warm-up, trained by ``ibp.fit_scheduled``). Both are
evaluated on the same random test images at ``eps_test``: clean accuracy, PGD-20 accuracy
(an upper bound on the robust accuracy) and IBP-verified accuracy (a lower bound; with the
last layer elided, and the naive bound for comparison). Every verified image must resist
PGD; the JSON counts the images that do not (``verified_but_attacked``, 0 unless a bound is
unsound) and the run fails if any does.

Deviations from the paper (MNIST / CIFAR-10, 60k-350k steps, their CNNs): see
experiments/configs/ibp.py.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import defense_common as dc
from jaxsec import attacks
from jaxsec.defenses.training import ibp

NAME = 'ibp'


def _evaluate(apply_fn, params, xt, yt, cfg, key) -> dict:
  """Clean, PGD and verified accuracy at ``cfg.eps_test`` on ``(xt, yt)``, in batches."""
  eps = float(cfg.eps_test)
  f = lambda z: apply_fn(params, z)
  pgd = attacks.pgd(eps=eps, step_size=eps / 4, num_steps=cfg.pgd_steps, random_start=True)
  clean = dc.predictions(f, xt) == yt
  pgd_ok, ver, ver_naive = [], [], []
  t0 = time.time()
  for i in range(0, xt.shape[0], cfg.eval_batch):
    xb, yb = jnp.asarray(xt[i:i + cfg.eval_batch]), jnp.asarray(yt[i:i + cfg.eval_batch])
    x_adv = pgd(f, xb, yb, jax.random.fold_in(key, i)).x_adv
    pgd_ok.append(np.asarray(jnp.argmax(f(x_adv), -1)) == np.asarray(yb))
  t_pgd = time.time() - t0
  verify = jax.jit(lambda p, xb, yb: (ibp.verified(apply_fn, p, xb, yb, eps),
                                      ibp.verified(apply_fn, p, xb, yb, eps, elide=False)))
  t0 = time.time()
  for i in range(0, xt.shape[0], cfg.eval_batch):
    xb, yb = jnp.asarray(xt[i:i + cfg.eval_batch]), jnp.asarray(yt[i:i + cfg.eval_batch])
    v, v_naive = verify(params, xb, yb)
    ver.append(np.asarray(v))
    ver_naive.append(np.asarray(v_naive))
  t_ver = time.time() - t0
  pgd_ok, ver, ver_naive = map(np.concatenate, (pgd_ok, ver, ver_naive))
  bad = int(np.sum(ver & ~pgd_ok))
  if bad:
    raise RuntimeError(f'{bad} images verified at eps={eps} were broken by PGD: an unsound '
                       'bound.')
  return {'clean_accuracy': float(clean.mean()), 'pgd_accuracy': float(pgd_ok.mean()),
          'verified_accuracy': float(ver.mean()),
          'verified_accuracy_naive': float(ver_naive.mean()),
          'verified_but_attacked': bad, 'seconds_pgd': t_pgd, 'seconds_verify': t_ver,
          'n_images': int(xt.shape[0])}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(cfg, workdir, NAME,
                                                                     'models')
  apply_fn, p0 = dc.reference_cnn(cfg, key, x.shape[1:])
  steps_per_epoch = x.shape[0] // cfg.batch_size
  num_steps = cfg.epochs * steps_per_epoch
  warmup = int(round(cfg.warmup_fraction * num_steps))
  ramp = int(round(cfg.ramp_fraction * num_steps))
  train_cfg = {k: cfg[k] for k in ('seed', 'model_kwargs', 'batch_size', 'learning_rate',
                                   'n_train', 'epochs')}
  eval_cfg = {k: cfg[k] for k in ('eps_test', 'n_test', 'pgd_steps')}
  ibp_cfg = {k: cfg[k] for k in ('eps_scale', 'kappa_final', 'warmup_fraction',
                                 'ramp_fraction')}
  for stage, stage_cfg in (('normal', (train_cfg, eval_cfg)),
                           ('ibp', (train_cfg, eval_cfg, ibp_cfg))):
    hit = cache.get(stage, stage_cfg)
    if hit is None:
      k_train = jax.random.fold_in(key, 100)
      t0 = time.time()
      if stage == 'normal':
        dc.log(f'{NAME}: normal training, {num_steps} steps')
        p, tinfo = dc.train_timed(apply_fn, p0, x, y,
                                  optimizer=optax.adam(cfg.learning_rate), key=k_train,
                                  num_epochs=cfg.epochs, batch_size=cfg.batch_size,
                                  label=stage)
      else:
        dc.log(f'{NAME}: IBP training, {num_steps} steps (warm-up {warmup}, ramp {ramp})')
        objective_at = ibp.scheduled_objective(
            eps_test=cfg.eps_test, eps_scale=cfg.eps_scale, kappa_final=cfg.kappa_final,
            warmup_steps=warmup, ramp_steps=ramp)
        res = ibp.fit_scheduled(apply_fn, p0, x, y, objective_at=objective_at,
                                optimizer=optax.adam(cfg.learning_rate), key=k_train,
                                num_steps=num_steps, batch_size=cfg.batch_size,
                                progress=f'{NAME} IBP training')
        p = jax.block_until_ready(res.params)
        tinfo = {'seconds': time.time() - t0, 'final_loss': float(res.history['loss'][-1]),
                 'warmup_steps': warmup, 'ramp_steps': ramp,
                 'eps_train': float(cfg.eps_scale * cfg.eps_test)}
      dc.log(f'{NAME}: evaluating {stage} on {xt.shape[0]} images at eps={cfg.eps_test:g}')
      hit = {'train': tinfo, 'num_steps': num_steps}
      hit.update(_evaluate(apply_fn, p, xt, yt, cfg, jax.random.fold_in(key, 300)))
      cache.put(stage, stage_cfg, hit)
    dc.log(f'{NAME}: {stage}: clean {hit["clean_accuracy"]:.3f} pgd {hit["pgd_accuracy"]:.3f}'
           f' verified {hit["verified_accuracy"]:.3f}')
    results['models'][stage] = hit
    save()
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = [dc.heading('Interval bound propagation on FMNIST: verified vs PGD accuracy', r,
                      NAME), '',
           f'Gowal et al. (2018): CNN {dict(c["model_kwargs"])} trained {c["epochs"]} '
           f'epoch(s) normally and with IBP (eps_train = {c["eps_scale"]:g} x eps_test, kappa '
           f'1 -> {c["kappa_final"]:g}); {c["n_test"]} random test images at eps_test = '
           f'{c["eps_test"]:g}. PGD-{c["pgd_steps"]} accuracy is an upper bound on the '
           'robust accuracy, verified accuracy a lower bound.', '',
           '| training | clean | PGD | verified (elided) | verified (naive) | train s |',
           '|---|---|---|---|---|---|']
  for name, e in r['models'].items():
    lines.append(f'| {name} | {dc.fmt(e["clean_accuracy"])} | {dc.fmt(e["pgd_accuracy"])} | '
                 f'{dc.fmt(e["verified_accuracy"])} | {dc.fmt(e["verified_accuracy_naive"])} '
                 f'| {e["train"]["seconds"]:.0f} |')
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: clean / PGD / verified accuracy of normal and IBP training (variant 'full')."""
  if r.get('variant') != 'full' or set(r['models']) != {'normal', 'ibp'}:
    return []
  fig = '; '.join(f"{name} {100 * m['clean_accuracy']:.1f} / {100 * m['pgd_accuracy']:.1f} / "
                  f"{100 * m['verified_accuracy']:.1f}"
                  for name, m in (('normal', r['models']['normal']),
                                  ('IBP', r['models']['ibp'])))
  return [(f"Interval bound propagation, FMNIST CNN, L_inf eps={r['config']['eps_test']:g} "
           f"({r['models']['ibp']['n_images']} test images, cpu): clean % / PGD-20 % / "
           'verified %', fig)]
