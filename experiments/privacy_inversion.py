r"""Data reconstruction and inference: gradient inversion (DLG / iDLG), model inversion
(Fredrikson 2015), attribute inference (Fredrikson 2014), property inference (Ateniese 2015).

    python -m experiments.run --config=experiments/configs/privacy_inversion.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/privacy_inversion.py:smoke --workdir=/tmp/s

1. DLG on the MLP and a CNN (sigmoid activations, as in the DLG paper; weights at
   initialisation, i.e. the first federated round) with batch sizes 1-8 of Fashion-MNIST
   images: reconstruct the batch from one shared gradient with L-BFGS; PSNR and SSIM against
   the originals after optimal matching (a batch gradient does not know the order); labels
   jointly optimised (DLG) and, for batch size 1, read off the gradient (iDLG).
2. Model inversion of a softmax regression and an MLP trained on FMNIST: one reconstruction
   per class by gradient descent on ``1 - p_y(x)`` with a TV prior and a denoiser; we report
   the target's confidence and whether each reconstruction is closest (SSIM) to its own
   class's mean training image.
3. Attribute inference on ``breast_cancer``: the feature most correlated with the label is
   binarised (the "sensitive attribute"), a logistic regression trains on the data, and the
   attacker infers the attribute from the other features and the label (MAP with the model's
   confidence), vs. the base rate, on members and on non-members.
4. Property inference: shadow MLPs trained (one ``fit_many`` program) on FMNIST subsets where
   class 0 is ``fraction_with`` vs ``fraction_without`` of the data; a meta-classifier over
   permutation-invariant parameter features, evaluated on held-out shadow models.
"""
from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsec import data
from jaxsec import io as jio
from jaxsec import metrics
from jaxsec import models
from jaxsec import plots
from jaxsec import train
from jaxsec.attacks import privacy as priv

NAME = 'privacy_inversion'


def _dlg(cfg, key, x_pool, y_pool):
  shape = x_pool.shape[1:]
  nets = {
      'mlp': models.get('mlp', num_classes=10, hidden=tuple(cfg.dlg_mlp_hidden),
                        activation=nn.sigmoid),
      'cnn': models.get('cnn', num_classes=10, activation=nn.sigmoid,
                        **cfg.dlg_cnn_kwargs.to_dict()),
  }
  rows, examples = [], {}
  for mname, model in nets.items():
    for b in cfg.dlg_batch_sizes:
      modes = ('joint', 'idlg') if b == 1 else ('joint',)
      for mode in modes:
        attack = jax.jit(lambda p, g, k, lw, m=model, bb=b, md=mode: priv.dlg(
            num_steps=cfg.dlg_steps, label_mode=md)(
                m.apply, p, g, k, x_shape=(bb,) + shape, num_classes=10,
                last_weight_grad=lw))
        ps, ss, lab = [], [], []
        t0 = time.time()
        for t in range(cfg.dlg_trials):
          kt = jax.random.fold_in(key, 1000 * b + t)
          k_p, k_x, k_a = jax.random.split(kt, 3)
          params = models.init(model, k_p, (1,) + shape)
          # A batch of distinct labels (the DLG setting), drawn from the pool.
          order = np.asarray(jax.random.permutation(k_x, x_pool.shape[0]))
          idx, seen = [], set()
          for i in order:
            if int(y_pool[i]) not in seen:
              idx.append(int(i))
              seen.add(int(y_pool[i]))
            if len(idx) == b:
              break
          xb, yb = jnp.asarray(x_pool[idx]), jnp.asarray(y_pool[idx])
          g = priv.batch_gradient(model.apply, params, xb, yb)
          rec = attack(params, g, k_a, g['params']['head']['kernel'])
          perm = priv.match_batch(rec.x, xb)
          xr = rec.x[perm]
          ps.append(float(jnp.mean(metrics.psnr(xr, xb))))
          ss.append(float(jnp.mean(metrics.ssim(xr, xb))))
          lab.append(float(np.mean(np.argmax(np.asarray(rec.labels)[perm], -1) ==
                                   np.asarray(yb))))
          if t == 0:
            examples[f'{mname} B={b} {mode}'] = (np.asarray(xb), np.asarray(xr))
        rows.append({'model': mname, 'batch_size': b, 'labels': mode,
                     'psnr_mean': float(np.mean(ps)), 'psnr_all': ps,
                     'ssim_mean': float(np.mean(ss)), 'ssim_all': ss,
                     'label_accuracy': float(np.mean(lab)),
                     'seconds_per_attack': (time.time() - t0) / cfg.dlg_trials})
        print(f'[{NAME}] DLG {mname} B={b} {mode}: PSNR {np.mean(ps):.1f} dB SSIM '
              f'{np.mean(ss):.3f} labels {np.mean(lab):.2f}', flush=True)
  return rows, examples


