r"""Transferability matrix on FMNIST: I-FGSM, MI, DI-TI-MI, NI-SI and VMI crafted on one
model, evaluated on another.

    python -m experiments.run --config=experiments/configs/transferability.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/transferability.py:smoke --workdir=/tmp/s

Four models are trained on the same FMNIST training subset (``jaxsec.models``): logistic
regression, an MLP, the reference CNN (``defense_common.reference_cnn``) and the same CNN
from a second initialisation seed. Every attack of
:func:`jaxsec.attacks.evasion.transfer.transfer_ifgsm` is crafted (L_inf, eps 0.1, 10
steps, ``alpha = eps / 10``, momentum 1 where the method has one) on each source model
for a fixed random test subset and evaluated on every target model: the table entry is the
target's success rate, the fraction of the test images the target classifies correctly
that it misclassifies after the attack (the diagonal is the white-box rate).

Settings, scaled from the papers' 299 px ImageNet to 28 px (see ``transfer_ifgsm``):
I-FGSM is ``decay=0``; DI ``p = 0.5`` with the 330/299 resize ratio (pad 3 px at 28 px);
TI the 3 x 3 nsig-3 Gaussian (:func:`transfer.scaled_kernel_size` of 15 px at 299 px);
SI 5 copies; VMI ``N = 20``, ``beta = 1.5``. Deviations from the papers: FMNIST and small
networks instead of ImageNet Inception / ResNet models, normally trained models only
(no adversarially trained targets), fewer test images.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from experiments import defense_common as dc
from jaxsec import models, plots
from jaxsec.attacks.evasion import transfer

NAME = 'transferability'
ATTACKS = ('I-FGSM', 'MI-FGSM', 'DI-TI-MI', 'NI-SI', 'VMI')
MODELS = ('logreg', 'mlp', 'cnn', 'cnn_seed2')     # table order (the JSON sorts its keys)


def attack_of(name: str, cfg, image_size: int):
  """The study's attack ``name`` as a :func:`transfer.transfer_ifgsm` call."""
  kw: dict[str, Any] = dict(eps=cfg.eps, num_steps=cfg.num_steps)
  extra: dict[str, Any] = {
      'I-FGSM': dict(decay=0.0),
      'MI-FGSM': {},
      'DI-TI-MI': dict(diversity_prob=cfg.diversity_prob,
                       ti_kernel=transfer.scaled_kernel_size(image_size)),
      'NI-SI': dict(nesterov=True, si_copies=cfg.si_copies),
      'VMI': dict(vmi_neighbours=cfg.vmi_neighbours, vmi_beta=cfg.vmi_beta),
  }[name]
  return transfer.transfer_ifgsm(**kw, **extra)


def _models(cfg, key, input_shape):
  """name -> (apply_fn, initial params)."""
  apply_cnn, p_cnn = dc.reference_cnn(cfg, key, input_shape)
  _, p_cnn2 = dc.reference_cnn(cfg, jax.random.fold_in(key, 7), input_shape)
  out = {}
  for name, mname, kw in (('logreg', 'logreg', {}),
                          ('mlp', 'mlp', {'hidden': tuple(cfg.mlp_hidden)})):
    m = models.get(mname, **kw)
    out[name] = (m.apply, models.init(m, jax.random.fold_in(key, 2), (1,) + input_shape))
  out['cnn'] = (apply_cnn, p_cnn)
  out['cnn_seed2'] = (apply_cnn, p_cnn2)
  return out


