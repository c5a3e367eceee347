"""Robustness evaluation: eps sweeps, perturbation statistics, and automatic sanity checks.

:func:`robustness_report` is the entry point: for a model ``logits_fn`` and labelled data it
sweeps an untargeted attack over a grid of eps (one ``jax.vmap`` over eps, one compilation,
when the attack allows traced eps), and reports per eps

* robust accuracy (correct at ``x_adv``) and attack success rate (fraction of the clean-
  correct points that the attack misclassifies);
* minimal-perturbation statistics of the successful examples: mean / median L0, L2, L_inf
  of ``x_adv - x`` (for minimum-norm attacks these are the quantities of their papers);
* gradient (or query) counts reported by the attack;

and runs the sanity checks of Carlini et al., "On Evaluating Adversarial Robustness"
(arXiv:1902.06705, 2019): success grows with eps; it reaches ~100% for an unbounded
budget (the whole input box); an iterative attack is at least as strong as a single-step
one; more random restarts never hurt. Each check returns ``{'pass': bool, ...details}``.
A failed check means the evaluation (not the model) is suspect: gradient masking, a bug,
too few steps.

:func:`run_attack` (and the general :func:`map_batches` under it) is the one batched runner
the studies use: an attack over a data set in fixed-size batches, compiled once, with a
documented per-batch key schedule and progress lines with rate and ETA.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec import progress as progress_lib
from jaxsec.attacks import evasion
from jaxsec.attacks.evasion import common

AttackMaker = Callable[[Any], Callable]
CHECKS = ('success_monotone_in_eps', 'unbounded_eps_success',
          'iterative_at_least_single_step', 'restarts_never_hurt')


def perturbation_stats(x, x_adv, mask=None) -> dict:
  """Mean and median L0 / L2 / L_inf of ``x_adv - x`` over the examples where ``mask``.

  L0 counts coordinates that changed at all (exact inequality). Returns NaN statistics
  when no example is selected.
  """
  x = np.asarray(x, np.float64)
  x_adv = np.asarray(x_adv, np.float64)
  d = (x_adv - x).reshape((x.shape[0], -1))
  if mask is None:
    mask = np.ones(x.shape[0], bool)
  mask = np.asarray(mask, bool)
  norms = {'l0': np.sum(d != 0, axis=1).astype(np.float64),
           'l2': np.sqrt(np.sum(d * d, axis=1)),
           'linf': np.max(np.abs(d), axis=1) if d.shape[1] else np.zeros(d.shape[0])}
  out: dict[str, Any] = {}
  for k, v in norms.items():
    sel = v[mask]
    out[k] = {'mean': float(sel.mean()) if sel.size else float('nan'),
              'median': float(np.median(sel)) if sel.size else float('nan')}
  out['count'] = int(mask.sum())
  return out


def attack_metrics(logits_fn, x, y, x_adv, info: dict | None = None,
                   clean_correct=None) -> tuple[dict, np.ndarray]:
  """Robust accuracy, success rate (among clean-correct points), perturbation stats.

  Returns ``(metrics, fooled)``: the metrics dict and the boolean mask of the clean-correct
  examples that ``x_adv`` misclassifies.
  """
  y = np.asarray(y)
  if clean_correct is None:
    clean_correct = np.asarray(common.predict(logits_fn(x))) == y
  adv_pred = np.asarray(common.predict(logits_fn(jnp.asarray(x_adv))))
  fooled = clean_correct & (adv_pred != y)
  n_correct = int(clean_correct.sum())
  out = {'robust_accuracy': float(np.mean(adv_pred == y)),
         'success_rate': float(fooled.sum() / n_correct) if n_correct else float('nan'),
         'perturbation': perturbation_stats(x, x_adv, fooled)}
  if info:
    for k in ('gradients', 'queries'):
      if k in info:
        out[k] = float(np.mean(np.asarray(info[k])))
  return out, fooled


def sweep(logits_fn, x, y, key, make_attack: AttackMaker, eps: Sequence[float], *,
          use_vmap: bool = True):
  """Runs ``make_attack(eps_i)(logits_fn, x, y, key)`` for every eps.

  With ``use_vmap`` the whole grid is one ``jax.jit(jax.vmap(...))`` over eps (one
  compilation); if the attack cannot take a traced eps this falls back to a loop of jitted
  calls. Returns ``(x_adv [E, B, ...], infos (list of dicts of np arrays), vmapped: bool)``.
  """
  eps_arr = jnp.asarray(np.asarray(eps, np.float32))

  def one(e):
    out = make_attack(e)(logits_fn, x, y, key)
    return out.x_adv, out.info

  if use_vmap:
    try:
      xs, info = jax.jit(jax.vmap(one))(eps_arr)
      infos = [{k: np.asarray(v[i]) for k, v in info.items()} for i in range(len(eps))]
      return np.asarray(xs), infos, True
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError,
            TypeError, ValueError):
      pass
  xs, infos = [], []
  for e in eps:
    out = jax.jit(make_attack(float(e)), static_argnums=0)(logits_fn, x, y, key)
    xs.append(np.asarray(out.x_adv))
    infos.append({k: np.asarray(v) for k, v in out.info.items()})
  return np.stack(xs), infos, False


def _batch_leaf(name, o, rows):
  o = np.asarray(o)
  if o.ndim == 0:
    return o
  if o.shape[0] != rows:
    raise ValueError(f'output {name} has shape {o.shape}; expected a leading batch axis of '
                     f'{rows} (or a scalar).')
  return o


def map_batches(fn: Callable, arrays: Sequence[Any], *, batch_size: int,
                key: jax.Array | None = None, fold_key: bool = True, pad: bool = True,
                progress: progress_lib.ProgressArg = None, jit: bool = True) -> Any:
  """``fn`` over leading-axis batches of ``arrays``; the outputs concatenated (numpy).

  Args:
    fn: ``fn(*batch) -> pytree`` (``fn(*batch, key_b)`` when ``key`` is given); jitted once
      here unless ``jit=False``.
    arrays: arrays sharing their leading (example) axis.
    batch_size: examples per call; a set of ``n <= batch_size`` examples is one call of
      size ``n``.
    key: PRNG key. Key schedule: the batch starting at example ``i`` gets
      ``jax.random.fold_in(key, i)`` (``fold_key=False``: ``key`` itself for every batch).
      Results therefore depend on ``batch_size`` for randomised attacks, never on anything
      else (not on padding or on which batches ran before).
    fold_key: see ``key``.
    pad: pad the last batch, when shorter, to the size of the others by repeating its last
      example (one compiled shape; the padded rows are dropped). ``pad=False`` runs it at
      its own size (a second compilation). For per-example computations the kept rows are
      the same either way, up to the random draws of attacks whose noise depends on the
      batch shape.
    progress: None (silent), a label (logs ``[label] batch i/N, rate, ETA`` through
      ``absl.logging``), a :class:`jaxsec.progress.Progress`, or ``progress(done, total)``.
    jit: wrap ``fn`` in ``jax.jit``.

  Returns:
    The pytree of ``fn``'s output with every leaf concatenated over batches; a scalar leaf
    becomes one value per batch (``[num_batches]``; a ``ValueError`` on a padded batch,
    where the padding would count in it). Any other leaf without the batch axis is a
    ``ValueError``.
  """
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  if not arrays:
    raise ValueError('arrays=() must hold at least one array.')
  n = int(np.shape(arrays[0])[0]) if np.ndim(arrays[0]) else 0
  for a in arrays:
    if np.ndim(a) == 0 or np.shape(a)[0] != n:
      raise ValueError(f'arrays have leading sizes {[np.shape(a)[:1] for a in arrays]}; '
                       'expected one shared example axis.')
  if n == 0:
    raise ValueError('arrays hold 0 examples; expected at least one.')
  size = min(batch_size, n)
  call = jax.jit(fn) if jit else fn
  starts = range(0, n, size)
  update = progress_lib.make(progress, len(starts), 'batch')
  outs = []
  for i in starts:
    parts = [np.asarray(a[i:i + size]) for a in arrays]
    m = parts[0].shape[0]
    if pad and m < size:
      parts = [np.concatenate([p, np.repeat(p[-1:], size - m, axis=0)]) for p in parts]
    args = [jnp.asarray(p) for p in parts]
    if key is not None:
      args.append(jax.random.fold_in(key, i) if fold_key else key)
    out = call(*args)
    rows = parts[0].shape[0]
    out = jax.tree_util.tree_map_with_path(
        lambda path, o, rows=rows: _batch_leaf(jax.tree_util.keystr(path), o, rows), out)
    if rows > m and any(o.ndim == 0 for o in jax.tree.leaves(out)):
      raise ValueError(f'fn returned a scalar on a batch padded from {m} to {rows} rows '
                       '(the padding would count in it); return per-example values or '
                       'pass pad=False.')
    outs.append(jax.tree.map(lambda o, m=m: o if o.ndim == 0 else o[:m], out))
    if update:
      update()
  return jax.tree.map(lambda *o: np.stack(o) if o[0].ndim == 0 else np.concatenate(o), *outs)


def run_attack(attack: Callable, logits_fn: Callable, x: Any, y: Any, key: jax.Array, *,
               batch_size: int, fold_key: bool = True, pad: bool = True,
               progress: progress_lib.ProgressArg = None) -> tuple[np.ndarray, dict]:
  """``attack(logits_fn, x_b, y_b, key_b)`` over ``x`` in batches, compiled once.

  The batched runner every study uses (robustness sweeps, attack tables, defenses). The
  per-batch key and the last-batch padding follow :func:`map_batches` (batch at example
  ``i``: ``fold_in(key, i)``; the last batch padded to the batch size). ``logits_fn`` is
  closed over: its parameters are constants of the compiled program.

  Returns:
    ``(x_adv, info)``: numpy ``x_adv`` of the whole set and the attack's per-example info
    arrays (those with a leading batch axis) concatenated; per-batch entries (a scalar, a
    fitted patch) are left out.
  """
  def one(xb, yb, kb):
    out = attack(logits_fn, xb, yb, kb)
    b = xb.shape[0]
    info = {k: v for k, v in out.info.items()
            if all(jnp.ndim(l) >= 1 and jnp.shape(l)[0] == b for l in jax.tree.leaves(v))}
    return out.x_adv, info
  return map_batches(one, (x, y), batch_size=batch_size, key=key, fold_key=fold_key,
                     pad=pad, progress=progress)


def _max_eps(norm: str, bounds, dim: int) -> float:
  """An eps whose ball contains the whole box around any point of it."""
  w = bounds[1] - bounds[0]
  return {'linf': w, 'l2': w * math.sqrt(dim), 'l1': w * dim}[norm]


def robustness_report(logits_fn, x, y, key, *, eps: Sequence[float], norm: str = 'linf',
                      bounds=(0.0, 1.0), make_attack: AttackMaker | None = None,
                      num_steps: int = 20, restarts: int = 3,
                      checks: Sequence[str] | None = CHECKS,
                      unbounded_success_threshold: float = 0.99, tolerance: float = 0.02,
                      use_vmap: bool = True) -> dict:
  """Sweeps an untargeted attack over ``eps`` and runs the Carlini et al. 2019 checks.

  Args:
    logits_fn: the model ``x -> logits``.
    x, y: a batch and its true labels (evaluate a test set in batches and average).
    key: PRNG key.
    eps: the grid of budgets (non-negative, increasing).
    norm: 'linf', 'l2' or 'l1' (the threat model of the default attacks and the checks).
    bounds: the input box.
    make_attack: ``eps -> attack``; default ``pgd(eps=eps, norm=norm, num_steps=num_steps,
      bounds=bounds)`` (step 2.5 eps / num_steps, random start).
    num_steps: steps of the default PGD and of the PGD used by the checks.
    restarts: restarts for the "more restarts never hurt" check (compared with 1).
    checks: which sanity checks to run (default: all of :data:`CHECKS`; None or () for
      none). Each but the first costs one or two more sweeps.
    unbounded_success_threshold: success needed at the unbounded eps (~100%).
    tolerance: slack, as a fraction of the clean-correct examples, allowed in the
      monotonicity and iterative-vs-single-step checks (default 2%: an attack from a random
      start can miss an example that FGSM from the clean point gets, and the eps points of
      the sweep use independent random starts). The restart check is exact per example
      (restart i uses the same key for any number of restarts), so it needs none.
    use_vmap: sweep the grid with one vmap (falls back to a loop when impossible).

  Returns:
    A JSON-ready dict: ``eps``, ``clean_accuracy``, ``robust_accuracy`` [E],
    ``success_rate`` [E], ``perturbation`` (per eps: l0 / l2 / linf mean and median of the
    successful examples), ``gradients`` [E] (mean per example, where reported),
    ``vmapped``, ``checks`` (name -> ``{'pass': bool, ...}``) and ``all_checks_pass``.
  """
  _checks.check_choice('norm', norm, common.NORMS)
  bounds = _checks.check_bounds(bounds)
  eps = [float(_checks.check_float('eps', e, minimum=0.0, allow_traced=False)) for e in eps]
  if not eps:
    raise ValueError('eps=[] must contain at least one budget.')
  if any(b < a for a, b in zip(eps, eps[1:], strict=False)):
    raise ValueError(f'eps={eps} must be non-decreasing.')
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  restarts = _checks.check_int('restarts', restarts, minimum=1)
  _checks.check_probability('unbounded_success_threshold', unbounded_success_threshold)
  _checks.check_probability('tolerance', tolerance)
  todo = () if checks is None else tuple(checks)
  for c in todo:
    _checks.check_choice('checks', c, CHECKS)
  common.check_call(x, y, bounds)

  def default_pgd(e, r=1):
    return evasion.pgd(eps=e, norm=norm, num_steps=num_steps, restarts=r, bounds=bounds)
  make = make_attack if make_attack is not None else default_pgd

  y_np = np.asarray(y)
  clean_correct = np.asarray(common.predict(logits_fn(x))) == y_np
  keys = jax.random.split(key, 4)

  def evaluate_grid(maker, grid, k):
    xs, infos, vm = sweep(logits_fn, x, y, k, maker, grid, use_vmap=use_vmap)
    rows = [attack_metrics(logits_fn, x, y, xs[i], infos[i], clean_correct)
            for i in range(len(grid))]
    return [r[0] for r in rows], [r[1] for r in rows], vm

  # The unbounded-eps check rides along in the main sweep (same program, one more eps).
  big = _max_eps(norm, bounds, int(np.prod(x.shape[1:])))
  with_big = 'unbounded_eps_success' in todo
  rows, fooled, vm = evaluate_grid(make, eps + [big] if with_big else eps, keys[0])
  big_row = None
  if with_big:
    big_row, rows, fooled = rows[-1], rows[:-1], fooled[:-1]
  report: dict[str, Any] = {
      'eps': eps, 'norm': norm, 'num_examples': int(len(y_np)),
      'clean_accuracy': float(clean_correct.mean()),
      'robust_accuracy': [r['robust_accuracy'] for r in rows],
      'success_rate': [r['success_rate'] for r in rows],
      'perturbation': [r['perturbation'] for r in rows],
      'vmapped': vm,
  }
  for k in ('gradients', 'queries'):
    if all(k in r for r in rows):
      report[k] = [r[k] for r in rows]
  if not todo:
    return report
  tol = tolerance + 1e-9
  results: dict[str, dict[str, Any]] = {}
  sr = report['success_rate']
  if 'success_monotone_in_eps' in todo:
    drops = [sr[i] - sr[i + 1] for i in range(len(sr) - 1)]
    results['success_monotone_in_eps'] = {
        'pass': bool(all(d <= tol for d in drops)), 'success_rate': sr,
        'largest_drop': float(max(drops)) if drops else 0.0}

  if big_row is not None:
    results['unbounded_eps_success'] = {
        'pass': bool(big_row['success_rate'] >= unbounded_success_threshold),
        'eps': big, 'success_rate': big_row['success_rate'],
        'threshold': unbounded_success_threshold}

  if 'iterative_at_least_single_step' in todo:
    # The attack under evaluation (iterative) against single-step FGM of the same norm.
    single = lambda e: evasion.fgm(eps=e, norm=norm, bounds=bounds)
    s_rows, _, _ = evaluate_grid(single, eps, keys[2])
    ss_sr = [r['success_rate'] for r in s_rows]
    results['iterative_at_least_single_step'] = {
        'pass': bool(all(a >= b - tol for a, b in zip(sr, ss_sr, strict=True))),
        'iterative_success_rate': sr, 'single_step_success_rate': ss_sr}

  if 'restarts_never_hurt' in todo:
    # With the default attack the main sweep *is* the 1-restart run (same key).
    if make_attack is None:
      r1, f1 = rows, fooled
    else:
      r1, f1, _ = evaluate_grid(lambda e: default_pgd(e, 1), eps, keys[0])
    rr, fr, _ = evaluate_grid(lambda e: default_pgd(e, restarts), eps, keys[0])
    lost = [int(np.sum(a & ~b)) for a, b in zip(f1, fr, strict=True)]
    results['restarts_never_hurt'] = {
        'pass': bool(all(l == 0 for l in lost) and all(
            b['success_rate'] >= a['success_rate'] - 1e-12 for a, b in zip(r1, rr, strict=True))),
        'restarts': restarts, 'success_rate_1': [r['success_rate'] for r in r1],
        f'success_rate_{restarts}': [r['success_rate'] for r in rr],
        'examples_lost': lost}
  report['checks'] = results
  report['all_checks_pass'] = bool(all(c['pass'] for c in results.values()))
  return report
