r"""The main job: train the reference CNN, measure clean and robust accuracy, write a report.

    python -m experiments.main --workdir=workdir/main            # full (the README's job)
    python -m experiments.main --variant=smoke --workdir=/tmp/s  # seconds, for the tests

Trains ``models.CNN`` on Fashion-MNIST (Debian's IDX files, prepared through TFDS), then
evaluates clean test accuracy and robust accuracy under FGSM and PGD (L_inf) at several
eps, each attack built to the contract (``attack(logits_fn, x, y, key)``) and swept over
eps inside one compiled program. Writes ``results.json``, ``report.md``,
``accuracy_vs_eps.png`` and ``adversarial_examples.png`` into ``--workdir``; a run cut
off resumes from its orbax checkpoint.
"""
from __future__ import annotations

import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxsec import attacks
from jaxsec import data
from jaxsec import io as jio
from jaxsec import models
from jaxsec import plots
from jaxsec import train

NAME = 'main'


def get_config(variant: str = 'full') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.dataset = 'fashion_mnist'
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.seed = 0
  c.batch_size = 128
  c.num_epochs = 6
  c.learning_rate = 1.5e-3
  c.train_subset = 0          # 0 = the whole training split
  c.eval_subset = 0           # clean accuracy on this many test images (0 = all)
  c.attack_subset = 1000      # robust accuracy on the first N test images
  c.attack_batch = 250
  c.eps = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)  # eps=0 is the clean accuracy (not attacked)
  c.pgd_steps = 20
  c.pgd_rel_step = 2.5        # step size = rel_step * eps / steps (Madry et al.)
  c.grid_eps = 0.1
  if variant == 'smoke':
    c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 32})
    c.num_epochs = 1
    c.train_subset = 2048
    c.eval_subset = 500
    c.attack_subset = 64
    c.attack_batch = 32
    c.eps = (0.0, 0.1, 0.3)
    c.pgd_steps = 3
  elif variant == 'mnist':
    c.dataset = 'mnist'
  elif variant == 'cifar10':
    c.dataset = 'cifar10'
    c.model = 'resnet'
    c.model_kwargs = ml_collections.ConfigDict({'widths': (16, 32, 64),
                                                'blocks_per_stage': 2})
    c.num_epochs = 30
    c.eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
  elif variant != 'full':
    raise ValueError(f"Unknown variant={variant!r}; expected 'full', 'smoke', 'mnist' or "
                     "'cifar10'.")
  return c


