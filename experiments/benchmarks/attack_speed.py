r"""Attack speed and strength: jaxsec vs torchattacks (PyTorch CPU) vs Foolbox 3 (JAX).

    python -m experiments.run --config=experiments/configs/benchmarks/attack_speed.py --workdir=docs/results  # full
    python -m experiments.run --config=experiments/configs/benchmarks/attack_speed.py:smoke --workdir=/tmp/s

1. Compute limit. For the reference CNN (``models.get('cnn')``) on a batch of images, the
   wall time of jaxsec's PGD-k divided by k x the time of one jitted input-gradient pass
   (forward + backward of the cross-entropy w.r.t. the input). 1.0 means PGD costs exactly
   its k gradients; the target is <= 1.0 (the projection and bookkeeping hidden in the
   fused program).
2. Peers. The same architecture with the very same weights in PyTorch (torchattacks, CPU)
   and the same JAX model function in Foolbox 3 (its JAX backend): FGSM, PGD, C&W-L2 and
   DeepFool-L2 at equal budgets (same eps, steps, step size / learning rate, binary-search
   rounds, overshoot). Reported: best-of-repeats wall time (JAX compile time separate),
   and strength: robust accuracy for the eps-bounded attacks, success rate and median L2
   of the successful examples for the minimal-perturbation ones. A peer that fails to
   install, import or run is recorded with its error instead of a number.

The model is trained briefly on Fashion-MNIST first (a few hundred steps) so that strength
numbers mean something. Timings are on whatever machine runs this (recorded in the JSON).
"""
from __future__ import annotations

import os
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import attacks
from jaxsec import data
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.attacks.evasion import common

from experiments import common as exp_common
from experiments.benchmarks import machine
from experiments.benchmarks import torch_port

NAME = 'attack_speed'


def _load(cfg, split):
  if cfg.dataset != 'synthetic':
    return data.load(cfg.dataset, split)
  rng = np.random.default_rng(0 if split == 'train' else 1)
  n = cfg.train_subset if split == 'train' else max(cfg.batch, 1024)
  return (rng.uniform(size=(n, 28, 28, 1)).astype(np.float32),
          rng.integers(0, 10, size=n).astype(np.int32))


def _repeats(cfg, name):
  return cfg.slow_repeats if name in ('cw', 'deepfool', 'fab') else cfg.repeats


def _time(fn, repeats):
  """Best-of-``repeats`` wall time of ``fn()`` (which must block until its result is
  ready); the minimum is the least disturbed run on a shared machine (as ``timeit``)."""
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return min(ts)


def _block(x):
  return jax.block_until_ready(x)


def _strength(logits_fn, x, y, x_adv, minimal: bool):
  x_adv = jnp.asarray(np.asarray(x_adv), jnp.float32)
  pred = np.asarray(common.predict(logits_fn(x_adv)))
  y = np.asarray(y)
  out = {'robust_accuracy': float(np.mean(pred == y))}
  if minimal:
    correct = np.asarray(common.predict(logits_fn(x))) == y
    fooled = correct & (pred != y)
    l2 = np.sqrt(np.sum((np.asarray(x_adv) - np.asarray(x)).reshape(len(y), -1) ** 2, 1))
    out['success_rate'] = float(fooled.sum() / max(correct.sum(), 1))
    out['median_l2'] = float(np.median(l2[fooled])) if fooled.any() else float('nan')
    out['mean_l2'] = float(np.mean(l2[fooled])) if fooled.any() else float('nan')
  return out


def _train(cfg, key):
  x, y = _load(cfg, 'train')
  if cfg.train_subset:
    x, y = x[:cfg.train_subset], y[:cfg.train_subset]
  model = models.get('cnn', num_classes=10, **cfg.model_kwargs)
  params = models.init(model, key, (1,) + x.shape[1:])
  res = train.fit(model.apply, params, x, y, optimizer=optax.adam(1e-3), key=key,
                  batch_size=cfg.train_batch, num_epochs=cfg.train_epochs)
  return model, res.params


# ----------------------------------------------------------------------------- jaxsec


