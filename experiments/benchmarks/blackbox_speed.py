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
   success rate and median L2. EAD twice: with each library's early abort (Foolbox stops a
   round on the batch's summed loss, jaxsec per example, so the work differs), and with
   ``abort_early=False`` in both, where both run ``binary steps x steps`` gradient steps.
4. **ART** (PyTorch, on a copy of the same weights, ``torch_port``; its logits are checked
   against the JAX model's before anything is timed): ``PyTorchRandomizedSmoothing.certify``
   against jaxsec's ``certify`` (same images, ``sigma``, ``n``, ``n0``, ``alpha`` and forward
   batch; Monte Carlo, so the outcomes are compared as abstain rate, mean radius and
   agreement), and ART's ``SimBA`` (pixel basis) and ``SquareAttack`` (L_inf) against
   jaxsec's ``simba`` and ``square`` on the same ``art_batch`` images with the same budgets.
   ART's SimBA has no radius (it only clips to the box), so jaxsec's runs with an L2 radius
   ``sqrt(D)``, the box's diameter (no projection), and the same step. ART has no SPSA.

Wall times are best-of-``repeats`` after a compile call; the compile time is reported.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as exp_common
from experiments.benchmarks import machine
from experiments.benchmarks import torch_port
from experiments.benchmarks.attack_speed import _block, _strength, _time, _train
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
    return _block(cert)
  t0 = time.perf_counter()
  cert = ours()
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
       'speedup': t_loop / t_ours, **_cert_summary('jaxsec', cert.prediction, cert.radius)}
  print(f'[{NAME}] certify n={cfg.n}: jaxsec {r["jaxsec_seconds_per_image"]:.3f}s/image, '
        f'batch loop {r["loop_seconds_per_image"]:.3f}s/image ({r["speedup"]:.2f}x)')
  return r


def _cert_summary(lib, prediction, radius):
  """Per-image certificates and their abstain rate and mean radius, keyed by ``lib``."""
  pred, rad = np.asarray(prediction).astype(int), np.asarray(radius, np.float64)
  return {f'{lib}_prediction': pred.tolist(), f'{lib}_radius': rad.tolist(),
          f'{lib}_abstain_rate': float(np.mean(pred == smoothing.ABSTAIN)),
          f'{lib}_mean_radius': float(np.mean(rad))}


def _median_l2(label_fn, x, y, x_adv):
  fooled = np.asarray(label_fn(jnp.asarray(x_adv))) != np.asarray(y)
  l2 = np.sqrt(np.sum((np.asarray(x_adv) - np.asarray(x)).reshape(len(y), -1) ** 2, 1))
  return {'success_rate': float(fooled.mean()),
          'median_l2': float(np.median(l2[fooled])) if fooled.any() else float('nan')}


def _x_and_gradients(out):
  """``x_adv`` and, where the attack counts them, the gradient evaluations per example."""
  return out.x_adv, out.info.get('gradients')


