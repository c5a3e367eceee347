"""Helpers shared by the defense experiments (``experiments/defense_*.py``).

Data subsets, training with checkpoint / resume and wall-time, attack summaries, and a
per-stage result cache (orbax, through ``experiments.common.Stages``) so that a run cut off
resumes without redoing finished stages.
Attacks run in batches through ``jaxsec.evaluate.run_attack``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from experiments import common as common_lib
from jaxsec import data
from jaxsec import evaluate
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.attacks.evasion import common


def log(msg: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def load_fmnist(n_train: int, n_test: int, seed: int = 0):
  """Deterministic random subsets of FMNIST train / test (the whole split if n <= 0)."""
  x, y = data.load('fashion_mnist', 'train')
  xt, yt = data.load('fashion_mnist', 'test')
  rng = np.random.default_rng(seed)
  if 0 < n_train < x.shape[0]:
    idx = np.sort(rng.permutation(x.shape[0])[:n_train])
    x, y = x[idx], y[idx]
  if 0 < n_test < xt.shape[0]:
    idx = np.sort(rng.permutation(xt.shape[0])[:n_test])
    xt, yt = xt[idx], yt[idx]
  return (np.asarray(x, np.float32), np.asarray(y, np.int32),
          np.asarray(xt, np.float32), np.asarray(yt, np.int32))


def tag_of(*configs) -> str:
  """A short hash of the configs that determine a training run: it names the run's
  ``train.fit`` checkpoint folder (``ckpt_dir``), so that another config never resumes it."""
  return hashlib.sha1(json.dumps([_jsonable(c) for c in configs], sort_keys=True).encode()
                      ).hexdigest()[:12]


class Cache:
  """Stage results checkpointed through orbax (``experiments.common.Stages``): stage
  ``<stage>`` lives in ``<scratch>/stages/<name>/<stage>/`` together with the config it was
  computed under. ``get(stage, config)`` returns the saved value when that config matches,
  else None: a changed config re-runs only the stages it affects (and overwrites them)."""

  def __init__(self, scratch: str, name: str):
    self.dir = os.path.join(scratch, 'stages', name)
    self.name = name

  def _stages(self, config) -> common_lib.Stages:
    return common_lib.Stages(self.dir, {'config': _jsonable(config)}, label=self.name)

  def get(self, stage: str, config):
    return self._stages(config).get(stage)

  def put(self, stage: str, config, value) -> None:
    self._stages(config).put(stage, _jsonable(value))


def _default(o):
  if hasattr(o, 'to_dict'):
    return o.to_dict()
  return jio._default(o)  # pylint: disable=protected-access


def _jsonable(o):
  return json.loads(json.dumps(o, default=_default))


def scratch_dir(workdir: str) -> str:
  """Checkpoints and stage caches: ``$JAXSEC_SCRATCH`` or ``workdir/defenses`` (git-ignored)
  for runs into docs/results, else ``<workdir>/.scratch``."""
  env = os.environ.get('JAXSEC_SCRATCH')
  if env:
    return env
  if os.path.abspath(workdir).rstrip('/').endswith(os.path.join('docs', 'results')):
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(workdir))),
                        'workdir', 'defenses')
  return os.path.join(workdir, '.scratch')


def result_stem(name: str, variant: str) -> str:
  """A study's result file stem: ``name`` for the ``full`` and ``smoke`` variants, else
  ``name_<variant>`` (a variant never overwrites the committed default)."""
  return name if variant in ('full', 'smoke') else f'{name}_{variant}'


def start_study(cfg, workdir: str, name: str, section: str, *, variant_file: bool = False):
  """The set-up the FMNIST defense studies share: the data split, the root key, the scratch
  folder and its stage cache, the result skeleton ``{name, variant, config, device, section:
  {}}`` and ``save()``, which writes it atomically to ``<workdir>/<name>.json`` (with
  ``variant_file``, a variant other than full / smoke writes ``<name>_<variant>.json``).

  Returns ``((x, y, xt, yt), key, scratch, cache, results, save)``.
  """
  splits = load_fmnist(cfg.n_train, cfg.n_test, cfg.seed)
  scratch = scratch_dir(workdir)
  results: dict[str, Any] = {'name': name, 'variant': cfg.variant, 'config': cfg.to_dict(),
                             'device': common_lib.device_info(), section: {}}

  stem = result_stem(name, cfg.variant) if variant_file else name

  def save():
    jio.write_json_atomic(f'{workdir}/{stem}.json', results)
  return (splits, jax.random.key(cfg.seed), scratch, Cache(scratch, name), results, save)


def reference_cnn(cfg, key: jax.Array, input_shape: tuple[int, ...], **kwargs):
  """The studies' CNN (``models.get('cnn', **cfg.model_kwargs, **kwargs)``) and its initial
  parameters from ``fold_in(key, 1)``: returns ``(apply_fn, params)``."""
  model = models.get('cnn', **kwargs, **cfg.model_kwargs.to_dict())
  return model.apply, models.init(model, jax.random.fold_in(key, 1), (1,) + tuple(input_shape))


def heading(title: str, r: dict, config: str) -> str:
  """A results section's heading: the title, the variant and the command that wrote it."""
  arg = '' if r['variant'] == 'full' else f':{r["variant"]}'
  return (f'## {title} (variant {r["variant"]}; `python -m experiments.run '
          f'--config=experiments/configs/{config}.py{arg} --workdir=docs/results`)')


