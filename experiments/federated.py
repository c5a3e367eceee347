r"""Byzantine-robust federated learning on Fashion-MNIST (survey §2.3 and §3.1/3.4).

    python -m experiments.run --config=experiments/configs/federated.py --workdir=docs/results  # full (minutes)
    python -m experiments.run --config=experiments/configs/federated.py:smoke --workdir=/tmp/s

FedAvg (``jaxsec.federated.fedavg``) with ``num_clients`` clients, a fraction of them
Byzantine, every client taking part in every round. The grid is {aggregators} x
{attacks} x {IID, Dirichlet(alpha) label skew}; the reported number is the global
model's test accuracy after ``num_rounds`` rounds (and its curve). Aggregators that know
a number of Byzantine clients (trimmed mean, Krum, Bulyan) are given the true one.

The attacks of one (partition, aggregator) cell run as one compiled program: the round
is ``jax.vmap``-ed over the attack lanes (a traced ``lax.switch`` picks each lane's
attack) and the partitions' index lists (padded to one width), all lanes sharing the
round keys (common random numbers: lanes differ only by their attack and data).

Baruch et al. 2019's finding, which this run checks: "A Little Is Enough" (small,
coordinated shifts inside the honest spread) hurts median / trimmed mean / Krum far more
than naive large attacks (sign flipping, Gaussian noise) that those rules filter out;
naive attacks break the plain mean.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxsec import io as jio
from jaxsec import models
from jaxsec import train
from jaxsec.federated import aggregators as ra
from jaxsec.federated import byzantine
from jaxsec.federated import fedavg

NAME = 'federated'

AGGREGATORS = ('mean', 'coordinate_median', 'trimmed_mean', 'krum', 'bulyan',
               'geometric_median')
ATTACKS = ('none', 'sign_flip', 'gaussian', 'alie', 'ipm', 'label_flip')
PARTITIONS = ('iid', 'dirichlet')


def _check_config(c, aggregators=AGGREGATORS, attacks=ATTACKS):
  """Checks the grid's names (``aggregators``, ``attacks``: the study's allowed ones) and
  the Byzantine fraction."""
  for name, allowed in (('aggregators', aggregators), ('attacks', attacks),
                        ('partitions', PARTITIONS)):
    bad = [v for v in c[name] if v not in allowed]
    if bad or not c[name]:
      raise ValueError(f'config {name}={tuple(c[name])} has unknown entries {bad} (or is '
                       f'empty); allowed: {allowed}.')
  if not 0.0 <= c.byzantine_fraction < 0.5:
    raise ValueError(f'byzantine_fraction={c.byzantine_fraction} must be in [0, 0.5).')


def _aggregator(name, f, iters):
  if name == 'trimmed_mean':
    return ra.aggregator('trimmed_mean', trim=f)
  if name in ('krum', 'bulyan'):
    return ra.aggregator(name, num_byzantine=f)
  if name == 'geometric_median':
    return ra.aggregator('geometric_median', iters=iters)
  return ra.aggregator(name)


def _attacks(c, num_classes):
  """Update-attack branches (one per attack lane) and the lanes' label-flip flags."""
  identity = lambda u, b, k: u
  table = {
      'none': identity,
      'sign_flip': byzantine.sign_flip(scale=c.sign_flip_scale),
      'gaussian': byzantine.gaussian_noise(stddev=c.gaussian_stddev),
      'alie': byzantine.alie(statistics=c.alie_statistics),
      'ipm': byzantine.ipm(epsilon=c.ipm_epsilon),
      'label_flip': identity,       # a data attack: the clients train on flipped labels
  }
  flip = byzantine.label_flip(num_classes=num_classes)
  return [table[a] for a in c.attacks], np.array([a == 'label_flip' for a in c.attacks]), flip