def _craft(logits_fn, atk, xt, yt, key, batch):
  run = jax.jit(lambda xb, yb, kb: atk(logits_fn, xb, yb, kb).x_adv)
  advs = []
  for j, i in enumerate(range(0, xt.shape[0], batch)):
    advs.append(np.asarray(run(xt[i:i + batch], yt[i:i + batch],
                               jax.random.fold_in(key, j))))
  return np.concatenate(advs)


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(cfg, workdir, NAME,
                                                                     'sources')
  input_shape = tuple(x.shape[1:])
  nets = _models(cfg, key, input_shape)
  base = {k: cfg[k] for k in ('seed', 'model_kwargs', 'mlp_hidden', 'batch_size',
                              'learning_rate', 'n_train', 'epochs')}
  fns, clean = {}, {}
  for j, (name, (apply_fn, p0)) in enumerate(nets.items()):
    tag = dc.tag_of(base, name)
    p, tinfo = dc.train_timed(apply_fn, p0, x, y, optimizer=optax.adam(cfg.learning_rate),
                              key=jax.random.fold_in(key, 100 + j), num_epochs=cfg.epochs,
                              batch_size=cfg.batch_size,
                              checkpoint_dir=dc.ckpt_dir(scratch, NAME, name, tag),
                              label=name)
    fns[name] = lambda z, f=apply_fn, pp=p: f(pp, z)
    clean[name] = float(np.mean(dc.predictions(fns[name], xt) == yt))
    results.setdefault('models', {})[name] = {'clean_accuracy': clean[name], 'train': tinfo}
    dc.log(f'{NAME}: {name} clean accuracy {clean[name]:.3f}')
  att_cfg = {k: cfg[k] for k in ('eps', 'num_steps', 'diversity_prob', 'si_copies',
                                 'vmi_neighbours', 'vmi_beta', 'n_test', 'attack_batch')}
  for s, src in enumerate(fns):
    for a, aname in enumerate(cfg.attacks):
      stage = f'{src}_{aname}'
      stage_cfg = (base, att_cfg, src, aname)
      hit = cache.get(stage, stage_cfg)
      if hit is None:
        t0 = time.time()
        x_adv = _craft(fns[src], attack_of(aname, cfg, input_shape[0]), xt, yt,
                       jax.random.fold_in(key, 1000 * (s + 1) + a), cfg.attack_batch)
        sec = time.time() - t0
        hit = {'seconds': sec, 'targets': {
            tgt: dc.attack_summary(fns[tgt], xt, yt, x_adv, eps=cfg.eps)
            for tgt in fns}}
        cache.put(stage, stage_cfg, hit)
      rates = {t: round(v['success_rate'], 3) for t, v in hit['targets'].items()}
      dc.log(f'{NAME}: {aname} crafted on {src}: {rates}')
      results['sources'].setdefault(src, {})[aname] = hit
      save()
  plot(results, f'{workdir}/{NAME}.png')
  return results


def plot(r: dict, path: str) -> None:
  """The matrices of :func:`render_markdown` as heat maps, one per attack."""
  names = [n for n in MODELS if n in r['models']]
  panels = {a: np.array([[r['sources'][s][a]['targets'][t]['success_rate'] for t in names]
                         for s in names]) for a in r['config']['attacks']}
  plots.heatmaps(path, panels, names, names, xlabel='target', ylabel='source',
                 title=f'FMNIST transfer success rate, L_inf eps = {r["config"]["eps"]}')


def render_markdown(r: dict) -> str:
  c = r['config']
  names = [n for n in MODELS if n in r['models']]
  lines = [dc.heading('Transferability of I-FGSM / MI / DI-TI-MI / NI-SI / VMI on FMNIST',
                      r, NAME), '',
           f'Success rate on the target (rows: source model the attack is crafted on; '
           f'columns: target model), among the {c["n_test"]} random test images the target '
           f'classifies correctly; L_inf eps = {c["eps"]}, {c["num_steps"]} steps of '
           f'eps / {c["num_steps"]}, `jaxsec.attacks.transfer_ifgsm`: I-FGSM (decay 0), '
           f'MI-FGSM (decay 1), DI-TI-MI (p = {c["diversity_prob"]}, 3 x 3 Gaussian, the '
           f'papers\' 299 px settings scaled to 28 px), NI-SI ({c["si_copies"]} copies), '
           f'VMI (N = {c["vmi_neighbours"]}, beta = {c["vmi_beta"]}). The diagonal is the '
           'white-box rate. Models trained '
           f'{c["epochs"]} epoch(s) on {c["n_train"] or "all"} training images; clean '
           'accuracy: ' + ', '.join(f'{n} {dc.fmt(r["models"][n]["clean_accuracy"])}'
                                    for n in names) + '.', '']
  for aname in c['attacks']:
    lines += [f'**{aname}**', '', '| source \\ target | ' + ' | '.join(names)
              + ' | mean transfer (off-diagonal) | s |', '|---|' + '---|' * (len(names) + 2)]
    for src in names:
      e = r['sources'].get(src, {}).get(aname)
      if e is None:
        continue
      row = [e['targets'][t]['success_rate'] for t in names]
      off = [v for t, v in zip(names, row, strict=True) if t != src]
      lines.append(f'| {src} | ' + ' | '.join(dc.fmt(v) for v in row)
                   + f' | {dc.fmt(float(np.mean(off)))} | {e["seconds"]:.0f} |')
    lines.append('')
  lines += [f'![transferability heat maps]({NAME}.png)']
  return '\n'.join(lines).rstrip() + '\n'
