"""AutoAttack-style ensemble (Croce & Hein, ICML 2020) in JAX.

With the default ``fab_stage='fab-t'``, ``version='standard'`` runs AutoAttack's four
attacks (APGD-CE, APGD-T, FAB-T, Square) with AutoAttack's standard settings; each is this
package's own implementation, whose docstring lists its deliberate differences from the
authors' code.

Stages, each run only on the points that are still robust (correctly classified):

``version='standard'``:
  1. ``apgd-ce``: APGD on cross-entropy, 100 iterations, 1 restart.
  2. ``apgd-t``: APGD-T, targeted DLR on each of the ``min(9, C - 1)`` highest-ranked other
     classes, 100 iterations each. (With 3 classes APGD-DLR replaces it, with 2 classes
     APGD on the C&W margin, since the (targeted) DLR loss needs 4 (3) classes.)
  3. ``fab-t``: FAB-T (:func:`jaxsec.attacks.evasion.fab_t`; Croce & Hein, ICML 2020b),
     the minimal-norm Fast Adaptive Boundary attack run towards each of the same
     ``min(9, C - 1)`` target classes, 100 iterations, 1 restart (AutoAttack's standard
     setting); it counts a point as broken when it finds a misclassified point within
     ``eps``. Its search geometry (steps to the linearised decision boundary, biased
     towards the original point) differs from the loss-ascent of APGD.
     ``fab_stage='pgd-t-margin'`` replaces it by the earlier substitute, which is **not**
     FAB: targeted PGD on the C&W margin ``z_t - max_{j != t} z_j`` towards the same target
     classes, 100 steps of a fixed size ``eps / 10`` from a random start in the ball,
     success = misclassification (cheaper per step: one forward-backward pass, where FAB-T
     adds a forward pass and two sort-based hyperplane projections).
  4. ``square``: the Square Attack (:func:`jaxsec.attacks.blackbox.square`; Andriushchenko
     et al., ECCV 2020): score-based random search, margin loss, ``p_init = 0.8``, 5000
     queries per point (the clean query included). It uses no gradients, so it catches
     gradient masking.

``version='fast'``: ``apgd-ce`` (50 iterations) and ``apgd-t`` (50 iterations, 3 target
classes) only (``fab_stage`` is ignored).

Two drivers:

* :func:`auto_attack` returns one pure, jittable attack. Inside one compiled program shapes
  are static, so every stage *computes* on the whole batch and the result is *selected*
  only for points still robust; robust accuracy after each stage is reported in
  ``info['robust_per_stage']`` ([S, B] bool). Use it inside jit/vmap or adversarial training.
* :func:`run_auto_attack` is a host-level driver that really filters: each stage runs (as
  its own jitted program) only on the points still robust after the previous stage, padded
  to a power-of-two bucket to bound recompilation. It saves compute when early stages
  succeed and is the one to use for evaluations.
"""
from __future__ import annotations

import inspect
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.autopgd import apgd, apgd_t, top_other_classes
from jaxsec.attacks.evasion.fab import fab_t
from jaxsec.attacks.evasion.pgd import run_pgd

VERSIONS = ('standard', 'fast')
FAB_STAGES = ('fab-t', 'pgd-t-margin')


def _square_factory():
  # Imported lazily (jaxsec.attacks.blackbox imports evasion.common); an ImportError here is
  # a real error, not a missing stage.
  from jaxsec.attacks.blackbox import square  # pylint: disable=g-import-not-at-top
  return square