def _jaxsec_attacks(cfg):
  eps = cfg.eps
  out = {
      'fgsm': (attacks.fgsm(eps=eps), False),
      'pgd': (attacks.pgd(eps=eps, step_size=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                          num_steps=cfg.pgd_steps), False),
  }
  if hasattr(attacks, 'carlini_wagner_l2'):
    out['cw'] = (attacks.carlini_wagner_l2(num_binary_steps=cfg.cw_binary_steps,
                                           num_steps=cfg.cw_steps,
                                           learning_rate=cfg.cw_lr,
                                           initial_const=cfg.cw_initial_const), True)
  if hasattr(attacks, 'deepfool'):
    out['deepfool'] = (attacks.deepfool(norm='l2', num_classes=10, overshoot=cfg.overshoot,
                                        max_iter=cfg.deepfool_steps), True)
  out['apgd'] = (attacks.apgd(eps=eps, num_steps=cfg.apgd_steps, loss='ce'), False)
  out['fab'] = (attacks.fab_t(eps=eps, num_steps=cfg.fab_steps, num_target_classes=9), False)
  return {k: v for k, v in out.items() if k in cfg.attacks}


def _run_jaxsec(cfg, logits_fn, x, y, key):
  res = {}
  for name, (atk, minimal) in _jaxsec_attacks(cfg).items():
    # Timed on x_adv alone: XLA drops the info that nothing reads.
    f = jax.jit(lambda lf, a, b, k, atk=atk: atk(lf, a, b, k).x_adv, static_argnums=0)
    t0 = time.perf_counter()
    xa = _block(f(logits_fn, x, y, key))
    compile_s = time.perf_counter() - t0
    t = _time(lambda f=f: _block(f(logits_fn, x, y, key)), _repeats(cfg, name))
    res[name] = {'seconds': t, 'compile_seconds': compile_s,
                 **_strength(logits_fn, x, y, xa, minimal)}
  # The official code (and torchattacks' port) runs APGD only on the correctly classified
  # points and FAB-T's targets one at a time on the points still robust; jaxsec's host
  # driver does the same (one jitted program per target), next to the one-program timing.
  from jaxsec.attacks.evasion import autoattack  # pylint: disable=g-import-not-at-top
  filtered = {
      'apgd': [('apgd', attacks.apgd(eps=cfg.eps, num_steps=cfg.apgd_steps, loss='ce'))],
      'fab': [('fab-t', attacks.fab_t(eps=cfg.eps, num_steps=cfg.fab_steps,
                                      num_target_classes=1, first_target=j)) for j in range(9)],
  }
  for name, stage_list in filtered.items():
    if name not in res:
      continue
    run = lambda sl=stage_list: autoattack.run_stages(logits_fn, x, y, key, sl,
                                                      batch_size=cfg.batch)
    out = run()                                               # compiles
    t = _time(run, _repeats(cfg, name))
    res[name]['filtered'] = {'seconds': t, **_strength(logits_fn, x, y, out['x_adv'], False),
                             'gradients': out['gradients']}
  # C&W called eagerly on the CPU backend runs its iterations as a host loop over jitted
  # straight-line blocks (chosen inside the attack; XLA:CPU runs loop bodies ~2x slower).
  if 'cw' in res and 'seconds' in res['cw'] and jax.default_backend() == 'cpu':
    atk = attacks.carlini_wagner_l2(num_binary_steps=cfg.cw_binary_steps,
                                    num_steps=cfg.cw_steps, learning_rate=cfg.cw_lr,
                                    initial_const=cfg.cw_initial_const)
    run = lambda: _block(atk(logits_fn, x, y).x_adv)
    t0 = time.perf_counter()
    xa = run()                                                 # compiles the blocks
    compile_s = time.perf_counter() - t0
    t = _time(run, _repeats(cfg, 'cw'))
    res['cw']['host_loop'] = {'seconds': t, 'first_call_seconds': compile_s,
                              **_strength(logits_fn, x, y, xa, True)}
  for name in cfg.attacks:
    res.setdefault(name, {'error': f'jaxsec has no {name} attack in this checkout'})
  return res


# ----------------------------------------------------------------------------- torch


