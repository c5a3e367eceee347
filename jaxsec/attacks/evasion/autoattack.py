"""AutoAttack-style ensemble (Croce & Hein, ICML 2020) in JAX.

Each stage runs on the points still robust, with this package's own attacks (their docstrings
list their differences from the authors' code):

* ``version='standard'`` (one restart each): (1) ``apgd-ce``, 100 iterations; (2) ``apgd-t``,
  targeted DLR on each of the ``min(9, C - 1)`` top other classes, 100 iterations (3 classes:
  APGD-DLR; 2: APGD on the C&W margin); (3) ``fab-t`` (:func:`jaxsec.attacks.evasion.fab_t`,
  same targets, 100 iterations; success = misclassified within ``eps``) or, with
  ``fab_stage='pgd-t-margin'``, targeted PGD on the C&W margin (not FAB: 100 steps of ``eps /
  10`` from a random start); (4) ``square`` (:func:`jaxsec.attacks.blackbox.square`, margin,
  ``p_init = 0.8``, 5000 queries with the clean one, ``resc_schedule=False``; gradient-free).
* ``'plus'``: ``apgd-ce``, ``apgd-dlr``, ``fab`` (untargeted; 5 restarts each), ``square``,
  ``apgd-t``, ``fab-t`` (9 targets, 1 restart), 100 iterations each, in this order.
* ``'rand'`` (randomised defenses): ``apgd-ce``, ``apgd-dlr``, 100 iterations, EOT over 20
  draws; ``logits_fn`` is ``(x, key) -> logits``, accuracies on single draws.
* ``'jaxsec-fast'`` (not official): ``apgd-ce``, ``apgd-t`` (3 targets), 50 iterations.

``norm='l1'`` ("Mind the box", ICCV 2021), 'standard': l1-APGD-CE (5 restarts), -T
(``min(5, C - 1)`` targets), both with the official ``use_largereps`` schedule, L1 ``fab-t``;
no ``square`` (officially L_inf / L2 only); 'rand', 'jaxsec-fast' without the schedule;
'plus' refused. With 2 classes ``apgd-dlr`` uses the C&W margin; 'plus' drops ``apgd-t`` with
3 classes or fewer. :func:`auto_attack` is one jittable attack (every stage computes on the
whole batch, kept for robust points; ``info['robust_per_stage']``); :func:`run_auto_attack`,
for evaluations, filters for real (stages jitted on power-of-two padded buckets) and runs the
official checks (randomness, probabilities, zero gradients, Square-only drop).
"""
from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.autopgd import apgd, apgd_t, top_other_classes
from jaxsec.attacks.evasion.fab import fab, fab_t
from jaxsec.attacks.evasion.pgd import run_pgd

VERSIONS = ('standard', 'plus', 'rand', 'jaxsec-fast')
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

    x_b, s_b, _ = common.best_of_runs(per_target, k)
    return AttackOutput(x_b, {'success': s_b, 'gradients': jnp.full(
        (x.shape[0],), k * num_steps, jnp.int32)}, 'fixed')
  return attack


def _square_stage(eps, norm, bounds):
  sq = _square_factory()
  params = inspect.signature(sq).parameters
  # AutoAttack builds its SquareAttack with resc_schedule=False.
  kw: dict[str, Any] = {'eps': eps, 'norm': norm, 'bounds': bounds, 'rescale_schedule': False}
  for name, val in (('num_queries', 5000), ('max_queries', 5000)):
    if name in params:
      kw[name] = val
  kw = {a: b for a, b in kw.items() if a in params}
  sq_attack = sq(**kw)

  def square_stage(logits_fn, x, y, key):
    res = sq_attack(logits_fn, x, y, key)
    info = dict(res.info)
    info['success'] = common.predict(logits_fn(res.x_adv)) != y
    return AttackOutput(res.x_adv, info, 'fixed')
  return square_stage


def _single_draw_success(attack):
  """For a randomised ``logits_fn(x, key)``: success judged on one fresh draw of the model
  at ``x_adv`` (as the official code re-evaluates ``get_logits(adv)`` once)."""

  def stage(logits_fn, x, y, key):
    k_att, k_eval = jax.random.split(key)
    out = attack(logits_fn, x, y, k_att)
    info = dict(out.info)
    info['success'] = common.predict(logits_fn(out.x_adv, k_eval)) != y
    return AttackOutput(out.x_adv, info, out.budget)
  return stage


