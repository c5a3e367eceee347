r"""The attacks and defenses after Krum, every attack x every aggregator (issue 17).

    python -m experiments.run --config=experiments/configs/federated_robust.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/federated_robust.py:smoke --workdir=/tmp/s

FedAvg (``jaxsec.federated.fedavg``) on Fashion-MNIST, a fraction of the clients Byzantine,
every client in every round, IID and Dirichlet(alpha) label skew. Attacks: sign flip, ALIE
(Baruch et al. 2019), Fang et al. 2020's attacks on Krum and on trimmed mean, min-max and
min-sum (Shejwalkar & Houmansadr 2021), and the distributed backdoor (DBA, Xie et al. 2020;
its test-time success on the global trigger is reported too). Aggregators: mean, median,
trimmed mean, Krum, bucketing + Krum, FLTrust (the server trains on ``root_size`` clean
training examples), FoolsGold, centered clipping around the last aggregate, FLAME.

As in ``experiments/federated.py``, the lanes of one aggregator (partition x attack) are one
vmapped program per round (a traced ``lax.switch`` picks each lane's update attack; the
stateful rules carry one state per lane). The reported number is the global model's test
accuracy after ``num_rounds`` rounds. Published orderings checked from the results:
min-max costs trimmed mean more accuracy than ALIE (Shejwalkar & Houmansadr, Table 5), and
FLTrust keeps its accuracy under attacks that break Krum (Cao et al., Table 2).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import federated
from jaxsec import io as jio
from jaxsec import models
from jaxsec import progress as progress_lib
from jaxsec.federated import aggregators as ra
from jaxsec.federated import byzantine
from jaxsec.federated import fedavg
from jaxsec.federated import model_poisoning as mp

NAME = 'federated_robust'

AGGREGATORS = ('mean', 'coordinate_median', 'trimmed_mean', 'krum', 'bucketing_krum',
               'fltrust', 'foolsgold', 'centered_clipping', 'flame')
ATTACKS = ('none', 'sign_flip', 'alie', 'fang_krum', 'fang_trimmed_mean', 'min_max',
           'min_sum', 'dba')
PARTITIONS = federated.PARTITIONS


def _check_config(c):
  federated._check_config(c, AGGREGATORS, ATTACKS)  # pylint: disable=protected-access


def _aggregator(name, c, f):
  if name == 'trimmed_mean':
    return ra.aggregator('trimmed_mean', trim=f)
  if name == 'krum':
    return ra.aggregator('krum', num_byzantine=f)
  if name == 'bucketing_krum':
    # Krum on ceil(K / s) bucket means, told the number of buckets a Byzantine client reaches
    nb = -(-c.num_clients // c.bucket_size)
    fb = min(f, (nb - 3) // 2)
    return ra.aggregator('bucketing', bucket_size=c.bucket_size,
                         base=ra.aggregator('krum', num_byzantine=fb))
  if name == 'centered_clipping':
    return ra.centered_clipping_momentum(tau=c.cc_tau, iters=c.cc_iters)
  if name == 'flame':
    return ra.aggregator('flame', noise_lambda=c.flame_lambda)
  return ra.aggregator(name)


def _attacks(c):
  identity = lambda u, b, k: u
  table = {
      'none': identity,
      'sign_flip': byzantine.sign_flip(scale=c.sign_flip_scale),
      'alie': byzantine.alie(statistics='byzantine'),
      'fang_krum': mp.fang_krum(),
      'fang_trimmed_mean': mp.fang_trimmed_mean(),
      'min_max': mp.min_max(deviation=c.agr_deviation),
      'min_sum': mp.min_sum(deviation=c.agr_deviation),
      'dba': identity,                 # a data attack: local trigger pieces
  }
  return [table[a] for a in c.attacks]


def _lane_round(apply_fn, c, agg, branches, dba, root):
  """One jitted round for all (partition, attack) lanes of one aggregator."""
  def one(params, state, which, is_dba, lists, counts, byz, x, y, key):
    def update_attack(u, b, k):
      return jax.lax.switch(which, branches, u, b, k)

    def data_attack(xb, yb, k, *, attacker=0):
      xd, yd = dba(xb, yb, k, attacker=attacker)
      return jnp.where(is_dba, xd, xb), jnp.where(is_dba, yd, yb)
    fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(c.client_lr),
                             batch_size=c.batch_size, local_steps=c.local_steps,
                             aggregator=agg, server_lr=c.server_lr,
                             update_attack=update_attack, data_attack=data_attack,
                             root_data=root)
    new, info = fed.round(params, x, y, lists, counts, byz, key, aggregator_state=state)
    honest = (~info.byzantine).astype(jnp.float32)
    return new, info.aggregator_state, jnp.sum(info.loss * honest) / jnp.maximum(
        jnp.sum(honest), 1.0)
  return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None)))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  _check_config(c)
  t_start = time.time()
  key = jax.random.key(c.seed)
  k_part, k_byz, k_init, k_rounds, k_root = jax.random.split(key, 5)
  xtr, ytr, xte, yte = common.load_splits(c.dataset, train_subset=c.train_subset,
                                           test_subset=c.test_subset)
  num_classes = int(max(ytr.max(), yte.max())) + 1
  n = xtr.shape[0]
  f, byz_ids, byz_mask = federated.byzantine_clients(k_byz, c.num_clients,
                                                     c.byzantine_fraction)
  root_idx = np.sort(np.asarray(jax.random.permutation(k_root, n))[:c.root_size])
  needs_root = 'fltrust' in c.aggregators

  parts, width = federated.client_partitions(c, k_part, ytr, num_classes, label=NAME)

  model = models.get(c.model, num_classes=num_classes, **c.model_kwargs.to_dict())
  p0 = models.init(model, k_init, (1,) + xtr.shape[1:])
  num_params = int(sum(np.size(l) for l in jax.tree.leaves(p0)))
  branches = _attacks(c)
  dba = byzantine.dba(target_label=c.dba_target, fraction=c.dba_fraction,
                      num_pieces=c.dba_pieces, bar_length=c.dba_bar_length, gap=c.dba_gap,
                      shift=c.dba_shift)
  keep = yte != c.dba_target
  x_trig = np.asarray(dba.trigger(jnp.asarray(xte[keep])))

  lanes, lane_which, lane_lists, lane_counts, lane_byz = federated.lane_inputs(
      c, parts, width, byz_mask)
  lane_dba = jnp.asarray([a == 'dba' for _, a in lanes])
  xj, yj = jnp.asarray(xtr), jnp.asarray(ytr)
  stack = lambda t: jax.tree.map(lambda a: jnp.stack([a] * len(lanes)), t)

  results = {p: {} for p in c.partitions}
  seconds, eval_rounds = {}, []
  tick = progress_lib.make(f'{NAME}', len(c.aggregators) * c.num_rounds, 'round')
  for agg_name in c.aggregators:
    log = federated.LaneCurves(c, lanes, label=NAME, aggregator=agg_name)
    agg = _aggregator(agg_name, c, f)
    root = (xtr[root_idx], ytr[root_idx]) if agg_name == 'fltrust' and needs_root else None
    step = _lane_round(model.apply, c, agg, branches, dba, root)
    state0 = (agg.init(p0, c.num_clients) if isinstance(agg, ra.StatefulAggregator) else ())
    params, state = stack(p0), stack(state0)
    for r in range(c.num_rounds):
      params, state, loss = step(params, state, lane_which, lane_dba, lane_lists, lane_counts,
                                 lane_byz, xj, yj, jax.random.fold_in(k_rounds, r))
      if tick:
        tick(agg_name)
      log.after_round(r, loss, model.apply, params, xte, yte)
    asr = federated.lane_accuracy(model.apply, params, x_trig, c.dba_target)
    seconds[agg_name] = time.time() - log.t0
    for i, (p, a) in enumerate(lanes):
      results[p].setdefault(agg_name, {})[a] = {**log.cell(i),
                                                'backdoor_success': float(asr[i])}
    eval_rounds = log.rounds

  out = federated.grid_results(c, NAME, module='experiments.federated_robust',
                               num_train=int(n), num_test=int(xte.shape[0]),
                               num_params=num_params, num_byzantine=f, byz_ids=byz_ids,
                               eval_rounds=eval_rounds, parts=parts, results=results,
                               seconds=seconds, t_start=t_start)
  out['orderings'] = orderings(out)
  return jio.save_results(workdir, NAME, out)


def orderings(r: dict) -> dict:
  """The published orderings, computed from the results (None where a cell is missing):
  ``min_max_beats_alie_on_trimmed_mean`` (accuracy under min-max < under ALIE), and per
  attack that breaks Krum (Krum loses > ``5`` points to it) whether FLTrust loses less."""
  out = {}
  for p, d in r['partitions'].items():
    res = d['results']
    tm = res.get('trimmed_mean', {})
    beats = (tm['min_max']['accuracy'] < tm['alie']['accuracy']
             if 'min_max' in tm and 'alie' in tm else None)
    krum, fl = res.get('krum', {}), res.get('fltrust', {})
    holds = {}
    if 'none' in krum and 'none' in fl:
      for a in krum:
        if a == 'none' or a not in fl:
          continue
        drop_k = krum['none']['accuracy'] - krum[a]['accuracy']
        drop_f = fl['none']['accuracy'] - fl[a]['accuracy']
        if drop_k > 0.05:
          holds[a] = {'krum_drop': drop_k, 'fltrust_drop': drop_f,
                      'fltrust_holds': bool(drop_f < drop_k)}
    out[p] = {'min_max_beats_alie_on_trimmed_mean': beats,
              'fltrust_holds_where_krum_falls': holds}
  return out


_AGG = {'mean': 'mean', 'coordinate_median': 'median', 'trimmed_mean': 'trimmed mean',
        'krum': 'Krum', 'bucketing_krum': 'bucketing + Krum', 'fltrust': 'FLTrust',
        'foolsgold': 'FoolsGold', 'centered_clipping': 'centered clipping',
        'flame': 'FLAME'}
_ATT = {'none': 'none', 'sign_flip': 'sign flip', 'alie': 'ALIE', 'fang_krum': 'Fang-Krum',
        'fang_trimmed_mean': 'Fang-TrMean', 'min_max': 'min-max', 'min_sum': 'min-sum',
        'dba': 'DBA (ASR)'}


def render_markdown(r: dict) -> str:
  """The docs tables, rendered from the results JSON."""
  c = r['config']
  lines = [f"## Federated attacks and defenses after Krum on {c['dataset']} ({r['variant']})",
           '', f"{c['num_clients']} clients, {r['num_byzantine']} Byzantine, all in every "
           f"round; {c['model']} ({r['num_params']} parameters); {c['num_rounds']} rounds of "
           f"{c['local_steps']} local SGD step(s) (batch {c['batch_size']}, lr "
           f"{c['client_lr']}). Test accuracy after the last round; the DBA column also gives "
           f"the global trigger's attack success rate. FLTrust root set: {c['root_size']} "
           f"training examples; bucketing s={c['bucket_size']}; centered clipping "
           f"tau={c['cc_tau']}; FLAME lambda={c['flame_lambda']}. {r['seconds']:.0f} s.", '']
  for p in c['partitions']:              # the config's order (the JSON's keys are sorted)
    d = r['partitions'][p]
    title = 'IID' if p == 'iid' else f"Dirichlet(alpha={c['alpha']:g})"
    res = d['results']
    attacks = list(c['attacks'])
    rows = []
    for agg in c['aggregators']:
      row = res[agg]
      cells = []
      for a in attacks:
        v = common.pct(row[a]['accuracy'])
        cells.append(f"{v} ({common.pct(row[a]['backdoor_success'])})" if a == 'dba' else v)
      rows.append([_AGG[agg]] + cells)
    lines += [f"**{title}** (label skew {d['label_skew']:.3f})", '']
    lines += common.md_table(['aggregator'] + [_ATT[a] for a in attacks], rows)
    o = r['orderings'][p]
    held = o['fltrust_holds_where_krum_falls']
    lines += ['', f"min-max beats ALIE on trimmed mean: {o['min_max_beats_alie_on_trimmed_mean']}; "
              f"FLTrust loses less than Krum under {sum(v['fltrust_holds'] for v in held.values())}"
              f" of the {len(held)} attacks that cost Krum > 5 points.", '']
  return '\n'.join(lines)


def headline(r: dict) -> list:
  """README row: the two published orderings, IID and Dirichlet (variant 'full')."""
  if r.get('variant') != 'full':
    return []
  o = r['orderings']
  cells = []
  for split in sorted(o):
    fl = o[split]['fltrust_holds_where_krum_falls']
    drops = ', '.join(f"{a}: Krum -{100 * v['krum_drop']:.1f} / FLTrust -{100 * v['fltrust_drop']:.1f} pt"
                      for a, v in sorted(fl.items()))
    cells.append(f"{split}: min-max beats ALIE on trimmed mean "
                 f"{'yes' if o[split]['min_max_beats_alie_on_trimmed_mean'] else 'no'}; {drops}")
  return [('Federated FMNIST, attack x aggregator: the published orderings (accuracy drop)',
           '; '.join(cells))]
