r"""Decision-based attacks on FMNIST: median L2 / L_inf distance against queries.

    python -m experiments.run --config=experiments/configs/decision_based.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/decision_based.py:smoke --workdir=/tmp/s

The Boundary Attack (Brendel, Rauber & Bethge 2018; L2) and RayS (Chen & Gu 2020; L_inf)
see only the labels of the reference CNN. Each runs ONCE per image to the last budget of
``query_checkpoints``; the attack records the best distance found within each budget
(``info['distance_at_queries']``), so the curve is one run, not one run per budget (DESIGN.md,
"Where the next kinds go"). Next to them, on the same images, the white-box figures: C&W L2
(``carlini_wagner_l2``) and the minimal L_inf eps of PGD-20 (bisection over eps, per image).
A decision-based attack's median is expected to fall towards these as its queries grow.

Deviations (run time on a 2-core CPU): the CNN trains 1 epoch; 50 images; at most 10^4
queries per image; C&W at 5 x 200 steps. A median over images counts an image without an
adversarial point yet as infinitely far.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import defense_common as dc
from jaxsec import models
from jaxsec.attacks import blackbox
from jaxsec.attacks.evasion.cw import carlini_wagner_l2
from jaxsec.attacks.evasion.pgd import pgd

NAME = 'decision_based'


def _finite(v) -> list:
  """Per-image values for JSON: inf (no adversarial point) as None."""
  return [float(a) if np.isfinite(a) else None for a in np.asarray(v, np.float64).ravel()]


def _median(v) -> float | None:
  m = float(np.median(np.asarray(v, np.float64))) if np.size(v) else float('inf')
  return m if np.isfinite(m) else None


def _decision(attack, label_fn, x, y, key, checkpoints) -> dict:
  run = jax.jit(lambda a, b, k: attack(label_fn, a, b, k))
  t0 = time.time()
  out = run(x, y, key)
  jax.block_until_ready(out)
  sec = time.time() - t0
  at = np.asarray(out.info['distance_at_queries'])
  succ = np.asarray(out.info['success'])
  adv_ok = np.asarray(label_fn(out.x_adv)) != np.asarray(y)
  return {'seconds': sec, 'success_rate': float(succ.mean()),
          'adversarial_at_x_adv': bool(np.all(adv_ok[succ])),
          'queries_max': int(np.max(out.info['queries'])),
          'median_at': {str(c): _median(at[:, j]) for j, c in enumerate(checkpoints)},
          'per_image_at': {str(c): _finite(at[:, j]) for j, c in enumerate(checkpoints)},
          'per_image': _finite(np.where(succ, np.asarray(out.info['distance']), np.inf))}


def _pgd_min_eps(logits_fn, x, y, key, c) -> np.ndarray:
  """Per image, the smallest eps (bisection on [0, eps_max], ``bisections`` rounds) at which
  PGD (step eps / 4, random start) misclassifies it; inf where eps_max does not."""
  def one(xi, yi, e, k):
    out = pgd(eps=e, step_size=e / 4, num_steps=c.num_steps, norm='linf')(
        logits_fn, xi[None], yi[None], k)
    return out.info['success'][0]
  succ_at = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))
  b = x.shape[0]
  hi = jnp.full((b,), c.eps_max, x.dtype)
  ok = np.asarray(succ_at(x, y, hi, key))
  lo = jnp.zeros((b,), x.dtype)
  for i in range(c.bisections):
    mid = 0.5 * (lo + hi)
    s = succ_at(x, y, mid, jax.random.fold_in(key, i + 1))
    hi, lo = jnp.where(s, mid, hi), jnp.where(s, lo, mid)
  return np.where(ok, np.asarray(hi, np.float64), np.inf)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(cfg, workdir, NAME,
                                                                     'attacks')
  model = models.get('cnn', **cfg.model_kwargs.to_dict())
  base = {k: cfg[k] for k in ('seed', 'model_kwargs', 'batch_size', 'learning_rate',
                              'n_train', 'epochs')}
  tag = dc.tag_of(base)
  dc.log(f'{NAME}: training the reference CNN ({cfg.epochs} epoch(s))')
  p0 = models.init(model, jax.random.fold_in(key, 1), (1,) + x.shape[1:])
  params, tinfo = dc.train_timed(
      model.apply, p0, x, y, optimizer=optax.adam(cfg.learning_rate),
      key=jax.random.fold_in(key, 2), num_epochs=cfg.epochs, batch_size=cfg.batch_size,
      checkpoint_dir=dc.ckpt_dir(scratch, NAME, 'model', tag), label=f'{NAME}/cnn')
  logits_fn = models.logits_fn(model, params)
  label_fn = lambda z: jnp.argmax(logits_fn(z), -1).astype(jnp.int32)
  pred = dc.predictions(logits_fn, xt)
  idx = np.flatnonzero(pred == yt)[:cfg.n_images]
  xa, ya = jnp.asarray(xt[idx]), jnp.asarray(yt[idx])
  results.update({'train': tinfo, 'clean_accuracy': float(np.mean(pred == yt)),
                  'n_images': idx.size})
  cps = tuple(int(c) for c in cfg.query_checkpoints)
  budget = cps[-1]

  def stage(name, sub, compute):
    stage_cfg = (base, cfg.n_test, cfg.n_images, cps, sub)
    hit = cache.get(name, stage_cfg)
    if hit is None:
      dc.log(f'{NAME}: {name} on {idx.size} images')
      hit = compute()
      cache.put(name, stage_cfg, hit)
    dc.log(f'{NAME}: {name}: ' + str(hit.get('median_at', hit.get('median'))))
    results['attacks'][name] = hit
    save()

  stage('boundary', cfg.boundary.to_dict(), lambda: _decision(
      blackbox.boundary_attack(max_queries=budget, query_checkpoints=cps,
                               **cfg.boundary.to_dict()),
      label_fn, xa, ya, jax.random.fold_in(key, 3), cps))
  stage('rays', cfg.rays.to_dict(), lambda: _decision(
      blackbox.rays(max_queries=budget, query_checkpoints=cps, **cfg.rays.to_dict()),
      label_fn, xa, ya, jax.random.fold_in(key, 4), cps))

  def cw():
    t0 = time.time()
    out = carlini_wagner_l2(**cfg.cw.to_dict())(logits_fn, xa, ya)
    d = np.where(np.asarray(out.info['success']),
                 np.linalg.norm(np.asarray(out.x_adv - xa).reshape(idx.size, -1), axis=1),
                 np.inf)
    return {'seconds': time.time() - t0, 'success_rate': float(np.mean(np.isfinite(d))),
            'median': _median(d), 'per_image': _finite(d)}
  stage('cw_l2', cfg.cw.to_dict(), cw)

  def pgd_eps():
    t0 = time.time()
    e = _pgd_min_eps(logits_fn, xa, ya, jax.random.fold_in(key, 5), cfg.pgd)
    return {'seconds': time.time() - t0, 'success_rate': float(np.mean(np.isfinite(e))),
            'median': _median(e), 'per_image': _finite(e)}
  stage('pgd_linf', cfg.pgd.to_dict(), pgd_eps)
  return results


def _num(v, d=3):
  return '-' if v is None else f'{v:.{d}f}'


def render_markdown(r: dict) -> str:
  c, a = r['config'], r['attacks']
  cps = [str(q) for q in c['query_checkpoints']]
  arg = '' if r['variant'] == 'full' else f':{r["variant"]}'
  lines = [f'## Decision-based attacks on FMNIST: median distance vs queries (variant '
           f'{r["variant"]}; `python -m experiments.run '
           f'--config=experiments/configs/decision_based.py{arg} --workdir=docs/results`)', '',
           f'Reference CNN trained {c["epochs"]} epoch(s) (clean accuracy '
           f'{100 * r["clean_accuracy"]:.1f}%), attacked on {r["n_images"]} test images it '
           'classifies correctly. Boundary Attack (Brendel et al. 2018) and RayS (Chen & Gu '
           '2020) see labels only; one run each, the best distance within each query budget '
           'recorded inside the run. White-box references on the same images: C&W L2 '
           f'({c["cw"]["num_binary_steps"]} x {c["cw"]["num_steps"]} steps) and the minimal '
           f'eps of PGD-{c["pgd"]["num_steps"]} (bisection).', '',
           '| attack | norm | ' + ' | '.join(f'{q} queries' for q in cps)
           + ' | success | white-box median (same images) | s |',
           '|---|---|' + '---|' * (len(cps) + 3)]
  for key, label, norm, wb, wb_label in (
      ('boundary', 'Boundary Attack', 'L2', 'cw_l2', 'C&W L2'),
      ('rays', 'RayS', 'L_inf', 'pgd_linf', 'PGD minimal eps')):
    e, w = a[key], a[wb]
    lines.append(f'| {label} | {norm} | '
                 + ' | '.join(_num(e['median_at'][q]) for q in cps)
                 + f' | {100 * e["success_rate"]:.0f}% | {wb_label}: {_num(w["median"])} '
                 f'({100 * w["success_rate"]:.0f}%) | {e["seconds"]:.0f} |')
  lines += ['', 'Medians over all images; an image without an adversarial point yet counts as '
            'infinitely far ("-" when that is the median).']
  return '\n'.join(lines) + '\n'