def _run_torchattacks(cfg, params, logits_fn, x, y):
  try:
    import torch
    import torchattacks
  except Exception as e:  # noqa: BLE001 -- record any install / import failure
    return {'error': f'import failed: {type(e).__name__}: {e}'}
  model = torch_port.cnn(params)
  diff = torch_port.check_same_logits(model, logits_fn, x)
  xt = torch.from_numpy(torch_port.nchw(x))
  yt = torch.tensor(np.asarray(y).astype(np.int64))
  eps = cfg.eps
  makers = {
      'fgsm': (lambda: torchattacks.FGSM(model, eps=eps), False),
      'pgd': (lambda: torchattacks.PGD(model, eps=eps,
                                       alpha=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                                       steps=cfg.pgd_steps, random_start=True), False),
      # torchattacks' CW has no binary search over c: it gets the same number of Adam
      # steps in total (rounds x steps) at the fixed c = cw_initial_const.
      'cw': (lambda: torchattacks.CW(model, c=cfg.cw_initial_const, kappa=0,
                                     steps=cfg.cw_binary_steps * cfg.cw_steps,
                                     lr=cfg.cw_lr), True),
      'deepfool': (lambda: torchattacks.DeepFool(model, steps=cfg.deepfool_steps,
                                                 overshoot=cfg.overshoot), True),
      'apgd': (lambda: torchattacks.APGD(model, norm='Linf', eps=eps, steps=cfg.apgd_steps,
                                         n_restarts=1, loss='ce', seed=cfg.seed), False),
      # multi_targeted: the 9 other classes as targets, AutoAttack's FAB-T.
      'fab': (lambda: torchattacks.FAB(model, norm='Linf', eps=eps, steps=cfg.fab_steps,
                                       n_restarts=1, multi_targeted=True, n_classes=10,
                                       seed=cfg.seed), False),
  }
  res = {'version': torchattacks.__version__, 'torch_version': torch.__version__,
         'torch_threads': torch.get_num_threads(), 'max_logit_diff_vs_jax': diff}
  for name in cfg.attacks:
    try:
      make, minimal = makers[name]
      atk = make()
      out = {}

      def run(atk=atk, out=out):
        out['x'] = atk(xt, yt)
      t = _time(run, _repeats(cfg, name))
      xa = out['x'].detach().numpy().transpose(0, 2, 3, 1)
      res[name] = {'seconds': t, **_strength(logits_fn, x, y, xa, minimal)}
    except Exception as e:  # noqa: BLE001
      res[name] = {'error': f'{type(e).__name__}: {e}',
                   'trace': traceback.format_exc(limit=3)}
  return res


# ----------------------------------------------------------------------------- foolbox


def _run_foolbox(cfg, logits_fn, x, y):
  try:
    import foolbox as fb
  except Exception as e:  # noqa: BLE001
    return {'error': f'import failed: {type(e).__name__}: {e}'}
  res = {'version': getattr(fb, '__version__', '?')}
  try:
    fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  except Exception as e:  # noqa: BLE001
    return {**res, 'error': f'JAXModel failed: {type(e).__name__}: {e}'}
  eps = cfg.eps
  makers = {
      'fgsm': (lambda: fb.attacks.FGSM(), eps, False),
      'pgd': (lambda: fb.attacks.LinfPGD(abs_stepsize=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                                         steps=cfg.pgd_steps, random_start=True), eps, False),
      'cw': (lambda: fb.attacks.L2CarliniWagnerAttack(
          binary_search_steps=cfg.cw_binary_steps, steps=cfg.cw_steps, stepsize=cfg.cw_lr,
          confidence=0.0, initial_const=cfg.cw_initial_const, abort_early=True), None, True),
      'deepfool': (lambda: fb.attacks.L2DeepFoolAttack(
          steps=cfg.deepfool_steps, candidates=10, overshoot=cfg.overshoot), None, True),
  }
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  for name in cfg.attacks:
    if name not in makers:
      res[name] = {'error': f'Foolbox {res["version"]} has no {name} attack'}
      continue
    try:
      make, e, minimal = makers[name]
      atk = make()
      out = {}

      def run(atk=atk, e=e, out=out):
        _, clipped, _ = atk(fmodel, xj, yj, epsilons=e)
        out['x'] = _block(clipped)
      t0 = time.perf_counter()
      run()
      first = time.perf_counter() - t0
      t = _time(run, _repeats(cfg, name))
      xa, extra = np.array(out['x']), {}
      if name == 'cw':
        # Foolbox's C&W starts its "best adversarial" as an all-zero image
        # (foolbox/attacks/carlini_wagner.py: best_advs = ep.zeros_like(x)) and returns it
        # untouched where it found nothing; with epsilons=None that black image comes back
        # as the result and would count as a success (L2 ~ 12.8) wherever the model does
        # not call it the true class. Score failures as failures: give back x there, as
        # jaxsec and torchattacks do.
        n = xa.shape[0]
        fail = (np.all(xa.reshape(n, -1) == 0, axis=1)
                & np.any(np.asarray(x).reshape(n, -1) != 0, axis=1))
        xa[fail] = np.asarray(x)[fail]
        extra['untouched_fallbacks_rescored'] = int(fail.sum())
      res[name] = {'seconds': t, 'first_call_seconds': first, **extra,
                   **_strength(logits_fn, x, y, xa, minimal)}
    except Exception as e:  # noqa: BLE001
      res[name] = {'error': f'{type(e).__name__}: {e}',
                   'trace': traceback.format_exc(limit=3)}
  return res