def stages(*, eps, norm: str, version: str, bounds, num_classes: int,
           fab_stage: str = 'fab-t', split_targets: bool = False
           ) -> list[tuple[str, Callable]]:
  """The list of ``(name, attack)`` stages; each attack returns an ``AttackOutput`` whose
  ``info['success']`` means misclassification of the true label ``y`` within ``eps``.

  ``fab_stage`` picks the third stage of ``version='standard'``: ``'fab-t'`` (FAB-T) or
  ``'pgd-t-margin'`` (the targeted margin-PGD substitute); see the module docstring.
  ``split_targets=True`` gives the targeted stages (``apgd-t``, ``fab-t``) as one entry per
  target class (same name, ``first_target = 0 .. k - 1``) so that a host driver can run
  each target only on the points still robust, as the official code does. For
  ``version='rand'`` the attacks take the randomised model ``logits_fn(x, key)``."""
  version = _check_version(version)
  if version == 'rand':
    loss2 = 'dlr' if num_classes >= 3 else 'cw'
    return [(f'apgd-{n}', _single_draw_success(apgd(
        eps=eps, norm=norm, num_steps=100, loss=l, restarts=1, eot_iter=20, bounds=bounds)))
            for n, l in (('ce', 'ce'), (loss2, loss2))]
  n = 100 if version != 'jaxsec-fast' else 50
  k = min(9 if version != 'jaxsec-fast' else 3, num_classes - 1)
  r = 5 if version == 'plus' else 1
  # Official L1 'standard': APGD with use_largereps, APGD-CE 5 restarts, APGD-T 5 targets.
  l1_std = norm == 'l1' and version == 'standard'
  k_apgd = min(5, num_classes - 1) if l1_std else k
  if l1_std:
    r = 5

  def apgd_t_entries():
    if split_targets:
      return [('apgd-t', apgd_t(eps=eps, norm=norm, num_steps=n, num_target_classes=1,
                                first_target=j, bounds=bounds, use_largereps=l1_std))
              for j in range(k_apgd)]
    return [('apgd-t', apgd_t(eps=eps, norm=norm, num_steps=n, num_target_classes=k_apgd,
                              bounds=bounds, use_largereps=l1_std))]

  def fab_t_entries():
    if split_targets:
      return [('fab-t', fab_t(eps=eps, norm=norm, num_steps=100, num_target_classes=1,
                              first_target=j, restarts=1, bounds=bounds)) for j in range(k)]
    return [('fab-t', fab_t(eps=eps, norm=norm, num_steps=100, num_target_classes=k,
                            restarts=1, bounds=bounds))]

  out = [('apgd-ce', apgd(eps=eps, norm=norm, num_steps=n, loss='ce', restarts=r,
                          bounds=bounds, use_largereps=l1_std))]
  if version == 'plus':
    # Official order: apgd-ce, apgd-dlr, fab, square, apgd-t, fab-t.
    loss2 = 'dlr' if num_classes >= 3 else 'cw'
    out.append((f'apgd-{loss2}', apgd(eps=eps, norm=norm, num_steps=n, loss=loss2,
                                      restarts=5, bounds=bounds)))
    out.append(('fab', fab(eps=eps, norm=norm, num_steps=100, restarts=5, bounds=bounds)))
    out.append(('square', _square_stage(eps, norm, bounds)))
    if num_classes >= 4:
      out += apgd_t_entries()
    out += fab_t_entries()
    return out
  if num_classes >= 4:
    out += apgd_t_entries()
  elif num_classes == 3:
    out.append(('apgd-dlr', apgd(eps=eps, norm=norm, num_steps=n, loss='dlr',
                                 bounds=bounds, use_largereps=l1_std)))
  else:
    out.append(('apgd-cw', apgd(eps=eps, norm=norm, num_steps=n, loss='cw', bounds=bounds,
                                use_largereps=l1_std)))
  if version == 'standard':
    if fab_stage == 'fab-t':
      out += fab_t_entries()
    else:
      out.append(('pgd-t-margin', _margin_pgd_t(eps=eps, norm=norm, num_steps=100,
                                                num_target_classes=k, bounds=bounds)))
    if norm != 'l1':   # the official Square (square.py) has no L1 version
      out.append(('square', _square_stage(eps, norm, bounds)))
  return out


