r"""JSMA and DeepFool-vs-FGSM on an offline MNIST-like proxy: is the FMNIST gap the data?

    python -m experiments.run --config=experiments/configs/evasion_proxy.py --workdir=docs/results  # digits28, 2 models (~8 min)
    python -m experiments.run --config=experiments/configs/evasion_proxy.py:sharp --workdir=docs/results  # digits28, MNIST-like contrast, LeNet
    python -m experiments.run --config=experiments/configs/evasion_proxy.py:fmnist --workdir=docs/results  # the same stages on FMNIST
    python -m experiments.run --config=experiments/configs/evasion_proxy.py:smoke --workdir=/tmp/s

The evasion suite (experiments/evasion_suite.py) reproduces two MNIST LeNet figures only
partly on Fashion-MNIST: JSMA (Papernot et al., EuroS&P 2016: 97% targeted success changing
4.02% of the features, gamma = 14.5%, theta = +1) and DeepFool vs FGSM average robustness
(Moosavi-Dezfooli et al., CVPR 2016, Table 1: rho_adv 0.20 vs 1.0, ~5x). MNIST cannot be
downloaded on an offline machine, so this experiment runs the suite's own stages on a proxy
that installs with scikit-learn:

* ``digits28``: scikit-learn's 1,797 8x8 digits (16 grey levels) scaled to [0, 1], upsampled
  to 20x20 with bilinear interpolation (``jax.image.resize(..., 'bilinear')``), clipped to
  [0, 1] and padded with 4 zero pixels on each side to 28x28, the way MNIST puts a
  20x20-normalised digit in a 28x28 frame. A fixed random 75/25 split (seeded). It is
  smoother than MNIST and has few saturated pixels; it is a proxy, not MNIST. The ``sharp``
  variant stretches its contrast (training-pixel quantiles 0.80 -> 0, 0.92 -> 1) to
  MNIST-like pixel statistics: ~20% non-zero, ~8% saturated pixels, mean ||x||_2 ~9.8.

Models: the suite's reference CNN (3x3 convs 32 / 64, dense 128) and a LeNet-like CNN with
the layer sizes of the papers' MNIST LeNet (5x5 convs 20 / 50, each with 2x2 max-pooling,
dense 500; SAME padding), trained with ``jaxsec.train.fit``. Per model:

* JSMA, targeted, one random target != label per image, on ``jsma_examples`` correctly
  classified test images, for each entry of ``jsma_variants`` (theta = +1 with the logits'
  Jacobian is the paper's setting; theta = -1 is its decreasing variant; 'probs' uses the
  softmax Jacobian, as CleverHans does). Success rate and mean % of features changed (over
  the successful ones, as in the paper), with the paper's rule on an empty saliency map
  (``empty_map='continue'``) and with ``empty_map='stop'`` (derived from the same run: the
  rules agree up to an example's first empty map), and why each 'stop' failure ended:
  budget exhausted (another pair would exceed gamma * n features), empty saliency map (no
  pair satisfies the sign conditions), or search domain exhausted (< 2 features left).
* DeepFool (L2) vs the FGSM minimal-eps line search, ``rho = mean ||r||_2 / ||x||_2`` over
  correctly classified test images, computed exactly as in the suite (its functions), once
  inside the [0, 1] box (the suite's setting) and once in a box ``unboxed_margin`` wider on
  each side, which never binds for the perturbations found: the papers state DeepFool and
  FGSM without a box constraint.

The ``fmnist`` variant runs the same stages on FMNIST with the suite's model and training
(same seed and key splits, so the same images and targets as the suite's JSMA stage).
Results go to ``<workdir>/evasion_proxy[_<variant>].json``.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as exp_common
from experiments import evasion_suite as suite
from jaxsec import data
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.attacks.evasion.deepfool import deepfool
from jaxsec.attacks.evasion.jsma import jsma

NAME = 'evasion_proxy'
PUBLISHED = {k: suite.PUBLISHED[k] for k in ('jsma', 'deepfool')}

_CNN = {'features': (32, 64), 'dense': 128}                      # the suite's reference CNN
_LENET = {'features': (20, 50), 'kernel_size': 5, 'dense': 500}  # the papers' MNIST LeNet sizes


# --------------------------------------------------------------------------- data


def load_digits28(*, size: int = 20, pad: int = 4, test_fraction: float = 0.25,
                  seed: int = 0, contrast=None):
  """scikit-learn's 8x8 digits as 28x28x1 images in [0, 1] (see the module docstring).

  ``contrast=(q_lo, q_hi)`` then maps the pixels linearly so that the training split's
  ``q_lo`` quantile goes to 0 and its ``q_hi`` quantile to 1 (clipped): sharper strokes with
  MNIST-like pixel statistics ((0.80, 0.92) gives ~20% non-zero and ~8% saturated pixels).

  Returns ``((x_train, y_train), (x_test, y_test))``, float32 NHWC and int32.
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  x = jnp.asarray(d.images, jnp.float32) / 16.0
  x = jax.image.resize(x, (x.shape[0], size, size), method='bilinear')
  x = jnp.pad(jnp.clip(x, 0.0, 1.0), ((0, 0), (pad, pad), (pad, pad)))
  x = np.asarray(x)[..., None]
  y = d.target.astype(np.int32)
  perm = np.random.default_rng(seed).permutation(x.shape[0])
  n_test = int(round(test_fraction * x.shape[0]))
  te, tr = perm[:n_test], perm[n_test:]
  if contrast is not None:
    lo, hi = np.quantile(x[tr], contrast)
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
  return (x[tr], y[tr]), (x[te], y[te])