def _cell_round(apply_fn, c, agg, branches, flip):
  """One jitted round for all (partition, attack) lanes of one aggregator."""
  def one(params, which, is_flip, lists, counts, byz, x, y, key):
    def update_attack(u, b, k):
      return jax.lax.switch(which, branches, u, b, k)

    def data_attack(xb, yb, k):
      xf, yf = flip(xb, yb, k)
      return xf, jnp.where(is_flip, yf, yb)
    fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(c.client_lr),
                             batch_size=c.batch_size, local_steps=c.local_steps,
                             aggregator=agg, server_lr=c.server_lr,
                             update_attack=update_attack, data_attack=data_attack)
    new, info = fed.round(params, x, y, lists, counts, byz, key)
    honest = (~info.byzantine).astype(jnp.float32)
    return new, jnp.sum(info.loss * honest) / jnp.maximum(jnp.sum(honest), 1.0)
  return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, None, None, None)))


def _pad_lists(lists, width):
  out = np.zeros((lists.shape[0], width), np.int32)
  out[:, :lists.shape[1]] = lists
  return out


def lane_inputs(c, parts: dict[str, dict[str, Any]], width: int, byz_mask: np.ndarray):
  """The grid's lanes, ``(partition, attack)`` pairs partition-major, and what the vmapped
  round takes per lane: ``(lanes, which [L] (the attack's index in c.attacks),
  lists [L, width], counts [L, N], byzantine [L, N])``."""
  lanes = [(p, a) for p in c.partitions for a in c.attacks]
  which = jnp.asarray(np.tile(np.arange(len(c.attacks)), len(c.partitions)), jnp.int32)
  lists = jnp.asarray(np.stack([_pad_lists(parts[p]['lists'], width) for p, _ in lanes]))
  counts = jnp.asarray(np.stack([parts[p]['counts'] for p, _ in lanes]))
  byz = jnp.asarray(np.stack([byz_mask] * len(lanes)))
  return lanes, which, lists, counts, byz


def lane_accuracy(apply_fn, params, x, y) -> np.ndarray:
  """Accuracy ``[L]`` of the lanes' stacked ``params`` on ``x`` (``y``: its labels ``[N]``,
  or one label for every example)."""
  return (train.predict_logits_many(apply_fn, params, x).argmax(-1)
          == np.asarray(y)[None]).mean(1)


class LaneCurves:
  """One aggregator's run over the lanes: the honest clients' loss after every round and
  the test accuracy after every ``c.eval_every``-th round and the last, logged as it grows."""

  def __init__(self, c, lanes: list[tuple[str, str]], *, label: str, aggregator: str):
    self.c, self.lanes, self.label, self.aggregator = c, lanes, label, aggregator
    self.t0 = time.time()
    self.rounds: list[int] = []
    self.curves: list[list[float]] = [[] for _ in lanes]
    self.losses: list[np.ndarray] = []

  def after_round(self, r: int, loss, apply_fn, params, x, y) -> None:
    """Records round ``r`` (0-based): its honest loss ``[L]``; on an evaluation round the
    accuracy of ``params`` on ``(x, y)`` too."""
    self.losses.append(np.asarray(loss))
    c = self.c
    if (r + 1) % c.eval_every and r + 1 != c.num_rounds:
      return
    acc = lane_accuracy(apply_fn, params, x, y)
    self.rounds.append(r + 1)
    for i in range(len(self.lanes)):
      self.curves[i].append(float(acc[i]))
    print(f'[{self.label}] {self.aggregator} round {r + 1}/{c.num_rounds} ' + ' '.join(
        f'{p[:3]}/{a}={acc[i]:.3f}' for i, (p, a) in enumerate(self.lanes)) +
          f' ({time.time() - self.t0:.0f}s)', flush=True)

  def cell(self, i: int) -> dict[str, Any]:
    """Lane ``i``'s results: last accuracy, its curve and the last honest loss."""
    return {'accuracy': self.curves[i][-1], 'curve': self.curves[i],
            'final_honest_loss': float(self.losses[-1][i])}


def grid_results(c, name: str, *, num_train: int, num_test: int, num_params: int,
                 num_byzantine: int, byz_ids: np.ndarray, eval_rounds: list[int],
                 parts: dict[str, dict[str, Any]], results: dict, seconds: dict,
                 t_start: float, **extra: Any) -> dict:
  """The results JSON of a federated grid study (``extra``: the study's own fields)."""
  return {'name': name, **extra, 'variant': c.variant, 'config': c.to_dict(),
          'device': common.device_info(), 'num_train': num_train, 'num_test': num_test,
          'num_params': num_params, 'num_byzantine': num_byzantine,
          'byzantine_clients': byz_ids.tolist(), 'eval_rounds': eval_rounds,
          'partitions': {p: {'label_skew': parts[p]['label_skew'],
                             'client_sizes': parts[p]['client_sizes'],
                             'results': results[p]} for p in c.partitions},
          'seconds_per_aggregator': seconds, 'seconds': time.time() - t_start}