def _check_version(version):
  if version == 'fast':
    raise ValueError("version='fast' is not an official AutoAttack version and was renamed "
                     "'jaxsec-fast' (APGD-CE and APGD-T with 50 iterations, 3 targets); "
                     f'the versions are {VERSIONS}.')
  _checks.check_choice('version', version, VERSIONS)
  return version


def _check(eps, norm, version, bounds, fab_stage):
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds,
                               norms=('linf', 'l2', 'l1'))
  _check_version(version)
  if norm == 'l1' and version == 'plus':
    raise ValueError("version='plus' has no L1 form (its Square stage is L_inf / L2 only; "
                     "the official code warns 'please check'); use version='standard' "
                     "for L1 AutoAttack.")
  _checks.check_choice('fab_stage', fab_stage, FAB_STAGES)
  return bounds


def auto_attack(*, eps, norm: str = 'linf', version: str = 'standard', bounds=(0.0, 1.0),
                fab_stage: str = 'fab-t'):
  """The AutoAttack-style ensemble as one jittable attack (see the module docstring).

  ``y`` are the true labels. A point counts as broken by the first stage that misclassifies
  it; its adversarial example is that stage's; points misclassified at the clean input are
  returned unchanged. Robust accuracy after the whole ensemble is never above that after
  any single stage, because the robust set only shrinks.

  Returns ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed'); info:
  ``success`` [B] (misclassified at x_adv, including clean errors), ``clean_correct`` [B],
  ``robust_per_stage`` [S, B] (robust after each stage, cumulative), ``stage_success``
  [S, B] (the stage alone, on all points) and ``gradients`` [B]; row ``i`` of the [S, ...]
  arrays is stage ``auto_attack_stage_names(...)[i]``.
  ``fab_stage``: ``'fab-t'`` (default) or ``'pgd-t-margin'``, the third standard stage.
  With ``version='rand'``, ``logits_fn`` is the randomised model ``(x, key) -> logits``;
  clean and final predictions are single draws (as in the official code).
  """
  bounds = _check(eps, norm, version, bounds, fab_stage)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn, randomized=version == 'rand')
    if version == 'rand':
      k_clean, k_final, key = jax.random.split(key, 3)
      predict_fn = lambda z, k: logits_fn(z, k)
    else:
      k_clean = k_final = None
      predict_fn = lambda z, k: logits_fn(z)
    logits = predict_fn(x, k_clean)
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
    final = common.predict(predict_fn(x_adv, k_final)) != y
    return AttackOutput(x_adv, {'success': final, 'clean_correct': clean_correct,
                                'robust_per_stage': jnp.stack(per_stage),
                                'stage_success': jnp.stack(stage_success),
                                'gradients': grads}, 'fixed')
  return attack


def auto_attack_stage_names(*, num_classes: int, norm: str = 'linf',
                            version: str = 'standard', fab_stage: str = 'fab-t'
                            ) -> list[str]:
  """The stage names of :func:`auto_attack` with these settings, in run order (the rows
  of its ``robust_per_stage`` / ``stage_success``)."""
  _check(1.0, norm, version, (0.0, 1.0), fab_stage)
  _checks.check_int('num_classes', num_classes, minimum=2)
  return [n for n, _ in stages(eps=1.0, norm=norm, version=version, bounds=(0.0, 1.0),
                               num_classes=num_classes, fab_stage=fab_stage)]


