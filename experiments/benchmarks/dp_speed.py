r"""DP-SGD step time over non-private step time: jaxsec (vmap, ghost) vs jax_privacy and Opacus.

    python -m experiments.run --config=experiments/configs/benchmarks/dp_speed.py --workdir=docs/results  # full
    python -m experiments.run --config=experiments/configs/benchmarks/dp_speed.py:smoke --workdir=/tmp/s

The reference CNN (``jaxsec.models.CNN`` defaults: 5x5 conv 32 / 64, 2x2 max-pool, dense
1024, 3.3M parameters) on a batch of 28x28x1 inputs, and the same architecture in PyTorch.
One *step* is forward, backward, (per-example clipping + Gaussian noise for DP) and an
SGD update. Reported per framework: best-of-``repeats`` wall time per step (JAX compile
time excluded, measured separately), and the ratio DP / non-private of the same framework.
jaxsec: ``dpsgd.make_step`` with ``method='vmap'`` (per-example gradients materialised)
and ``method='ghost'`` (ghost clipping / book-keeping), and the default ``method='auto'``
(ghost where the model is eligible, as this CNN is; else vmap); Opacus: ``grad_sample_mode='hooks'``
(per-sample gradients) and ``'ghost'`` (Opacus' ghost clipping); jax_privacy 2.0 (the JAX
anchor): ``jax_privacy.clipping.clipped_grad`` (per-example gradients by vmap; it has no
ghost clipping) with ``noise_addition.gaussian_privatizer`` and the same optax SGD, on the
same flax model and weights. The accounted epsilon of the same DP-SGD run (Poisson
sampling, ``accounting_*`` of the config) from jaxsec's ``PoissonSampler.epsilon`` and from
jax_privacy's ``DpsgdTrainingAccountant``, PLD and RDP. A peer that fails to
import or run is recorded with its error. Timings are for whatever machine runs this (the
JSON records it); on a shared machine they are noisy, so the ratios are the figure.
"""
from __future__ import annotations

import functools
import os
import time
import traceback

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsec import io as jio
from jaxsec import losses
from jaxsec import models
from jaxsec.privacy import clipping
from jaxsec.privacy import dpsgd

from experiments.benchmarks import machine

NAME = 'dp_speed'


