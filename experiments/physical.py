r"""Adversarial patch (Brown, Mané, Roy, Abadi & Gilmer 2017) on Fashion-MNIST: targeted
success rate vs patch size, against a random-noise patch of the same size.

    python -m experiments.run --config=experiments/configs/physical.py --workdir=docs/results  # full (a few min on CPU)
    python -m experiments.run --config=experiments/configs/physical.py:smoke --workdir=/tmp/s

Trains the reference CNN (as in ``experiments/evasion_suite.py``: 5x5 conv 32 / 64, dense
128, Adam with cosine decay, 2 epochs) with ``jaxsec.train.fit``. For each patch size (a
fraction of the image area) it fits one universal targeted patch with
:func:`jaxsec.attacks.evasion.adversarial_patch` on training images (EOT over random
location, rotation, scale and brightness, Adam, one compiled ``lax.scan``), then measures
on held-out test images whose true label is not the target, each with ``eval_draws``
independent random placements:

* the patch's targeted success rate (prediction == target),
* the same for a uniform-noise patch of the same size and shape under the same
  placements (the baseline),
* the clean rate at which those images are already predicted as the target.

Brown et al. report ~90% targeted success for a white-box patch covering ~10% of an
ImageNet image (their Fig. 3; a different data set, model and resolution): the shape to
reproduce is success that grows with the patch size and lies far above a random patch.
Results go to ``<workdir>/physical.json``.
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
from jaxsec.attacks.evasion import physical
from jaxsec.attacks.evasion.physical import adversarial_patch

NAME = 'physical'

PUBLISHED = {'brown2017': {
    'area_fraction': 0.10, 'targeted_success': 0.90,
    'setting': 'ImageNet, white-box single model, approximate reading of Fig. 3 '
               '(Brown et al. 2017)'}}


def _target_rate(eval_fn, x, patch, key, draws, batch):
  """Mean over images and placement draws of [pred == target] (the last batch padded)."""
  # Draw d, batch at example i: key fold_in(fold_in(key, d), i).
  hits = [evaluate.map_batches(lambda xb, k: eval_fn(xb, patch, k), (x,), batch_size=batch,
                               key=jax.random.fold_in(key, d), jit=False)
          for d in range(draws)]
  return float(np.mean(hits))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  t_start = time.time()
  bounds = tuple(c.bounds)
  key = jax.random.key(c.seed)
  k_init, k_train, k_fit, k_eval, k_noise, k_sel = jax.random.split(key, 6)
  ds = data.info(c.dataset)
  x_train, y_train, x_test, y_test = exp_common.load_splits(
      c.dataset, train_subset=c.train_subset)

  model, params, _, train_seconds = exp_common.train_from_config(
      c, x_train, y_train, init_key=k_init, train_key=k_train, label=f'{NAME}/train')
  logits_fn = models.logits_fn(model, params)
  test_logits = train.predict_logits(model.apply, params, x_test)
  clean_acc = float(np.mean(np.argmax(test_logits, -1) == y_test))
  print(f'clean test accuracy {clean_acc:.4f}', flush=True)

  # Patch fitting data: training images (any label); evaluation: held-out test images
  # whose true label is not the target.
  fit_idx = np.asarray(jax.random.permutation(k_sel, x_train.shape[0]))[:c.fit_examples]
  x_fit = jnp.asarray(x_train[fit_idx])
  t_fit = jnp.full((x_fit.shape[0],), c.target, jnp.int32)
  pool = np.nonzero(y_test != c.target)[0][:c.eval_examples]
  x_eval = x_test[pool]
  clean_target_rate = float(np.mean(np.argmax(test_logits[pool], -1) == c.target))

  rows = []
  for si, size in enumerate(c.sizes):
    t0 = time.time()
    atk = adversarial_patch(size=size, targeted=True, bounds=bounds,
                            **c.patch.to_dict())
    fit = jax.jit(atk.fit, static_argnums=0)
    patch, info = fit(logits_fn, x_fit, t_fit, jax.random.fold_in(k_fit, si))
    patch = jax.block_until_ready(patch)
    fit_seconds = time.time() - t0

    @jax.jit
    def hit(xb, p, k, atk=atk):
      return jnp.argmax(logits_fn(atk.apply(xb, p, k)), -1) == c.target

    t1 = time.time()
    ke = jax.random.fold_in(k_eval, si)        # the same placements for both patches
    success = _target_rate(hit, x_eval, patch, ke, c.eval_draws, c.eval_batch)
    noise = jax.random.uniform(jax.random.fold_in(k_noise, si), patch.shape, patch.dtype,
                               bounds[0], bounds[1])
    success_noise = _target_rate(hit, x_eval, noise, ke, c.eval_draws, c.eval_batch)
    hist = np.asarray(info['objective'])
    rate = np.asarray(info['success_rate'])
    geo = dict(size=size, shape=c.patch.to_dict().get('shape', 'square'))
    row = {'size': float(size),
           'area_fraction': physical.patch_area_fraction(ds.input_shape[:2], **geo),
           'patch_side': physical.patch_side(ds.input_shape[:2], **geo),
           'targeted_success': success, 'random_patch_success': success_noise,
           'train_objective': hist[::c.history_every].tolist(),
           'train_success_rate_last': float(rate[-max(1, len(rate) // 10):].mean()),
           'patch': np.asarray(patch).round(4).tolist(),
           'fit_seconds': fit_seconds, 'eval_seconds': time.time() - t1}
    rows.append(row)
    print(f"size {size:.2f} (area {row['area_fraction']:.3f}, side {row['patch_side']}): "
          f'targeted success {success:.3f}, random patch {success_noise:.3f} '
          f'[fit {fit_seconds:.1f}s]', flush=True)

  out = {'name': NAME, 'variant': c.variant, 'dataset': c.dataset, 'model': c.model,
         'target': int(c.target), 'target_name': ds.class_names[c.target],
         'clean_accuracy': clean_acc, 'clean_target_rate': clean_target_rate,
         'num_fit': int(x_fit.shape[0]), 'num_eval': int(x_eval.shape[0]),
         'eval_draws': int(c.eval_draws), 'rows': rows, 'published': PUBLISHED,
         'train_seconds': train_seconds, 'seconds': time.time() - t_start,
         'device': exp_common.device_info(), 'config': c.to_dict()}
  jio.write_json_atomic(os.path.join(workdir, NAME + '.json'), out)
  return out


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  p = r['config']['patch']
  pub = r['published']['brown2017']
  lines = [
      '## Adversarial patch (Brown et al. 2017) on Fashion-MNIST', '',
      f"Universal targeted {p['shape']} patch, target class {r['target']} "
      f"({r['target_name']}), fitted by EOT ({p['num_steps']} Adam steps x "
      f"{p['batch_size']} images; random location, rotation +-{p['max_rotation']:g} deg, "
      f"scale {tuple(p['scale'])}, brightness {tuple(p['brightness'])}) on "
      f"{r['num_fit']} training images of the reference CNN (clean test accuracy "
      f"{100 * r['clean_accuracy']:.2f}%). Success = prediction is the target, on "
      f"{r['num_eval']} held-out test images of other classes x {r['eval_draws']} random "
      f"placements; {100 * r['clean_target_rate']:.1f}% of them are predicted as the target "
      'without a patch.', '',
      '| patch size (requested) | area covered | side (px) | targeted success | '
      'random-noise patch |',
      '|---|---|---|---|---|']
  for row in r['rows']:
    lines.append(f"| {100 * row['size']:.0f}% | {100 * row['area_fraction']:.1f}% | "
                 f"{row['patch_side']} | {100 * row['targeted_success']:.1f}% | "
                 f"{100 * row['random_patch_success']:.1f}% |")
  lines += ['', f"Published: ~{100 * pub['targeted_success']:.0f}% targeted success at "
            f"~{100 * pub['area_fraction']:.0f}% of the image ({pub['setting']}).", '']
  return '\n'.join(lines)