def _bucket(n: int) -> int:
  return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def run_auto_attack(logits_fn, x, y, key, *, eps, norm: str = 'linf',
                    version: str = 'standard', bounds=(0.0, 1.0), batch_size: int = 256,
                    fab_stage: str = 'fab-t', run_checks: bool = True,
                    verbose: bool = False) -> dict:
  """Host-level AutoAttack driver that runs each stage only on the still-robust points.

  Each stage is jitted once per bucket size (the robust subset padded to a power of two,
  at most ``batch_size``, and processed in chunks of ``batch_size``). The targeted stages
  (APGD-T, FAB-T) run one target class at a time, each on the points that are still robust
  after the previous targets (as in the official code; ``stages(split_targets=True)``), so
  their cost falls as points break; each reports as one stage. With ``version='rand'``,
  ``logits_fn`` is the randomised model ``(x, key) -> logits`` and every accuracy is
  measured on single draws (as in the official code).

  ``run_checks`` runs the official code's checks (``autoattack/checks.py``) on the first
  batch, warns (``UserWarning``) for each that fires and reports them in ``checks``:
  ``randomized`` (five evaluations of the same input disagree; not run for 'rand'),
  ``probabilities`` (the outputs look like probabilities, not logits),
  ``zero_gradients`` (number of points whose cross-entropy input gradient is exactly 0)
  and ``square_only`` (Square lowers robust accuracy by more than 0.2% below every other
  stage's: the gradient stages may be masked). ``messages`` lists the warnings. The
  official dynamic-defense check (tracing autograd calls) has no JAX counterpart.

  Returns a dict: ``x_adv`` (np.ndarray), ``clean_accuracy``, ``robust_accuracy`` (after
  all stages: the official cumulative per-stage flags; ``robust_accuracy_reevaluated`` /
  ``success_reevaluated`` evaluate ``x_adv`` once more, a fresh draw for 'rand'), ``stages`` (list of ``{'name', 'robust_accuracy', 'attacked', 'seconds',
  'gradients'}``; robust accuracy after the stage, cumulative), ``gradients`` (total
  gradient evaluations actually spent), ``success`` (np bool [N]), ``checks``.
  ``fab_stage`` as in :func:`auto_attack`.
  """
  bounds = _check(eps, norm, version, bounds, fab_stage)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  common.check_bool(run_checks=run_checks, verbose=verbose)
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  common.check_call(x, y, bounds, logits_fn, randomized=version == 'rand')
  if version == 'rand':
    k_eval, key = jax.random.split(key)
    calls = iter(range(1 << 30))
    eval_fn = lambda z: logits_fn(z, jax.random.fold_in(k_eval, next(calls)))
  else:
    eval_fn = logits_fn
  c = common.as_multiclass(jnp.asarray(eval_fn(x[:1]))).shape[-1]
  flags: dict[str, Any] = {'messages': []}
  if run_checks:
    xb, yb = x[:batch_size], y[:batch_size]
    flags['randomized'] = (None if version == 'rand'
                           else _warn(flags, check_randomized(logits_fn, xb, yb)))
    flags['probabilities'] = _warn(flags, check_range_output(eval_fn, xb))
    n_zero = count_zero_gradients(eval_fn, xb, yb)
    flags['zero_gradients'] = n_zero
    if n_zero:
      _warn(flags, f'there are {n_zero} points with zero gradient! This might lead to '
                   'unreliable evaluation with gradient-based attacks.')
  res = run_stages(logits_fn, x, y, key,
                   stages(eps=eps, norm=norm, version=version, bounds=bounds, num_classes=c,
                          fab_stage=fab_stage, split_targets=True),
                   batch_size=batch_size, verbose=verbose, eval_fn=eval_fn)
  if run_checks:
    acc = {'clean': res['clean_accuracy']}
    acc.update({st['name']: st['robust_accuracy'] for st in res['stages']})
    flags['square_only'] = _warn(flags, check_square_sr(acc))
  res['checks'] = flags
  return res


# --------------------------------------------------------------------------- checks
# The official code's checks (autoattack/checks.py): each returns a message or None.


def _warn(flags, msg):
  if msg is None:
    return False
  flags['messages'].append(msg)
  warnings.warn(msg, UserWarning, stacklevel=3)
  return True


