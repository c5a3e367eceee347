"""Federated averaging (McMahan et al., AISTATS 2017), one compiled program per round.

With robust aggregation and Byzantine clients (survey §2.3, §3). In a jitted round the
sampled clients' local training (``E`` epochs or ``K`` steps with the client optimizer,
restarted every round) is ``jax.vmap``-ed over per-client parameters, keys and index lists
into ONE shared data set (the engine of ``jaxsec.train.fit_many``; data never copied per
client). The updates (``local - global``) are optionally replaced by a Byzantine attack
(:mod:`jaxsec.federated.byzantine`), aggregated (``'mean'`` = FedAvg, any rule of
:mod:`jaxsec.federated.aggregators`, or the DP hooks of :mod:`jaxsec.federated.dp`) and
applied as ``global + server_lr * aggregate``. Partitions: :func:`iid_partition`,
:func:`dirichlet_partition` (label skew, Hsu, Qi, Brown 2019), measured by :func:`label_skew`.
:func:`make_fedavg` builds the pure functions; :func:`run` is the host loop over rounds.

Determinism: round ``r`` uses ``fold_in(key, r)``, client ``c`` ``client_key(round_key, c)``
(by client id, not slot), so the vmapped round equals a loop of :func:`FedAvg.local_update`.

>>> import jax, jax.numpy as jnp, numpy as np, optax
>>> apply_fn = lambda p, x: x @ p['w']
>>> x = np.ones((8, 3), np.float32); y = np.zeros(8, np.int32)
>>> fed = make_fedavg(apply_fn, client_optimizer=optax.sgd(0.1), batch_size=4,
...                   local_steps=2)
>>> clients = iid_partition(jax.random.key(0), 8, 2)
>>> res = run(fed, {'w': jnp.zeros((3, 2))}, x, y, clients=clients, num_rounds=2,
...           key=jax.random.key(1))
>>> res.params['w'].shape
(3, 2)
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import train as train_lib
from jaxsec.data.partition import shards as _data_shards
from jaxsec.federated import aggregators
from jaxsec.federated import dp as dp_fedavg
from jaxsec.privacy import dpsgd

__all__ = ['iid_partition', 'dirichlet_partition', 'label_distribution', 'label_skew',
           'client_index_lists', 'make_fedavg', 'FedAvg', 'RoundInfo', 'FedAvgResult',
           'client_key', 'run']

ApplyFn = train_lib.ApplyFn
# attack(updates [K, ...], byzantine [K] bool, key[, weights=]) -> updates [K, ...]; the
# participation weights [K] are passed when the attack takes a ``weights`` keyword.
UpdateAttack = Callable[..., Any]
# attack(x_batch, y_batch, key) -> (x_batch', y_batch'), applied to Byzantine clients' data
DataAttack = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

WEIGHTING = ('uniform', 'num_examples')


# --------------------------------------------------------------------------- partitions

def iid_partition(key: jax.Array, n: int, num_clients: int) -> list[np.ndarray]:
  """IID clients: a random permutation of ``range(n)`` cut into ``num_clients`` shards of
  sizes differing by at most one. Every example belongs to exactly one client."""
  n = _checks.check_int('n', n, minimum=1)
  num_clients = _checks.check_int('num_clients', num_clients, minimum=1, maximum=n)
  return _data_shards(key, n, num_clients, drop_remainder=False)


def dirichlet_partition(key: jax.Array, labels: Any, num_clients: int, *, alpha: float,
                        num_classes: int | None = None, min_size: int = 1,
                        max_tries: int = 1000) -> list[np.ndarray]:
  """Non-IID clients with Dirichlet label skew (Hsu, Qi, Brown 2019).

  For every class ``k`` a vector ``p_k ~ Dir(alpha * 1_N)`` over the ``N`` clients is drawn
  and the class' examples (in random order) are cut in the proportions ``p_k``
  (``floor`` of the cumulative sums), the construction of Yurochkin et al. 2019 / Wang et
  al. 2020 that Hsu et al.'s label-skew model is usually run with. Small ``alpha`` gives
  each client few classes; ``alpha -> inf`` approaches class-balanced IID clients. Every
  example belongs to exactly one client. The draws come from a NumPy generator seeded by
  ``key``'s data (host-side, fast); if some client gets fewer than ``min_size`` examples
  the whole draw is repeated with the next seed ``(key, try)``, at most ``max_tries``
  times, so the result is a deterministic function of ``key``.

  Returns:
    ``num_clients`` sorted index arrays.
  """
  labels = np.asarray(labels)
  _checks.check_labels('labels', labels, num_classes=num_classes)
  n = labels.shape[0]
  if n == 0:
    raise ValueError('labels is empty; expected at least one example.')
  num_clients = _checks.check_int('num_clients', num_clients, minimum=1, maximum=n)
  alpha = float(_checks.check_float('alpha', alpha, minimum=0.0, strict_min=True,
                                    allow_traced=False))
  min_size = _checks.check_int('min_size', min_size, minimum=0)
  max_tries = _checks.check_int('max_tries', max_tries, minimum=1)
  if min_size * num_clients > n:
    raise ValueError(f'min_size={min_size} for {num_clients} clients needs '
                     f'{min_size * num_clients} examples; there are n={n}.')
  classes = np.unique(labels)
  by_class = [np.nonzero(labels == k)[0] for k in classes]
  seed = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
  for t in range(max_tries):
    rng = np.random.default_rng(np.random.SeedSequence(seed + [t]))
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for idx in by_class:
      perm = rng.permutation(idx)
      p = rng.dirichlet(np.full((num_clients,), alpha))
      if not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ValueError(f'alpha={alpha} is too small: the Dirichlet draw is not finite.')
      cuts = np.floor(np.cumsum(p / p.sum()) * idx.size).astype(np.int64)[:-1]
      cuts = np.clip(cuts, 0, idx.size)
      for c, piece in enumerate(np.split(perm, cuts)):
        parts[c].append(piece)
    clients = [np.sort(np.concatenate(pc)) for pc in parts]
    if min(c.size for c in clients) >= min_size:
      return clients
  raise ValueError(f'dirichlet_partition with alpha={alpha} gave some of the {num_clients} '
                   f'clients fewer than min_size={min_size} examples in all {max_tries} '
                   'tries; raise alpha, lower min_size or use fewer clients.')


def label_distribution(labels: Any, clients: Sequence[np.ndarray], num_classes: int
                       ) -> np.ndarray:
  """``[N, C]``: row ``c`` is client ``c``'s label histogram, normalised to sum to 1."""
  labels = np.asarray(labels)
  num_classes = _checks.check_int('num_classes', num_classes, minimum=1)
  out = np.zeros((len(clients), num_classes))
  for c, idx in enumerate(clients):
    h = np.bincount(labels[np.asarray(idx)], minlength=num_classes)[:num_classes]
    out[c] = h / max(h.sum(), 1)
  return out


