r"""Model extraction (Tramer et al. 2016; Papernot et al. 2017; KnockoffNets).

    python -m experiments.run --config=experiments/configs/privacy_extraction.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/privacy_extraction.py:smoke --workdir=/tmp/s

1. Equation solving: a softmax regression on ``digits`` (d = 64, 10 classes) and a binary
   logistic regression on ``breast_cancer`` (d = 30), trained with ``train.fit``, recovered
   from ``d + 1`` confidence queries; agreement with the target on the test split and on
   random inputs, and the largest probability difference.
2. Retraining (Tramer's attack on models without a closed form): an MLP on ``digits``
   extracted by training the same architecture on its probabilities for random Gaussian
   queries, fidelity vs. the number of queries.
3. Learning-based extraction of the reference CNN on Fashion-MNIST with a query budget:
   KnockoffNets-style queries from a public pool (the first half of the test split; fidelity
   is measured on the second half) answered with probabilities or with labels only, random
   uniform-noise queries, and Papernot's Jacobian-based augmentation from a 10-per-class
   seed with label queries; every substitute (a smaller CNN) trains for the same number of
   steps. Fidelity (test agreement with the target) and accuracy vs. queries, as a plot.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsec import data
from jaxsec import io as jio
from jaxsec import metrics
from jaxsec import models
from jaxsec import train
from jaxsec.attacks import privacy as priv

NAME = 'privacy_extraction'


def _equation_solving(cfg, name, key):
  x_tr, y_tr = data.load(name, 'train')
  x_te, y_te = data.load(name, 'test')
  num_classes = int(y_tr.max()) + 1
  binary = num_classes == 2
  model = models.get('logreg', num_classes=1 if binary else num_classes)
  k_init, k_fit, k_q, k_r = jax.random.split(key, 4)
  params = models.init(model, k_init, (1, x_tr.shape[1]))
  params = train.fit(model.apply, params, x_tr, y_tr, optimizer=optax.adam(1e-2),
                     key=k_fit, batch_size=64, num_epochs=cfg.linear_epochs).params
  d = x_tr.shape[1]

  if binary:
    def oracle(q):     # the API returns both class probabilities
      z = model.apply(params, jnp.asarray(q))[:, 0]
      return jnp.stack([jax.nn.sigmoid(-z), jax.nn.sigmoid(z)], -1)
    counted = priv.Counter(oracle)
    w, b, queries = priv.extract_logistic_binary(counted, d, k_q)
    true_w = np.asarray(params['params']['linear']['kernel'])[:, 0]
    true_b = float(np.asarray(params['params']['linear']['bias'])[0])
    param_err = float(max(np.abs(w - true_w).max(), abs(b - true_b)))
    stolen = lambda q: priv.linear_logits(w, b, q)
    stolen_probs = lambda q: np.stack([1 / (1 + np.exp(stolen(q)[:, 0])),
                                       1 / (1 + np.exp(-stolen(q)[:, 0]))], -1)
  else:
    oracle = lambda q: jax.nn.softmax(model.apply(params, jnp.asarray(q)), -1)
    counted = priv.Counter(oracle)
    w, b, queries = priv.extract_softmax_regression(counted, d, num_classes, k_q)
    kw = np.asarray(params['params']['linear']['kernel'], np.float64)
    kb = np.asarray(params['params']['linear']['bias'], np.float64)
    param_err = float(max(np.abs(w - (kw - kw[:, :1])).max(), np.abs(b - (kb - kb[0])).max()))
    stolen = lambda q: priv.linear_logits(w, b, q)
    def stolen_probs(q):
      z = stolen(q)
      e = np.exp(z - z.max(1, keepdims=True))
      return e / e.sum(1, keepdims=True)
  x_rand = np.asarray(jax.random.normal(k_r, (cfg.random_eval, d)), np.float32)
  target_te = np.asarray(model.apply(params, x_te))
  out = {
      'dataset': name, 'dim': d, 'num_classes': num_classes, 'queries': queries,
      'oracle_queries': counted.queries,
      'target_test_accuracy': float(np.mean(np.asarray(losses_predict(target_te)) == y_te)),
      'agreement_test': metrics.agreement(stolen(x_te), target_te),
      'agreement_random': metrics.agreement(stolen(x_rand),
                                            np.asarray(model.apply(params, x_rand))),
      'max_prob_diff_test': float(np.abs(stolen_probs(x_te) - np.asarray(oracle(x_te))).max()),
      'max_param_error': param_err,
  }
  print(f'[{NAME}] Tramer {name}: {queries} queries, agreement test '
        f'{out["agreement_test"]:.4f} random {out["agreement_random"]:.4f}', flush=True)
  return out


def losses_predict(logits):
  from jaxsec import losses  # pylint: disable=g-import-not-at-top
  return losses.predict(jnp.asarray(logits))


def _mlp_retraining(cfg, key):
  x_tr, y_tr = data.load('digits', 'train')
  x_te, y_te = data.load('digits', 'test')
  model = models.get('mlp', num_classes=10, hidden=tuple(cfg.mlp_hidden))
  k_init, k_fit, k_q, k_sub = jax.random.split(key, 4)
  params = train.fit(model.apply, models.init(model, k_init, (1, 64)), x_tr, y_tr,
                     optimizer=optax.adam(1e-3), key=k_fit, batch_size=64,
                     num_epochs=cfg.mlp_epochs).params
  num_params = int(sum(np.size(l) for l in jax.tree.leaves(params)))
  oracle = lambda q: jax.nn.softmax(model.apply(params, jnp.asarray(q)), -1)
  pool = np.asarray(jax.random.normal(k_q, (max(cfg.mlp_budgets), 64)), np.float32)
  res = priv.knockoff_extraction(oracle, model.apply, models.init(model, k_sub, (1, 64)),
                                 pool, budgets=cfg.mlp_budgets, key=k_sub,
                                 optimizer=optax.adam(3e-3), num_steps=cfg.mlp_sub_steps,
                                 batch_size=64)
  target_te = np.asarray(model.apply(params, x_te))
  rows = []
  for q, p in res.history:
    sub = np.asarray(model.apply(p, x_te))
    rows.append({'queries': q, 'queries_per_param': q / num_params,
                 'agreement_test': metrics.agreement(sub, target_te),
                 'accuracy': float(np.mean(np.argmax(sub, -1) == y_te))})
    print(f'[{NAME}] MLP retraining {q} queries: agreement {rows[-1]["agreement_test"]:.4f}',
          flush=True)
  return {'num_params': num_params,
          'target_test_accuracy': float(np.mean(np.argmax(target_te, -1) == y_te)),
          'curve': rows}


def _learning_based(cfg, key):
  x_tr, y_tr = data.load(cfg.cnn_dataset, 'train')
  x_te, y_te = data.load(cfg.cnn_dataset, 'test')
  ds = data.info(cfg.cnn_dataset)
  half = x_te.shape[0] // 2
  pool, eval_x, eval_y = x_te[:half], x_te[half:half + cfg.eval_size], \
      y_te[half:half + cfg.eval_size]
  k_init, k_fit, k_sub, k_attacks = jax.random.split(key, 4)
  target = models.get(cfg.target_model, num_classes=ds.num_classes,
                      **cfg.target_kwargs.to_dict())
  t0 = time.time()
  tparams = train.fit(target.apply, models.init(target, k_init, (1,) + ds.input_shape),
                      x_tr[:cfg.target_train], y_tr[:cfg.target_train],
                      optimizer=optax.adam(1e-3), key=k_fit, batch_size=128,
                      num_epochs=cfg.target_epochs, progress=True,
                      label='cnn-target').params
  print(f'[{NAME}] CNN target trained in {time.time() - t0:.0f}s', flush=True)
  tgt_fn = jax.jit(lambda v: target.apply(tparams, v))
  probs_fn = lambda v: np.asarray(jax.nn.softmax(tgt_fn(jnp.asarray(v)), -1))
  labels_fn = lambda v: np.asarray(jnp.argmax(tgt_fn(jnp.asarray(v)), -1))
  target_eval = np.asarray(train.predict_logits(lambda p, v: tgt_fn(v), None, eval_x))
  sub = models.get(cfg.sub_model, num_classes=ds.num_classes, **cfg.sub_kwargs.to_dict())
  sub_init = models.init(sub, k_sub, (1,) + ds.input_shape)
  opt = optax.adam(1e-3)
  common = dict(optimizer=opt, num_steps=cfg.sub_steps, batch_size=cfg.sub_batch)

  def curve(history):
    rows = []
    for q, p in history:
      lg = train.predict_logits(sub.apply, p, eval_x)
      rows.append({'queries': int(q), 'agreement': metrics.agreement(lg, target_eval),
                   'accuracy': float(np.mean(np.argmax(lg, -1) == eval_y))})
    return rows

  out = {}
  ks = jax.random.split(k_attacks, 4)
  t0 = time.time()
  r = priv.knockoff_extraction(probs_fn, sub.apply, sub_init, pool, budgets=cfg.budgets,
                               key=ks[0], **common)
  out['knockoff, probabilities (public pool)'] = curve(r.history)
  r = priv.knockoff_extraction(labels_fn, sub.apply, sub_init, pool, budgets=cfg.budgets,
                               key=ks[1], **common)
  out['knockoff, labels only (public pool)'] = curve(r.history)
  noise_pool = np.asarray(jax.random.uniform(ks[2], (max(cfg.budgets),) + ds.input_shape))
  r = priv.knockoff_extraction(probs_fn, sub.apply, sub_init, noise_pool,
                               budgets=cfg.budgets, key=ks[2], **common)
  out['random uniform queries, probabilities'] = curve(r.history)
  # Papernot: a small labelled seed (per class, from the public pool) + Jacobian augmentation.
  seed_idx = np.concatenate([np.nonzero(y_te[:half] == c)[0][:cfg.jacobian_seed_per_class]
                             for c in range(ds.num_classes)])
  budget = len(seed_idx) * 2 ** (cfg.jacobian_rounds - 1)
  r = priv.jacobian_extraction(labels_fn, sub.apply, sub_init, pool[seed_idx], budget=budget,
                               key=ks[3], rounds=cfg.jacobian_rounds,
                               lam=cfg.jacobian_lambda, **common)
  out['Papernot Jacobian augmentation, labels only'] = curve(r.history)
  for name, rows in out.items():
    print(f'[{NAME}] {name}: ' + ', '.join(f'{q["queries"]}: {q["agreement"]:.3f}'
                                            for q in rows), flush=True)
  return {'target_test_accuracy': float(np.mean(np.argmax(target_eval, -1) == eval_y)),
          'target_params': int(sum(np.size(l) for l in jax.tree.leaves(tparams))),
          'substitute_params': int(sum(np.size(l) for l in jax.tree.leaves(sub_init))),
          'attack_seconds': time.time() - t0, 'curves': out}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  k1, k2, k3, k4 = jax.random.split(jax.random.key(cfg.seed), 4)
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'equation_solving': [_equation_solving(cfg, 'digits', k1),
                           _equation_solving(cfg, 'breast_cancer', k2)],
      'mlp_retraining': _mlp_retraining(cfg, k3),
      'learning_based': _learning_based(cfg, k4),
      'backend': jax.default_backend(),
  }
  results['total_seconds'] = time.time() - t0
  _plot(results, os.path.join(workdir, f'{NAME}_fidelity.png'))
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def _plot(r, path):
  from jaxsec import plots  # pylint: disable=g-import-not-at-top
  plt = plots._fig()  # pylint: disable=protected-access
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, rows in r['learning_based']['curves'].items():
    ax.semilogx([q['queries'] for q in rows], [100 * q['agreement'] for q in rows],
                marker='o', label=name)
  ax.set_xlabel('queries')
  ax.set_ylabel('fidelity: test agreement (%)')
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  ax.set_title('extracting the FMNIST CNN', fontsize=9)
  plots._save(fig, path)  # pylint: disable=protected-access
  plt.close(fig)


def render_markdown(r: dict) -> str:
  lines = ['## Model extraction', '',
           'Equation solving (Tramer et al. 2016) from confidence scores, d + 1 queries:', '',
           '| data set | model | d | queries | test agreement | random-input agreement | '
           'max prob. diff. | max param. error |',
           '|---|---|---|---|---|---|---|---|']
  for e in r['equation_solving']:
    kind = 'binary logistic' if e['num_classes'] == 2 else f"softmax ({e['num_classes']})"
    lines.append(f"| {e['dataset']} | {kind} | {e['dim']} | {e['queries']} | "
                 f"{100 * e['agreement_test']:.2f}% | {100 * e['agreement_random']:.2f}% | "
                 f"{e['max_prob_diff_test']:.1e} | {e['max_param_error']:.1e} |")
  m = r['mlp_retraining']
  lines += ['', f"Retraining attack on a digits MLP ({m['num_params']} parameters, target "
            f"accuracy {100 * m['target_test_accuracy']:.1f}%), random Gaussian queries "
            'answered with probabilities:', '',
            '| queries | queries / parameter | test agreement | substitute accuracy |',
            '|---|---|---|---|']
  for row in m['curve']:
    lines.append(f"| {row['queries']} | {row['queries_per_param']:.2f} | "
                 f"{100 * row['agreement_test']:.1f}% | {100 * row['accuracy']:.1f}% |")
  lb = r['learning_based']
  c = r['config']
  lines += ['', f"Learning-based extraction of the {c['cnn_dataset']} {c['target_model']} "
            f"({lb['target_params']:,} parameters, test accuracy "
            f"{100 * lb['target_test_accuracy']:.1f}%) into a smaller {c['sub_model']} "
            f"({lb['substitute_params']:,} parameters, {c['sub_steps']} training steps per "
            'point); fidelity = agreement with the target on held-out test images (substitute '
            'accuracy in brackets):', '',
            '| attack | queries: fidelity (accuracy) |', '|---|---|']
  for name, rows in lb['curves'].items():
    cells = ', '.join(f"{q['queries']}: {100 * q['agreement']:.1f}% "
                      f"({100 * q['accuracy']:.1f}%)" for q in rows)
    lines.append(f'| {name} | {cells} |')
  lines += ['', f'![fidelity vs queries]({NAME}_fidelity.png)', '']
  return '\n'.join(lines)