def _margin_pgd_t(*, eps, norm, num_steps, num_target_classes, bounds):
  """The FAB-T substitute: targeted C&W-margin PGD per target, untargeted success."""

  def attack(logits_fn, x, y, key):
    logits = logits_fn(x)
    k = min(num_target_classes, common.as_multiclass(logits).shape[-1] - 1)
    targets = top_other_classes(logits, y, k)
    succ = lambda lg, yy: common.success(lg, y, False)
    eps_ = jnp.asarray(eps, x.dtype)

    def per_target(j):
      t = targets[:, j]
      obj = lambda lg, yy: common.margin(lg, t)
      return run_pgd(logits_fn, x, y, jax.random.fold_in(key, j), eps=eps_,
                     step_size=eps_ / 10.0, num_steps=num_steps, p=norm, random_start=True,
                     restarts=1, obj=obj, targeted=False, bounds=bounds, l1_quantile=0.0,
                     keep_best=True, success_fn=succ)

    x_b, s_b, v_b = per_target(0)

    def body(j, c):
      x_r, s_r, v_r = per_target(j)
      imp = common.better(s_r, v_r, c[1], c[2])
      return common.select(imp, x_r, c[0]), c[1] | s_r, jnp.where(imp, v_r, c[2])

    if k > 1:
      x_b, s_b, v_b = jax.lax.fori_loop(1, k, body, (x_b, s_b, v_b))
    return AttackOutput(x_b, {'success': s_b, 'gradients': jnp.full(
        (x.shape[0],), k * num_steps, jnp.int32)})
  return attack


def stages(*, eps, norm: str, version: str, bounds, num_classes: int,
           fab_stage: str = 'fab-t', split_targets: bool = False
           ) -> list[tuple[str, Callable]]:
  """The list of ``(name, attack)`` stages; each attack returns an ``AttackOutput`` whose
  ``info['success']`` means misclassification of the true label ``y`` within ``eps``.

  ``fab_stage`` picks the third stage of ``version='standard'``: ``'fab-t'`` (FAB-T) or
  ``'pgd-t-margin'`` (the targeted margin-PGD substitute); see the module docstring.
  ``split_targets=True`` gives the targeted stages (``apgd-t``, ``fab-t``) as one entry per
  target class (same name, ``first_target = 0 .. k - 1``) so that a host driver can run
  each target only on the points still robust, as the official code does."""
  n = 100 if version == 'standard' else 50
  k = min(9 if version == 'standard' else 3, num_classes - 1)
  out = [('apgd-ce', apgd(eps=eps, norm=norm, num_steps=n, loss='ce', bounds=bounds,
                          return_info=True))]
  if num_classes >= 4:
    if split_targets:
      out += [('apgd-t', apgd_t(eps=eps, norm=norm, num_steps=n, num_target_classes=1,
                                first_target=j, bounds=bounds, return_info=True))
              for j in range(k)]
    else:
      out.append(('apgd-t', apgd_t(eps=eps, norm=norm, num_steps=n, num_target_classes=k,
                                   bounds=bounds, return_info=True)))
  elif num_classes == 3:
    out.append(('apgd-dlr', apgd(eps=eps, norm=norm, num_steps=n, loss='dlr',
                                 bounds=bounds, return_info=True)))
  else:
    out.append(('apgd-cw', apgd(eps=eps, norm=norm, num_steps=n, loss='cw', bounds=bounds,
                                return_info=True)))
  if version == 'standard':
    if fab_stage == 'fab-t':
      if split_targets:
        out += [('fab-t', fab_t(eps=eps, norm=norm, num_steps=100, num_target_classes=1,
                                first_target=j, restarts=1, bounds=bounds,
                                return_info=True)) for j in range(k)]
      else:
        out.append(('fab-t', fab_t(eps=eps, norm=norm, num_steps=100, num_target_classes=k,
                                   restarts=1, bounds=bounds, return_info=True)))
    else:
      out.append(('pgd-t-margin', _margin_pgd_t(eps=eps, norm=norm, num_steps=100,
                                                num_target_classes=k, bounds=bounds)))
    sq = _square_factory()
    if sq is not None:
      params = inspect.signature(sq).parameters
      kw = {'eps': eps, 'norm': norm, 'bounds': bounds, 'return_info': True}
      for name, val in (('num_queries', 5000), ('max_queries', 5000)):
        if name in params:
          kw[name] = val
      kw = {a: b for a, b in kw.items() if a in params}
      sq_attack = sq(**kw)

      def square_stage(logits_fn, x, y, key, _a=sq_attack, _ri='return_info' in kw):
        res = _a(logits_fn, x, y, key)
        x_adv = res.x_adv if _ri else res
        info = dict(res.info) if _ri else {}
        info['success'] = common.predict(logits_fn(x_adv)) != y
        return AttackOutput(x_adv, info)
      out.append(('square', square_stage))
  return out