def check_randomized(logits_fn, x, y, n: int = 5, alpha: float = 1e-4):
  """A message if ``n`` evaluations of ``logits_fn`` on the same ``x`` disagree: a
  different number of correct predictions, or L2-normalised outputs more than ``alpha``
  apart (official ``check_randomized``); None otherwise."""
  outs, corr = [], []
  for _ in range(n):
    z = np.asarray(common.as_multiclass(jnp.asarray(logits_fn(x))), np.float64)
    corr.append(int(np.sum(z.argmax(-1) == np.asarray(y))))
    outs.append(z / (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-10))
  diff = max((float(np.linalg.norm(outs[i] - outs[j], axis=-1).max())
              for i in range(n) for j in range(i + 1, n)), default=0.0)
  if any(cc != corr[-1] for cc in corr) or diff > alpha:
    return ("it seems to be a randomized defense (two evaluations of the same input "
            f"differ by {diff:.3g}): use version='rand'.")
  return None


def check_range_output(logits_fn, x, alpha: float = 1e-5):
  """A message if the outputs look like probabilities (in [0, 1], rows summing to 1)."""
  z = np.asarray(common.as_multiclass(jnp.asarray(logits_fn(x))), np.float64)
  if z.max() < 1 + alpha and z.min() > -alpha and np.all(np.abs(z.sum(-1) - 1) < alpha):
    return ('it seems that the output is a probability distribution, please be sure that '
            'the logits are used!')
  return None


def count_zero_gradients(logits_fn, x, y) -> int:
  """The number of points whose cross-entropy gradient w.r.t. the input is exactly 0
  (official ``check_zero_gradients``, there on APGD's gradient)."""
  _, _, g = common.value_and_grad(logits_fn, common.cross_entropy)(x, y)
  return int(np.sum(np.abs(np.asarray(g).reshape((g.shape[0], -1))).sum(-1) == 0))


def check_square_sr(acc: dict, alpha: float = 0.002):
  """A message if Square lowered the robust accuracy by more than ``alpha`` below the
  lowest of the other entries of ``acc`` (``{'clean': .., stage: cumulative robust
  accuracy}``; official ``check_square_sr``)."""
  if 'square' in acc and len(acc) > 2:
    low = min(v for k, v in acc.items() if k != 'square')
    if acc['square'] < low - alpha:
      return (f'Square Attack has decreased the robust accuracy of {low - acc["square"]:.2%}. '
              'This might indicate that the robustness evaluation using AutoAttack is '
              'unreliable. Consider running Square Attack with more iterations and '
              'restarts or an adaptive attack.')
  return None


def run_stages(logits_fn, x, y, key, stage_list, *, batch_size: int = 256,
               verbose: bool = False, eval_fn=None) -> dict:
  """Runs ``(name, attack)`` stages in order, each only on the points still robust.

  Each ``attack(logits_fn, x, y, key)`` must return an ``AttackOutput`` whose
  ``info['success']`` means misclassification of ``y`` (within the attack's budget).
  Consecutive entries with the same name (one target class each, see
  ``stages(split_targets=True)``) report as one stage. Returns what
  :func:`run_auto_attack` returns; a stage's ``attacked_per_target`` lists how many points
  each of its entries attacked. ``eval_fn`` (default ``logits_fn``): ``x -> logits`` for
  the clean and final predictions.
  """
  eval_fn = logits_fn if eval_fn is None else eval_fn
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  n = x.shape[0]
  logits = np.concatenate([np.asarray(eval_fn(x[i:i + batch_size]))
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
  final_logits = np.concatenate([np.asarray(eval_fn(jnp.asarray(x_adv[i:i + batch_size])))
                                 for i in range(0, n, batch_size)])
  reevaluated = np.asarray(common.predict(jnp.asarray(final_logits))) != np.asarray(y)
  # The official figure: the cumulative flags of the stages (for a randomised model, each
  # point's flag is the single draw of the stage that broke it). ``*_reevaluated``: x_adv
  # evaluated once more (a fresh draw for 'rand'; equal to the flags for a deterministic
  # model).
  return {'x_adv': x_adv, 'clean_accuracy': clean_acc,
          'robust_accuracy': float(robust.mean()) if n else float('nan'),
          'success': ~robust, 'stages': report, 'gradients': total_grads,
          'robust_accuracy_reevaluated': float(1.0 - reevaluated.mean()) if n else float('nan'),
          'success_reevaluated': reevaluated}
