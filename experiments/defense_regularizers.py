r"""Regularisers, preprocessors and detectors on FMNIST, each under its adaptive attack.

    nohup python -m experiments.run --config=experiments/configs/defense_regularizers.py:budget --workdir=docs/results > reg.log 2>&1 &
    python -m experiments.run --config=experiments/configs/defense_regularizers.py:smoke --workdir=/tmp/s

Training-time defenses (same CNN, optimizer and epochs): plain, L2 weight penalty,
dropout (trained through ``train_apply_fn``), input-gradient regularisation (Ross &
Doshi-Velez 2018), the input-output contractive penalty and Gu & Rigazio's layer-wise
deep contractive penalty (random projections). Each is attacked by white-box PGD-20 at
several eps: they are differentiable, so plain PGD is the adaptive attack; the
AutoAttack-style ensemble at the largest eps checks that no regulariser merely blunts
PGD's gradients.

Inference-time defenses on the plain model:

* denoising autoencoder (pure-JAX MLP, trained noisy -> clean): PGD through the whole
  stack (differentiable) and with BPDA (identity backward); the worse of the two counts;
* feature squeezing (1-bit depth + 2x2 median) as a preprocessor, attacked with BPDA;
  and as a detector (Xu et al.): detection of non-adaptive PGD examples (ROC AUC, TPR at
  5% FPR), then the joint C&W-style attack (misclassify AND stay under the threshold,
  BPDA through the squeezers);
* a learned input detector (Metzen et al. 2017, on the input rather than a feature map):
  trained on clean vs PGD examples of the training set, then the same two evaluations;
* a randomised defense (Gaussian input noise at test time): PGD on a single noise draw
  vs EOT-PGD (expectation over the noise, Athalye et al. 2018).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import defense_common as dc
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import losses
from jaxsec import models
from jaxsec import train
from jaxsec.attacks import evasion
from jaxsec.defenses.inference import dae
from jaxsec.defenses.inference import detectors
from jaxsec.defenses.inference import preprocessors
from jaxsec.defenses.training import regularizers

NAME = 'defense_regularizers'
TRAINED = ('plain', 'l2', 'dropout', 'input_gradient', 'contractive', 'deep_contractive')


def cnn_layers(model_kwargs):
  """The reference CNN as Gu & Rigazio's layers [(params, h) -> h'] over the Flax params
  (conv+relu+pool, conv+relu+pool, flatten+dense+relu, head)."""
  feats = tuple(model_kwargs['features'])
  dense = model_kwargs['dense']

  def conv(i, f):
    def layer(p, h):
      h = nn.Conv(f, (3, 3), padding='SAME').apply({'params': p['params'][f'conv{i}']}, h)
      return nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2))
    return layer

  def fc(p, h):
    h = h.reshape((h.shape[0], -1))
    return nn.relu(nn.Dense(dense).apply({'params': p['params']['dense']}, h))

  def head(p, h):
    return nn.Dense(10).apply({'params': p['params']['head']}, h)
  return [conv(i, f) for i, f in enumerate(feats)] + [fc, head]


def objective_for(name, cfg):
  if name in ('plain', 'dropout'):
    return None
  if name == 'l2':
    return regularizers.weight_penalty(l2=cfg.l2)
  if name == 'input_gradient':
    return regularizers.input_gradient_regularization(strength=cfg.input_gradient)
  if name == 'contractive':
    return regularizers.contractive(strength=cfg.contractive,
                                    num_projections=cfg.projections)
  if name == 'deep_contractive':
    return regularizers.deep_contractive(layers=cnn_layers(cfg.model_kwargs),
                                         strength=cfg.deep_contractive,
                                         num_projections=cfg.projections)
  raise ValueError(f'Unknown defense {name!r}.')


def _pgd(eps, cfg):
  return evasion.pgd(eps=eps, num_steps=cfg.pgd_steps, step_size=2.5 * eps / cfg.pgd_steps)


def _robust(logits_fn, attack_logits_fn, xt, yt, cfg, key):
  """Robust accuracy of ``logits_fn`` at each eps, the attack run on ``attack_logits_fn``."""
  out = {}
  for eps in cfg.eps:
    atk = _pgd(eps, cfg)
    x_adv, _ = evaluate.run_attack(atk, attack_logits_fn, xt, yt, key, batch_size=cfg.eval_batch)
    out[f'{eps:g}'] = dc.attack_summary(logits_fn, xt, yt, x_adv, eps=eps)['robust_accuracy']
  return out


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  x, y, xt, yt = dc.load_fmnist(cfg.n_train, cfg.n_test, cfg.seed)
  key = jax.random.key(cfg.seed)
  scratch = dc.scratch_dir(workdir)
  cache = dc.Cache(scratch, NAME)
  base = {k: cfg[k] for k in ('seed', 'model_kwargs', 'batch_size', 'learning_rate',
                              'n_train', 'epochs')}
  ev = {k: cfg[k] for k in ('eps', 'pgd_steps', 'n_test')}
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common.device_info(), 'trained': {}, 'inference': {}}
  save = lambda: jio.write_json_atomic(f'{workdir}/{NAME}.json', results)
  k_eval = jax.random.fold_in(key, 3)
  params = {}

  for name in cfg.trained:
    drop = cfg.dropout if name == 'dropout' else 0.0
    apply_fn, p0 = dc.reference_cnn(cfg, key, x.shape[1:], dropout=drop)
    strength = {'l2': cfg.l2, 'dropout': cfg.dropout, 'input_gradient': cfg.input_gradient,
                'contractive': cfg.contractive, 'deep_contractive': cfg.deep_contractive
                }.get(name)
    tag = dc.tag_of(base, name, strength, cfg.projections)
    tap = None
    if drop:
      tap = lambda p, xx, k, af=apply_fn: af(p, xx, train=True, rngs={'dropout': k})
    dc.log(f'{NAME}: training {name}')
    p, tinfo = dc.train_timed(apply_fn, p0, x, y, optimizer=optax.adam(cfg.learning_rate),
                              key=jax.random.fold_in(key, 2), num_epochs=cfg.epochs,
                              batch_size=cfg.batch_size, objective=objective_for(name, cfg),
                              checkpoint_dir=dc.ckpt_dir(scratch, NAME, name, tag),
                              label=name, train_apply_fn=tap)
    params[name] = (apply_fn, p)
    stage_cfg = (base, name, strength, cfg.projections, ev)
    hit = cache.get(name, stage_cfg)
    if hit is None:
      f = lambda z, af=apply_fn, pp=p: af(pp, z)
      hit = {'strength': strength, 'train': tinfo,
             'clean_accuracy': float(np.mean(dc.predictions(f, xt) == yt)),
             'pgd_robust_accuracy': _robust(f, f, xt, yt, cfg, k_eval)}
      cache.put(name, stage_cfg, hit)
    if cfg.autoattack_n and 'autoattack' not in hit:
      # The strongest evaluation we have, at the largest eps: a regulariser that flattens
      # the loss surface can blunt PGD's gradients without being robust.
      f = lambda z, af=apply_fn, pp=p: af(pp, z)
      n_aa, eps_aa = min(cfg.autoattack_n, xt.shape[0]), max(cfg.eps)
      aa = evasion.run_auto_attack(f, xt[:n_aa], yt[:n_aa], jax.random.fold_in(key, 4),
                                   eps=eps_aa, version=cfg.autoattack_version,
                                   batch_size=cfg.eval_batch)
      x_p, _ = evaluate.run_attack(_pgd(eps_aa, cfg), f, xt[:n_aa], yt[:n_aa], k_eval,
                                   batch_size=cfg.eval_batch)
      hit['autoattack'] = {
          'eps': eps_aa, 'n': n_aa, 'version': cfg.autoattack_version,
          'robust_accuracy': aa['robust_accuracy'],
          'pgd_robust_accuracy_same_points': float(np.mean(
              dc.predictions(f, x_p) == yt[:n_aa])),
          'stages': aa['stages']}
      cache.put(name, stage_cfg, hit)
    dc.log(f'{NAME}: {name}: {hit["clean_accuracy"]:.3f} {hit["pgd_robust_accuracy"]}')
    results['trained'][name] = hit
    save()

  plain_apply, p = params['plain']
  plain_fn = lambda z: plain_apply(p, z)
  plain_tag = dc.tag_of(base, 'plain', None, cfg.projections)

  # ---- denoising autoencoder
  dae_cfg = (plain_tag, ev, cfg.dae_hidden, cfg.dae_noise, cfg.dae_epochs)
  dtag = dc.tag_of(*dae_cfg)
  hit = cache.get('dae', dae_cfg)
  if hit is None:
    dc.log(f'{NAME}: training the DAE')
    dp0 = dae.init(jax.random.fold_in(key, 5), x.shape[1:], cfg.dae_hidden)
    dp, _ = dc.train_timed(dae.apply, dp0, x, y, optimizer=optax.adam(1e-3),
                           key=jax.random.fold_in(key, 6), num_epochs=cfg.dae_epochs,
                           batch_size=cfg.batch_size,
                           objective=dae.denoising_objective(noise_std=cfg.dae_noise),
                           checkpoint_dir=dc.ckpt_dir(scratch, NAME, 'dae', dtag), label='dae')
    den = lambda z: dae.apply(dp, z)
    defended = preprocessors.preprocessed(plain_fn, den)
    through = _robust(defended, defended, xt, yt, cfg, k_eval)
    bpda = _robust(defended, evasion.bpda_logits_fn(plain_fn, den), xt, yt, cfg, k_eval)
    recon = float(jnp.mean((den(jnp.asarray(xt[:500])) - xt[:500]) ** 2))
    hit = {'clean_accuracy': float(np.mean(dc.predictions(defended, xt) == yt)),
           'reconstruction_mse': recon, 'pgd_end_to_end': through, 'pgd_bpda': bpda,
           'robust_accuracy': {e: min(through[e], bpda[e]) for e in through}}
    cache.put('dae', dae_cfg, hit)
  results['inference']['dae'] = hit
  save()

  # ---- feature squeezing: preprocessor (BPDA) and detector
  sq_bits = preprocessors.bit_depth_reduction(bits=1)
  sq_med = preprocessors.median_filter(size=2)
  squeeze = lambda z: sq_med(sq_bits(z))
  fs_cfg = (plain_tag, ev, cfg.detector_eps, 'fs')
  hit = cache.get('squeezing', fs_cfg)
  if hit is None:
    dc.log(f'{NAME}: feature squeezing')
    defended = preprocessors.preprocessed(plain_fn, squeeze)
    hit = {'clean_accuracy': float(np.mean(dc.predictions(defended, xt) == yt)),
           'pgd_bpda': _robust(defended, evasion.bpda_logits_fn(plain_fn, squeeze), xt, yt,
                               cfg, k_eval)}
    score = detectors.feature_squeezing_score(plain_fn, [sq_bits, sq_med])
    score_bpda = detectors.feature_squeezing_score(
        plain_fn, [evasion.bpda(sq_bits), evasion.bpda(sq_med)])
    hit['detector'] = _detector_eval(plain_fn, score, score_bpda, xt, yt, cfg, k_eval)
    cache.put('squeezing', fs_cfg, hit)
  results['inference']['feature_squeezing'] = hit
  save()

  # ---- learned detector on the input (Metzen et al. 2017, input variant)
  learned_cfg = (plain_tag, ev, cfg.detector_eps, cfg.detector_kwargs, cfg.n_detector,
                 cfg.detector_epochs)
  ltag = dc.tag_of(*learned_cfg)
  hit = cache.get('learned', learned_cfg)
  if hit is None:
    dc.log(f'{NAME}: learned detector')
    nd = min(cfg.n_detector, x.shape[0])
    atk = _pgd(cfg.detector_eps, cfg)
    xd, ld = detectors.detector_training_set(atk, plain_fn, x[:nd], y[:nd],
                                             jax.random.fold_in(key, 7),
                                             batch_size=cfg.eval_batch)
    det = models.get('cnn', num_classes=1, **cfg.detector_kwargs.to_dict())
    dp0 = models.init(det, jax.random.fold_in(key, 8), (1,) + x.shape[1:])
    dp, _ = dc.train_timed(det.apply, dp0, xd, ld, optimizer=optax.adam(1e-3),
                           key=jax.random.fold_in(key, 9), num_epochs=cfg.detector_epochs,
                           batch_size=cfg.batch_size, objective=train.supervised(
                               losses.cross_entropy),
                           checkpoint_dir=dc.ckpt_dir(scratch, NAME, 'detector', ltag),
                           label='detector')
    score = detectors.learned_score(det.apply, dp)
    hit = {'detector': _detector_eval(plain_fn, score, score, xt, yt, cfg, k_eval),
           'n_train_detector': int(2 * nd)}
    cache.put('learned', learned_cfg, hit)
  results['inference']['learned_detector'] = hit
  save()

  # ---- randomised input noise: PGD on one draw vs EOT
  noise_cfg = (plain_tag, ev, cfg.test_noise, cfg.eot_samples)
  hit = cache.get('noise', noise_cfg)
  if hit is None:
    dc.log(f'{NAME}: random noise + EOT')
    noise = lambda z, k: jnp.clip(z + cfg.test_noise * jax.random.normal(k, z.shape), 0, 1)
    k_def = jax.random.fold_in(key, 10)
    # the deployed randomised model: fresh noise per input (folded from the input bits)
    deployed = evasion.eot_logits_fn(plain_fn, noise, num_samples=1, key=k_def)
    single = evasion.eot_logits_fn(plain_fn, noise, num_samples=1,
                                   key=jax.random.fold_in(key, 11))
    eot = evasion.eot_logits_fn(plain_fn, noise, num_samples=cfg.eot_samples,
                                key=jax.random.fold_in(key, 12))
    hit = {'clean_accuracy': float(np.mean(dc.predictions(deployed, xt) == yt)),
           'pgd_single_draw': _robust(deployed, single, xt, yt, cfg, k_eval),
           'pgd_eot': _robust(deployed, eot, xt, yt, cfg, k_eval)}
    cache.put('noise', noise_cfg, hit)
  results['inference']['random_noise'] = hit
  save()
  return results


def _detector_eval(logits_fn, score, score_grad, xt, yt, cfg, key):
  """Detection of non-adaptive PGD examples, then the joint detector-aware attack."""
  eps = cfg.detector_eps
  clean_s = evaluate.map_batches(score, (xt,), batch_size=cfg.eval_batch, pad=False)
  thr = detectors.threshold_at_fpr(clean_s, 0.05)
  x_adv, _ = evaluate.run_attack(_pgd(eps, cfg), logits_fn, xt, yt, key,
                                 batch_size=cfg.eval_batch)
  fooled = dc.predictions(logits_fn, x_adv) != yt
  adv_s = evaluate.map_batches(score, (x_adv,), batch_size=cfg.eval_batch, pad=False)
  rep = detectors.detection_report(clean_s, adv_s[fooled] if fooled.any() else adv_s, 0.05)
  static = detectors.defended_success(logits_fn, score, thr, xt, yt, x_adv)
  joint = detectors.detector_aware_pgd(score_grad, threshold=thr, eps=eps,
                                       num_steps=5 * cfg.pgd_steps, detector_weight=10.0)
  x_j, _ = evaluate.run_attack(joint, logits_fn, xt, yt, key, batch_size=cfg.eval_batch)
  adaptive = detectors.defended_success(logits_fn, score, thr, xt, yt, x_j)
  return {'eps': eps, 'threshold': thr, 'detection_of_pgd': rep, 'pgd_vs_system': static,
          'joint_attack_vs_system': adaptive}


def render_markdown(r: dict) -> str:
  c = r['config']
  eps = [f'{e:g}' for e in c['eps']]
  lines = [f'### Regularisers and input defenses on FMNIST under adaptive attacks (variant '
           f'{r["variant"]})', '',
           f'Reference CNN, {c["epochs"]} epochs; PGD-{c["pgd_steps"]} (L_inf) on '
           f'{c["n_test"]} test images.', '',
           '| defense | clean acc | ' + ' | '.join(f'PGD acc eps={e}' for e in eps)
           + f' | AutoAttack-style acc eps={max(c["eps"]):g}, first '
           f'{c.get("autoattack_n", 0)} (PGD on the same points) |',
           '|---|---|' + '---|' * (len(eps) + 1)]
  for name, e in r['trained'].items():
    s = '' if e.get('strength') is None else f' ({e["strength"]:g})'
    aa = e.get('autoattack')
    lines.append(f'| {name}{s} | {dc.fmt(e["clean_accuracy"])} | ' + ' | '.join(
        dc.fmt(e['pgd_robust_accuracy'][k]) for k in eps) + ' | ' + (
            f'{dc.fmt(aa["robust_accuracy"])} ({dc.fmt(aa["pgd_robust_accuracy_same_points"])})'
            if aa else '-') + ' |')
  inf = r['inference']
  if 'dae' in inf:
    d = inf['dae']
    lines.append(f'| DAE (worst of end-to-end / BPDA) | {dc.fmt(d["clean_accuracy"])} | ' +
                 ' | '.join(f'{dc.fmt(d["robust_accuracy"][k])} ({dc.fmt(d["pgd_end_to_end"][k])}'
                            f' / {dc.fmt(d["pgd_bpda"][k])})' for k in eps) + ' |')
  if 'feature_squeezing' in inf:
    d = inf['feature_squeezing']
    lines.append(f'| feature squeezing, BPDA | {dc.fmt(d["clean_accuracy"])} | ' +
                 ' | '.join(dc.fmt(d['pgd_bpda'][k]) for k in eps) + ' |')
  if 'random_noise' in inf:
    d = inf['random_noise']
    lines.append(f'| Gaussian noise {c["test_noise"]} (single draw / EOT-{c["eot_samples"]}) | '
                 f'{dc.fmt(d["clean_accuracy"])} | ' + ' | '.join(
                     f'{dc.fmt(d["pgd_single_draw"][k])} / {dc.fmt(d["pgd_eot"][k])}'
                     for k in eps) + ' |')
  lines += ['', f'Detectors (threshold at 5% FPR on clean test images; PGD eps '
            f'{c["detector_eps"]}):', '',
            '| detector | AUC vs PGD | TPR at 5% FPR | PGD: fooled & undetected | joint attack: '
            'fooled & undetected |', '|---|---|---|---|---|']
  for name, key in (('feature squeezing (Xu 2018)', 'feature_squeezing'),
                    ('learned input detector (Metzen 2017)', 'learned_detector')):
    if key not in inf:
      continue
    d = inf[key]['detector']
    rep = d['detection_of_pgd']
    lines.append(f'| {name} | {rep["auc"]:.3f} | {dc.fmt(rep["tpr_at_0.05_fpr"])} | '
                 f'{dc.fmt(d["pgd_vs_system"]["misclassified_and_undetected"])} | '
                 f'{dc.fmt(d["joint_attack_vs_system"]["misclassified_and_undetected"])} |')
  return '\n'.join(lines) + '\n'