# ----------------------------------------------------------------------------- main


def run(cfg, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu, name=NAME)
  key = jax.random.key(cfg.seed)
  t0 = time.time()
  model, params = _train(cfg, key)
  train_s = time.time() - t0
  x_test, y_test = _load(cfg, 'test')
  x = jnp.asarray(x_test[:cfg.batch])
  y = jnp.asarray(y_test[:cfg.batch])
  logits_fn = models.logits_fn(model, params)
  clean = float(np.mean(np.asarray(common.predict(logits_fn(x))) == np.asarray(y)))
  print(f'[attack_speed] trained in {train_s:.1f}s, clean accuracy on the batch {clean:.3f}')

  # 1. compute-limit ratio.
  grad_fn = jax.jit(jax.grad(lambda xx: jnp.sum(common.cross_entropy(logits_fn(xx), y))))
  _block(grad_fn(x))
  t_grad = _time(lambda: _block(grad_fn(x)), max(cfg.repeats, 3))
  k = cfg.pgd_steps
  limit = {'pgd_steps': k, 'grad_seconds': t_grad, 'target': 1.0}
  # Default PGD keeps the best iterate (one extra forward pass to score the last one);
  # keep_best=False is Madry et al.'s last iterate, the adversarial-training setting.
  for label, kb in (('', True), ('_last_iterate', False)):
    atk = attacks.pgd(eps=cfg.eps, step_size=cfg.pgd_rel_step * cfg.eps / k, num_steps=k,
                      keep_best=kb)
    pgd = jax.jit(lambda lf, a, b, kk, atk=atk: atk(lf, a, b, kk).x_adv, static_argnums=0)
    _block(pgd(logits_fn, x, y, key))
    t_pgd = _time(lambda pgd=pgd: _block(pgd(logits_fn, x, y, key)), cfg.repeats)
    limit[f'pgd_seconds{label}'] = t_pgd
    limit[f'ratio{label}'] = t_pgd / (k * t_grad)
    print(f'[attack_speed] PGD-{k} (keep_best={kb}): {t_pgd:.3f}s; one gradient pass '
          f'{t_grad:.4f}s; ratio {t_pgd / (k * t_grad):.3f}')

  ours = _run_jaxsec(cfg, logits_fn, x, y, key)
  peers = {}
  if 'torchattacks' in cfg.peers:
    peers['torchattacks'] = _run_torchattacks(cfg, params, logits_fn, x, y)
  if 'foolbox' in cfg.peers:
    peers['foolbox'] = _run_foolbox(cfg, logits_fn, x, y)
  ratios = {}
  for peer, r in peers.items():
    for name in cfg.attacks:
      if 'seconds' in ours.get(name, {}) and 'seconds' in r.get(name, {}):
        # The same work as the peer: the host-filtered driver where jaxsec has one, and
        # C&W as an eager call runs it on the CPU (its host loop).
        mine = ours[name].get('filtered', ours[name].get('host_loop', ours[name]))['seconds']
        ratios[f'{peer}/{name}'] = r[name]['seconds'] / mine
  for kk, v in ratios.items():
    print(f'[attack_speed] {kk}: peer time / jaxsec time = {v:.2f}')

  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'machine': machine.finish(info),
      'clean_accuracy_batch': clean, 'train_seconds': train_s,
      'compute_limit': limit,
      'jaxsec': ours, 'peers': peers, 'speedup_vs_peer': ratios,
  }
  suffix = '' if cfg.variant in ('full', 'smoke') else f'_{cfg.variant}'
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}{suffix}.json'), results)
  return results