def label_skew(labels: Any, clients: Sequence[np.ndarray], num_classes: int) -> float:
  """Mean over clients of the total-variation distance between the client's label
  distribution and the pooled one: 0 for perfectly balanced clients, close to
  ``1 - 1/C``-ish when every client holds a single class."""
  labels = np.asarray(labels)
  dist = label_distribution(labels, clients, num_classes)
  pooled = np.bincount(labels, minlength=num_classes)[:num_classes] / labels.size
  return float(np.mean(0.5 * np.abs(dist - pooled[None]).sum(1)))


def client_index_lists(clients: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
  """Pads the clients' index sets into ``index_lists [N, W]`` (``W`` the largest client)
  and ``counts [N]``: the per-client index lists into the shared data set that
  :meth:`FedAvg.round` takes. Raises on an empty client or an index outside ``[0, n)``."""
  if len(clients) == 0:
    raise ValueError('clients is empty; expected at least one client index set.')
  counts = np.array([np.asarray(c).size for c in clients], np.int32)
  if counts.min() == 0:
    raise ValueError(f'clients[{int(np.argmin(counts))}] has no examples.')
  lists = np.zeros((len(clients), int(counts.max())), np.int32)
  for i, c in enumerate(clients):
    c = np.asarray(c)
    if not np.issubdtype(c.dtype, np.integer) or c.ndim != 1:
      raise ValueError(f'clients[{i}] must be a 1-D integer index array, got dtype '
                       f'{c.dtype} and shape {c.shape}.')
    if c.min() < 0 or c.max() >= n:
      raise ValueError(f'clients[{i}] has indices in [{c.min()}, {c.max()}], outside '
                       f'[0, {n}).')
    lists[i, :c.size] = c
  return lists, counts


# ------------------------------------------------------------------------------ FedAvg

class RoundInfo(NamedTuple):
  clients: jax.Array        # [K] ids of the clients run this round (sorted)
  participating: jax.Array  # [K] bool: really took part (all True under uniform sampling)
  byzantine: jax.Array      # [K] bool: Byzantine among them
  loss: jax.Array           # [K] mean local training loss of each client (on its own data)
  update_norms: jax.Array   # [K] l2 norms of the submitted updates (after any attack)
  aggregator_state: Any = ()  # a stateful aggregator's state after the round, else ()


@dataclasses.dataclass(frozen=True)
class FedAvg:
  """The pure functions of one FedAvg configuration (built by :func:`make_fedavg`).

  * ``local_update(params, x, y, index_list, count, key, poisoned) -> (update, loss)``:
    one client's local training from the global ``params`` on ``x[index_list[:count]]``;
    ``update`` is ``local - params``; ``poisoned`` (bool) applies the data attack.
  * ``round(params, x, y, index_lists, counts, byzantine, key, aggregator_state=())
    -> (params, RoundInfo)``: one round over all clients ``[N, W]`` / ``[N]`` (from
    :func:`client_index_lists`) with ``byzantine [N]`` marking the Byzantine clients;
    jitted once per shape. A stateful aggregator (FoolsGold, centered clipping around the
    last aggregate) reads ``aggregator_state`` (from :meth:`init_aggregator_state`, then
    the previous ``RoundInfo.aggregator_state``).
  """
  apply_fn: ApplyFn
  local_update: Callable
  round: Callable
  clients_per_round: int | None
  sampling: str
  sampling_rate: float | None
  l2_norm_clip: float | None = None
  noise_multiplier: float = 0.0
  stateful_aggregator: Any = None
  adaptive_clipping: Any = None

  def init_aggregator_state(self, params: Any, num_clients: int) -> Any:
    """The first ``aggregator_state`` for ``round``: ``()`` for a stateless rule; with
    DP-FedAvg's adaptive clipping the clip norm ``S`` (the initial ``l2_norm_clip``)."""
    if self.adaptive_clipping is not None:
      return jnp.asarray(self.l2_norm_clip, jnp.float32)
    if self.stateful_aggregator is None:
      return ()
    return self.stateful_aggregator.init(params, num_clients)

  def dp_account(self, *, num_clients: int, num_rounds: int, delta: float,
                 accountant: str | None = None) -> dp_fedavg.DPFedAvgAccount:
    """User-level ``(epsilon, delta)`` of ``num_rounds`` rounds over ``num_clients``
    clients, with the accounting event of this configuration's client sampler
    (:func:`jaxsec.federated.dp.account`). Raises unless DP-FedAvg is on."""
    if self.l2_norm_clip is None:
      raise ValueError('dp_account needs DP-FedAvg: build with make_fedavg(l2_norm_clip=..., '
                       'noise_multiplier=...).')
    return dp_fedavg.account(
        noise_multiplier=self.noise_multiplier, l2_norm_clip=self.l2_norm_clip,
        num_rounds=num_rounds, num_clients=num_clients, delta=delta, sampling=self.sampling,
        clients_per_round=self.clients_per_round, sampling_rate=self.sampling_rate,
        accountant=accountant)


def _check_callable(name, fn):
  if fn is not None and not callable(fn):
    raise ValueError(f'{name}={fn!r} must be callable (or None).')
  return fn


def _accepts_keyword(fn, name: str) -> bool:
  """Whether ``fn`` takes a ``name=`` keyword (or ``**kwargs``)."""
  return aggregators._accepts(fn, name)  # pylint: disable=protected-access


def _accepts_weights(fn) -> bool:
  """Whether ``fn`` takes a ``weights=`` keyword (or ``**kwargs``)."""
  return _accepts_keyword(fn, 'weights')


def _resolve_aggregator(aggregator):
  if isinstance(aggregator, str):
    return aggregator, aggregators.aggregator(aggregator)
  if isinstance(aggregator, aggregators.StatefulAggregator) or callable(aggregator):
    return None, aggregator
  raise ValueError(f'aggregator={aggregator!r} must be a rule name (e.g. "mean", '
                   '"coordinate_median") or a callable updates -> update.')


def _split_round_key(key):
  k_sample, k_train, k_attack, k_agg = jax.random.split(key, 4)
  return k_sample, k_train, k_attack, k_agg


def client_key(round_key: jax.Array, client: Any) -> jax.Array:
  """The key client ``client`` trains with in the round keyed ``round_key``."""
  return jax.random.fold_in(_split_round_key(round_key)[1], client)


def make_fedavg(apply_fn: ApplyFn, *, client_optimizer: optax.GradientTransformation,
                batch_size: int, local_steps: int | None = None,
                local_epochs: int | None = None, aggregator: str | Callable = 'mean',
                server_lr: float = 1.0, clients_per_round: int | None = None,
                sampling: str = 'uniform', sampling_rate: float | None = None,
                client_weighting: str = 'uniform', loss: Callable | str | None = None,
                objective: Callable | None = None, update_attack: UpdateAttack | None = None,
                data_attack: DataAttack | None = None, l2_norm_clip: float | None = None,
                noise_multiplier: float = 0.0, root_data: tuple | None = None,
                adaptive_clipping: dpsgd.AdaptiveClipping | None = None) -> FedAvg:
  """FedAvg with a pluggable aggregator, Byzantine clients and DP-FedAvg hooks.

  Local training (every sampled client, from the current global model, with a freshly
  initialised ``client_optimizer``), in exactly one of two schedules:

  * ``local_epochs=E`` (McMahan et al.'s ``E``, ``B``): each epoch is a fresh permutation
    of the client's ``n_c`` examples cut into ``ceil(n_c / B)`` minibatches, the last one
    partial (its loss is the mean over its real examples), so a client runs
    ``E * ceil(n_c / B)`` steps; clients with less data idle (exactly unchanged) while
    larger ones finish.
  * ``local_steps=K``: ``K`` steps on consecutive minibatches of ``min(B, n_c)`` examples
    of a fresh random order of the client's data (drawn once per round): no example
    repeats while ``K * B <= n_c``; beyond that the steps cycle through the same order.

  ``B >= n_c`` with ``local_steps`` is full-batch gradient descent on the client's data;
  one such step on one client is one centralised gradient step.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits``.
    client_optimizer: optax transformation of the clients (``optax.sgd(lr)`` in McMahan).
    batch_size: B.
    local_steps, local_epochs: exactly one of them.
    aggregator: ``'mean'`` (FedAvg), a rule name of ``aggregators.aggregator``
      without required hyperparameters, or any ``fn(updates [K, ...]) -> update``
      (e.g. ``aggregators.aggregator('krum', num_byzantine=f)``), or a
      :class:`~jaxsec.federated.aggregators.StatefulAggregator` (``round`` then carries its
      state). A rule whose signature takes ``key=`` gets the round's aggregation key
      (bucketing, FLAME), one that takes ``server_update=`` the server's update on
      ``root_data`` (FLTrust).
    server_lr: eta; the new global model is ``global + eta * aggregate``.
    clients_per_round: ``uniform`` sampling draws this many distinct clients per round
      (``None``: all clients, every round).
    sampling: ``'uniform'`` (fixed number without replacement) or ``'poisson'`` (each
      client independently with ``sampling_rate``; every client is computed and the
      non-participants are masked out, as DP-FedAvg's accounting requires). Poisson needs
      the mean aggregator (plain or DP) and no update attack.
    client_weighting: ``'uniform'`` or ``'num_examples'`` (McMahan's ``n_c / n`` weighted
      mean; only with ``aggregator='mean'`` and without DP).
    loss / objective: as in :func:`jaxsec.train.fit` (default cross-entropy).
    update_attack: ``attack(updates, byzantine_mask, key) -> updates`` replacing the
      Byzantine clients' updates (:mod:`jaxsec.federated.byzantine`). An attack that
      takes ``weights=`` (:func:`~jaxsec.federated.byzantine.model_replacement`) gets the
      round's aggregation weights of the ``K`` selected clients with the mean aggregator
      (plain or DP): their example counts under ``'num_examples'``, ones otherwise.
    data_attack: ``attack(x, y, key) -> (x', y')`` or a size-preserving poisoning attack
      of ``jaxsec.attacks.poisoning`` (``PoisonOutput(x', y', info)``), applied to every
      local minibatch of a Byzantine client (label flipping, backdoors). An attack that
      takes ``attacker=`` gets the client's rank among the Byzantine clients (0, 1, ...:
      the distributed backdoor's local trigger, :func:`~jaxsec.federated.byzantine.dba`).
    root_data: ``(x_root, y_root)``, the server's small clean root data set (FLTrust): each
      round the server runs the clients' local training on it from the global model and
      passes that update to the aggregator as ``server_update=``. Required by an
      aggregator that requires ``server_update``.
    l2_norm_clip, noise_multiplier: DP-FedAvg (McMahan et al. 2018): updates clipped
      to ``S``, summed, ``N(0, (z S)^2)`` added, divided by the expected number of
      clients (``clients_per_round`` or ``sampling_rate * N``); needs ``aggregator='mean'``.
      :func:`run` reports the user-level ``(epsilon, delta)`` with the event of the
      sampler used (:meth:`FedAvg.dp_account`): Poisson sampling under add/remove-one-
      client, fixed-size uniform sampling under replace-one-client (its epsilon is not
      comparable to the Poisson one; see :mod:`jaxsec.federated.dp`).
    adaptive_clipping: DP-FedAvg only: a :class:`~jaxsec.privacy.dpsgd.AdaptiveClipping`
      (Andrew et al. 2021): ``S`` follows the target quantile of the client update norms
      through a noised count, the noise split of their Thm. 1 keeps the reported event;
      ``l2_norm_clip`` is the initial ``S``, carried as ``round``'s ``aggregator_state``
      (:func:`run`'s ``history['l2_norm_clip']``: the initial and each round's next ``S``).
  """
  if not callable(apply_fn):
    raise ValueError(f'apply_fn={apply_fn!r} must be callable.')
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  if (local_steps is None) == (local_epochs is None):
    raise ValueError('Give exactly one of local_steps and local_epochs, got '
                     f'local_steps={local_steps}, local_epochs={local_epochs}.')
  if local_steps is not None:
    local_steps = _checks.check_int('local_steps', local_steps, minimum=1)
  else:
    local_epochs = _checks.check_int('local_epochs', local_epochs, minimum=1)
  agg_name, agg_fn = _resolve_aggregator(aggregator)
  stateful: aggregators.StatefulAggregator | None = None
  plain_agg: Callable[..., Any] | None = None
  if isinstance(agg_fn, aggregators.StatefulAggregator):
    stateful = agg_fn
    agg_inputs = aggregators.call_inputs(agg_fn.update)
  else:
    plain_agg = agg_fn
    agg_inputs = aggregators.call_inputs(agg_fn)
  if root_data is not None:
    if not (isinstance(root_data, (tuple, list)) and len(root_data) == 2):
      raise ValueError(f'root_data must be a pair (x_root, y_root); got {type(root_data)}.')
    x_root, y_root = jnp.asarray(root_data[0]), jnp.asarray(root_data[1])
    if x_root.ndim < 1 or x_root.shape[0] == 0 or y_root.shape != x_root.shape[:1]:
      raise ValueError(f'root_data has x of shape {tuple(x_root.shape)} and y of shape '
                       f'{tuple(y_root.shape)}; expected [n, ...] and [n] with n >= 1.')
    if 'server_update' not in agg_inputs:
      raise ValueError(f'root_data is given but aggregator={aggregator!r} takes no '
                       'server_update= (FLTrust does).')
  elif agg_inputs.get('server_update'):
    raise ValueError(f'aggregator={aggregator!r} needs the server update: give '
                     'root_data=(x_root, y_root), the server\'s clean root data set.')
  attacker_rank = data_attack is not None and _accepts_keyword(data_attack, 'attacker')
  server_lr = float(_checks.check_float('server_lr', server_lr, minimum=0.0, strict_min=True,
                                        allow_traced=False))
  if clients_per_round is not None:
    clients_per_round = _checks.check_int('clients_per_round', clients_per_round, minimum=1)
  _checks.check_choice('sampling', sampling, dp_fedavg.SAMPLING)
  _checks.check_choice('client_weighting', client_weighting, WEIGHTING)
  _check_callable('update_attack', update_attack)
  _check_callable('data_attack', data_attack)
  if sampling == 'poisson':
    if sampling_rate is None:
      raise ValueError("sampling='poisson' needs sampling_rate, got None.")
    sampling_rate = float(_checks.check_float('sampling_rate', sampling_rate, minimum=0.0,
                                              maximum=1.0, strict_min=True,
                                              allow_traced=False))
    if clients_per_round is not None:
      raise ValueError(f'clients_per_round={clients_per_round} is for uniform sampling; '
                       "sampling='poisson' takes sampling_rate instead.")
    if agg_name != 'mean':
      raise ValueError(f"sampling='poisson' needs aggregator='mean' (masked average), got "
                       f'aggregator={aggregator!r}.')
    if update_attack is not None:
      raise ValueError("sampling='poisson' cannot be combined with an update_attack: "
                       'the attacks take no participation mask.')
  elif sampling_rate is not None:
    raise ValueError(f"sampling_rate={sampling_rate} is only used with sampling='poisson'.")
  dp = l2_norm_clip is not None
  if dp:
    l2_norm_clip = float(_checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0,
                                             strict_min=True, allow_traced=False))
    noise_multiplier = float(_checks.check_float(
        'noise_multiplier', noise_multiplier, minimum=0.0, allow_traced=False))
    if agg_name != 'mean':
      raise ValueError(f'DP-FedAvg (l2_norm_clip={l2_norm_clip}) needs aggregator="mean"; '
                       f'got aggregator={aggregator!r}: the noise is calibrated to the '
                       'sensitivity of a clipped sum.')
  elif noise_multiplier:
    raise ValueError(f'noise_multiplier={noise_multiplier} needs l2_norm_clip.')
  if adaptive_clipping is not None:
    if not dp:
      raise ValueError(f'adaptive_clipping={adaptive_clipping!r} is DP-FedAvg\'s: it needs '
                       'l2_norm_clip (the initial clip norm) and noise_multiplier.')
    if not isinstance(adaptive_clipping, dpsgd.AdaptiveClipping):
      raise ValueError(f'adaptive_clipping={adaptive_clipping!r} must be a '
                       'jaxsec.privacy.dpsgd.AdaptiveClipping or None.')
  if client_weighting == 'num_examples' and (agg_name != 'mean' or dp):
    raise ValueError("client_weighting='num_examples' is the weighted FedAvg mean: it needs "
                     f'aggregator="mean" without DP, got aggregator={aggregator!r}, '
                     f'l2_norm_clip={l2_norm_clip}.')
  objective = train_lib._resolve_objective(loss, objective)  # pylint: disable=protected-access
  attack_weights = (update_attack is not None and agg_name == 'mean'
                    and _accepts_weights(update_attack))

  def local_update(params, x, y, index_list, count, key, poisoned, attacker=0):
    width = index_list.shape[0]
    bw = min(batch_size, width)
    if local_steps is not None:
      # One random order of the client's examples per round (top_k of uniform scores,
      # padding scored lowest: O(W) where a full argsort per step is O(W log W)), read
      # min(B, n_c) examples at a time, cycling if K * B > n_c.
      k_perm, k_steps = jax.random.split(key)
      n_sel = min(local_steps * bw, width)
      scores = jax.random.uniform(k_perm, (width,))
      scores = jnp.where(jnp.arange(width) < count, scores, -1.0)
      order = jax.lax.top_k(scores, n_sel)[1]
      bs = jnp.minimum(bw, count)
      q = jnp.arange(local_steps)[:, None] * bs + jnp.arange(bw)[None, :]
      pos = order[q % count]
      valid = jnp.broadcast_to(jnp.arange(bw)[None, :] < bs, (local_steps, bw))
      active = jnp.ones((local_steps,), bool)
      step_keys = jax.random.split(k_steps, local_steps)
    else:
      spe = -(-width // bw)  # ceil(W / B) batches in the largest client's epoch

      def plan(e):
        kb, ks = jax.random.split(jax.random.fold_in(key, e))
        scores = jax.random.uniform(kb, (width,))
        scores = jnp.where(jnp.arange(width) < count, scores, 2.0)
        order = jnp.argsort(scores)
        order = jnp.concatenate([order, jnp.zeros((spe * bw - width,), order.dtype)])
        slot = jnp.arange(spe * bw).reshape(spe, bw)
        return (order.reshape(spe, bw), slot < count, slot[:, 0] < count,
                jax.random.split(ks, spe))
      pos, valid, active, step_keys = jax.tree.map(
          lambda a: a.reshape((-1,) + a.shape[2:]), jax.vmap(plan)(jnp.arange(local_epochs)))

    def body(carry, inp):
      p, s = carry
      ps, v, act, k = inp
      idx = index_list[ps]
      xb, yb = x[idx], y[idx]
      k_obj, k_data = jax.random.split(k)
      if data_attack is not None:
        attack_fn: Callable[..., Any] = data_attack
        out = (attack_fn(xb, yb, k_data, attacker=attacker) if attacker_rank
               else attack_fn(xb, yb, k_data))
        xa, ya = tuple(out)[:2]   # a pair or a PoisonOutput
        xb = jnp.where(poisoned, xa.astype(xb.dtype), xb)
        yb = jnp.where(poisoned, ya.astype(yb.dtype), yb)
      w = v.astype(jnp.float32)

      def loss_fn(pp):
        per_example = objective(apply_fn, pp, xb, yb, k_obj)
        return jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1.0)
      loss_value, grads = jax.value_and_grad(loss_fn)(p)
      upd, s2 = client_optimizer.update(grads, s, p)
      p2 = optax.apply_updates(p, upd)
      keep = lambda new, old: jnp.where(act, new, old)
      return (jax.tree.map(keep, p2, p), jax.tree.map(keep, s2, s)), (loss_value, act)

    init = (params, client_optimizer.init(params))
    (local, _), (losses, acts) = jax.lax.scan(body, init, (pos, valid, active, step_keys))
    acts = acts.astype(jnp.float32)
    mean_loss = jnp.sum(losses * acts) / jnp.maximum(jnp.sum(acts), 1.0)
    update = jax.tree.map(lambda a, b: (a - b).astype(b.dtype), local, params)
    return update, mean_loss

  def round_fn(params, x, y, index_lists, counts, byzantine, key, aggregator_state=()):
    num_clients = index_lists.shape[0]
    k_sample, k_train, k_attack, k_agg = _split_round_key(key)
    if sampling == 'uniform':
      m = num_clients if clients_per_round is None else clients_per_round
      if m > num_clients:
        raise ValueError(f'clients_per_round={m} exceeds the number of clients '
                         f'{num_clients}.')
      if m == num_clients:
        sel = jnp.arange(num_clients)
      else:
        sel = jnp.sort(jax.random.permutation(k_sample, num_clients)[:m])
      part = jnp.ones((m,), bool)
      expected = float(m)
    else:
      if sampling_rate is None:
        raise ValueError("sampling='poisson' needs sampling_rate, got None.")
      sel = jnp.arange(num_clients)
      part = jax.random.bernoulli(k_sample, sampling_rate, (num_clients,))
      expected = sampling_rate * num_clients
    byz_all = jnp.asarray(byzantine, bool)
    byz = byz_all[sel]
    ranks = (jnp.cumsum(byz_all.astype(jnp.int32)) - 1)[sel]
    keys = jax.vmap(lambda c: jax.random.fold_in(k_train, c))(sel)
    updates, losses = jax.vmap(local_update, in_axes=(None, None, None, 0, 0, 0, 0, 0))(
        params, x, y, index_lists[sel], counts[sel], keys, byz, ranks)
    partf = part.astype(jnp.float32)
    if client_weighting == 'num_examples':
      weights = counts[sel].astype(jnp.float32) * partf
    else:
      weights = partf
    if attack_weights:
      updates = update_attack(updates, byz, k_attack, weights=weights)
    elif update_attack is not None:
      updates = update_attack(updates, byz, k_attack)
    if dp:
      clip = l2_norm_clip if adaptive_clipping is None else aggregator_state
      agg, dp_info = dp_fedavg.dp_aggregate(updates, k_agg, l2_norm_clip=clip,
                                            noise_multiplier=noise_multiplier,
                                            expected_clients=expected, mask=partf,
                                            adaptive_clipping=adaptive_clipping)
      if adaptive_clipping is not None:
        aggregator_state = dp_info.next_l2_norm_clip
    elif client_weighting == 'num_examples':
      w = weights
      agg = jax.tree.map(lambda l: jnp.tensordot(w / jnp.maximum(jnp.sum(w), 1.0), l,
                                                 (0, 0)).astype(l.dtype), updates)
    elif sampling == 'poisson':
      w = partf / jnp.maximum(jnp.sum(partf), 1.0)
      agg = jax.tree.map(lambda l: jnp.tensordot(w, l, (0, 0)).astype(l.dtype), updates)
    else:
      extra = {}
      if 'key' in agg_inputs:
        extra['key'] = k_agg
      if root_data is not None:
        n_root = x_root.shape[0]
        extra['server_update'], _ = local_update(
            params, x_root, y_root, jnp.arange(n_root), jnp.asarray(n_root),
            jax.random.fold_in(k_agg, 1), jnp.asarray(False))
      if stateful is not None:
        agg, aggregator_state = stateful.update(updates, aggregator_state, clients=sel,
                                                **extra)
      elif plain_agg is not None:
        agg = plain_agg(updates, **extra)
      else:
        raise ValueError(f'aggregator={aggregator!r} is neither callable nor stateful.')
    new = jax.tree.map(lambda p, a: (p + server_lr * a).astype(p.dtype), params, agg)
    norms = jax.vmap(lambda u: jnp.sqrt(sum(jnp.sum(jnp.square(l.astype(jnp.float32)))
                                            for l in jax.tree.leaves(u))))(updates)
    return new, RoundInfo(sel, part, byz, losses, norms, aggregator_state)

  return FedAvg(apply_fn=apply_fn, local_update=jax.jit(local_update),
                round=jax.jit(round_fn), clients_per_round=clients_per_round,
                sampling=sampling, sampling_rate=sampling_rate,
                l2_norm_clip=l2_norm_clip if dp else None,
                noise_multiplier=noise_multiplier if dp else 0.0,
                stateful_aggregator=stateful,
                adaptive_clipping=adaptive_clipping if dp else None)


