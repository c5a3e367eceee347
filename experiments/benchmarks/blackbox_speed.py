r"""Benchmark: score-based attack throughput, ``certify`` vs a batch loop, Foolbox peers.

    python -m experiments.run --config=experiments/configs/benchmarks/blackbox_speed.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/benchmarks/blackbox_speed.py:smoke --workdir=/tmp/s

Three measurements on the reference CNN (``models.get('cnn')``, trained briefly on FMNIST),
all in one run on one machine:

1. **Queries per second** of each score-based attack (SPSA, NES, SimBA, Square, Bandits)
   through a jitted ``query_fn`` on a batch of ``batch`` images: the queries the attack
   counts (``info['queries']``, what an API would bill) over the wall time of the jitted
   attack. The compute limit is the forward throughput of the same jitted model on a batch
   of the size the attack sends per call (``batch x points per call``); the ratio counted
   queries/s / limit images/s is at most 1 and says how much of the machine the attack
   turns into useful queries (finished examples stay in the compiled batch, so early
   successes lower it; ``eps`` is small so that few examples finish early).
2. **certify** (Cohen et al.) with ``n = 10,000`` noise draws per image: ``jaxsec``'s
   vectorised ``smoothing.certify`` against the loop of the authors' ``core.py`` (and ART's
   ``RandomizedSmoothing``): per image, ``ceil(n / batch)`` calls of the same jitted model on
   ``x + sigma * noise`` with host-side ``bincount``. Both use the same model, ``n``, ``n0``,
   ``alpha`` and forward batch.
3. **Peers on the same model function**: Foolbox 3's ``BoundaryAttack`` and ``EADAttack``
   (its JAX backend, installed by ``pip install -e '.[bench]'``) against jaxsec's
   ``boundary_attack`` and ``ead`` with the same steps and hyperparameters: wall time,
   success rate and median L2. ART has no JAX estimator, so its randomized smoothing and
   attacks would need a PyTorch or TensorFlow copy of the model; not run here (recorded).

Wall times are best-of-``repeats`` after a compile call; the compile time is reported.
"""
from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as exp_common
from experiments.benchmarks import machine
from experiments.benchmarks.attack_speed import _block, _time, _train
from jaxsec import attacks
from jaxsec import data
from jaxsec import io as jio
from jaxsec import models
from jaxsec.attacks import blackbox
from jaxsec.defenses.inference import smoothing

NAME = 'blackbox_speed'


def _score_attacks(cfg):
  """name -> (attack, points per query call per example)."""
  e, e2 = cfg.eps_linf, cfg.eps_l2
  return {
      'spsa': (blackbox.spsa(eps=e, num_steps=cfg.spsa_steps, num_samples=cfg.spsa_samples),
               2 * cfg.spsa_samples),
      'nes': (blackbox.nes(eps=e, num_steps=cfg.nes_steps, num_samples=cfg.nes_samples),
              2 * cfg.nes_samples),
      'simba': (blackbox.simba(eps=e2, num_steps=cfg.simba_steps), 1),
      'square': (blackbox.square(eps=e, num_queries=cfg.square_queries), 1),
      'bandits': (blackbox.bandits(eps=e, num_steps=cfg.bandits_steps), 2),
  }


def _forward_rate(logits_fn, x, m, repeats):
  """Images per second of the jitted model on a batch of ``len(x) * m`` images."""
  xb = jnp.repeat(x, m, axis=0)
  f = jax.jit(logits_fn)
  _block(f(xb))
  return xb.shape[0] / _time(lambda: _block(f(xb)), repeats)


def _queries_per_second(cfg, logits_fn, x, y, key):
  out, rates = {}, {}
  for name, (atk, m) in _score_attacks(cfg).items():
    if name not in cfg.score_attacks:
      continue
    if m not in rates:
      rates[m] = _forward_rate(logits_fn, x, m, cfg.repeats)
    f = jax.jit(lambda a, b, k, atk=atk: atk(logits_fn, a, b, k))
    t0 = time.perf_counter()
    res = _block(f(x, y, key))
    compile_s = time.perf_counter() - t0
    t = _time(lambda f=f: _block(f(x, y, key)), cfg.repeats)
    q = int(np.sum(np.asarray(res.info['queries'])))
    qps = q / t
    out[name] = {'seconds': t, 'compile_seconds': compile_s, 'queries': q,
                 'queries_per_second': qps, 'points_per_call': m,
                 'limit_images_per_second': rates[m],
                 'ratio_to_limit': qps / rates[m],
                 'success_rate': float(np.mean(np.asarray(res.info['success'])))}
    print(f'[{NAME}] {name}: {qps:,.0f} queries/s ({q} queries in {t:.2f}s); forward limit '
          f'{rates[m]:,.0f} images/s at {m} points/call; ratio {qps / rates[m]:.2f}')
  return out