def _load(cfg):
  if cfg.dataset == 'digits28':
    return load_digits28(seed=cfg.seed, **cfg.digits28.to_dict())
  return data.load(cfg.dataset, 'train'), data.load(cfg.dataset, 'test')


# --------------------------------------------------------------------------- stages


def jsma_stop_reasons(x, x_adv, success, features_changed, empty_map_iterations, *, theta,
                      gamma, bounds, empty_map='continue'):
  """Why each JSMA example stopped, from its output (the attack's stopping rules).

  Returns a dict of bool masks [B]: 'success'; and for the failures 'budget' (another pair
  would exceed ``floor(gamma * n)`` changed features), else 'domain' (fewer than two
  features can still move in the direction of ``theta``), else 'empty_map' (no pair
  satisfied the sign conditions; only with ``empty_map='stop'``). 'met_empty_map' marks the
  examples whose saliency map was empty at some iteration.
  """
  b = x.shape[0]
  n = int(np.prod(x.shape[1:]))
  lo, hi = bounds
  xa = np.asarray(x_adv).reshape(b, n)
  dom = (xa < hi) if theta > 0 else (xa > lo)
  success = np.asarray(success, bool)
  met = np.asarray(empty_map_iterations) > 0
  fail = ~success
  if empty_map == 'stop':
    empty = fail & met
  else:
    empty = np.zeros_like(fail)
  budget = fail & ~empty & (np.asarray(features_changed) + 2 > int(float(gamma) * n))
  domain = fail & ~empty & ~budget & (dom.sum(1) < 2)
  return {'success': success, 'budget': budget, 'domain': domain, 'empty_map': empty,
          'met_empty_map': met}


def _jsma_summary(succ, pct, reasons):
  return {'success_rate': float(succ.mean()),
          'features_changed_pct_successful': float(pct[succ].mean()) if succ.any()
          else float('nan'),
          'failures': int((~succ).sum()),
          'failures_budget': int(reasons['budget'].sum()),
          'failures_empty_map': int(reasons['empty_map'].sum()),
          'failures_domain': int(reasons['domain'].sum())}