def _peers(cfg, logits_fn, x, y, key):
  """jaxsec boundary_attack / ead next to Foolbox's, same model, same hyperparameters."""
  xs, ys = x[:cfg.peer_batch], y[:cfg.peer_batch]
  label_fn = lambda z: jnp.argmax(logits_fn(z), -1).astype(jnp.int32)

  def ead(abort_early):
    atk = attacks.ead(beta=cfg.ead_beta, num_binary_steps=cfg.ead_binary_steps,
                      num_steps=cfg.ead_steps, initial_const=cfg.ead_initial_const,
                      learning_rate=cfg.ead_lr, decision_rule='en', abort_early=abort_early)
    return jax.jit(lambda a, b, k: _x_and_gradients(atk(logits_fn, a, b, k)))
  ours = {
      'boundary': (jax.jit(lambda a, b, k: _x_and_gradients(blackbox.boundary_attack(
          num_steps=cfg.boundary_steps)(label_fn, a, b, k)))),
      'ead': ead(True),
      'ead_no_abort': ead(False),
  }
  res = {'jaxsec': {}, 'foolbox': {}}
  for name, f in ours.items():
    t0 = time.perf_counter()
    xa, grads = _block(f(xs, ys, key))
    first = time.perf_counter() - t0
    t = _time(lambda f=f: _block(f(xs, ys, key)), cfg.peer_repeats)
    res['jaxsec'][name] = {'seconds': t, 'first_call_seconds': first,
                           **_median_l2(label_fn, xs, ys, xa)}
    if grads is not None:
      res['jaxsec'][name]['gradients_per_example'] = float(np.mean(np.asarray(grads)))
  try:
    import foolbox as fb  # pylint: disable=g-import-not-at-top
  except Exception as e:  # noqa: BLE001
    res['foolbox'] = {'error': f'import failed: {type(e).__name__}: {e} '
                               "(pip install -e '.[bench]')"}
    return res
  res['foolbox']['version'] = fb.__version__
  fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  fb_ead = lambda abort_early: fb.attacks.EADAttack(
      binary_search_steps=cfg.ead_binary_steps, steps=cfg.ead_steps,
      initial_stepsize=cfg.ead_lr, regularization=cfg.ead_beta,
      initial_const=cfg.ead_initial_const, decision_rule='EN', abort_early=abort_early)
  makers = {
      'boundary': lambda: fb.attacks.BoundaryAttack(steps=cfg.boundary_steps),
      'ead': lambda: fb_ead(True),
      # No early abort: binary_search_steps x steps gradient steps per example (ead.py).
      'ead_no_abort': lambda: fb_ead(False),
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


ART_NO_SPSA = ('ART has no SPSA attack (art.attacks.evasion: its score-based attacks are ZOO, '
               'SimBA, Square and others; none estimates gradients with SPSA); not run')


def _timed(run, repeats):
  """``(result of the first call, its seconds, best-of-repeats seconds)``; the timed calls
  follow the first (which compiles a jitted program)."""
  t0 = time.perf_counter()
  out = run()
  first = time.perf_counter() - t0
  return out, first, _time(run, repeats)


def _best_of(run, repeats):
  """``(result of the last call, best-of-repeats seconds)``: for ART, which compiles nothing
  (the logit check before it has run the PyTorch model once)."""
  if repeats < 1:
    raise ValueError(f'peer_repeats={repeats}: expected at least 1.')
  def timed():
    t0 = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t0
  calls = [timed() for _ in range(repeats)]
  return calls[-1][0], min(t for _, t in calls)


def _art_certify(cfg, art_rs, model, certify, seed):
  """ART's ``PyTorchRandomizedSmoothing.certify`` on the images ``certify`` (jaxsec's
  section) certified, same ``sigma``, ``n0`` (ART's ``sample_size``), ``n``, ``alpha``,
  forward batch; outcomes compared with jaxsec's."""
  import torch  # pylint: disable=g-import-not-at-top
  rs = art_rs(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
              nb_classes=10, device_type='cpu', sample_size=cfg.n0, scale=cfg.sigma,
              alpha=cfg.alpha)
  xs = torch_port.nchw(certify['x'])

  def go():
    np.random.seed(seed)   # ART draws its noise from numpy's global generator
    return rs.certify(xs, n=cfg.n, batch_size=cfg.certify_batch)
  (pred, rad), t = _best_of(go, cfg.peer_repeats)
  m = xs.shape[0]
  r = {'seconds_per_image': t / m,
       'jaxsec_seconds_per_image': certify['jaxsec_seconds_per_image'],
       'time_ratio': t / m / certify['jaxsec_seconds_per_image'],
       'jaxsec_abstain_rate': certify['jaxsec_abstain_rate'],
       'jaxsec_mean_radius': certify['jaxsec_mean_radius'], **_cert_summary('art', pred, rad)}
  ours_pred, ours_rad = np.asarray(certify['jaxsec_prediction']), np.asarray(
      certify['jaxsec_radius'])
  r['prediction_agreement'] = float(np.mean(np.asarray(pred) == ours_pred))
  r['max_abs_radius_difference'] = float(np.max(np.abs(np.asarray(rad) - ours_rad)))
  print(f'[{NAME}] ART certify n={cfg.n}: {r["seconds_per_image"]:.3f}s/image '
        f'({r["time_ratio"]:.2f}x jaxsec); abstain {r["art_abstain_rate"]:.2f} vs '
        f'{certify["jaxsec_abstain_rate"]:.2f}, mean radius {r["art_mean_radius"]:.3f} vs '
        f'{certify["jaxsec_mean_radius"]:.3f}, same prediction {r["prediction_agreement"]:.2f}')
  return r


def _art_score_attacks(cfg, art_evasion, art_clf, model, logits_fn, x, y, key):
  """ART's SimBA and Square next to jaxsec's on the same images and budgets; ART's queries
  are the rows its estimator sent through the network (counted by a forward hook)."""
  import torch  # pylint: disable=g-import-not-at-top
  xs, ys = x[:cfg.art_batch], y[:cfg.art_batch]
  rows = [0]

  def count(_, inputs):
    rows[0] += int(inputs[0].shape[0])
  clf = lambda m: art_clf(model=m, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                          nb_classes=10, clip_values=(0.0, 1.0), device_type='cpu')
  probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=-1)).eval()   # SimBA reads p
  # On the first layer: ART's wrapper calls the layers of a Sequential one by one.
  hooks = [model[0].register_forward_pre_hook(count)]
  # ART's SimBA only clips to the box: jaxsec's L2 radius sqrt(D) (the box's diameter)
  # never projects, the same threat model; both step cfg.art_simba_step along a pixel.
  no_ball = float(np.sqrt(np.prod(xs.shape[1:])))
  pairs = {
      'simba': (blackbox.simba(eps=no_ball, norm='l2', num_steps=cfg.simba_steps,
                               step_size=cfg.art_simba_step),
                lambda: art_evasion.SimBA(clf(probs), attack='px', max_iter=cfg.simba_steps,
                                          order='random', epsilon=cfg.art_simba_step,
                                          batch_size=1, verbose=False)),
      # jaxsec's budget counts the clean query and the initial stripes: num - 2 iterations.
      'square': (blackbox.square(eps=cfg.eps_linf, num_queries=cfg.square_queries),
                 lambda: art_evasion.SquareAttack(clf(model), norm=np.inf, eps=cfg.eps_linf,
                                                  max_iter=cfg.square_queries - 2, p_init=0.8,
                                                  nb_restarts=1, batch_size=cfg.art_batch,
                                                  verbose=False)),
  }
  out = {}
  x_nchw, y_hot = torch_port.nchw(xs), np.eye(10, dtype=np.float32)[np.asarray(ys)]
  try:
    for name, (ours, make) in pairs.items():
      f = jax.jit(lambda a, b, k, atk=ours: atk(logits_fn, a, b, k))
      res, first, t = _timed(lambda f=f: _block(f(xs, ys, key)), cfg.peer_repeats)
      q = int(np.sum(np.asarray(res.info['queries'])))
      jx = {'seconds': t, 'first_call_seconds': first, 'queries': q,
            'queries_per_second': q / t, **_strength(logits_fn, xs, ys, res.x_adv, True)}
      try:
        atk, xa = make(), {}

        def go(atk=atk, xa=xa):
          np.random.seed(cfg.seed)   # ART's random order / squares: numpy's global generator
          rows[0] = 0
          xa['x'] = atk.generate(x_nchw, y_hot)
          xa['rows'] = rows[0]
        _, t_art = _best_of(go, cfg.peer_repeats)
        x_adv = xa['x'].transpose(0, 2, 3, 1)
        ar = {'seconds': t_art, 'queries': xa['rows'], 'queries_per_second': xa['rows'] / t_art,
              'time_ratio': t_art / t, **_strength(logits_fn, xs, ys, x_adv, True)}
        print(f'[{NAME}] {name} on {len(ys)} images: jaxsec {t:.2f}s ({q} queries, success '
              f'{jx["success_rate"]:.2f}), ART {t_art:.2f}s ({xa["rows"]} queries, success '
              f'{ar["success_rate"]:.2f}): {ar["time_ratio"]:.2f}x')
      except Exception as e:  # noqa: BLE001 -- a peer's failure is recorded, not fatal
        ar = {'error': f'{type(e).__name__}: {e}'}
      out[name] = {'jaxsec': jx, 'art': ar}
  finally:
    for h in hooks:
      h.remove()
  return out


