r"""Black-box evasion on FMNIST: Papernot et al.'s substitute attack and HopSkipJumpAttack.

    python -m experiments.run --config=experiments/configs/blackbox.py --workdir=docs/results  # full (< 10 min, 2 CPU cores)
    python -m experiments.run --config=experiments/configs/blackbox.py:smoke --workdir=/tmp/s

The oracle is the reference CNN trained as in ``experiments/evasion_suite.py``
(``jaxsec.train.fit``, Adam with a cosine schedule). The attacker never sees its
parameters:

* **Substitute attack** (Papernot et al., AsiaCCS 2017: 84.24% of the adversarial examples
  misclassified by the remote MetaMind DNN after labelling 6,400 synthetic inputs, FGSM
  eps = 0.3 on MNIST). Seed set: ``seed_size`` (150) test images, labelled by the oracle's
  labels only; ``num_aug_epochs`` (6) rounds of training (an MLP substitute, as in the
  paper's reference code) and Jacobian-based augmentation with ``lambda = 0.1``; both the
  constant step of Algorithm 1 and the periodic step ``lambda (-1)^floor(rho / tau)``
  (``tau = 3``). FGSM crafted on the substitute is sent to the oracle on ``eval_size``
  (1000) other test images (disjoint from the seeds); the table gives the oracle's
  misclassification rate (all images, the paper's measure), next to white-box FGSM on the
  oracle itself.
* **HopSkipJumpAttack** (Chen, Jordan & Wainwright, S&P 2020), L2, decision-based (labels
  only), on ``hsja_examples`` test images the oracle classifies correctly, with each query
  budget of ``hsja_budgets``; median L2 next to the white-box minimal-perturbation attacks
  DeepFool and C&W L2 on the same images.

Results go to ``<workdir>/blackbox.json`` (written atomically); ``render_markdown`` makes
the docs table from it.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as exp_common
from jaxsec import data
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.attacks.blackbox import hop_skip_jump
from jaxsec.attacks.blackbox import substitute_training
from jaxsec.attacks.blackbox import transfer_attack
from jaxsec.attacks.evasion.cw import carlini_wagner_l2
from jaxsec.attacks.evasion.deepfool import deepfool
from jaxsec.attacks.evasion.gradient import fgsm

NAME = 'blackbox'

# Published figures (REFERENCES.md and the papers); every other number comes from the run.
PUBLISHED = {
    'substitute': {'queries': 6400, 'eps': 0.3, 'misclassification': 0.8424,
                   'setting': 'MetaMind DNN, MNIST, FGSM eps=0.3 (Papernot et al. 2017)'},
    'hsja': {'claim': 'L2 falls with the query budget towards white-box C&W',
             'setting': 'MNIST / CIFAR-10 CNNs (Chen, Jordan & Wainwright 2020)'},
}


def _stats(v):
  v = np.asarray(v, np.float64)
  if v.size == 0:
    return {'median': float('nan'), 'mean': float('nan')}
  return {'median': float(np.median(v)), 'mean': float(np.mean(v))}


def run(cfg: ml_collections.ConfigDict, workdir: str, ckpt_dir: str | None = None) -> dict:
  """Runs the study; writes ``<workdir>/blackbox.json`` and returns the results dict.

  ``ckpt_dir`` defaults to ``cfg.ckpt_dir``.

  With ``ckpt_dir`` the oracle's training is checkpointed there and a finished one is
  reused (same parameters: ``jaxsec.train.fit`` resumes deterministically).
  """
  ckpt_dir = exp_common.checkpoint_dir(cfg, ckpt_dir, NAME)
  os.makedirs(workdir, exist_ok=True)
  bounds = tuple(cfg.bounds)
  t_start = time.time()
  key = jax.random.key(cfg.seed)
  k_init, k_train, k_sel, k_sub, k_hsja = jax.random.split(key, 5)
  ds = data.info(cfg.dataset)
  x_train, y_train, x_test, y_test = exp_common.load_splits(
      cfg.dataset, train_subset=cfg.train_subset)

  # ---- the oracle (the attacker only ever calls oracle_labels).
  model, params, _, train_seconds = exp_common.train_from_config(
      cfg, x_train, y_train, init_key=k_init, train_key=k_train, label=f'{NAME}/oracle',
      checkpoint_dir=exp_common.subdir(ckpt_dir, 'oracle'))
  logits_fn = models.logits_fn(model, params)
  oracle_labels = jax.jit(lambda x: jnp.argmax(model.apply(params, x), -1).astype(jnp.int32))
  test_pred = np.argmax(train.predict_logits(model.apply, params, x_test), -1)
  clean_acc = float(np.mean(test_pred == y_test))
  print(f'oracle clean test accuracy {clean_acc:.4f} ({train_seconds:.0f}s)', flush=True)

  # Disjoint image sets from one random order of the test split: the adversary's seeds,
  # then the evaluation images.
  order = np.asarray(jax.random.permutation(k_sel, x_test.shape[0]))
  seed_idx = order[:cfg.seed_size]
  eval_idx = order[cfg.seed_size:cfg.seed_size + cfg.eval_size]
  x_seed = x_test[seed_idx]
  x_eval, y_eval = x_test[eval_idx], y_test[eval_idx]

  # ---- substitute training + FGSM transfer.
  sc = cfg.substitute
  sub_model = models.get('mlp', num_classes=ds.num_classes, hidden=tuple(sc.hidden))
  sub_init = lambda k: models.init(sub_model, k, (1,) + ds.input_shape)
  white = {}
  for eps in cfg.fgsm_eps:
    xa, _ = evaluate.run_attack(fgsm(eps=eps, bounds=bounds), logits_fn, x_eval, y_eval,
                                k_sel, batch_size=cfg.attack_batch, pad=False)
    white[eps] = float(np.mean(np.asarray(oracle_labels(xa)) != y_eval))
  substitutes = []
  for tau in sc.lam_periods:
    t = time.time()
    run_sub = substitute_training(
        substitute_apply=sub_model.apply, substitute_init=sub_init,
        num_aug_epochs=sc.num_aug_epochs, lam=sc.lam, lam_period=tau or None,
        train_epochs=sc.train_epochs, batch_size=sc.batch_size,
        learning_rate=sc.learning_rate, jacobian=sc.jacobian, bounds=bounds)
    out = run_sub(oracle_labels, x_seed, k_sub, eval_data=(x_eval, y_eval))
    sub_seconds = time.time() - t
    sub_pred = np.argmax(train.predict_logits(sub_model.apply, out.params, x_eval), -1)
    rows = []
    for eps in cfg.fgsm_eps:
      tr = transfer_attack(fgsm(eps=eps, bounds=bounds), sub_model.apply, out.params,
                           oracle_labels, x_eval, y_eval, batch_size=cfg.attack_batch)
      rows.append({'eps': eps, 'misclassification_rate': tr.misclassification_rate,
                   'success_rate_oracle_correct': tr.success_rate,
                   'substitute_whitebox_rate': tr.substitute_success_rate,
                   'oracle_whitebox_fgsm_rate': white[eps]})
      print(f'substitute tau={tau} FGSM eps={eps}: oracle misclassifies '
            f'{tr.misclassification_rate:.4f}', flush=True)
    substitutes.append({
        'lam_period': tau or None, 'queries': out.queries, 'history': out.history,
        'substitute_accuracy': float(np.mean(sub_pred == y_eval)),
        'agreement_with_oracle': float(np.mean(sub_pred == test_pred[eval_idx])),
        'fgsm': rows, 'seconds': sub_seconds})
    print(f'substitute tau={tau}: {out.queries} oracle queries, accuracy '
          f"{substitutes[-1]['substitute_accuracy']:.4f} ({sub_seconds:.0f}s)", flush=True)

  # ---- HopSkipJumpAttack (L2) vs DeepFool and C&W L2 on the same images.
  correct = eval_idx[test_pred[eval_idx] == y_test[eval_idx]]
  hidx = correct[:cfg.hsja_examples]
  xh, yh = jnp.asarray(x_test[hidx]), jnp.asarray(y_test[hidx])
  hsja_rows = []
  # The budget is a traced argument: one compiled attack for every budget.
  hsja = jax.jit(lambda a, b, k, budget: hop_skip_jump(
      norm='l2', max_queries=budget, bounds=bounds,
      **cfg.hsja.to_dict())(oracle_labels, a, b, k))
  for budget in cfg.hsja_budgets:
    t = time.time()
    out = hsja(xh, yh, k_hsja, jnp.int32(budget))
    jax.block_until_ready(out)
    secs = time.time() - t
    succ = np.asarray(out.info['success'])
    adv_ok = np.asarray(oracle_labels(out.x_adv)) != np.asarray(yh)
    d = exp_common.l2_norms(np.asarray(out.x_adv) - np.asarray(xh))
    q = np.asarray(out.info['queries'])
    hsja_rows.append({'budget': budget, 'success_rate': float(succ.mean()),
                      'adversarial_rate': float(adv_ok.mean()),
                      'l2': _stats(d[succ]), 'max_queries_used': int(q.max()),
                      'mean_queries': float(q.mean()),
                      'mean_iterations': float(np.mean(out.info['iterations'])),
                      'per_example_l2': d.tolist(), 'seconds': secs})
    print(f'HSJA L2 {budget} queries: success {succ.mean():.3f}, median L2 '
          f'{np.median(d[succ]):.4f} ({secs:.0f}s)', flush=True)
  t = time.time()
  df = jax.jit(lambda a, b: deepfool(norm='l2', bounds=bounds,
                                     **cfg.deepfool.to_dict())(logits_fn, a, b))
  out_df = df(xh, yh)
  x_df, info_df = out_df.x_adv, out_df.info
  df_ok = np.asarray(info_df['success'])
  d_df = exp_common.l2_norms(np.asarray(x_df) - np.asarray(xh))
  df_seconds = time.time() - t
  t = time.time()
  cw = jax.jit(lambda a, b: carlini_wagner_l2(bounds=bounds,
                                              **cfg.cw.to_dict())(logits_fn, a, b))
  out_cw = cw(xh, yh)
  x_cw, info_cw = out_cw.x_adv, out_cw.info
  cw_ok = np.asarray(info_cw['success'])
  d_cw = exp_common.l2_norms(np.asarray(x_cw) - np.asarray(xh))
  cw_seconds = time.time() - t
  print(f'DeepFool median L2 {np.median(d_df[df_ok]):.4f}, C&W median L2 '
        f'{np.median(d_cw[cw_ok]):.4f}', flush=True)
  whitebox = {
      'deepfool': {'success_rate': float(df_ok.mean()), 'l2': _stats(d_df[df_ok]),
                   'per_example_l2': d_df.tolist(), 'seconds': df_seconds},
      'cw_l2': {'success_rate': float(cw_ok.mean()), 'l2': _stats(d_cw[cw_ok]),
                'per_example_l2': d_cw.tolist(), 'seconds': cw_seconds},
  }
  # Same-image comparison: examples every attack solved.
  both = df_ok & cw_ok
  for r in hsja_rows:
    both = both & (np.asarray(r['per_example_l2']) > 0)
  same = {'n': int(both.sum()),
          'hsja': {str(r['budget']): float(np.median(np.asarray(r['per_example_l2'])[both]))
                   if both.any() else None for r in hsja_rows},
          'deepfool': float(np.median(d_df[both])) if both.any() else None,
          'cw_l2': float(np.median(d_cw[both])) if both.any() else None}

  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'device': exp_common.device_info(), 'dataset': cfg.dataset,
      'oracle': {'model': cfg.model, 'clean_accuracy': clean_acc,
                 'train_seconds': train_seconds},
      'seed_size': int(cfg.seed_size), 'eval_size': int(x_eval.shape[0]),
      'substitutes': substitutes,
      'hsja': {'n': int(hidx.shape[0]), 'rows': hsja_rows, 'whitebox': whitebox,
               'same_images_median_l2': same},
      'published': PUBLISHED, 'seconds': time.time() - t_start,
  }
  return jio.save_results(workdir, NAME, results)


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  p = r['published']
  ps, ph = p['substitute'], p['hsja']
  lines = [
      f"## Black-box evasion on {r['dataset']}: substitute transfer and HopSkipJumpAttack",
      '',
      f"Oracle: the reference {r['oracle']['model']} (clean test accuracy "
      f"{100 * r['oracle']['clean_accuracy']:.2f}%), queried for labels only. Substitute: "
      f"an MLP trained on {r['seed_size']} oracle-labelled test images grown by "
      f"Jacobian-based augmentation; FGSM crafted on it, scored on {r['eval_size']} other "
      'test images. Published figures are on MNIST; on FMNIST the shape is what should '
      'match.', '',
      '| measure | jaxsec (this run) | published | setting of the published figure |',
      '|---|---|---|---|']
  for s in r['substitutes']:
    tag = ('constant lambda' if s['lam_period'] is None
           else f"periodic lambda, tau={s['lam_period']}")
    lines.append(f"| substitute ({tag}): oracle queries | {s['queries']} | "
                 f"{ps['queries']:,} | {ps['setting']} |")
    lines.append(f"| substitute ({tag}): accuracy / agreement with the oracle | "
                 f"{exp_common.pct(s['substitute_accuracy'])} / "
                 f"{exp_common.pct(s['agreement_with_oracle'])} | "
                 '| |')
    for row in s['fgsm']:
      pub = exp_common.pct(ps['misclassification']) if row['eps'] == ps['eps'] else ''
      lines.append(
          f"| transfer FGSM eps={row['eps']:g} ({tag}): oracle misclassification "
          f"(white-box FGSM on the oracle) | {exp_common.pct(row['misclassification_rate'])} "
          f"({exp_common.pct(row['oracle_whitebox_fgsm_rate'])}) | {pub} | |")
  h = r['hsja']
  for row in h['rows']:
    lines.append(f"| HSJA L2, {row['budget']} queries ({h['n']} images): success / "
                 f"median L2 | {exp_common.pct(row['success_rate'])} / "
                 f"{exp_common.num(row['l2']['median'])} | "
                 f"{ph['claim']} | {ph['setting']} |")
  wb = h['whitebox']
  lines.append(f"| white-box DeepFool / C&W L2 on the same images: median L2 | "
               f"{exp_common.num(wb['deepfool']['l2']['median'])} / "
               f"{exp_common.num(wb['cw_l2']['l2']['median'])}"
               ' | | |')
  same = h['same_images_median_l2']
  if same['n']:
    cells = ' / '.join(f'HSJA-{b} {exp_common.num(v)}' for b, v in same['hsja'].items())
    lines.append(f"| median L2 on the {same['n']} images all attacks solved | {cells} / "
                 f"DeepFool {exp_common.num(same['deepfool'])} / "
                 f"C&W {exp_common.num(same['cw_l2'])} | | |")
  lines.append('')
  s0 = r['substitutes'][0]
  if 'eval_accuracy' in s0['history']:
    acc = s0['history']['eval_accuracy']
    lines += ['Substitute accuracy after each substitute epoch (constant lambda):', '',
              '| rho | ' + ' | '.join(str(i) for i in range(len(acc))) + ' |',
              '|---|' + '---|' * len(acc),
              '| size of S_rho | ' + ' | '.join(str(n) for n in s0['history']['size'])
              + ' |',
              '| accuracy | ' + ' | '.join(exp_common.pct(a) for a in acc) + ' |', '']
  return '\n'.join(lines)