def _model_inversion(cfg, key, x_tr, y_tr, x_te, y_te):
  out, grids = {}, {}
  x, y = x_tr[:cfg.inv_train], y_tr[:cfg.inv_train]
  means = np.stack([x[y == c].mean(0) for c in range(10)])
  for mname, model in {
      'softmax regression': models.get('logreg', num_classes=10),
      'mlp': models.get('mlp', num_classes=10, hidden=tuple(cfg.inv_mlp_hidden))}.items():
    k_i, k_f = jax.random.split(jax.random.fold_in(key, len(out)))
    params = train.fit(model.apply, models.init(model, k_i, (1, 28, 28, 1)), x, y,
                       optimizer=optax.adam(1e-3), key=k_f, batch_size=128,
                       num_epochs=cfg.inv_epochs).params
    acc = train.evaluate(model.apply, params, x_te, y_te)
    invert = priv.model_inversion(num_steps=cfg.inv_steps, step_size=cfg.inv_step_size,
                                  tv_weight=cfg.inv_tv,
                                  denoise_every=cfg.inv_denoise_every)
    fn = models.logits_fn(model, params)
    res = jax.jit(lambda x0, yy, invert=invert, fn=fn: invert(fn, x0, yy, jax.random.key(0)))(
        jnp.zeros((10, 28, 28, 1)), jnp.arange(10))
    rec = np.asarray(res.x)
    sim = np.asarray(metrics.ssim(np.repeat(rec[:, None], 10, 1),
                                  np.repeat(means[None], 10, 0)))      # [class, mean]
    out[mname] = {'test_accuracy': acc,
                  'confidence': np.asarray(res.info['confidence']).tolist(),
                  'ssim_to_own_class_mean': np.diag(sim).tolist(),
                  'ssim_to_other_class_means': ((sim.sum(1) - np.diag(sim)) / 9).tolist(),
                  'closest_mean_is_own_class': float(np.mean(np.argmax(sim, 1) ==
                                                             np.arange(10)))}
    grids[mname] = rec
    print(f'[{NAME}] inversion {mname}: mean confidence '
          f'{np.mean(out[mname]["confidence"]):.3f}, own-class-closest '
          f'{out[mname]["closest_mean_is_own_class"]:.2f}', flush=True)
  return out, grids, means


def _attribute_inference(cfg, key):
  x_tr, y_tr = data.load('breast_cancer', 'train')
  x_te, y_te = data.load('breast_cancer', 'test')
  corr = [abs(np.corrcoef(x_tr[:, j], y_tr)[0, 1]) for j in range(x_tr.shape[1])]
  feat0 = int(np.argmax(corr))
  # The attribute must not be recoverable from the remaining features alone (breast_cancer
  # has near-duplicates, e.g. radius / perimeter / area): drop features with
  # |corr| > 0.5 with it. Otherwise a linear model's weight on the attribute is a
  # suppressor effect whose sign need not match the marginal association.
  c_all = np.corrcoef(x_tr.T)
  keep = [j for j in range(x_tr.shape[1]) if j == feat0 or abs(c_all[feat0, j]) <= 0.5]
  x_tr, x_te = x_tr[:, keep], x_te[:, keep]
  feat = keep.index(feat0)
  thr = float(np.median(x_tr[:, feat]))
  def binarise(x):
    x = x.copy()
    x[:, feat] = np.where(x[:, feat] > thr, 1.0, -1.0)
    return x
  xb_tr, xb_te = binarise(x_tr), binarise(x_te)
  model = models.get('logreg', num_classes=2)
  k_i, k_f = jax.random.split(key)
  params = train.fit(model.apply, models.init(model, k_i, (1, x_tr.shape[1])), xb_tr, y_tr,
                     optimizer=optax.adam(1e-2), key=k_f, batch_size=32,
                     num_epochs=cfg.attr_epochs).params
  prior1 = float(np.mean(xb_tr[:, feat] == 1.0))
  fn = models.logits_fn(model, params)
  out = {'feature': feat0, 'feature_label_correlation': float(corr[feat0]),
         'num_features_kept': len(keep),
         'prior_positive': prior1,
         'model_test_accuracy': train.evaluate(model.apply, params, xb_te, y_te)}
  for split, xs, ys in (('members', xb_tr, y_tr), ('non-members', xb_te, y_te)):
    res = priv.attribute_inference(fn, xs, ys, feature=feat, candidates=[-1.0, 1.0],
                                   prior=[1 - prior1, prior1])
    out[split] = {'attack_accuracy': float(np.mean(res.values == xs[:, feat])),
                  'base_rate_accuracy': float(np.mean(xs[:, feat] == res.base_rate_value)),
                  'n': int(xs.shape[0])}
    print(f'[{NAME}] attribute inference ({split}): '
          f'{out[split]["attack_accuracy"]:.3f} vs base rate '
          f'{out[split]["base_rate_accuracy"]:.3f}', flush=True)
  return out