def run_jsma(logits_fn, x, t, *, theta, jacobian, gamma, bounds, batch):
  """JSMA with the paper's rule on an empty saliency map (``empty_map='continue'``), and
  what ``empty_map='stop'`` gives on the same images: both rules produce the same iterates
  up to an example's first empty map, so 'stop' succeeds exactly where 'continue' succeeds
  without ever meeting one, with the same features changed."""
  js = jax.jit(lambda xb, tb: jsma(theta=theta, gamma=gamma, jacobian=jacobian,
                                   bounds=bounds, empty_map='continue')(logits_fn, xb, tb))
  t0 = time.time()
  out = evaluate.map_batches(js, (x, t), batch_size=batch)
  x_adv, info = out.x_adv, out.info
  args = (x, x_adv, info['success'], info['features_changed'], info['empty_map_iterations'])
  kw = {'theta': theta, 'gamma': gamma, 'bounds': bounds}
  reasons = jsma_stop_reasons(*args, **kw)
  succ = reasons['success']
  met = reasons['met_empty_map']
  pct = 100 * np.asarray(info['features_changed_frac'])
  res = {'theta': float(theta), 'jacobian': jacobian, 'gamma': float(gamma),
         'n': int(x.shape[0]), **_jsma_summary(succ, pct, reasons),
         'features_changed_pct_all': float(pct.mean()),
         'mean_iterations': float(np.mean(info['steps'])),
         'examples_meeting_empty_map': int(met.sum()),
         'seconds': time.time() - t0}
  # 'stop': fails at the first empty map; elsewhere the same run.
  succ_stop = succ & ~met
  reasons_stop = jsma_stop_reasons(x, x_adv, succ_stop, info['features_changed'],
                                   info['empty_map_iterations'], empty_map='stop', **kw)
  res['stop_rule'] = _jsma_summary(succ_stop, pct, reasons_stop)
  return res


def run_rho(logits_fn, x, y, *, bounds, cfg, batch):
  """DeepFool L2 vs FGSM minimal-eps line search, as the suite's 'deepfool_vs_fgsm'."""
  t0 = time.time()
  df = jax.jit(lambda xb, yb: deepfool(norm='l2', bounds=bounds,
                                       **cfg.deepfool.to_dict())(logits_fn, xb, yb))
  out_df = evaluate.map_batches(df, (x, y), batch_size=batch)
  x_df, info_df = out_df.x_adv, out_df.info
  ls = jax.jit(lambda xb, yb: suite.fgsm_line_search(
      logits_fn, xb, yb, bounds=bounds, grid=cfg.line_search_grid,
      bisect=cfg.line_search_bisect))
  eps_f, r_f = evaluate.map_batches(ls, (x, y), batch_size=batch)
  r_df, r_fg, xn = exp_common.l2_norms(x_df - x), exp_common.l2_norms(r_f), exp_common.l2_norms(x)
  ok_d = np.asarray(info_df['success'])
  ok_f = np.isfinite(eps_f)
  both = ok_d & ok_f
  res = {'bounds': [float(b) for b in bounds], 'n': int(x.shape[0]), 'n_both': int(both.sum()),
         'deepfool_success_rate': float(ok_d.mean()), 'fgsm_flip_rate': float(ok_f.mean()),
         'rho_deepfool': float(np.mean(r_df[both] / xn[both])),
         'rho_fgsm': float(np.mean(r_fg[both] / xn[both])),
         'mean_l2_deepfool': float(np.mean(r_df[both])),
         'mean_l2_fgsm': float(np.mean(r_fg[both])),
         'fgsm_mean_min_eps': float(np.mean(eps_f[both])),
         'mean_norm_x': float(np.mean(xn)),
         'deepfool_max_abs_r': float(np.max(np.abs(x_df - x))),
         'seconds': time.time() - t0}
  res['ratio'] = res['rho_fgsm'] / max(res['rho_deepfool'], 1e-12)
  return res


# --------------------------------------------------------------------------- run