def byzantine_clients(key, num_clients: int, fraction: float
                      ) -> tuple[int, np.ndarray, np.ndarray]:
  """``f = floor(fraction * N)`` Byzantine clients drawn by ``key``: ``(f, ids, mask [N])``."""
  f = int(np.floor(fraction * num_clients + 1e-9))
  ids = np.sort(np.asarray(jax.random.permutation(key, num_clients))[:f])
  mask = np.zeros(num_clients, bool)
  mask[ids] = True
  return f, ids, mask


def client_partitions(c, key, labels, num_classes: int, *, label: str = NAME
                      ) -> tuple[dict[str, dict[str, Any]], int]:
  """Each of ``c.partitions`` (IID or Dirichlet(``c.alpha``)) of the ``len(labels)``
  examples over ``c.num_clients`` clients: ``{name: {lists, counts, label_skew,
  client_sizes}}`` and the widest index list."""
  n = len(labels)
  parts: dict[str, dict[str, Any]] = {}
  for p in c.partitions:
    if p == 'iid':
      clients = fedavg.iid_partition(key, n, c.num_clients)
    else:
      clients = fedavg.dirichlet_partition(key, labels, c.num_clients, alpha=c.alpha,
                                           num_classes=num_classes,
                                           min_size=min(c.batch_size, n // c.num_clients))
    lists, counts = fedavg.client_index_lists(clients, n)
    parts[p] = {'lists': lists, 'counts': counts,
                'label_skew': fedavg.label_skew(labels, clients, num_classes),
                'client_sizes': counts.tolist()}
    print(f'[{label}] {p}: label skew {parts[p]["label_skew"]:.3f}, client sizes '
          f'{counts.min()}..{counts.max()}', flush=True)
  return parts, max(v['lists'].shape[1] for v in parts.values())


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  _check_config(c)
  t_start = time.time()
  key = jax.random.key(c.seed)
  k_part, k_byz, k_init, k_rounds = jax.random.split(key, 4)
  xtr, ytr, xte, yte = common.load_splits(c.dataset, train_subset=c.train_subset,
                                           test_subset=c.test_subset)
  num_classes = int(max(ytr.max(), yte.max())) + 1
  n = xtr.shape[0]
  f, byz_ids, byz_mask = byzantine_clients(k_byz, c.num_clients, c.byzantine_fraction)
  parts, width = client_partitions(c, k_part, ytr, num_classes, label=NAME)

  model = models.get(c.model, num_classes=num_classes, **c.model_kwargs.to_dict())
  p0 = models.init(model, k_init, (1,) + xtr.shape[1:])
  num_params = int(sum(np.size(l) for l in jax.tree.leaves(p0)))
  branches, flip_lanes, flip = _attacks(c, num_classes)

  lanes, lane_which, lane_lists, lane_counts, lane_byz = lane_inputs(c, parts, width, byz_mask)
  lane_flip = jnp.asarray(np.tile(flip_lanes, len(c.partitions)))
  xj, yj = jnp.asarray(xtr), jnp.asarray(ytr)

  results = {p: {} for p in c.partitions}
  seconds, eval_rounds = {}, []
  for agg_name in c.aggregators:
    log = LaneCurves(c, lanes, label=NAME, aggregator=agg_name)
    step = _cell_round(model.apply, c, _aggregator(agg_name, f, c.geometric_median_iters),
                       branches, flip)
    params = jax.tree.map(lambda a: jnp.stack([a] * len(lanes)), p0)
    for r in range(c.num_rounds):
      params, loss = step(params, lane_which, lane_flip, lane_lists, lane_counts, lane_byz,
                          xj, yj, jax.random.fold_in(k_rounds, r))
      log.after_round(r, loss, model.apply, params, xte, yte)
    seconds[agg_name] = time.time() - log.t0
    for i, (p, a) in enumerate(lanes):
      results[p].setdefault(agg_name, {})[a] = log.cell(i)
    eval_rounds = log.rounds

  out = grid_results(c, NAME, num_train=int(n), num_test=int(xte.shape[0]),
                     num_params=num_params, num_byzantine=f, byz_ids=byz_ids,
                     eval_rounds=eval_rounds, parts=parts, results=results, seconds=seconds,
                     t_start=t_start)
  out['shape'] = _shape_summary(out)
  return jio.save_results(workdir, NAME, out)


def _shape_summary(r: dict) -> dict:
  """Accuracy drop (no attack minus attacked) per partition, aggregator and attack, and
  whether ALIE's drop exceeds the naive attacks' (sign flip, Gaussian) for each robust
  rule: computed from the results, never typed in."""
  out = {}
  for p, d in r['partitions'].items():
    res = d['results']
    drops = {}
    for agg, row in res.items():
      if 'none' not in row:
        continue
      drops[agg] = {a: row['none']['accuracy'] - v['accuracy'] for a, v in row.items()
                    if a != 'none'}
    alie_beats_naive = {}
    for agg, dr in drops.items():
      naive = [dr[a] for a in ('sign_flip', 'gaussian') if a in dr]
      if agg != 'mean' and 'alie' in dr and naive:
        alie_beats_naive[agg] = bool(dr['alie'] > max(naive))
    out[p] = {'accuracy_drop': drops, 'alie_drop_exceeds_naive': alie_beats_naive}
  return out


_AGG_LABEL = {'mean': 'mean (FedAvg)', 'coordinate_median': 'coordinate median',
              'trimmed_mean': 'trimmed mean', 'krum': 'Krum', 'bulyan': 'Bulyan',
              'geometric_median': 'geometric median'}
_ATTACK_LABEL = {'none': 'no attack', 'sign_flip': 'sign flip', 'gaussian': 'Gaussian',
                 'alie': 'ALIE', 'ipm': 'IPM', 'label_flip': 'label flip'}


def render_markdown(r: dict) -> str:
  """The docs tables, rendered from the results JSON."""
  c = r['config']
  lines = [f"## Byzantine-robust FedAvg on {c['dataset']} ({r['variant']})", '',
           f"{c['num_clients']} clients, {r['num_byzantine']} Byzantine "
           f"({100 * c['byzantine_fraction']:.0f}%), all clients in every round; "
           f"{c['model']} {tuple(c['model_kwargs']['hidden'])} ({r['num_params']} "
           f"parameters); {c['num_rounds']} rounds of {c['local_steps']} local SGD step(s) "
           f"(batch {c['batch_size']}, lr {c['client_lr']}), server lr {c['server_lr']}. "
           f"Test accuracy of the global model after the last round. Attacks: sign flip "
           f"x{c['sign_flip_scale']:g}, Gaussian sigma={c['gaussian_stddev']:g}, ALIE with "
           f"z_max ({c['alie_statistics']} statistics), IPM eps={c['ipm_epsilon']:g}. "
           f"{r['seconds']:.0f} s in all.", '']
  for p, d in r['partitions'].items():
    title = ('IID' if p == 'iid' else f"Dirichlet(alpha={c['alpha']:g}) label skew")
    res = d['results']
    attacks = list(next(iter(res.values())).keys())
    lines += [f"**{title}** (mean label skew, TV distance: {d['label_skew']:.3f})", '',
              '| aggregator | ' + ' | '.join(_ATTACK_LABEL[a] for a in attacks) + ' |',
              '|---|' + '---|' * len(attacks)]
    for agg, row in res.items():
      cells = [f"{100 * row[a]['accuracy']:.1f}%" for a in attacks]
      lines.append(f'| {_AGG_LABEL[agg]} | ' + ' | '.join(cells) + ' |')
    beats = r['shape'][p]['alie_drop_exceeds_naive']
    if beats:
      yes = [a for a, v in beats.items() if v]
      lines += ['', f"ALIE costs more accuracy than both naive attacks for {len(yes)} of "
                f"{len(beats)} robust rules ({', '.join(_AGG_LABEL[a] for a in yes) or '-'})."]
    lines.append('')
  return '\n'.join(lines)