def _property_inference(cfg, key, x_tr, y_tr):
  k_m, k_t, k_meta = jax.random.split(key, 3)
  has = y_tr == 0
  masks, labels = priv.property_masks(k_m, has, num_models=cfg.prop_num_models,
                                      size=cfg.prop_size, fraction_with=cfg.prop_with,
                                      fraction_without=cfg.prop_without)
  model = models.get('mlp', num_classes=10, hidden=tuple(cfg.prop_hidden))
  t0 = time.time()
  res = priv.train_shadow_models(model.apply, lambda k: models.init(model, k, (1, 28, 28, 1)),
                                 x_tr, y_tr, masks, key=k_t, optimizer=optax.adam(1e-3),
                                 batch_size=32, num_epochs=cfg.prop_epochs)
  jax.block_until_ready(res.params)
  sec = time.time() - t0
  feats = np.asarray(priv.parameter_features(res.params, output_leaves=2))  # head: per class
  # Held-out split balanced over both labels (labels are [1]*M/2 + [0]*M/2).
  m, h = cfg.prop_num_models, cfg.prop_test_models // 2
  test = np.r_[np.arange(m // 2 - h, m // 2), np.arange(m - h, m)]
  tr = np.setdiff1d(np.arange(m), test)
  meta = priv.fit_meta_classifier(feats[tr], labels[tr], key=k_meta,
                                  num_epochs=cfg.prop_meta_epochs)
  s = np.asarray(priv.meta_scores(meta, feats[test]))
  out = {'num_shadow_models': int(m), 'num_test_models': int(test.size),
         'train_seconds': sec, 'fraction_with': cfg.prop_with,
         'fraction_without': cfg.prop_without, 'num_features': int(feats.shape[1]),
         'test_accuracy': float(np.mean((s > 0) == labels[test].astype(bool))),
         'test_auc': metrics.auc(s, labels[test].astype(bool))}
  print(f'[{NAME}] property inference: meta accuracy {out["test_accuracy"]:.3f} AUC '
        f'{out["test_auc"]:.3f} ({m} shadow models in {sec:.0f}s)', flush=True)
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  k1, k2, k3, k4 = jax.random.split(jax.random.key(cfg.seed), 4)
  x_tr, y_tr = data.load('fashion_mnist', 'train')
  x_te, y_te = data.load('fashion_mnist', 'test')
  dlg_rows, examples = _dlg(cfg, k1, x_te[:2000], y_te[:2000])
  inv, grids, means = _model_inversion(cfg, k2, x_tr, y_tr, x_te, y_te)
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'dlg': dlg_rows, 'model_inversion': inv,
      'attribute_inference': _attribute_inference(cfg, k3),
      'property_inference': _property_inference(cfg, k4, x_tr, y_tr),
      'backend': jax.default_backend(),
  }
  results['total_seconds'] = time.time() - t0
  # Figures: DLG reconstructions (originals / reconstructions) and inverted classes.
  names = [k for k in examples if k.endswith('joint')][-2:] + \
      [k for k in examples if k.endswith('idlg')][:1]
  rows, titles = [], []
  for k in names:
    orig, rec = examples[k]
    pad = lambda a: np.concatenate([a, np.zeros((8 - a.shape[0],) + a.shape[1:], a.dtype)])
    rows += [pad(orig), pad(rec)]
    titles += [f'{k}: original', f'{k}: DLG']
  labels = np.zeros(8, np.int32)
  cls = [str(i) for i in range(10)]
  plots.image_grid(os.path.join(workdir, f'{NAME}_dlg.png'), rows,
                   [np.zeros(8, np.int32)] * len(rows), row_titles=titles, labels=labels,
                   class_names=['' for _ in cls])
  inv_rows = [means[:10]] + [grids[k] for k in grids]
  plots.image_grid(os.path.join(workdir, f'{NAME}_model_inversion.png'), inv_rows,
                   [np.arange(10)] * len(inv_rows),
                   row_titles=['class mean'] + list(grids), labels=np.arange(10),
                   class_names=list(data.info('fashion_mnist').class_names))
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = ['## Gradient inversion, model inversion, attribute and property inference', '',
           f"DLG (Zhu 2019) with L-BFGS, {c['dlg_steps']} steps, sigmoid networks at "
           f"initialisation, {c['dlg_trials']} trials per cell, FMNIST batches of distinct "
           'labels; PSNR / SSIM after optimal matching of the reconstructed batch:', '',
           '| model | batch size | labels | PSNR (dB) | SSIM | label accuracy |',
           '|---|---|---|---|---|---|']
  for d in r['dlg']:
    lab = 'iDLG (from the gradient)' if d['labels'] == 'idlg' else 'DLG (joint)'
    lines.append(f"| {d['model']} | {d['batch_size']} | {lab} | {d['psnr_mean']:.1f} | "
                 f"{d['ssim_mean']:.3f} | {100 * d['label_accuracy']:.0f}% |")
  lines += ['', f'![DLG reconstructions]({NAME}_dlg.png)', '',
            'Model inversion (Fredrikson 2015; TV prior and denoiser), one image per class:',
            '', '| model | test acc. | mean confidence | SSIM to own class mean | SSIM to '
            'other means | own mean closest |', '|---|---|---|---|---|---|']
  for name, m in r['model_inversion'].items():
    lines.append(f"| {name} | {100 * m['test_accuracy']:.1f}% | "
                 f"{np.mean(m['confidence']):.3f} | {np.mean(m['ssim_to_own_class_mean']):.3f} "
                 f"| {np.mean(m['ssim_to_other_class_means']):.3f} | "
                 f"{100 * m['closest_mean_is_own_class']:.0f}% |")
  a = r['attribute_inference']
  lines += ['', f'![model inversion]({NAME}_model_inversion.png)', '',
            f"Attribute inference (Fredrikson 2014) on breast_cancer: feature {a['feature']} "
            f"(|corr| with the label {a['feature_label_correlation']:.2f}) binarised at its "
            f"median, features correlated > 0.5 with it dropped ({a['num_features_kept']} "
            'kept); logistic regression (test accuracy '
            f"{100 * a['model_test_accuracy']:.1f}%).", '',
            '| records | attack accuracy | base rate |', '|---|---|---|']
  for split in ('members', 'non-members'):
    lines.append(f"| {split} ({a[split]['n']}) | {100 * a[split]['attack_accuracy']:.1f}% | "
                 f"{100 * a[split]['base_rate_accuracy']:.1f}% |")
  p = r['property_inference']
  lines += ['', f"Property inference (Ateniese 2015): {p['num_shadow_models']} shadow MLPs "
            f"(one `fit_many` program, {p['train_seconds']:.0f} s) trained with class 0 at "
            f"{100 * p['fraction_with']:.0f}% vs {100 * p['fraction_without']:.0f}% of the "
            f"data; meta-classifier on {p['num_features']} permutation-invariant parameter "
            f"features: accuracy {100 * p['test_accuracy']:.1f}%, AUC {p['test_auc']:.3f} on "
            f"{p['num_test_models']} held-out models.", '']
  return '\n'.join(lines)