# ----------------------------------------------------------------------------- driver

class FedAvgResult(NamedTuple):
  params: Any
  history: dict   # per round: 'loss' (mean honest participant loss); 'eval_round' /
                  # 'eval_accuracy' at evaluation rounds; 'seconds'; 'l2_norm_clip'
                  # (adaptive clipping: S before round 1 and after each round)
  privacy: dp_fedavg.DPFedAvgAccount | None = None   # DP-FedAvg: user-level (eps, delta)


def _byzantine_mask(byzantine_clients, num_clients):
  mask = np.zeros((num_clients,), bool)
  for c in byzantine_clients:
    c = _checks.check_int('byzantine_clients[i]', c, minimum=0, maximum=num_clients - 1)
    if mask[c]:
      raise ValueError(f'byzantine_clients lists client {c} twice.')
    mask[c] = True
  return mask


def run(fed: FedAvg, params: Any, x: Any, y: Any, *, clients: Sequence[np.ndarray],
        num_rounds: int, key: jax.Array, byzantine_clients: Sequence[int] = (),
        eval_data: tuple | None = None, eval_every: int = 1, num_classes: int | None = None,
        progress: bool = False, label: str = 'fedavg', delta: float | None = None,
        accountant: str | None = None) -> FedAvgResult:
  """Runs ``num_rounds`` FedAvg rounds from ``params``; deterministic for a ``key``.

  Args:
    fed: from :func:`make_fedavg`.
    params: the initial global model.
    x, y: the shared data set; client ``c`` holds ``x[clients[c]]``.
    clients: per-client index arrays (:func:`iid_partition`, :func:`dirichlet_partition`).
    num_rounds: R.
    key: round ``r`` uses ``fold_in(key, r)``.
    byzantine_clients: ids of the Byzantine clients (fixed for the whole run).
    eval_data: optional ``(x_test, y_test)``: global-model accuracy every ``eval_every``
      rounds and after the last one.
    progress: one line per evaluation (or every ``eval_every`` rounds) to stderr.
    delta: with DP-FedAvg (required there, an error otherwise): the delta of the
      reported user-level guarantee ``FedAvgResult.privacy``, accounted before training
      for ``num_rounds`` rounds with the event of the client sampler used.
    accountant: ``'pld'`` or ``'rdp'``; default PLD for Poisson sampling, RDP (the
      only one) for fixed-size sampling.
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  train_lib._check_data(x, y, num_classes)  # pylint: disable=protected-access
  num_rounds = _checks.check_int('num_rounds', num_rounds, minimum=0)
  eval_every = _checks.check_int('eval_every', eval_every, minimum=1)
  index_lists, counts = client_index_lists(clients, x.shape[0])
  num_clients = index_lists.shape[0]
  if fed.clients_per_round is not None and fed.clients_per_round > num_clients:
    raise ValueError(f'clients_per_round={fed.clients_per_round} exceeds the number of '
                     f'clients {num_clients}.')
  byz = _byzantine_mask(byzantine_clients, num_clients)
  privacy = None
  if fed.l2_norm_clip is not None:
    if delta is None:
      raise ValueError('DP-FedAvg needs delta for its reported (epsilon, delta); got '
                       'delta=None.')
    privacy = fed.dp_account(num_clients=num_clients, num_rounds=num_rounds, delta=delta,
                             accountant=accountant)
  elif delta is not None or accountant is not None:
    raise ValueError(f'delta={delta}, accountant={accountant!r} are for DP-FedAvg; '
                     'this FedAvg has no l2_norm_clip.')
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  lists_j, counts_j, byz_j = jnp.asarray(index_lists), jnp.asarray(counts), jnp.asarray(byz)
  params = jax.tree.map(jnp.asarray, params)
  history: dict[str, Any] = {'loss': [], 'eval_round': [], 'eval_accuracy': [], 'seconds': 0.0}
  agg_state = fed.init_aggregator_state(params, num_clients)
  if fed.adaptive_clipping is not None:
    history['l2_norm_clip'] = [float(agg_state)]
  t0 = time.time()
  for r in range(num_rounds):
    params, info = fed.round(params, xj, yj, lists_j, counts_j, byz_j,
                             jax.random.fold_in(key, r), aggregator_state=agg_state)
    agg_state = info.aggregator_state
    if fed.adaptive_clipping is not None:
      history['l2_norm_clip'].append(float(agg_state))
    honest = np.asarray(info.participating) & ~np.asarray(info.byzantine)
    lo = np.asarray(info.loss)
    history['loss'].append(float(lo[honest].mean()) if honest.any() else float('nan'))
    last = r + 1 == num_rounds
    if eval_data is not None and ((r + 1) % eval_every == 0 or last):
      acc = train_lib.evaluate(fed.apply_fn, params, *eval_data)
      history['eval_round'].append(r + 1)
      history['eval_accuracy'].append(acc)
    if progress and ((r + 1) % eval_every == 0 or last):
      extra = (f' acc {history["eval_accuracy"][-1]:.4f}' if eval_data is not None else '')
      print(f'[{label}] round {r + 1}/{num_rounds} loss {history["loss"][-1]:.4f}{extra} '
            f'({time.time() - t0:.1f}s)', file=sys.stderr, flush=True)
  history['seconds'] = time.time() - t0
  return FedAvgResult(params, history, privacy)