def ckpt_dir(scratch: str, exp: str, stage: str, tag: str) -> str:
  return os.path.join(scratch, 'ckpt', exp, f'{stage}-{tag}')


def train_timed(apply_fn, params, x, y, *, optimizer, key, num_epochs, batch_size,
                objective=None, checkpoint_dir=None, label='fit', train_apply_fn=None):
  """``train.fit`` with wall-clock seconds per epoch measured on this call's epochs.

  Returns ``(params, info)`` with ``info = {'seconds': ..., 'epochs_timed': ...,
  'seconds_per_epoch': ..., 'final_loss': ...}``; a resumed run times only the epochs it
  ran (None when it ran none).
  """
  start = 0
  if checkpoint_dir is not None and os.path.isdir(checkpoint_dir):
    steps = [int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()]
    start = max(steps) if steps else 0
  t0 = time.time()
  res = train.fit(apply_fn, params, x, y, optimizer=optimizer, key=key,
                  num_epochs=num_epochs, batch_size=batch_size, objective=objective,
                  checkpoint_dir=checkpoint_dir, progress=True, label=label,
                  train_apply_fn=train_apply_fn)
  jax.block_until_ready(res.params)
  sec = time.time() - t0
  ran = num_epochs - start
  loss = np.asarray(res.history['loss'])
  return res.params, {'seconds': sec, 'epochs_timed': ran,
                      'seconds_per_epoch': sec / ran if ran > 0 else None,
                      'final_loss': float(loss[-1]) if loss.size else None}


def predictions(logits_fn, x, batch_size=1000):
  return evaluate.map_batches(lambda a: common.predict(logits_fn(a)), (x,),
                              batch_size=batch_size, pad=False)


def attack_summary(logits_fn, x, y, x_adv, *, eps=None, norm='linf') -> dict:
  """Clean / robust accuracy, success rate among clean-correct points, and a check that
  ``x_adv`` stayed inside the threat model."""
  clean = predictions(logits_fn, x) == y
  adv = predictions(logits_fn, x_adv) == y
  fooled = clean & ~adv
  d = (x_adv - x).reshape(x.shape[0], -1)
  out = {'clean_accuracy': float(clean.mean()), 'robust_accuracy': float(adv.mean()),
         'error_rate': float(1.0 - adv.mean()),
         'success_rate': float(fooled.sum() / max(clean.sum(), 1)),
         'n': int(x.shape[0])}
  if fooled.any():
    out['mean_l2_success'] = float(np.sqrt((d[fooled] ** 2).sum(1)).mean())
    out['mean_linf_success'] = float(np.abs(d[fooled]).max(1).mean())
  if eps is not None:
    linf = float(np.abs(d).max()) if d.size else 0.0
    out['max_linf'] = linf
    if norm == 'linf' and linf > eps + 1e-5:
      raise RuntimeError(f'attack left the eps-ball: max |x_adv - x| = {linf} > eps={eps}')
  return out


def fmt(v, pct=True, digits=1):
  if v is None or (isinstance(v, float) and not np.isfinite(v)):
    return '-'
  return f'{100 * v:.{digits}f}%' if pct else f'{v:.{digits}f}'