def robust_accuracy(logits_fn, x, y, eps_grid, attack_name, cfg, key):
  """Accuracy under ``attack_name`` for each eps, one compiled program over the eps grid."""
  def attack_at(eps, xb, yb, k):
    if attack_name == 'fgsm':
      atk = attacks.fgsm(eps=eps, bounds=(0.0, 1.0))
    else:
      atk = attacks.pgd(eps=eps, step_size=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                        num_steps=cfg.pgd_steps, norm='linf', bounds=(0.0, 1.0),
                        random_start=True)
    x_adv = atk(logits_fn, xb, yb, k)
    return jnp.argmax(logits_fn(x_adv), -1) == yb, x_adv

  sweep = jax.jit(jax.vmap(attack_at, in_axes=(0, None, None, None)))
  correct, first_adv = [], None
  # eps = 0 needs no attack: its accuracy is the clean one on the same images.
  attacked = [e for e in eps_grid if e > 0]
  eps_arr = jnp.asarray(attacked, jnp.float32)
  for i in range(0, x.shape[0], cfg.attack_batch):
    xb, yb = jnp.asarray(x[i:i + cfg.attack_batch]), jnp.asarray(y[i:i + cfg.attack_batch])
    c, adv = sweep(eps_arr, xb, yb, jax.random.fold_in(key, i))
    correct.append(np.asarray(c))
    if first_adv is None:
      first_adv = np.asarray(adv)
  correct = np.concatenate(correct, axis=1)
  acc = dict(zip(attacked, correct.mean(axis=1)))
  clean = np.mean(np.argmax(np.asarray(logits_fn(jnp.asarray(x))), -1) == np.asarray(y))
  adv = dict(zip(attacked, first_adv))
  return (np.asarray([acc[e] if e > 0 else clean for e in eps_grid]),
          np.stack([adv[e] if e > 0 else np.asarray(x[:first_adv.shape[1]])
                    for e in eps_grid]))


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  key = jax.random.key(cfg.seed)
  k_init, k_train, k_fgsm, k_pgd = jax.random.split(key, 4)
  x_train, y_train = data.load(cfg.dataset, 'train')
  x_test, y_test = data.load(cfg.dataset, 'test')
  ds = data.info(cfg.dataset)
  if cfg.train_subset:
    x_train, y_train = x_train[:cfg.train_subset], y_train[:cfg.train_subset]
  if cfg.eval_subset:
    x_test, y_test = x_test[:cfg.eval_subset], y_test[:cfg.eval_subset]

  model = models.get(cfg.model, num_classes=ds.num_classes, **cfg.model_kwargs.to_dict())
  params = models.init(model, k_init, (1,) + ds.input_shape)
  steps_per_epoch = x_train.shape[0] // cfg.batch_size
  schedule = optax.cosine_decay_schedule(cfg.learning_rate,
                                         steps_per_epoch * cfg.num_epochs)
  t0 = time.time()
  result = train.fit(model.apply, params, x_train, y_train, optimizer=optax.adam(schedule),
                     key=k_train, batch_size=cfg.batch_size, num_epochs=cfg.num_epochs,
                     num_classes=ds.num_classes,
                     checkpoint_dir=os.path.join(workdir, 'checkpoints'),
                     progress=True, label='main/train')
  train_time = time.time() - t0
  params = result.params
  clean = train.evaluate(model.apply, params, x_test, y_test)
  print(f'clean test accuracy {clean:.4f} ({train_time:.0f}s training)', flush=True)

  logits_fn = models.logits_fn(model, params)
  xa, ya = x_test[:cfg.attack_subset], y_test[:cfg.attack_subset]
  t1 = time.time()
  acc_fgsm, adv_fgsm = robust_accuracy(logits_fn, xa, ya, cfg.eps, 'fgsm', cfg, k_fgsm)
  acc_pgd, adv_pgd = robust_accuracy(logits_fn, xa, ya, cfg.eps, 'pgd', cfg, k_pgd)
  attack_time = time.time() - t1
  for e, a, b in zip(cfg.eps, acc_fgsm, acc_pgd):
    print(f'eps {e:.3f}: FGSM {a:.4f}  PGD-{cfg.pgd_steps} {b:.4f}', flush=True)

  # Adversarial example grid at grid_eps (the eps in the sweep closest to it).
  gi = int(np.argmin(np.abs(np.asarray(cfg.eps) - cfg.grid_eps)))
  n_show = min(8, xa.shape[0])
  rows = [xa[:n_show], adv_fgsm[gi, :n_show], adv_pgd[gi, :n_show]]
  preds = [np.argmax(np.asarray(logits_fn(jnp.asarray(r))), -1) for r in rows]
  plots.accuracy_vs_eps(os.path.join(workdir, 'accuracy_vs_eps.png'), cfg.eps,
                        {'FGSM': acc_fgsm, f'PGD-{cfg.pgd_steps}': acc_pgd},
                        title=f'{cfg.model} on {cfg.dataset} (clean {clean:.3f})')
  plots.image_grid(os.path.join(workdir, 'adversarial_examples.png'), rows, preds,
                   row_titles=['clean', f'FGSM eps={cfg.eps[gi]:g}',
                               f'PGD eps={cfg.eps[gi]:g}'],
                   labels=ya[:n_show], class_names=ds.class_names)

  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'dataset': cfg.dataset, 'model': cfg.model,
      'num_params': int(sum(np.size(l) for l in jax.tree.leaves(params))),
      'clean_accuracy': clean, 'num_test': int(x_test.shape[0]),
      'num_attacked': int(xa.shape[0]),
      'eps': list(cfg.eps), 'fgsm_accuracy': acc_fgsm.tolist(),
      'pgd_accuracy': acc_pgd.tolist(), 'pgd_steps': cfg.pgd_steps,
      'train_seconds': train_time, 'attack_seconds': attack_time,
      'train_loss': np.asarray(result.history['loss']).tolist(),
      'backend': jax.default_backend(), 'devices': len(jax.devices()),
  }
  jio.write_json_atomic(os.path.join(workdir, 'results.json'), results)
  jio.write_text_atomic(os.path.join(workdir, 'report.md'), render_markdown(results))
  return results


def render_markdown(r: dict) -> str:
  lines = [
      f"# jaxsec main report: {r['model']} on {r['dataset']}",
      '',
      f"Clean test accuracy: **{100 * r['clean_accuracy']:.2f}%** on {r['num_test']} test "
      f"images ({r['num_params']:,} parameters, {r['train_seconds']:.0f} s of training on "
      f"{r['devices']} {r['backend']} device(s)).",
      '',
      f"Robust accuracy on the first {r['num_attacked']} test images (L_inf, bounds [0, 1]; "
      f"PGD: {r['pgd_steps']} steps of 2.5*eps/steps, random start):",
      '',
      '| eps | FGSM | PGD |',
      '|---|---|---|',
  ]
  for e, a, b in zip(r['eps'], r['fgsm_accuracy'], r['pgd_accuracy']):
    lines.append(f'| {e:g} | {100 * a:.2f}% | {100 * b:.2f}% |')
  lines += ['', '![accuracy vs eps](accuracy_vs_eps.png)', '',
            '![clean and adversarial examples](adversarial_examples.png)', '']
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a program (experiments share flag names)."""
  flags.DEFINE_string('workdir', 'workdir/main', 'Where results, report and checkpoints go.')
  flags.DEFINE_string('variant', 'full', "Config variant: 'full', 'smoke', 'mnist', 'cifar10'.")
  flags.DEFINE_multi_string('set', [], 'Config overrides key=value (used by launch/ sweeps).')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  run(common.apply_overrides(get_config(FLAGS.variant), FLAGS.set), FLAGS.workdir)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