def _certify_loop(predict_fn, x, key, *, sigma, n0, n, alpha, batch):
  """Cohen et al.'s ``core.Smooth.certify`` loop (as ART's): per image, host batches."""
  def counts(xi, num, k):
    c = np.zeros(10, np.int64)
    remaining, i = num, 0
    while remaining > 0:
      b = min(batch, remaining)
      preds = np.asarray(predict_fn(xi, jax.random.fold_in(k, i), b))
      c += np.bincount(preds[:b], minlength=10)
      remaining -= b
      i += 1
    return c
  c0s, cs = [], []
  for j in range(x.shape[0]):
    k0, k1 = jax.random.split(jax.random.fold_in(key, j))
    c0s.append(counts(x[j], n0, k0))
    cs.append(counts(x[j], n, k1))
  return smoothing.certify_from_counts(np.stack(c0s), np.stack(cs), sigma=sigma, alpha=alpha)


def _certify(cfg, logits_fn, x, key):
  xs = x[:cfg.certify_images]
  kw = dict(sigma=cfg.sigma, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha)

  def ours():
    cert, _ = smoothing.certify(logits_fn, xs, key, batch_size=cfg.certify_batch, **kw)
    return _block(cert.radius)
  t0 = time.perf_counter()
  ours()
  first_ours = time.perf_counter() - t0
  t_ours = _time(ours, cfg.repeats)

  @jax.jit
  def noisy_predict(xi, k):
    noise = jax.random.normal(k, (cfg.certify_batch,) + xi.shape, xi.dtype) * cfg.sigma
    return jnp.argmax(logits_fn(xi[None] + noise), -1)
  # One compiled shape, as the authors' loop on a fixed batch (the last batch is sliced).
  predict_fn = lambda xi, k, b: noisy_predict(xi, k)

  def loop():
    cert, _ = _certify_loop(predict_fn, xs, key, batch=cfg.certify_batch, **kw)
    return cert.radius
  t0 = time.perf_counter()
  loop()
  first_loop = time.perf_counter() - t0
  t_loop = _time(loop, cfg.repeats)
  r = {'images': int(xs.shape[0]), 'n': cfg.n, 'n0': cfg.n0, 'batch': cfg.certify_batch,
       'jaxsec_seconds_per_image': t_ours / xs.shape[0],
       'loop_seconds_per_image': t_loop / xs.shape[0],
       'jaxsec_first_call_seconds': first_ours, 'loop_first_call_seconds': first_loop,
       'speedup': t_loop / t_ours}
  print(f'[{NAME}] certify n={cfg.n}: jaxsec {r["jaxsec_seconds_per_image"]:.3f}s/image, '
        f'batch loop {r["loop_seconds_per_image"]:.3f}s/image ({r["speedup"]:.2f}x)')
  return r


def _median_l2(label_fn, x, y, x_adv):
  fooled = np.asarray(label_fn(jnp.asarray(x_adv))) != np.asarray(y)
  l2 = np.sqrt(np.sum((np.asarray(x_adv) - np.asarray(x)).reshape(len(y), -1) ** 2, 1))
  return {'success_rate': float(fooled.mean()),
          'median_l2': float(np.median(l2[fooled])) if fooled.any() else float('nan')}


