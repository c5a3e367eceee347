r"""Distributed DP (Skellam over secure aggregation) vs central DP-FedAvg vs no DP on FMNIST.

    python -m experiments.run --config=experiments/configs/distributed_dp.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/distributed_dp.py:smoke --workdir=/tmp/s

``num_clients`` IID clients (``jaxsec.federated.fedavg.iid_partition``), all of them in
every round, train one linear model (inputs average-pooled by ``pool``) with FedAvg. Three
ways to aggregate the same local updates:

* ``none``: the plain mean (no DP);
* ``central``: DP-FedAvg (McMahan et al. 2018, :mod:`jaxsec.federated.dp`), the server adds
  ``N(0, (z S)^2)`` to the clipped sum; the server is trusted with the updates;
* ``distributed``: :class:`jaxsec.federated.distributed_dp.DistributedSkellam`: every
  client clips, rotates, rounds, adds its share of Skellam noise and sends the result
  modulo ``2^k`` through Bonawitz secure aggregation; the server sees only the noised sum.

Both DP arms are calibrated to the same user-level ``(epsilon, delta)`` under
replace-one-client (the relation of fixed-cohort DP-FedAvg): the central one by
dp_accounting (``SampledWithoutReplacementDpEvent(N, N, Gaussian(z/2))``, RDP), the
distributed one by the Skellam RDP of Agarwal et al. 2021 (Theorem 3.5), composed over
the rounds. Kairouz et al. 2021 / Agarwal et al. 2021 find the distributed mechanism within
a small margin of the central Gaussian at equal epsilon when the bit width is large enough;
this study checks that shape.
"""
from __future__ import annotations

import os
import time
from typing import Any

import dp_accounting
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxsec import io as jio
from jaxsec import models
from jaxsec import progress as progress_lib
from jaxsec import train
from jaxsec.federated import distributed_dp as ddp
from jaxsec.federated import dp as dp_fedavg
from jaxsec.federated import fedavg
from jaxsec.privacy import accounting

NAME = 'distributed_dp'
ARMS = ('none', 'central', 'distributed')


