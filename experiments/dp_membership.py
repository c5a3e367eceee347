r"""How much DP-SGD blunts membership inference: LiRA and the loss threshold vs epsilon.

    python -m experiments.run --config=experiments/configs/dp_membership.py --workdir=docs/results  # full
    python -m experiments.run --config=experiments/configs/dp_membership.py:smoke --workdir=/tmp/s

For each epsilon (and a non-private reference trained with the same optimizer, batches and
steps, but neither clipping nor noise), ``num_shadow + 1`` MLPs are trained on halves of a
pool of Fashion-MNIST training images: model 0 is the target, models 1..M are LiRA's
shadow models, trained with the *same* recipe (same epsilon), as Carlini et al. 2022 do for
their DP evaluation. Membership masks are complementary pairs, so every pool example is IN
for exactly half of the shadow models and every model trains on exactly half the pool (one
compiled program for all of them). Reported per epsilon: the target's test accuracy, the
loss-threshold attack (Yeom 2018) and LiRA online / offline, each as AUC and TPR at 0.1% /
1% FPR over the pool's members vs non-members of the target, next to the bound that
epsilon-DP puts on any attack's TPR at a given FPR: ``TPR <= e^eps * FPR + delta``.

Writes ``<workdir>/dp_membership.json`` after every epsilon; a run cut off keeps the
finished epsilons of the same config and redoes the rest.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common as exp_common
from jaxsec import data
from jaxsec import io as jio
from jaxsec import losses
from jaxsec import metrics
from jaxsec import models
from jaxsec import train
from jaxsec.attacks.privacy import lira
from jaxsec.attacks.privacy import membership
from jaxsec.attacks.privacy import shadow
from jaxsec.privacy import dpsgd
from jaxsec.privacy import sampling

NAME = 'dp_membership'


def _recipe(c, model):
  """The loss and optimizer shared by every model of a run: the same objects each time,
  so that DP-SGD's compiled chunk (and fit's compiled epoch) is reused across models."""
  opt = optax.sgd(c.learning_rate, momentum=c.momentum)
  per_example = lambda p, xb, yb: losses.cross_entropy(model.apply(p, xb), yb)
  return opt, per_example


def _train_one(c, model, recipe, p0, x, y, key, eps, sigma):
  n = x.shape[0]
  steps = int(round(c.epochs * n / c.expected_batch_size))
  opt, per_example = recipe
  if eps == 0.0:
    # Non-private reference: same optimizer, batch size and number of steps.
    res = train.fit(model.apply, p0, x, y, optimizer=opt, key=key,
                    batch_size=c.expected_batch_size, num_steps=steps)
    return res.params, float('inf'), 0.0
  sampler = _sampler(c, n)
  res = dpsgd.train(per_example, p0, (x, y), optimizer=opt, sampler=sampler, key=key,
                    l2_norm_clip=c.l2_norm_clip, delta=c.delta, noise_multiplier=sigma,
                    accountant=c.accountant)
  if res.epsilon > eps * (1 + 1e-9):
    raise RuntimeError(f'spent epsilon {res.epsilon} exceeds the target {eps}.')
  return res.params, float(res.epsilon), float(res.noise_multiplier)


def _sampler(c, n):
  steps = int(round(c.epochs * n / c.expected_batch_size))
  return sampling.PoissonSampler(dataset_size=n, num_steps=steps,
                                 expected_batch_size=c.expected_batch_size)


def _report(scores, labels):
  return {'auc': metrics.auc(scores, labels),
          'tpr_at_0.001_fpr': metrics.tpr_at_fpr(scores, labels, 0.001),
          'tpr_at_0.01_fpr': metrics.tpr_at_fpr(scores, labels, 0.01)}


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  out_path = os.path.join(workdir, f'{NAME}.json')
  results = {'name': NAME, 'variant': c.variant, 'config': c.to_dict(), 'runs': []}
  if os.path.exists(out_path):
    with open(out_path) as f:
      old = json.load(f)
    if old.get('config') == json.loads(json.dumps(c.to_dict())):  # tuples -> lists
      results = old
  done = {r['target_epsilon'] for r in results['runs']}

  x_all, y_all = data.load(c.dataset, 'train')
  x_te, y_te = data.load(c.dataset, 'test')
  x = np.asarray(x_all[:c.pool_size]).reshape(c.pool_size, -1)
  y = np.asarray(y_all[:c.pool_size])
  x_te = np.asarray(x_te[:c.test_size]).reshape(c.test_size, -1)
  y_te = np.asarray(y_te[:c.test_size])
  num_models = c.num_shadow + 2    # complementary pairs: the target's pair partner is unused
  masks = shadow.complementary_membership(jax.random.key(c.seed), num_models, c.pool_size)
  model = models.get('mlp', num_classes=10, hidden=tuple(c.hidden))
  target_in = masks[0]
  recipe = _recipe(c, model)
  shadow_masks = masks[2:]

  for eps in c.epsilons:
    if eps in done:
      continue
    t0 = time.time()
    phis, accs, spent, sigma = [], [], None, None
    # Every model trains on exactly half the pool, so one calibration serves all of them.
    n_in = int(masks[0].sum())
    sigma_eps = (_sampler(c, n_in).calibrate(eps, c.delta, accountant=c.accountant)
                 if eps != 0.0 else 0.0)
    for m in [0] + list(range(2, num_models)):
      idx = np.nonzero(masks[m])[0]
      if idx.shape[0] != n_in:
        raise RuntimeError(f'model {m} has {idx.shape[0]} members, expected {n_in}.')
      key = jax.random.fold_in(jax.random.key(c.seed + 1), m)
      p0 = models.init(model, jax.random.fold_in(key, 1), (1, x.shape[1]))
      params, e_spent, s = _train_one(c, model, recipe, p0, x[idx], y[idx], key, eps,
                                      sigma_eps)
      logits = np.asarray(model.apply(params, jnp.asarray(x)))
      phis.append(np.asarray(membership.logit_confidence(jnp.asarray(logits),
                                                         jnp.asarray(y)), np.float64))
      if m == 0:
        spent, sigma = e_spent, s
        accs = float(np.mean(np.argmax(np.asarray(model.apply(params, x_te)), -1) == y_te))
        train_acc = float(np.mean(np.argmax(logits[idx], -1) == y[idx]))
        target_loss = -np.asarray(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(y)))
    target_phi, shadow_phi = phis[0], np.stack(phis[1:])
    labels = target_in
    row = {
        'target_epsilon': eps, 'epsilon': spent, 'noise_multiplier': sigma,
        'test_accuracy': accs, 'train_accuracy': train_acc,
        'loss_threshold': _report(target_loss, labels),
        'lira_online': _report(lira.lira_scores(shadow_phi, shadow_masks, target_phi,
                                                online=True), labels),
        'lira_offline': _report(lira.lira_scores(shadow_phi, shadow_masks, target_phi,
                                                 online=False), labels),
        'dp_bound_tpr_at_0.001_fpr': (min(1.0, math.exp(spent) * 0.001 + c.delta)
                                      if math.isfinite(spent) else 1.0),
        'dp_bound_tpr_at_0.01_fpr': (min(1.0, math.exp(spent) * 0.01 + c.delta)
                                     if math.isfinite(spent) else 1.0),
        'seconds': time.time() - t0,
        'device': exp_common.device_info(),
    }
    print(f"[{NAME}] eps {eps:g} (spent {spent:.3g}, sigma {sigma:.3g}): test acc "
          f"{accs:.4f}, LiRA online AUC {row['lira_online']['auc']:.3f} TPR@0.1% "
          f"{row['lira_online']['tpr_at_0.001_fpr']:.4f} ({row['seconds']:.0f}s)",
          flush=True)
    results['runs'].append(row)
    jio.write_json_atomic(out_path, results)
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = [f"## DP-SGD vs membership inference (`{exp_common.command(NAME, r['variant'])}`)",
           '',
           f"MLP {tuple(c['hidden'])} on halves of {c['pool_size']} {c['dataset']} training "
           f"images, {c['epochs']} epochs, expected batch {c['expected_batch_size']}, clip "
           f"{c['l2_norm_clip']}, delta {c['delta']:g}; LiRA with {c['num_shadow']} shadow "
           'models trained with the same recipe. eps = inf: same training without clipping '
           'or noise. The DP bound is the most any attack can reach: TPR <= e^eps FPR + delta.',
           '', '| eps (spent) | sigma | train / test acc | loss thr. AUC | LiRA online AUC | '
           'LiRA online TPR@0.1% | LiRA online TPR@1% | LiRA offline TPR@1% | DP bound TPR@1% '
           '| ran on |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for x in r['runs']:
    e = 'inf' if x['target_epsilon'] == 0.0 else f"{x['target_epsilon']:g} ({x['epsilon']:.2f})"
    lo, lf = x['lira_online'], x['lira_offline']
    lines.append(f"| {e} | {x['noise_multiplier']:.3g} | {100 * x['train_accuracy']:.1f}% / "
                 f"{100 * x['test_accuracy']:.1f}% | {x['loss_threshold']['auc']:.3f} | "
                 f"{lo['auc']:.3f} | {100 * lo['tpr_at_0.001_fpr']:.2f}% | "
                 f"{100 * lo['tpr_at_0.01_fpr']:.2f}% | {100 * lf['tpr_at_0.01_fpr']:.2f}% | "
                 f"{100 * x['dp_bound_tpr_at_0.01_fpr']:.1f}% | "
                 f"{x.get('device', {}).get('device_kind', 'cpu')} |")
  return '\n'.join(lines) + '\n'