def _art(cfg, params, logits_fn, x, y, key, certify) -> dict[str, Any]:
  """ART on a PyTorch copy of the same weights: certify, SimBA, Square (SPSA: none)."""
  try:
    import art  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    from art.attacks import evasion as art_evasion  # pylint: disable=g-import-not-at-top
    from art.estimators.certification import randomized_smoothing  # pylint: disable=g-import-not-at-top
    from art.estimators.classification import PyTorchClassifier  # pylint: disable=g-import-not-at-top
  except Exception as e:  # noqa: BLE001 -- record any install / import failure
    return {'error': f"import failed: {type(e).__name__}: {e} (pip install -e '.[bench]')"}
  model = torch_port.cnn(params)
  diff = torch_port.check_same_logits(model, logits_fn, x)   # raises on a wrong copy
  res: dict[str, Any] = {'version': art.__version__, 'torch_version': torch.__version__,
         'torch_threads': torch.get_num_threads(), 'max_logit_diff_vs_jax': diff,
         'spsa': ART_NO_SPSA}
  try:
    res['certify'] = _art_certify(cfg, randomized_smoothing.PyTorchRandomizedSmoothing,
                                  model, certify, cfg.seed)
  except Exception as e:  # noqa: BLE001
    res['certify'] = {'error': f'{type(e).__name__}: {e}'}
  res['attacks'] = _art_score_attacks(cfg, art_evasion, PyTorchClassifier, model, logits_fn,
                                      x, y, key)
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
  }
  results['art'] = _art(cfg, params, logits_fn, x, y, key,
                        dict(results['certify'], x=x[:cfg.certify_images]))
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
    label = PEER_LABELS.get(name, name)
    lines.append(f'| {label} | jaxsec | {_f(a["seconds"])} | {_f(a["success_rate"])} | '
                 f'{_f(a["median_l2"], ".3f")} | |')
    if 'seconds' in b:
      lines.append(f'| {label} | foolbox {fb.get("version", "")} | {_f(b["seconds"])} | '
                   f'{_f(b["success_rate"])} | {_f(b["median_l2"], ".3f")} | '
                   f'{_f(b["seconds"] / a["seconds"])}x |')
    else:
      lines.append(f'| {label} | foolbox | - | - | - | {b["error"][:80]} |')
  lines += ['', 'Early abort differs, so the first EAD row compares different amounts of work: '
            'Foolbox (as Carlini & Wagner\'s reference code) ends a round when the '
            "batch's summed loss stalls; jaxsec ends each example's round when its own loss "
            'stalls (results independent of the batch), and the round when all have.']
  na = r['peers']['jaxsec'].get('ead_no_abort', {})
  if 'gradients_per_example' in na:
    lines[-1] += (' Without early abort both take every step: jaxsec counted '
                  f'{na["gradients_per_example"]:.0f} gradient steps per example, Foolbox '
                  f'runs {c["ead_binary_steps"]} x {c["ead_steps"]} (jaxsec also evaluates '
                  'the model once more per step, to judge the new iterate).')
  lines += [''] + _render_art(r['art'], c)
  return '\n'.join(lines) + '\n'