def _pool(x, k):
  if k == 1:
    return x.reshape(x.shape[0], -1)
  n, h, w, ch = x.shape
  return x.reshape(n, h // k, k, w // k, k, ch).mean((2, 4)).reshape(n, -1)


def _central_z(eps, delta, n, rounds):
  def event(z):
    return dp_fedavg.dp_event(noise_multiplier=z, num_rounds=rounds, num_clients=n,
                              sampling='uniform')[0]
  return accounting.calibrate(event, eps, delta, accountant='rdp',
                              neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  bad = [a for a in c.arms if a not in ARMS]
  if bad or not c.arms:
    raise ValueError(f'config arms={tuple(c.arms)} has unknown entries {bad} (or is empty); '
                     f'allowed: {ARMS}.')
  k_part, k_init, k_rounds = jax.random.split(jax.random.key(c.seed), 3)
  xtr, ytr, xte, yte = common.load_splits(c.dataset, train_subset=c.train_subset,
                                           test_subset=c.test_subset)
  xtr, xte = _pool(xtr, c.pool), _pool(xte, c.pool)
  num_classes = int(max(ytr.max(), yte.max())) + 1
  n, n_cl, rounds = xtr.shape[0], c.num_clients, c.num_rounds
  clients = fedavg.iid_partition(k_part, n, n_cl)
  lists, counts = (jnp.asarray(a) for a in fedavg.client_index_lists(clients, n))
  model = models.get(c.model, num_classes=num_classes)
  p0 = models.init(model, k_init, (1, xtr.shape[1]))
  dim = int(sum(np.size(l) for l in jax.tree.leaves(p0)))
  xj, yj = jnp.asarray(xtr), jnp.asarray(ytr)
  base = dict(client_optimizer=optax.sgd(c.client_lr), batch_size=c.batch_size,
              local_steps=c.local_steps, server_lr=c.server_lr)
  plain = fedavg.make_fedavg(model.apply, **base)
  no_byz = jnp.zeros((n_cl,), bool)

  @jax.jit
  def client_updates(params, key):
    ids = jnp.arange(n_cl)
    keys = jax.vmap(lambda i: fedavg.client_key(key, i))(ids)
    return jax.vmap(plain.local_update, in_axes=(None, None, None, 0, 0, 0, 0))(
        params, xj, yj, lists, counts, keys, no_byz)[0]

  def evaluate(params):
    return train.evaluate(model.apply, params, xte, yte)

  runs: list[Any] = [('none', None)] if 'none' in c.arms else []
  runs += [(a, e) for e in c.epsilons for a in ('central', 'distributed') if a in c.arms]
  runs = [(a, e, i) for a, e in runs for i in range(1 if a == 'none' else c.repeats)]
  path = os.path.join(workdir, NAME + '.json')
  rows = _finished_rows(path, c, runs)
  if rows:
    print(f'[{NAME}] resuming: {len(rows)} of {len(runs)} runs finished in {path}', flush=True)
  done = {(r['arm'], r['epsilon'], r['repeat']) for r in rows}
  runs = [run for run in runs if run not in done]
  bar = progress_lib.Progress(NAME, total=len(runs) * rounds, unit='round')

  def write():
    out = {'name': NAME, 'variant': c.variant, 'config': c.to_dict(),
           'device': common.device_info(), 'num_train': int(n),
           'num_test': int(xte.shape[0]), 'num_params': dim,
           'padded_dim': ddp.padded_dim(dim), 'rows': rows, 'summary': _summary(rows),
           'seconds': sum(r['seconds'] for r in rows)}
    jio.write_json_atomic(path, out)
    return out

  for arm, eps, rep in runs:
    t0 = time.time()
    row: dict[str, Any] = {'arm': arm, 'epsilon': eps, 'repeat': rep}
    k_run = k_rounds if rep == 0 else jax.random.fold_in(k_rounds, 10 ** 6 + rep)
    params, fed, mech, wrapped = p0, plain, None, 0
    if arm == 'central':
      z = _central_z(eps, c.delta, n_cl, rounds)
      fed = fedavg.make_fedavg(model.apply, l2_norm_clip=c.l2_norm_clip, noise_multiplier=z,
                               **base)
      row['noise_multiplier'] = z
      row['epsilon_accounted'] = fed.dp_account(num_clients=n_cl, num_rounds=rounds,
                                                delta=c.delta).epsilon
    elif arm == 'distributed':
      mech = ddp.DistributedSkellam(l2_norm_clip=c.l2_norm_clip, noise_multiplier=1.0,
                                    scale=c.scale, modulus_bits=c.modulus_bits,
                                    beta=c.beta, rotate=c.rotate).calibrated(
          eps, c.delta, dim=dim, num_clients=n_cl, num_rounds=rounds)
      row['noise_multiplier'] = mech.noise_multiplier
      row['epsilon_accounted'] = mech.epsilon(dim=dim, num_clients=n_cl, num_rounds=rounds,
                                              delta=c.delta)
      row['l2_bound_integer'] = mech.l2_bound(dim)
      row['summed_noise_std_integer'] = mech.variance(dim, n_cl) ** 0.5
      row['central_z_equivalent'] = (mech.variance(dim, n_cl) ** 0.5
                                     / (c.scale * c.l2_norm_clip))
    for r in range(rounds):
      key = jax.random.fold_in(k_run, r)
      if mech is not None:
        upd = client_updates(params, key)
        mean, info = mech.aggregate(upd, jax.random.fold_in(key, 7), secure=c.secure)
        wrapped += info.wrapped
        params = jax.tree.map(lambda p, a: (p + c.server_lr * a).astype(p.dtype), params, mean)
      else:
        params, _ = fed.round(params, xj, yj, lists, counts, no_byz, key)
      bar.update(extra=f'{arm} eps={eps}')
    row['accuracy'] = evaluate(params)
    row['seconds'] = time.time() - t0
    if arm == 'distributed':
      row['nonprivate_wrapped_coordinates'] = wrapped
    print(f'[{NAME}] {arm} eps={eps} repeat {rep}: acc {row["accuracy"]:.4f} '
          f'z={row.get("noise_multiplier", 0):.3f} ({row["seconds"]:.0f}s)', flush=True)
    rows.append(row)
    write()                        # a checkpoint per finished run (atomic)
  return write()


def _finished_rows(path: str, c: ml_collections.ConfigDict, runs: list) -> list:
  """Rows of a previous run at ``path`` to keep: its config equals this one in every field
  but ``repeats`` (more repeats add runs; the first ones are the same), and the row's
  ``(arm, epsilon, repeat)`` is still asked for."""
  if not os.path.exists(path):
    return []
  prev = jio.read_json(path)

  def strip(d):
    return {k: v for k, v in d.items() if k != 'repeats'}
  if strip(prev.get('config', {})) != strip(jio.json_roundtrip(c.to_dict())):
    return []
  wanted = set(runs)
  return [r for r in prev.get('rows', []) if (r['arm'], r['epsilon'], r['repeat']) in wanted]


def _summary(rows: list) -> list:
  """Mean and std of the accuracy over repeats (training and noise draws) per arm and
  epsilon, computed from the rows."""
  groups: dict[Any, list] = {}
  for row in rows:
    groups.setdefault((row['arm'], row['epsilon']), []).append(row)
  out = []
  for (arm, eps), rs in groups.items():
    acc = np.array([x['accuracy'] for x in rs])
    out.append({'arm': arm, 'epsilon': eps, 'repeats': len(rs),
                'accuracy_mean': float(acc.mean()), 'accuracy_std': float(acc.std()),
                **{k: rs[0][k] for k in ('noise_multiplier', 'epsilon_accounted',
                                         'central_z_equivalent') if k in rs[0]}})
  return out


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  c = r['config']
  lines = [f"## Distributed DP (Skellam + secure aggregation) vs central DP-FedAvg on "
           f"{c['dataset']} ({r['variant']})", '',
           f"{c['num_clients']} IID clients, all in each of {c['num_rounds']} rounds; "
           f"{c['model']} on {28 // c['pool']}x{28 // c['pool']} average-pooled inputs "
           f"({r['num_params']} parameters, padded to {r['padded_dim']}); {c['local_steps']} "
           f"local SGD step(s) (batch {c['batch_size']}, lr {c['client_lr']}), server lr "
           f"{c['server_lr']}, client clip S={c['l2_norm_clip']}. User-level (epsilon, "
           f"delta={c['delta']:g}) under replace-one-client. Distributed: scale "
           f"{c['scale']:g}, {c['modulus_bits']}-bit modulus, beta={c['beta']:.3g}, rotation "
           f"{'on' if c['rotate'] else 'off'}, secure aggregation "
           f"{'run (Bonawitz et al.)' if c['secure'] else 'simulated (same modular sum)'}. "
           f"{r['seconds']:.0f} s in all.", '',
           '| arm | epsilon | accuracy (mean +- std over repeats) | noise multiplier z | '
           'epsilon accounted |',
           '|---|---|---|---|---|']
  for row in r['summary']:
    eps = '-' if row['epsilon'] is None else f"{row['epsilon']:g}"
    z = f"{row['noise_multiplier']:.3f}" if 'noise_multiplier' in row else '-'
    acc = (f"{100 * row['accuracy_mean']:.1f}% +- {100 * row['accuracy_std']:.1f} "
           f"({row['repeats']})")
    ea = f"{row['epsilon_accounted']:.3f}" if 'epsilon_accounted' in row else '-'
    lines.append(f"| {row['arm']} | {eps} | {acc} | {z} | {ea} |")
  lines += ['', 'z of the distributed arm is relative to the rounded integer bound '
            'Delta_2; its noise std over S*scale (the central z it amounts to) is '
            + ', '.join(f"{row['central_z_equivalent']:.3f} at eps {row['epsilon']:g}"
                        for row in r['summary'] if row['arm'] == 'distributed') + '.', '']
  return '\n'.join(lines)


def headline(r: dict) -> list:
  """README row: accuracy of central and distributed (Skellam + secure aggregation) DP-FedAvg
  per epsilon (variant 'full')."""
  if r.get('variant') != 'full':
    return []
  rows = r['summary']
  none = [s for s in rows if s['arm'] == 'none']
  cells = [f"no DP {100 * none[0]['accuracy_mean']:.1f}%"] if none else []
  for eps in sorted({s['epsilon'] for s in rows if s['epsilon'] is not None}):
    by = {s['arm']: s['accuracy_mean'] for s in rows if s['epsilon'] == eps}
    cells.append(f"eps {eps:g}: central {100 * by['central']:.1f}% / distributed "
                 f"{100 * by['distributed']:.1f}%")
  reps = min((s['repeats'] for s in rows if s['epsilon'] is not None), default=1)
  return [('Distributed DP (Skellam through secure aggregation) vs central DP-FedAvg, '
           f"federated FMNIST ({reps} repeat{'s, mean' if reps > 1 else ''})",
           '; '.join(cells))]