def _check(eps, norm, version, bounds, fab_stage):
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=('linf', 'l2'))
  _checks.check_choice('version', version, VERSIONS)
  _checks.check_choice('fab_stage', fab_stage, FAB_STAGES)
  return bounds


def auto_attack(*, eps, norm: str = 'linf', version: str = 'standard', bounds=(0.0, 1.0),
                fab_stage: str = 'fab-t', return_info: bool = False):
  """The AutoAttack-style ensemble as one jittable attack (see the module docstring).

  ``y`` are the true labels. A point counts as broken by the first stage that misclassifies
  it; its adversarial example is that stage's; points misclassified at the clean input are
  returned unchanged. Robust accuracy after the whole ensemble is never above that after
  any single stage, because the robust set only shrinks.

  Returns (with ``return_info``) ``info`` with ``success`` [B] (misclassified at x_adv,
  including clean errors), ``clean_correct`` [B], ``robust_per_stage`` [S, B] (robust after
  each stage, cumulative), ``stage_success`` [S, B] (the stage alone, on all points) and
  ``gradients`` [B]. ``attack.stage_names(num_classes)`` gives the stage names.
  ``fab_stage``: ``'fab-t'`` (default) or ``'pgd-t-margin'``, the third standard stage.
  """
  bounds = _check(eps, norm, version, bounds, fab_stage)
  common.check_bool(return_info=return_info)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds)
    logits = logits_fn(x)
    c = common.as_multiclass(logits).shape[-1]
    robust = common.predict(logits) == y
    clean_correct = robust
    x_adv = x
    per_stage, stage_success = [], []
    grads = jnp.zeros((x.shape[0],), jnp.int32)
    for i, (_, fn) in enumerate(stages(eps=eps, norm=norm, version=version, bounds=bounds,
                                       num_classes=c, fab_stage=fab_stage)):
      out = fn(logits_fn, x, y, jax.random.fold_in(key, i))
      s = out.info['success']
      new = s & robust
      grads = grads + jnp.where(robust, out.info.get('gradients', 0), 0).astype(jnp.int32)
      x_adv = common.select(new, out.x_adv, x_adv)
      robust = robust & ~new
      per_stage.append(robust)
      stage_success.append(s)
    if not return_info:
      return x_adv
    final = common.predict(logits_fn(x_adv)) != y
    return AttackOutput(x_adv, {'success': final, 'clean_correct': clean_correct,
                                'robust_per_stage': jnp.stack(per_stage),
                                'stage_success': jnp.stack(stage_success),
                                'gradients': grads})

  attack.stage_names = lambda num_classes: [n for n, _ in stages(
      eps=1.0, norm=norm, version=version, bounds=bounds, num_classes=num_classes,
      fab_stage=fab_stage)]
  return attack