PEER_LABELS = {'ead': 'ead (early abort)', 'ead_no_abort': 'ead (no early abort)'}


def _render_art(a, c) -> list:
  if isinstance(a, str) or 'error' in a:   # a result written before ART ran, or no ART
    return [f'ART: {a if isinstance(a, str) else a["error"]}.']
  lines = [f'ART {a["version"]} (PyTorch {a["torch_version"]}, {a["torch_threads"]} threads) '
           'on a PyTorch copy of the same weights (max |logit difference| '
           f'{a["max_logit_diff_vs_jax"]:.1e}):', '']
  ce = a['certify']
  if 'error' in ce:
    lines += [f'- `certify`: ART failed: {ce["error"][:200]}']
  else:
    lines += [f'- `certify` (same {c["certify_images"]} images, sigma {c["sigma"]}, n = {c["n"]}, '
              f'n0 = {c["n0"]}, alpha {c["alpha"]}, batch {c["certify_batch"]}): ART '
              f'`PyTorchRandomizedSmoothing` {_f(ce["seconds_per_image"], ".3f")} s/image, '
              f'jaxsec {_f(ce["jaxsec_seconds_per_image"], ".3f")} s/image: '
              f'**{_f(ce["time_ratio"])}x**. Monte Carlo outcomes: abstain rate '
              f'{_f(ce["art_abstain_rate"])} (jaxsec {_f(ce["jaxsec_abstain_rate"])}), mean '
              f'radius {_f(ce["art_mean_radius"], ".3f")} (jaxsec '
              f'{_f(ce["jaxsec_mean_radius"], ".3f")}), same prediction on '
              f'{_f(ce["prediction_agreement"])} of the images.']
  lines += [f'- Score-based attacks on the first {c["art_batch"]} images (SimBA: pixel basis, '
            f'{c["simba_steps"]} steps of {c["art_simba_step"]}, no radius, as ART\'s; Square: '
            f'L_inf eps {c["eps_linf"]}, {c["square_queries"]} queries). Queries: jaxsec '
            "counts what an API would bill; ART's are the rows it sent through the network "
            '(its SimBA always sends both directions, its Square re-evaluates the current '
            'points each iteration). Success: the share of the correctly classified images '
            'fooled; median L2 over those (judged by the JAX model).', '',
            '| attack | library | time (s) | queries | queries/s | success | median L2 | '
            'ART / jaxsec time |', '|---|---|---|---|---|---|---|---|']
  for name, e in a['attacks'].items():
    for lib in ('jaxsec', 'art'):
      v = e[lib]
      if 'error' in v:
        lines.append(f'| {name} | {lib} | - | - | - | - | - | {v["error"][:80]} |')
        continue
      ratio = f'{_f(v["time_ratio"])}x' if lib == 'art' else ''
      lines.append(f'| {name} | {lib} | {_f(v["seconds"])} | {v["queries"]} | '
                   f'{_f(v["queries_per_second"], ",.0f")} | {_f(v["success_rate"])} | '
                   f'{_f(v["median_l2"], ".3f")} | {ratio} |')
  lines += ['', f'SPSA: {a["spsa"]}.']
  return lines


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
  whys = {'ead': "; Foolbox aborts on the batch's summed loss, jaxsec per example",
          'ead_no_abort': '; no early abort: the same gradient steps'}
  for name in ('boundary', 'ead', 'ead_no_abort'):
    if 'seconds' in fb.get(name, {}) and name in ours:
      rows.append((f'foolbox/{name}: peer time / jaxsec time ({dev}, same JAX model'
                   f'{whys.get(name, "")})',
                   f'{fb[name]["seconds"] / ours[name]["seconds"]:.2f}x' + note))
  a = r.get('art')
  if isinstance(a, dict) and 'certify' in a:
    if 'time_ratio' in a['certify']:
      rows.append((f'ART certify, n = {r["config"]["n"]}: per-image time ART / jaxsec ({dev}, '
                   'PyTorch copy of the weights)', f'{a["certify"]["time_ratio"]:.2f}x' + note))
    for name, e in a['attacks'].items():
      if 'time_ratio' in e['art']:
        rows.append((f'ART {name}: time ART / jaxsec, same images and budget ({dev})',
                     f'{e["art"]["time_ratio"]:.2f}x' + note))
  return rows