def _output_path(cfg, workdir):
  suffix = '' if cfg.variant in ('full', 'smoke') else '_' + cfg.variant
  return os.path.join(workdir, f'{NAME}{suffix}.json')


def run(cfg: ml_collections.ConfigDict, workdir: str, ckpt_dir: str | None = None) -> dict:
  """Trains each model of ``cfg.models`` and runs the JSMA and rho stages; writes JSON."""
  ckpt_dir = exp_common.checkpoint_dir(cfg, ckpt_dir, NAME)  # default: cfg.ckpt_dir
  os.makedirs(workdir, exist_ok=True)
  bounds = tuple(cfg.bounds)
  lo, hi = bounds
  (x_train, y_train), (x_test, y_test) = _load(cfg)
  num_classes = 10
  input_shape = tuple(x_train.shape[1:])
  stats = {'n_train': int(x_train.shape[0]), 'n_test': int(x_test.shape[0]),
           'mean_norm_x_test': float(np.mean(exp_common.l2_norms(x_test))),
           'frac_pixels_nonzero': float(np.mean(x_test > lo)),
           'frac_pixels_saturated': float(np.mean(x_test >= hi))}
  runs = {}
  for name, kw in cfg.models.items():
    # The suite's key derivation: the same images / targets for the same data set.
    key = jax.random.key(cfg.seed)
    k_init, k_train, k_sel, k_tgt = jax.random.split(key, 4)
    model, params, _, train_s = exp_common.train_classifier(
        'cnn', kw, x_train, y_train, num_classes=num_classes, input_shape=input_shape,
        init_key=k_init, train_key=k_train, learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size, num_epochs=cfg.num_epochs, label=f'{NAME}/{name}',
        checkpoint_dir=exp_common.subdir(ckpt_dir, name), progress=False)
    logits_fn = models.logits_fn(model, params)
    test_logits = train.predict_logits(model.apply, params, x_test)
    acc = float(np.mean(np.argmax(test_logits, -1) == y_test))
    order = np.asarray(jax.random.permutation(k_sel, x_test.shape[0]))
    correct_idx = order[np.argmax(test_logits[order], -1) == y_test[order]]
    print(f'{name}: clean test accuracy {acc:.4f} (trained in {train_s:.0f} s)', flush=True)
    r = {'model_kwargs': kw.to_dict(), 'clean_accuracy': acc, 'train_seconds': train_s,
         'jsma': {}, 'deepfool_vs_fgsm': {}}
    bs = cfg.attack_batch

    idx = correct_idx[:cfg.jsma_examples]
    off = np.asarray(jax.random.randint(k_tgt, (idx.shape[0],), 1, num_classes))
    tgt = ((y_test[idx] + off) % num_classes).astype(np.int32)
    for vname, theta, jac in cfg.jsma_variants:
      j = run_jsma(logits_fn, x_test[idx], tgt, theta=theta, jacobian=jac,
                   gamma=cfg.jsma_gamma, bounds=bounds, batch=min(bs, 50))
      r['jsma'][vname] = j
      st = j['stop_rule']
      print(f"{name}: JSMA {vname} success {j['success_rate']:.3f}, "
            f"{j['features_changed_pct_successful']:.2f}% features; with empty_map='stop' "
            f"{st['success_rate']:.3f}, failures {st['failures']} (budget "
            f"{st['failures_budget']}, empty map {st['failures_empty_map']}, domain "
            f"{st['failures_domain']})", flush=True)

    idx = correct_idx[:cfg.rho_examples]
    m = cfg.unboxed_margin
    for bname, bb in (('box', bounds), ('no_box', (lo - m, hi + m))):
      rr = run_rho(logits_fn, x_test[idx], y_test[idx], bounds=bb, cfg=cfg, batch=bs)
      r['deepfool_vs_fgsm'][bname] = rr
      print(f"{name}: rho ({bname}) DeepFool {rr['rho_deepfool']:.4f} FGSM "
            f"{rr['rho_fgsm']:.4f} ratio {rr['ratio']:.2f}", flush=True)
    runs[name] = r

  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'dataset': cfg.dataset, 'data_stats': stats, 'runs': runs,
             'published': PUBLISHED, 'device': exp_common.device_info()}
  jio.write_json_atomic(_output_path(cfg, workdir), results)
  return results