def _bucket(n: int) -> int:
  return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def run_auto_attack(logits_fn, x, y, key, *, eps, norm: str = 'linf',
                    version: str = 'standard', bounds=(0.0, 1.0), batch_size: int = 256,
                    fab_stage: str = 'fab-t', verbose: bool = False) -> dict:
  """Host-level AutoAttack driver that runs each stage only on the still-robust points.

  Each stage is jitted once per bucket size (the robust subset padded to a power of two,
  at most ``batch_size``, and processed in chunks of ``batch_size``). The targeted stages
  (APGD-T, FAB-T) run one target class at a time, each on the points that are still robust
  after the previous targets (as in the official code; ``stages(split_targets=True)``), so
  their cost falls as points break; each reports as one stage.

  Returns a dict: ``x_adv`` (np.ndarray), ``clean_accuracy``, ``robust_accuracy`` (after
  all stages), ``stages`` (list of ``{'name', 'robust_accuracy', 'attacked', 'seconds',
  'gradients'}``; robust accuracy after the stage, cumulative), ``gradients`` (total
  gradient evaluations actually spent), ``success`` (np bool [N]). ``fab_stage`` as in
  :func:`auto_attack`.
  """
  bounds = _check(eps, norm, version, bounds, fab_stage)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  common.check_call(x, y, bounds)
  c = common.as_multiclass(jnp.asarray(logits_fn(x[:1]))).shape[-1]
  return run_stages(logits_fn, x, y, key,
                    stages(eps=eps, norm=norm, version=version, bounds=bounds, num_classes=c,
                           fab_stage=fab_stage, split_targets=True),
                    batch_size=batch_size, verbose=verbose)


def run_stages(logits_fn, x, y, key, stage_list, *, batch_size: int = 256,
               verbose: bool = False) -> dict:
  """Runs ``(name, attack)`` stages in order, each only on the points still robust.

  Each ``attack(logits_fn, x, y, key)`` must return an ``AttackOutput`` whose
  ``info['success']`` means misclassification of ``y`` (within the attack's budget).
  Consecutive entries with the same name (one target class each, see
  ``stages(split_targets=True)``) report as one stage. Returns what
  :func:`run_auto_attack` returns; a stage's ``attacked_per_target`` lists how many points
  each of its entries attacked.
  """
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  n = x.shape[0]
  logits = np.concatenate([np.asarray(logits_fn(x[i:i + batch_size]))
                           for i in range(0, n, batch_size)])
  robust = np.asarray(common.predict(jnp.asarray(logits))) == np.asarray(y)
  clean_acc = float(robust.mean()) if n else float('nan')
  x_adv = np.array(x)
  report, total_grads = [], 0
  for si, (name, fn) in enumerate(stage_list):
    jfn = jax.jit(fn, static_argnums=0)
    idx = np.nonzero(robust)[0]
    t0 = time.time()
    grads = 0
    for start in range(0, len(idx), batch_size):
      chunk = idx[start:start + batch_size]
      m = len(chunk)
      padded = np.concatenate([chunk, np.full(_bucket(m) - m, chunk[0])])
      out = jfn(logits_fn, x[padded], y[padded], jax.random.fold_in(
          jax.random.fold_in(key, si), start))
      s = np.asarray(out.info['success'])[:m]
      xa = np.asarray(out.x_adv)[:m]
      x_adv[chunk[s]] = xa[s]
      robust[chunk[s]] = False
      if 'gradients' in out.info:
        grads += int(np.asarray(out.info['gradients'])[:m].sum())
    total_grads += grads
    if report and report[-1]['name'] == name:      # another target of the same stage
      r = report[-1]
      r['robust_accuracy'] = float(robust.mean())
      r['seconds'] += time.time() - t0
      r['gradients'] += grads
      r['target_runs'] += 1
      r['attacked_per_target'].append(int(len(idx)))
    else:
      report.append({'name': name, 'robust_accuracy': float(robust.mean()),
                     'attacked': int(len(idx)), 'seconds': time.time() - t0,
                     'gradients': grads, 'target_runs': 1,
                     'attacked_per_target': [int(len(idx))]})
    if verbose:
      print(f'[auto_attack] {name}: attacked {len(idx)}, robust accuracy '
            f'{robust.mean():.4f} ({time.time() - t0:.1f}s)')
  final_logits = np.concatenate([np.asarray(logits_fn(jnp.asarray(x_adv[i:i + batch_size])))
                                 for i in range(0, n, batch_size)])
  success = np.asarray(common.predict(jnp.asarray(final_logits))) != np.asarray(y)
  return {'x_adv': x_adv, 'clean_accuracy': clean_acc,
          'robust_accuracy': float(1.0 - success.mean()), 'stages': report,
          'gradients': total_grads, 'success': success}