def _peers(cfg, logits_fn, x, y, key):
  """jaxsec boundary_attack / ead next to Foolbox's, same model, same hyperparameters."""
  xs, ys = x[:cfg.peer_batch], y[:cfg.peer_batch]
  label_fn = lambda z: jnp.argmax(logits_fn(z), -1).astype(jnp.int32)
  ours = {
      'boundary': (jax.jit(lambda a, b, k: blackbox.boundary_attack(
          num_steps=cfg.boundary_steps)(label_fn, a, b, k).x_adv)),
      'ead': (jax.jit(lambda a, b, k: attacks.ead(
          beta=cfg.ead_beta, num_binary_steps=cfg.ead_binary_steps, num_steps=cfg.ead_steps,
          initial_const=cfg.ead_initial_const, learning_rate=cfg.ead_lr,
          decision_rule='en')(logits_fn, a, b, k).x_adv)),
  }
  res = {'jaxsec': {}, 'foolbox': {}}
  for name, f in ours.items():
    t0 = time.perf_counter()
    xa = _block(f(xs, ys, key))
    first = time.perf_counter() - t0
    t = _time(lambda f=f: _block(f(xs, ys, key)), cfg.peer_repeats)
    res['jaxsec'][name] = {'seconds': t, 'first_call_seconds': first,
                           **_median_l2(label_fn, xs, ys, xa)}
  try:
    import foolbox as fb  # pylint: disable=g-import-not-at-top
  except Exception as e:  # noqa: BLE001
    res['foolbox'] = {'error': f'import failed: {type(e).__name__}: {e} '
                               "(pip install -e '.[bench]')"}
    return res
  res['foolbox']['version'] = fb.__version__
  fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  makers = {
      'boundary': lambda: fb.attacks.BoundaryAttack(steps=cfg.boundary_steps),
      'ead': lambda: fb.attacks.EADAttack(
          binary_search_steps=cfg.ead_binary_steps, steps=cfg.ead_steps,
          initial_stepsize=cfg.ead_lr, regularization=cfg.ead_beta,
          initial_const=cfg.ead_initial_const, decision_rule='EN', abort_early=True),
  }
  for name, make in makers.items():
    try:
      atk, out = make(), {}

      def run(atk=atk, out=out):
        _, clipped, _ = atk(fmodel, xs, ys, epsilons=None)
        out['x'] = _block(clipped)
      t0 = time.perf_counter()
      run()
      first = time.perf_counter() - t0
      t = _time(run, cfg.peer_repeats)
      res['foolbox'][name] = {'seconds': t, 'first_call_seconds': first,
                              **_median_l2(label_fn, xs, ys, out['x'])}
    except Exception as e:  # noqa: BLE001
      res['foolbox'][name] = {'error': f'{type(e).__name__}: {e}'}
  for name in makers:
    a, b = res['jaxsec'][name], res['foolbox'].get(name, {})
    if 'seconds' in b:
      print(f'[{NAME}] {name}: jaxsec {a["seconds"]:.2f}s (median L2 {a["median_l2"]:.3f}), '
            f'foolbox {b["seconds"]:.2f}s (median L2 {b["median_l2"]:.3f}): '
            f'{b["seconds"] / a["seconds"]:.2f}x')
  return res


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  info = machine.require_idle(cfg.max_load_per_cpu)
  key = jax.random.key(cfg.seed)
  t0 = time.perf_counter()
  model, params = _train(cfg, key)
  train_s = time.perf_counter() - t0
  logits_fn = models.logits_fn(model, params)
  if cfg.dataset == 'synthetic':
    rng = np.random.default_rng(1)
    xt = rng.uniform(size=(cfg.batch, 28, 28, 1)).astype(np.float32)
    yt = rng.integers(0, 10, size=cfg.batch).astype(np.int32)
  else:
    xt, yt = data.load(cfg.dataset, 'test')
  x, y = jnp.asarray(xt[:cfg.batch]), jnp.asarray(yt[:cfg.batch])
  clean = float(np.mean(np.asarray(jnp.argmax(logits_fn(x), -1)) == np.asarray(y)))
  results = {
      'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
      'train_seconds': train_s, 'clean_accuracy_batch': clean,
      'score_based': _queries_per_second(cfg, logits_fn, x, y, key),
      'certify': _certify(cfg, logits_fn, x, key),
      'peers': _peers(cfg, logits_fn, x, y, key),
      'art': 'not run: ART has no JAX estimator (its smoothing and attacks need a PyTorch '
             'or TensorFlow copy of the model)',
  }
  results['machine'] = machine.finish(info)
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def _f(v, spec='.2f'):
  return format(v, spec) if isinstance(v, (int, float)) and not math.isnan(v) else '-'


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = [f'### Black-box attack and certification speed ({r["machine"]["jax_backend"]}; '
           f'`{exp_common.command("benchmarks." + NAME, r["variant"])}`)', '',
           machine.loaded_note(r['machine']),
           f'Reference CNN (clean accuracy on the batch {_f(r["clean_accuracy_batch"])}), '
           f'batch {c["batch"]}, L_inf eps {c["eps_linf"]} (SimBA: L2 {c["eps_l2"]}). '
           'Queries/s: the queries the attack counts over its jitted wall time; limit: '
           'images/s of the same jitted model at the attack\'s points per call.', '',
           '| attack | queries | time (s) | queries/s | limit images/s | ratio | success |',
           '|---|---|---|---|---|---|---|']
  for name, e in r['score_based'].items():
    lines.append(f'| {name} | {e["queries"]} | {_f(e["seconds"])} | '
                 f'{_f(e["queries_per_second"], ",.0f")} | '
                 f'{_f(e["limit_images_per_second"], ",.0f")} | {_f(e["ratio_to_limit"])} | '
                 f'{_f(e["success_rate"])} |')
  ce = r['certify']
  lines += ['', f'`certify` (n = {ce["n"]}, n0 = {ce["n0"]}, forward batch {ce["batch"]}, '
            f'{ce["images"]} images): jaxsec {_f(ce["jaxsec_seconds_per_image"], ".3f")} '
            f's/image, the authors\' per-image batch loop on the same jitted model '
            f'{_f(ce["loop_seconds_per_image"], ".3f")} s/image: **{_f(ce["speedup"])}x**.',
            '', f'Peers on the same JAX model function (batch {c["peer_batch"]}; Boundary '
            f'{c["boundary_steps"]} steps, EAD {c["ead_binary_steps"]} x {c["ead_steps"]} '
            'steps):', '', '| attack | library | time (s) | success | median L2 | peer / '
            'jaxsec time |', '|---|---|---|---|---|---|']
  fb = r['peers']['foolbox']
  for name, a in r['peers']['jaxsec'].items():
    b = fb.get(name, {'error': fb.get('error', 'n/a')})
    lines.append(f'| {name} | jaxsec | {_f(a["seconds"])} | {_f(a["success_rate"])} | '
                 f'{_f(a["median_l2"], ".3f")} | |')
    if 'seconds' in b:
      lines.append(f'| {name} | foolbox {fb.get("version", "")} | {_f(b["seconds"])} | '
                   f'{_f(b["success_rate"])} | {_f(b["median_l2"], ".3f")} | '
                   f'{_f(b["seconds"] / a["seconds"])}x |')
    else:
      lines.append(f'| {name} | foolbox | - | - | - | {b["error"][:80]} |')
  lines += ['', 'Early abort differs, so EAD times compare different amounts of work: Foolbox '
            '(as Carlini & Wagner\'s reference code) ends a round when the '
            "batch's summed loss stalls; jaxsec ends each example's round when its own loss "
            'stalls (results independent of the batch), and the round when all have.',
            '', f'ART: {r["art"]}.']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README rows: score-based queries/s against the forward limit, certify against the batch
  loop, and the Foolbox peers."""
  note = machine.loaded_note(r['machine'])
  dev = r['machine']['jax_backend']
  ratios = ', '.join(f'{n} {e["ratio_to_limit"]:.2f}' for n, e in r['score_based'].items())
  rows = [(f'Score-based attacks, batch {r["config"]["batch"]}: queries/s over the forward-pass '
           f'limit ({dev})', ratios + note),
          (f'Randomized-smoothing certify, n = {r["certify"]["n"]}: per-image time of the '
           f"authors' batch loop / jaxsec ({dev})", f'{r["certify"]["speedup"]:.2f}x' + note)]
  fb, ours = r['peers'].get('foolbox', {}), r['peers']['jaxsec']
  for name in ('boundary', 'ead'):
    if 'seconds' in fb.get(name, {}):
      why = ("; Foolbox aborts on the batch's summed loss, jaxsec per example"
             if name == 'ead' else '')
      rows.append((f'foolbox/{name}: peer time / jaxsec time ({dev}, same JAX model{why})',
                   f'{fb[name]["seconds"] / ours[name]["seconds"]:.2f}x' + note))
  return rows