# --------------------------------------------------------------------------- render


_pct = exp_common.pct
_num = exp_common.num


def headline(r: dict) -> list:
  """README row: JSMA in the paper's setting on the MNIST-like proxy (variant 'sharp')."""
  if r.get('variant') != 'sharp':
    return []
  rows = []
  for model, run in r['runs'].items():
    for j in run['jsma'].values():
      if j.get('theta', 1.0) < 0:
        continue
      rows.append((f"JSMA targeted (theta +1, gamma 14.5%, {j['jacobian']} Jacobian), "
                   f"MNIST-like digits28 proxy, {model}: success / % features changed "
                   '(MNIST LeNet published: 97% / 4.02%)',
                   f"{100 * j['success_rate']:.0f}% / "
                   f"{j['features_changed_pct_successful']:.2f}%"))
  return rows


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  p = r['published']
  s = r['data_stats']
  lines = [
      f"## JSMA and DeepFool vs FGSM on {r['dataset']} (proxy study)",
      '',
      f"{s['n_train']} training / {s['n_test']} test images; mean ||x||_2 "
      f"{s['mean_norm_x_test']:.2f}, {_pct(s['frac_pixels_nonzero'])} of pixels > 0, "
      f"{_pct(s['frac_pixels_saturated'])} at 1. Published figures: "
      f"JSMA {_pct(p['jsma']['success_rate'])} success, "
      f"{p['jsma']['features_changed_pct']:.2f}% features ({p['jsma']['setting']}); "
      f"rho DeepFool {p['deepfool']['rho_deepfool']:.2f} vs FGSM "
      f"{p['deepfool']['rho_fgsm']:.2f} ({p['deepfool']['setting']}).",
      '',
      "JSMA success and % of features changed (successful examples) with the paper's rule "
      "on an empty saliency map (empty_map='continue'), then with empty_map='stop' and how "
      'its failures ended.',
      '',
      '| model (clean acc.) | JSMA variant | success | % features | '
      "success with 'stop' | % features | 'stop' failures: budget / empty map / domain |",
      '|---|---|---|---|---|---|---|',
  ]
  for name, run_ in r['runs'].items():
    for vname, j in run_['jsma'].items():
      st = j['stop_rule']
      lines.append(
          f"| {name} ({_pct(run_['clean_accuracy'])}) | {vname} (theta {j['theta']:+g}, "
          f"{j['jacobian']}, gamma {j['gamma']:g}; {j['n']} images) | "
          f"{_pct(j['success_rate'])} | {_num(j['features_changed_pct_successful'], 2)}% | "
          f"{_pct(st['success_rate'])} | {_num(st['features_changed_pct_successful'], 2)}% | "
          f"{st['failures_budget']} / {st['failures_empty_map']} / {st['failures_domain']} |")
  lines += ['', '| model | box | rho DeepFool | rho FGSM | ratio | mean L2 DeepFool / FGSM | '
            'FGSM mean min eps | images |', '|---|---|---|---|---|---|---|---|']
  for name, run_ in r['runs'].items():
    for bname, d in run_['deepfool_vs_fgsm'].items():
      lines.append(
          f"| {name} | {bname} [{d['bounds'][0]:g}, {d['bounds'][1]:g}] | "
          f"{_num(d['rho_deepfool'])} | {_num(d['rho_fgsm'])} | {_num(d['ratio'], 2)}x | "
          f"{_num(d['mean_l2_deepfool'])} / {_num(d['mean_l2_fgsm'])} | "
          f"{_num(d['fgsm_mean_min_eps'])} | {d['n_both']} |")
  lines.append('')
  return '\n'.join(lines)
