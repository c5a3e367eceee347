"""Byzantine clients in federated learning (survey §2.3: poisoning in distributed learning).

Two kinds of attack plug into :func:`jaxsec.federated.fedavg.make_fedavg`:

* Update (model-poisoning) attacks ``attack(updates, byzantine, key) -> updates``: the
  round's stacked honest updates ``[K, ...]`` and a ``[K]`` bool mask; Byzantine rows are
  replaced, honest rows returned bit for bit. ``K`` is static; ``m = sum(byzantine)`` may
  vary per round (client sampling) and is read inside the trace.
  :func:`sign_flip` (``-scale *`` own honest update); :func:`gaussian_noise` (Blanchard et
  al. 2017); :func:`alie` ("A Little Is Enough", Baruch et al., NeurIPS 2019: ``mean - z *
  std``, ``z`` the paper's :func:`alie_z_max`, the common variant, or the authors' code's
  fixed ``num_std``); :func:`ipm` (Xie, Koyejo, Gupta, UAI 2020: ``-epsilon *`` honest mean);
  :func:`model_replacement` (Bagdasaryan et al., AISTATS 2020: boosted by ``gamma = n /
  eta``, or ``W / (eta w_attacker)`` with client weights).
* Data-poisoning clients ``attack(x, y, key) -> (x', y')`` (``jaxsec.attacks.poisoning``)
  applied to each local minibatch of a Byzantine client, which then trains honestly:
  :func:`label_flip`, :func:`backdoor` (BadNets; with :func:`model_replacement`, Bagdasaryan
  et al.'s attack), :func:`dba` (distributed backdoor, Xie et al. 2020: one piece of the
  global trigger per attacker).

Optimised model poisoning (Fang et al. 2020; min-max / min-sum of Shejwalkar & Houmansadr
2021) is in :mod:`jaxsec.federated.model_poisoning`.

``statistics=``: ``'benign'`` uses the honest clients' updates (omniscient; IPM's setting),
``'byzantine'`` the attackers' own honest updates (ALIE's non-omniscient setting). Standard
deviations are population values (``ddof=0``).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.attacks.poisoning import backdoor as backdoor_lib

__all__ = ['sign_flip', 'gaussian_noise', 'alie', 'alie_z_max', 'ipm', 'model_replacement',
           'label_flip', 'backdoor', 'dba', 'masked_mean_std', 'STATISTICS']

STATISTICS = ('benign', 'byzantine')

UpdateAttack = Callable[[Any, jax.Array, jax.Array], Any]


# ------------------------------------------------------------------------------ helpers

def _check_inputs(updates, byzantine):
  leaves = jax.tree_util.tree_leaves(updates)
  if not leaves:
    raise ValueError('updates has no array leaves.')
  k = leaves[0].shape[0] if leaves[0].ndim else None
  if k is None or any(l.ndim == 0 or l.shape[0] != k for l in leaves):
    raise ValueError('updates leaves must share a leading client axis [K, ...]; got shapes '
                     f'{[tuple(l.shape) for l in leaves][:4]}.')
  byzantine = jnp.asarray(byzantine)
  if byzantine.shape != (k,):
    raise ValueError(f'byzantine has shape {tuple(byzantine.shape)}; expected [{k}] (one '
                     'flag per client of the round).')
  return k, byzantine.astype(bool)


def _rows(mask, leaf):
  return mask.reshape((-1,) + (1,) * (leaf.ndim - 1))


def _replace(updates, byzantine, malicious):
  """Byzantine rows from ``malicious`` (a per-client tree or one broadcast update)."""
  def leaf(u, m):
    m = jnp.broadcast_to(m.astype(u.dtype), u.shape)
    return jnp.where(_rows(byzantine, u), m, u)
  return jax.tree.map(leaf, updates, malicious)


def masked_mean_std(updates: Any, mask: jax.Array) -> tuple[Any, Any]:
  """Coordinate-wise mean and population std over the clients where ``mask`` is True
  (zeros when no client is selected); computed in at least float32."""
  w = jnp.asarray(mask).astype(jnp.float32)
  cnt = jnp.maximum(jnp.sum(w), 1.0)

  def stats(l):
    acc = jnp.promote_types(l.dtype, jnp.float32)
    x = l.astype(acc)
    ww = _rows(w, x).astype(acc)
    mu = jnp.sum(ww * x, axis=0) / cnt
    var = jnp.sum(ww * jnp.square(x - mu), axis=0) / cnt
    return mu, jnp.sqrt(var)
  out = jax.tree.map(stats, updates)
  is_pair = lambda t: isinstance(t, tuple)
  return (jax.tree.map(lambda t: t[0], out, is_leaf=is_pair),
          jax.tree.map(lambda t: t[1], out, is_leaf=is_pair))


def _stat_mask(statistics, byzantine):
  return ~byzantine if statistics == 'benign' else byzantine


# ------------------------------------------------------------------------ update attacks

def sign_flip(*, scale: float = 1.0) -> UpdateAttack:
  """Each Byzantine client sends ``-scale * (its own honest update)``.

  With a fraction ``beta`` of Byzantine clients and IID data the mean aggregate shrinks to
  about ``(1 - beta - scale * beta)`` times the honest mean: ``scale > (1 - beta) / beta``
  reverses it (gradient ascent), while median-type rules stay in the honest range.
  """
  scale = _checks.check_float('scale', scale, minimum=0.0, strict_min=True)

  def attack(updates, byzantine, key):
    del key
    _, byzantine = _check_inputs(updates, byzantine)
    mal = jax.tree.map(lambda u: -scale * u, updates)
    return _replace(updates, byzantine, mal)
  return attack


def gaussian_noise(*, stddev: float, center: str = 'zero') -> UpdateAttack:
  """Each Byzantine client sends independent Gaussian noise ``N(c, stddev^2 I)`` with
  ``c = 0`` (``center='zero'``, the Gaussian Byzantine workers of Blanchard et al. 2017)
  or ``c`` = its own honest update (``center='honest'``)."""
  stddev = _checks.check_float('stddev', stddev, minimum=0.0, strict_min=True)
  _checks.check_choice('center', center, ('zero', 'honest'))

  def attack(updates, byzantine, key):
    k, byzantine = _check_inputs(updates, byzantine)
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    # One draw for all leaves, sliced per leaf: the same distribution as a draw per leaf,
    # but one RNG call (per-leaf threefry calls made a round compile ~4 s longer on CPU).
    sizes = [int(np.prod(l.shape[1:])) for l in leaves]
    z = stddev * jax.random.normal(key, (k, sum(sizes)), jnp.float32)
    mal, start = [], 0
    for l, size in zip(leaves, sizes, strict=True):
      noise = z[:, start:start + size].reshape(l.shape).astype(l.dtype)
      start += size
      mal.append(noise if center == 'zero' else l + noise)
    return _replace(updates, byzantine, jax.tree_util.tree_unflatten(treedef, mal))
  return attack


def _alie_supporters(n, m):
  return n // 2 + 1 - m


Z_RULES = ('paper', 'common')


def alie_z_max(num_clients: Any, num_byzantine: Any, *, rule: str = 'paper') -> Any:
  """ALIE's ``z_max`` (Baruch et al. 2019, §4): with ``n`` clients of which ``m`` are
  Byzantine, the attackers need ``s = floor(n/2 + 1) - m`` honest "supporters" further
  from the mean than their value, and (``rule='paper'``, the paper's Algorithm 3)

      z_max = max_z { Phi(z) < (n - s) / n } = Phi^{-1}((n - s) / n),

  ``Phi`` the standard normal CDF. ``rule='common'`` is the variant of many
  re-implementations, the quantile among the ``n - m`` honest clients only:
  ``Phi^{-1}((n - m - s) / (n - m))`` (equal to the paper's for ``m = 0``, smaller
  otherwise). (The authors' released code uses neither: a fixed ``--num_std``, default
  1.5; that is :func:`alie`'s ``z=``.)

  Python ints give a Python float (``ValueError`` unless ``0 <= m <= n`` and the attackers
  are a minority, ``s >= 1``); a traced ``m`` gives a traced value (``+inf`` once the
  attackers are a majority, ``s <= 0``).

  >>> round(alie_z_max(10, 5), 4)   # s = 1, Phi^{-1}(0.9)
  1.2816
  >>> round(alie_z_max(10, 5, rule='common'), 4)   # Phi^{-1}(4 / 5)
  0.8416
  """
  _checks.check_choice('rule', rule, Z_RULES)
  if isinstance(num_byzantine, numbers.Integral) and isinstance(num_clients,
                                                                numbers.Integral):
    n = _checks.check_int('num_clients', num_clients, minimum=1)
    m = _checks.check_int('num_byzantine', num_byzantine, minimum=0, maximum=n)
    s = _alie_supporters(n, m)
    if s < 1:
      raise ValueError(f'num_byzantine={m} of num_clients={n} is a majority (s = floor(n/2 '
                       f'+ 1) - m = {s} < 1): z_max is unbounded.')
    import statistics  # pylint: disable=g-import-not-at-top
    p = (n - s) / n if rule == 'paper' else (n - m - s) / (n - m)
    return statistics.NormalDist().inv_cdf(p)
  n = _checks.check_int('num_clients', num_clients, minimum=1)
  m = jnp.asarray(num_byzantine, jnp.float32)
  s = jnp.floor(n / 2 + 1) - m
  if rule == 'paper':
    p = (n - s) / n
  else:
    p = jnp.where(s >= 1, (n - m - s) / jnp.maximum(n - m, 1.0), 1.0)
  return jax.scipy.special.ndtri(jnp.clip(p, 0.0, 1.0))


def alie(*, z: float | None = None, z_rule: str | None = None,
         statistics: str = 'byzantine') -> UpdateAttack:
  """"A Little Is Enough" (Baruch, Baruch, Goldberg, NeurIPS 2019).

  Every Byzantine client sends the same vector ``mu - z * sigma``: ``mu`` and ``sigma`` the
  coordinate-wise mean and std of the clients' honest updates (``statistics``), ``z`` by
  default the paper's :func:`alie_z_max` for this round's ``n = K`` clients and ``m``
  Byzantine ones. The shift stays within the spread of the honest updates, so
  median / trimmed mean / Krum keep (or even select) it, while it consistently drags
  every coordinate the same way.

  Args:
    z: a fixed shift in standard deviations (``>= 0``; the authors' code: ``--num_std``,
      default 1.5), or ``None`` for ``z_max`` of ``z_rule``.
    z_rule: ``'paper'`` (default) or ``'common'``: the :func:`alie_z_max` rule; not with
      ``z``.
    statistics: ``'byzantine'`` (the paper's: the attackers' own honest updates) or
      ``'benign'`` (omniscient).
  """
  if z is not None:
    z = _checks.check_float('z', z, minimum=0.0)
    if z_rule is not None:
      raise ValueError(f'z={z} is a fixed shift; z_rule={z_rule!r} would be ignored (give '
                       'one of them).')
  rule = 'paper' if z_rule is None else _checks.check_choice('z_rule', z_rule, Z_RULES)
  _checks.check_choice('statistics', statistics, STATISTICS)

  def attack(updates, byzantine, key):
    del key
    k, byzantine = _check_inputs(updates, byzantine)
    zz = alie_z_max(k, jnp.sum(byzantine), rule=rule) if z is None else z
    mu, sd = masked_mean_std(updates, _stat_mask(statistics, byzantine))
    mal = jax.tree.map(lambda a, b: a - zz * b, mu, sd)
    return _replace(updates, byzantine, mal)
  return attack


def ipm(*, epsilon: float, statistics: str = 'benign') -> UpdateAttack:
  """Inner-product manipulation (Xie, Koyejo, Gupta, "Fall of Empires", UAI 2020).

  Every Byzantine client sends ``-epsilon * mean`` of the honest updates, so that the
  inner product between the aggregate and the true update turns negative. A small
  ``epsilon`` (0.1 in the paper) slips past median / Krum (the vector is close to the
  origin, near the honest cluster); a large one (e.g. 100) defeats the mean.
  """
  epsilon = _checks.check_float('epsilon', epsilon, minimum=0.0, strict_min=True)
  _checks.check_choice('statistics', statistics, STATISTICS)

  def attack(updates, byzantine, key):
    del key
    _, byzantine = _check_inputs(updates, byzantine)
    mu, _ = masked_mean_std(updates, _stat_mask(statistics, byzantine))
    return _replace(updates, byzantine, jax.tree.map(lambda a: -epsilon * a, mu))
  return attack


def model_replacement(*, server_lr: float = 1.0, gamma: float | None = None,
                      client_weights: Any = None) -> UpdateAttack:
  """Model replacement (Bagdasaryan, Veit, Hua, Estrin, Shmatikov, AISTATS 2020).

  A Byzantine client that trained ``X`` (typically on backdoored data, :func:`backdoor`)
  from the global ``G`` sends ``gamma * (X - G)``. With the server update
  ``G + eta * sum_i w_i update_i / W`` (``W = sum_i w_i``), the boost
  ``gamma = W / (eta * w_attackers)`` (``w_attackers`` the Byzantine rows' total weight)
  makes the new global model ``X + (eta / W) * sum_honest(w_i update_i)``, exactly ``X``
  when the honest updates vanish (one attacker; ``m`` colluding attackers share the boost
  and land on the weighted mean of their ``X``). Uniform weights give the paper's
  ``gamma = n / eta`` (``n / (eta m)`` for ``m`` attackers).

  Args:
    server_lr: the server's ``eta``.
    gamma: a fixed boost instead of the computed one.
    client_weights: the aggregation weight of each of the round's ``K`` rows: with
      ``make_fedavg(client_weighting='num_examples')`` and every client in every round,
      the clients' example counts ``[len(c) for c in clients]``. ``None``: uniform (the
      plain mean). The attack also takes ``weights=`` per call (the round's rows), which
      overrides it; :func:`jaxsec.federated.fedavg.make_fedavg` passes the round's
      weights of the sampled clients itself, so there ``client_weights`` is not needed.
  """
  server_lr = _checks.check_float('server_lr', server_lr, minimum=0.0, strict_min=True)
  if gamma is not None:
    gamma = _checks.check_float('gamma', gamma, minimum=0.0, strict_min=True)
  if client_weights is not None:
    if gamma is not None:
      raise ValueError(f'gamma={gamma} is a fixed boost; client_weights would be ignored '
                       '(give one of them).')
    client_weights = np.asarray(client_weights)
    if (client_weights.ndim != 1 or not np.issubdtype(client_weights.dtype, np.number)
        or not np.all(np.isfinite(client_weights)) or np.any(client_weights < 0)
        or not np.any(client_weights > 0)):
      raise ValueError(f'client_weights={client_weights!r} must be a 1-D array of finite '
                       'non-negative weights, not all zero.')

  def attack(updates, byzantine, key, *, weights=None):
    del key
    k, byzantine = _check_inputs(updates, byzantine)
    if gamma is not None:
      g = gamma
    else:
      w = client_weights if weights is None else weights
      if w is None:
        w = jnp.ones((k,), jnp.float32)
      w = jnp.asarray(w, jnp.float32)
      if w.shape != (k,):
        raise ValueError(f'client weights have shape {tuple(w.shape)}; the round has {k} '
                         'clients (one weight per row of updates; with client sampling '
                         'pass the round\'s weights= per call).')
      w_byz = jnp.sum(jnp.where(byzantine, w, 0.0))
      g = jnp.sum(w) / (server_lr * jnp.where(w_byz > 0, w_byz, 1.0))
    return _replace(updates, byzantine, jax.tree.map(lambda u: g * u, updates))
  return attack


# --------------------------------------------------------------------------- data attacks

def label_flip(*, num_classes: int, source: int | None = None, target: int | None = None
               ) -> Callable:
  """A label-flipping client: ``y -> num_classes - 1 - y`` on all its data (the usual
  all-label flip of Fang et al. 2020), or, with ``source`` and ``target``, only class
  ``source`` relabelled ``target`` (targeted flipping, Tolpegin et al. 2020).

  Returns ``attack(x, y, key) -> (x, y')``.
  """
  num_classes = _checks.check_int('num_classes', num_classes, minimum=2)
  if (source is None) != (target is None):
    raise ValueError(f'give both source and target or neither; got source={source}, '
                     f'target={target}.')
  if source is None or target is None:
    def flip_all(x, y, key):
      del key
      return x, (num_classes - 1 - y).astype(y.dtype)
    return flip_all
  src = _checks.check_int('source', source, minimum=0, maximum=num_classes - 1)
  tgt = _checks.check_int('target', target, minimum=0, maximum=num_classes - 1)
  if src == tgt:
    raise ValueError(f'source={src} equals target={tgt}: nothing would flip.')

  def flip_source(x, y, key):
    del key
    return x, jnp.where(y == src, tgt, y).astype(y.dtype)
  return flip_source


def backdoor(*, target_label: int, fraction: float, size: int = 3, value: float = 1.0,
             location: str = 'bottom_right') -> Callable:
  """A backdoor client: in every local minibatch ``round(fraction * B)`` uniformly chosen
  examples get the BadNets trigger (``jaxsec.attacks.poisoning.apply_trigger``) and the
  label ``target_label``; the rest stay clean (so the main task is kept, as Bagdasaryan
  et al. do). Combine with :func:`model_replacement` to boost the update.

  Returns ``attack(x, y, key) -> (x', y')`` for image batches ``[B, H, W(, C)]``;
  ``attack.trigger(x)`` stamps the trigger on a batch (test-time backdoor success).
  """
  target_label = _checks.check_int('target_label', target_label, minimum=0)
  fraction = float(_checks.check_float('fraction', fraction, minimum=0.0, maximum=1.0,
                                       allow_traced=False))
  size = _checks.check_int('size', size, minimum=1)
  value = float(_checks.check_float('value', value, allow_traced=False))
  locations = backdoor_lib._LOCATIONS  # pylint: disable=protected-access
  _checks.check_choice('location', location, locations)

  def trigger(x):
    return backdoor_lib.apply_trigger(x, size=size, value=value, location=location)

  def attack(x, y, key):
    b = x.shape[0]
    k = int(math.floor(fraction * b + 0.5))
    rows = jax.random.permutation(key, b)[:k]
    mask = jnp.zeros((b,), bool).at[rows].set(True)
    xt = jnp.where(_rows(mask, x), trigger(x), x)
    return xt, jnp.where(mask, target_label, y).astype(y.dtype)
  return _TriggeredAttack(attack, trigger)


def _dba_masks(height: int, width: int, num_pieces: int, bar_length: int, gap: int,
               shift: int) -> np.ndarray:
  """``[P, H, W]`` bool masks of DBA's local triggers: horizontal bars of ``1 x bar_length``
  pixels on a grid of 2 rows (``ceil(P / 2)`` per row), ``gap`` pixels apart, the first at
  ``(shift, shift)``; their union is the global trigger."""
  cols = -(-num_pieces // 2)
  masks = np.zeros((num_pieces, height, width), bool)
  for i in range(num_pieces):
    r = shift + (i // cols) * (1 + gap)
    c = shift + (i % cols) * (bar_length + gap)
    if r >= height or c + bar_length > width:
      raise ValueError(f'DBA piece {i} at row {r}, columns {c}..{c + bar_length - 1} does '
                       f'not fit a {height}x{width} image; lower num_pieces, bar_length, gap '
                       'or shift.')
    masks[i, r, c:c + bar_length] = True
  return masks


def dba(*, target_label: int, fraction: float, num_pieces: int = 4, bar_length: int = 4,
        gap: int = 2, shift: int = 0, value: float = 1.0) -> _DistributedTriggerAttack:
  """Distributed backdoor attack (Xie, Huang, Chen, Li, ICLR 2020).

  The global trigger (``num_pieces`` horizontal bars, :func:`_dba_masks`; the paper's
  four-bar pattern with its size / gap / location factors) is split into local triggers;
  the Byzantine client of rank ``attacker`` (0, 1, ... among the Byzantine clients, passed
  by :func:`~jaxsec.federated.fedavg.make_fedavg`) stamps only piece ``attacker mod
  num_pieces`` on ``round(fraction * B)`` examples of every local minibatch, relabelled
  ``target_label``; the rest stay clean. At test time the *global* trigger is used
  (``attack.trigger(x)``); ``attack.local_trigger(x, i)`` stamps piece ``i``.

  Returns ``attack(x, y, key, *, attacker=0) -> (x', y')`` for images ``[B, H, W(, C)]``.
  """
  target_label = _checks.check_int('target_label', target_label, minimum=0)
  fraction = float(_checks.check_float('fraction', fraction, minimum=0.0, maximum=1.0,
                                       allow_traced=False))
  num_pieces = _checks.check_int('num_pieces', num_pieces, minimum=1)
  bar_length = _checks.check_int('bar_length', bar_length, minimum=1)
  gap = _checks.check_int('gap', gap, minimum=0)
  shift = _checks.check_int('shift', shift, minimum=0)
  value = float(_checks.check_float('value', value, allow_traced=False))

  def masks_for(x):
    if x.ndim not in (3, 4):
      raise ValueError(f'DBA stamps images [B, H, W(, C)]; got shape {tuple(x.shape)}.')
    m = jnp.asarray(_dba_masks(x.shape[1], x.shape[2], num_pieces, bar_length, gap, shift))
    return m if x.ndim == 3 else m[..., None]

  def stamp(x, mask):
    return jnp.where(mask[None], jnp.asarray(value, x.dtype), x)

  def trigger(x):
    return stamp(x, jnp.any(masks_for(x), axis=0))

  def local_trigger(x, piece):
    return stamp(x, masks_for(x)[jnp.asarray(piece) % num_pieces])

  def attack(x, y, key, *, attacker=0):
    b = x.shape[0]
    k = int(math.floor(fraction * b + 0.5))
    rows = jax.random.permutation(key, b)[:k]
    mask = jnp.zeros((b,), bool).at[rows].set(True)
    xt = jnp.where(_rows(mask, x), local_trigger(x, attacker), x)
    return xt, jnp.where(mask, target_label, y).astype(y.dtype)
  return _DistributedTriggerAttack(attack, trigger, local_trigger)


class _TriggeredAttack:
  """A data attack ``(x, y, key) -> (x', y')`` that also exposes its ``trigger(x)`` (to
  stamp test inputs when measuring the backdoor's success)."""

  def __init__(self, attack: Callable[..., Any], trigger: Callable[[jax.Array], jax.Array]):
    self._attack = attack
    self.trigger = trigger

  def __call__(self, x: jax.Array, y: jax.Array, key: jax.Array) -> Any:
    return self._attack(x, y, key)


class _DistributedTriggerAttack(_TriggeredAttack):
  """:class:`_TriggeredAttack` whose call takes the attacker's rank (DBA's local trigger)
  and that also exposes ``local_trigger(x, piece)``."""

  def __init__(self, attack: Callable[..., Any], trigger: Callable[[jax.Array], jax.Array],
               local_trigger: Callable[..., jax.Array]):
    super().__init__(attack, trigger)
    self.local_trigger = local_trigger

  def __call__(self, x: jax.Array, y: jax.Array, key: jax.Array, *,  # pyrefly: ignore[bad-override]
               attacker: Any = 0) -> Any:
    return self._attack(x, y, key, attacker=attacker)