def _best_time(fn, repeats):
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def jax_times(c, x, y):
  model = models.get('cnn', features=tuple(c.features), dense=c.dense)
  params = models.init(model, jax.random.key(0), (1, 28, 28, 1))
  lf = clipping.from_model(model.apply, losses.cross_entropy)
  opt = optax.sgd(c.learning_rate)
  st = opt.init(params)
  out = {'num_params': int(sum(l.size for l in jax.tree_util.tree_leaves(params)))}

  @jax.jit
  def nonprivate(p, s, x, y):
    g = jax.grad(lambda p: jnp.mean(lf(p, x, y)))(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  mask = jnp.ones((x.shape[0],), bool)
  fns = {'nonprivate': lambda: jax.block_until_ready(nonprivate(params, st, x, y))}
  out['default_method'] = clipping.auto_method(lf, params, x, y)
  for method in ('vmap', 'ghost', 'default'):
    make = functools.partial(dpsgd.make_step, lf, opt, noise_multiplier=c.noise_multiplier,
                             normalizer=float(x.shape[0]))
    step = jax.jit(make() if method == 'default' else make(method=method))
    fns[method] = (lambda step=step: jax.block_until_ready(
        step(params, st, c.l2_norm_clip, (x, y), mask, jax.random.key(1))))
  for k, f in fns.items():
    t0 = time.perf_counter()
    f()
    out[k + '_compile_and_first_s'] = time.perf_counter() - t0
    out[k + '_s'] = _best_time(f, c.repeats)
  for k in ('vmap', 'ghost', 'default'):
    out[k + '_ratio'] = out[k + '_s'] / out['nonprivate_s']
  return out


def jax_privacy_times(c, x, y):
  """The same step with jax_privacy 2.0's clipping and noise, same model and weights."""
  from jax_privacy import clipping as jp_clipping  # pylint: disable=g-import-not-at-top
  from jax_privacy import noise_addition  # pylint: disable=g-import-not-at-top
  import jax_privacy  # pylint: disable=g-import-not-at-top
  model = models.get('cnn', features=tuple(c.features), dense=c.dense)
  params = models.init(model, jax.random.key(0), (1, 28, 28, 1))
  opt = optax.sgd(c.learning_rate)
  st = opt.init(params)
  loss = lambda p, xb, yb: jnp.mean(losses.cross_entropy(models.logits_fn(model, p)(xb), yb))
  grad_fn = jp_clipping.clipped_grad(loss, l2_clip_norm=c.l2_norm_clip, batch_argnums=(1, 2))
  privatizer = noise_addition.gaussian_privatizer(
      stddev=c.noise_multiplier * c.l2_norm_clip, prng_key=jax.random.key(1))
  nst = privatizer.init(params)
  n = float(x.shape[0])

  @jax.jit
  def step(p, s, ns, x, y):
    g = grad_fn(p, x, y)
    g, ns = privatizer.update(g, ns)
    g = jax.tree_util.tree_map(lambda v: v / n, g)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, ns

  f = lambda: jax.block_until_ready(step(params, st, nst, x, y))
  t0 = time.perf_counter()
  f()
  out = {'version': getattr(jax_privacy, '__version__', '?'),
         'clipped_grad_compile_and_first_s': time.perf_counter() - t0}
  out['clipped_grad_s'] = _best_time(f, c.repeats)
  return out


def epsilons(c) -> dict:
  """Epsilon of one DP-SGD run (Poisson sampling) from jaxsec and from jax_privacy."""
  from jaxsec.privacy import sampling  # pylint: disable=g-import-not-at-top
  n, b, steps, delta = (c.accounting_dataset_size, c.accounting_batch_size,
                        c.accounting_steps, c.accounting_delta)
  sampler = sampling.PoissonSampler(dataset_size=n, num_steps=steps, expected_batch_size=b)
  out = {'dataset_size': n, 'batch_size': b, 'steps': steps, 'delta': delta,
         'noise_multiplier': c.noise_multiplier}
  for acc in ('pld', 'rdp'):
    out[f'jaxsec_{acc}'] = float(sampler.epsilon(c.noise_multiplier, delta, accountant=acc))
  try:
    from jax_privacy import accounting as jpa  # pylint: disable=g-import-not-at-top
    params = jpa.DpParams(noise_multipliers=c.noise_multiplier, num_samples=n, delta=delta,
                          batch_size=b, sampling_method=jpa.SamplingMethod.POISSON)
    for acc, conf in (('pld', jpa.PldAccountantConfig()), ('rdp', jpa.RdpAccountantConfig())):
      out[f'jax_privacy_{acc}'] = float(
          jpa.DpsgdTrainingAccountant(conf).compute_epsilon(steps, params))
  except Exception as e:  # pylint: disable=broad-except
    out['jax_privacy_error'] = f'{type(e).__name__}: {e}'[:500]
  return out


def torch_times(c, x_np, y_np):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  if c.torch_threads:
    torch.set_num_threads(c.torch_threads)
  f1, f2 = c.features

  def make():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, f1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(f1, f2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(7 * 7 * f2, c.dense), nn.ReLU(), nn.Linear(c.dense, 10))

  x = torch.from_numpy(np.ascontiguousarray(np.transpose(x_np, (0, 3, 1, 2))))
  y = torch.from_numpy(y_np.astype(np.int64))
  out = {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
  model = make()
  opt = torch.optim.SGD(model.parameters(), lr=c.learning_rate)
  crit = nn.CrossEntropyLoss()

  def nonprivate():
    opt.zero_grad()
    crit(model(x), y).backward()
    opt.step()
  nonprivate()
  out['nonprivate_s'] = _best_time(nonprivate, c.repeats)
  try:
    import opacus  # pylint: disable=g-import-not-at-top
    from opacus import PrivacyEngine  # pylint: disable=g-import-not-at-top
    out['opacus_version'] = opacus.__version__
  except Exception as e:  # pylint: disable=broad-except
    out['opacus_error'] = f'{type(e).__name__}: {e}'
    return out
  ds = torch.utils.data.TensorDataset(x, y)
  for mode in c.opacus_modes:
    try:
      m = make()
      o = torch.optim.SGD(m.parameters(), lr=c.learning_rate)
      dl = torch.utils.data.DataLoader(ds, batch_size=x.shape[0])
      pe = PrivacyEngine(accountant='rdp')
      if mode == 'ghost':
        m, o, cr, dl = pe.make_private(module=m, optimizer=o, data_loader=dl,
                                       criterion=nn.CrossEntropyLoss(),
                                       noise_multiplier=c.noise_multiplier,
                                       max_grad_norm=c.l2_norm_clip, poisson_sampling=False,
                                       grad_sample_mode='ghost')
      else:
        m, o, dl = pe.make_private(module=m, optimizer=o, data_loader=dl,
                                   noise_multiplier=c.noise_multiplier,
                                   max_grad_norm=c.l2_norm_clip, poisson_sampling=False,
                                   grad_sample_mode=mode)
        cr = nn.CrossEntropyLoss()

      def dp_step(m=m, o=o, cr=cr):
        o.zero_grad()
        loss = cr(m(x), y)
        loss.backward()
        o.step()
      dp_step()
      t = _best_time(dp_step, c.repeats)
      out[f'opacus_{mode}_s'] = t
      out[f'opacus_{mode}_ratio'] = t / out['nonprivate_s']
    except Exception as e:  # pylint: disable=broad-except
      out[f'opacus_{mode}_error'] = f'{type(e).__name__}: {e}'[:500]
      traceback.print_exc()
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  rng = np.random.default_rng(0)
  x = rng.random((c.batch, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, c.batch).astype(np.int32)
  res = {'name': NAME, 'variant': c.variant, 'batch': c.batch, 'repeats': c.repeats,
         'machine': machine.require_idle(c.max_load_per_cpu, name=NAME),
         'config': c.to_dict()}
  res['jaxsec'] = jax_times(c, jnp.asarray(x), jnp.asarray(y))
  try:
    jp = jax_privacy_times(c, jnp.asarray(x), jnp.asarray(y))
    res['jax_privacy'] = jp
    res['jaxsec_vmap_speedup_vs_jax_privacy'] = (float(jp['clipped_grad_s'])
                                                 / float(res['jaxsec']['vmap_s']))
    res['jaxsec_default_speedup_vs_jax_privacy'] = (float(jp['clipped_grad_s'])
                                                    / float(res['jaxsec']['default_s']))
  except Exception as e:  # pylint: disable=broad-except
    res['jax_privacy'] = {'error': f'{type(e).__name__}: {e}'[:500]}
  res['epsilon'] = epsilons(c)
  try:
    res['torch'] = torch_times(c, x, y)
  except Exception as e:  # pylint: disable=broad-except
    res['torch'] = {'error': f'{type(e).__name__}: {e}'}
  j, t = res['jaxsec'], res['torch']
  for mode in c.opacus_modes:
    if f'opacus_{mode}_s' in t:
      res[f'jaxsec_ghost_speedup_vs_opacus_{mode}'] = t[f'opacus_{mode}_s'] / j['ghost_s']
  machine.finish(res['machine'])
  jio.write_json_atomic(os.path.join(workdir, NAME + '.json'), res)
  return res


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  j, t = r['jaxsec'], r['torch']
  lines = [f"## DP-SGD step cost, reference CNN ({j['num_params']} parameters), batch "
           f"{r['batch']}", '',
           f"{r['machine']['cpu_count']} CPUs, JAX backend {r['machine']['jax_backend']}, "
           f"load average {r['machine']['load_average'][0]:.1f} at start; best of "
           f"{r['repeats']} steps{machine.loaded_note(r['machine'])}.", '',
           '| framework | path | step time (s) | DP / non-private |', '|---|---|---|---|',
           f"| jaxsec | non-private | {j['nonprivate_s']:.3f} | 1.00 |",
           f"| jaxsec | DP-SGD, vmap per-example | {j['vmap_s']:.3f} | {j['vmap_ratio']:.2f} |",
           f"| jaxsec | DP-SGD, ghost clipping | {j['ghost_s']:.3f} | {j['ghost_ratio']:.2f} |"]
  if 'default_s' in j:
    lines.append(f"| jaxsec | DP-SGD, default (auto: {j['default_method']}) | "
                 f"{j['default_s']:.3f} | {j['default_ratio']:.2f} |")
  jp = r.get('jax_privacy', {})
  if 'clipped_grad_s' in jp:
    lines.append(f"| jax_privacy {jp['version']} | DP-SGD, clipped_grad (vmap) | "
                 f"{jp['clipped_grad_s']:.3f} | {jp['clipped_grad_s'] / j['nonprivate_s']:.2f} |")
  elif jp:
    lines.append(f"| jax_privacy | - | failed: {jp.get('error', '')[:80]} | - |")
  if 'nonprivate_s' in t:
    lines.append(f"| PyTorch {t.get('torch_version', '')} | non-private | "
                 f"{t['nonprivate_s']:.3f} | 1.00 |")
    for mode in r['config']['opacus_modes']:
      if f'opacus_{mode}_s' in t:
        lines.append(f"| Opacus {t.get('opacus_version', '')} | DP-SGD, {mode} | "
                     f"{t[f'opacus_{mode}_s']:.3f} | {t[f'opacus_{mode}_ratio']:.2f} |")
      else:
        err = t.get(f'opacus_{mode}_error', t.get('opacus_error', 'not run'))
        lines.append(f'| Opacus | DP-SGD, {mode} | failed: {err[:80]} | - |')
  else:
    lines.append(f"| PyTorch | - | failed: {t.get('error', '')[:80]} | - |")
  for k, what in (('jaxsec_vmap_speedup_vs_jax_privacy', 'vmap'),
                  ('jaxsec_default_speedup_vs_jax_privacy', 'default')):
    if k in r:
      lines.append(f'\njaxsec {what} DP step: {_faster(r[k])} than jax_privacy clipped_grad.')
  e = r.get('epsilon')
  if e:
    lines += ['', f"Accounted epsilon of the same run (Poisson q = {e['batch_size']}/"
              f"{e['dataset_size']}, sigma {e['noise_multiplier']}, {e['steps']} steps, delta "
              f"{e['delta']:g}):", '', '| accountant | jaxsec | jax_privacy |', '|---|---|---|']
    for acc in ('pld', 'rdp'):
      lines.append(f"| {acc} | {e[f'jaxsec_{acc}']:.4f} | "
                   f"{e.get(f'jax_privacy_{acc}', float('nan')):.4f} |")
  for mode in r['config']['opacus_modes']:
    k = f'jaxsec_ghost_speedup_vs_opacus_{mode}'
    if k in r:
      lines.append(f'\njaxsec ghost DP step is {r[k]:.2f}x faster than Opacus {mode}.')
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  note = machine.loaded_note(r['machine'])
  t = r['torch']
  rows = [('DP-SGD step with ghost clipping vs Opacus ghost clipping (cpu, same architecture)',
           _faster(r.get('jaxsec_ghost_speedup_vs_opacus_ghost')) + note)]
  if 'opacus_hooks_s' in t:
    if 'default_s' in r['jaxsec']:
      rows.append(('DP-SGD step, default per-example clipping: jaxsec (auto: '
                   f"{r['jaxsec']['default_method']}) vs Opacus hooks (cpu)",
                   _faster(t['opacus_hooks_s'] / r['jaxsec']['default_s']) + note))
    rows.append(('DP-SGD step, per-example gradients: jaxsec vmap vs Opacus hooks (cpu)',
                 _faster(t['opacus_hooks_s'] / r['jaxsec']['vmap_s']) + note))
  if 'jaxsec_vmap_speedup_vs_jax_privacy' in r:
    rows.append(('DP-SGD step, per-example gradients: jaxsec vmap vs jax_privacy '
                 f"{r['jax_privacy']['version']} clipped_grad, defaults (cpu)",
                 _faster(r['jaxsec_vmap_speedup_vs_jax_privacy']) + note))
  e = r.get('epsilon', {})
  if 'jax_privacy_pld' in e:
    rows.append((f"DP-SGD epsilon, q = {e['batch_size']}/{e['dataset_size']}, sigma = "
                 f"{e['noise_multiplier']:g}, {e['steps']} steps, delta {e['delta']:g}: "
                 'jaxsec vs jax_privacy',
                 f"PLD {e['jaxsec_pld']:.4f} vs {e['jax_privacy_pld']:.4f}; "
                 f"RDP {e['jaxsec_rdp']:.4f} vs {e['jax_privacy_rdp']:.4f}"))
  return rows


def _faster(ratio) -> str:
  if ratio is None:
    return 'not measured'
  return f'jaxsec {ratio:.2f}x faster' if ratio >= 1 else f'jaxsec {1 / ratio:.2f}x slower'