def _fmt(v, spec='.3f'):
  return format(v, spec) if isinstance(v, (int, float)) and v == v else '-'


def _row(label: str, lib: str, r: dict, note: str) -> str:
  """One table row: time, robust accuracy, success rate, median L2 ('-' where absent)."""
  return (f"| {label} | {lib} | {_fmt(r['seconds'])} | {_fmt(r.get('robust_accuracy'))} | "
          f"{_fmt(r.get('success_rate'))} | {_fmt(r.get('median_l2'))} | {note} |")


def render_markdown(results: dict) -> str:
  cfg = results['config']
  cl = results['compute_limit']
  lines = [
      f"### Attack speed ({results['machine']['jax_backend']}, batch {cfg['batch']}, "
      f"reference CNN, eps={cfg['eps']}; "
      f"`{exp_common.command('benchmarks.attack_speed', results['variant'])}`)",
      '',
      *([f"Devices: {', '.join(results['machine']['devices'])}. Synthetic data: the "
         'timings hold, the strength columns mean nothing.', '']
        if cfg.get('dataset') == 'synthetic' else []),
      f"PGD-{cl['pgd_steps']}: {_fmt(cl['pgd_seconds'])} s; one jitted input-gradient pass "
      f"{_fmt(cl['grad_seconds'], '.4f')} s; compute-limit ratio "
      f"**{_fmt(cl['ratio'])}** (target <= 1.0; best-iterate tracking included), "
      f"{_fmt(cl.get('ratio_last_iterate'))} returning the last iterate "
      f"({_fmt(cl.get('pgd_seconds_last_iterate'))} s).", '',
      '| attack | library | time (s) | robust acc | success | median L2 | note |',
      '|---|---|---|---|---|---|---|']
  libs = [('jaxsec', results['jaxsec'])] + list(results['peers'].items())
  for name in cfg['attacks']:
    for lib, r in libs:
      row = r.get(name) if 'error' not in r or name in r else None
      if row is None:
        lines.append(f"| {name} | {lib} | - | - | - | - | {r.get('error', 'n/a')[:80]} |")
        continue
      if 'error' in row:
        lines.append(f"| {name} | {lib} | - | - | - | - | {row['error'][:80]} |")
        continue
      note = ''
      if 'compile_seconds' in row:
        note = f"compile {row['compile_seconds']:.1f}s"
      sp = results['speedup_vs_peer'].get(f'{lib}/{name}')
      if sp is not None:
        note = f'jaxsec {sp:.2f}x faster' if sp >= 1 else f'jaxsec {1 / sp:.2f}x slower'
      if row.get('untouched_fallbacks_rescored'):
        note += (f"; {row['untouched_fallbacks_rescored']} untouched all-zero fallbacks "
                 'scored as failures')
      # Where jaxsec runs an attack two ways, one row each: the one-program form and
      # the C&W host loop (eager call on CPU) or the host-filtered official schedule.
      second = [(k, row[k], label, extra) for k, label, extra in (
          ('host_loop', 'eager call: host loop over jitted blocks',
           lambda r: f"first call {r['first_call_seconds']:.1f}s"),
          ('filtered', 'host driver: still-robust points only',
           lambda r: 'the official schedule')) if row.get(k)]
      if second:
        _, r2, label, extra = second[0]
        first = ('one program, jitted' if 'host_loop' in row
                 else 'one program, all points x all targets')
        lines.append(_row(f'{name} ({first})', lib, row,
                          f"compile {row['compile_seconds']:.1f}s"))
        lines.append(_row(f'{name} ({label})', lib, r2, extra(r2)))
        continue
      lines.append(_row(name, lib, row, note))
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  cl = r['compute_limit']
  where = r['machine']['jax_backend']
  note = machine.loaded_note(r['machine'])
  rows = [(f"PGD-{cl['pgd_steps']} time / ({cl['pgd_steps']} x one gradient pass), {where} "
           '(target <= 1)', f"{cl['ratio']:.2f}{note}")]
  for k, v in sorted(r.get('speedup_vs_peer', {}).items()):
    rows.append((f'{k}: peer time / jaxsec time ({where})', f'{v:.2f}x{note}'))
  return rows
