"""Online centroid anomaly detection and its greedy poisoning (Kloft and Laskov, AISTATS
2010; JMLR 2012, "Security analysis of online centroid anomaly detection").

The detector keeps a centre ``c`` and accepts ``x`` as normal iff ``||x - c|| <= r``;
accepted points update the centre. Finite horizon (a working set of ``n`` points, the
paper's removal strategies): ``'average'`` (average-out, ``c <- c + (x - c) / n``),
``'random'`` (a uniformly chosen working-set point is replaced by ``x``), ``'nearest'`` (the
working-set point nearest to ``x`` is replaced). Infinite horizon (``'infinite'``): nothing
is removed, the centre is the mean of all accepted points (the ``n`` initial ones included):
``c <- c + (x - c) / (m + 1)`` after ``m`` of them.

The attacker knows the state and wants the centre to reach a target ``t`` (so that ``t`` is
accepted). The greedy attack sends ``x = c + r (t - c) / ||t - c||`` (or ``t`` once inside
the sphere), the accepted point that moves the centre furthest toward ``t``. Against
average-out it is optimal: after ``i`` points the displacement is ``i r / n`` (the paper's
bound ``D_i <= i / n`` radii, met with equality); random-out moves it ``r / n`` per point in
expectation. Infinite horizon: ``D_i = H_{n+i} - H_n ~ log(1 + i / n)`` radii (``H`` the
harmonic numbers), so moving ``D`` radii takes ``~ n (e^D - 1)`` points. Against nearest-out
it stalls (each boundary point replaces the previous attack point); the paper's optimal
nearest-out attack (a program per step) is not implemented.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.poisoning.base import PoisonOutput, check_fraction

RULES = ('average', 'random', 'nearest', 'infinite')


class CentroidState(NamedTuple):
  """Detector state: ``center`` [d], the working set ``window`` [n, d] and ``count``, the
  number of points the centre averages (``n``, growing only under ``'infinite'``)."""
  center: jax.Array
  window: jax.Array
  count: jax.Array | None = None


def centroid_init(x: jax.Array) -> CentroidState:
  """The detector trained on ``x`` [n, d]: centre = mean, working set = ``x``."""
  _checks.check_array('x', x, ndim=2, dtype_kind='f', finite=True)
  return CentroidState(jnp.mean(x, axis=0), x, jnp.asarray(x.shape[0], x.dtype))


def centroid_update(state: CentroidState, x: jax.Array, key: jax.Array, *, radius: float,
                    rule: str = 'average') -> tuple[CentroidState, jax.Array]:
  """Tests one point ``x`` [d]; if accepted (``||x - c|| <= radius``) updates the state."""
  _checks.check_choice('rule', rule, RULES)
  c, win, count = state
  n = win.shape[0]
  accept = jnp.linalg.norm(x - c) <= radius
  if rule == 'average':
    new = CentroidState(c + (x - c) / n, win, count)
  elif rule == 'infinite':
    if count is None:
      raise ValueError("state.count is None; rule='infinite' needs the number of points "
                       'the centre averages (build the state with centroid_init).')
    new = CentroidState(c + (x - c) / (count + 1), win, count + 1)
  else:
    if rule == 'random':
      j = jax.random.randint(key, (), 0, n)
    else:
      j = jnp.argmin(jnp.sum((win - x) ** 2, axis=1))
    new = CentroidState(c + (x - win[j]) / n, win.at[j].set(x), count)
  state = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, state)
  return state, accept


def greedy_attack_point(center: jax.Array, target: jax.Array, radius: float,
                        margin: float = 1e-4) -> jax.Array:
  """``c + r' (t - c) / ||t - c||`` with ``r' = radius (1 - margin)``, or ``t`` if closer."""
  diff = target - center
  dist = jnp.linalg.norm(diff)
  r = radius * (1.0 - margin)
  return jnp.where(dist <= r, target, center + r * diff / jnp.maximum(dist, 1e-30))


def centroid_stream(state: CentroidState, xs: jax.Array, key: jax.Array, *, radius: float,
                    rule: str = 'average', is_attack: jax.Array | None = None,
                    target: jax.Array | None = None, margin: float = 1e-4):
  """Runs the detector over a stream; attack slots are filled by the greedy attacker.

  Args:
    state: initial :class:`CentroidState`.
    xs: [T, d] innocent stream (rows where ``is_attack`` is True are ignored).
    is_attack: optional bool [T]: at these steps the attacker sends
      :func:`greedy_attack_point` toward ``target`` computed from the current state.

  Returns:
    ``(final_state, info)`` with ``info`` = dict of ``accepted`` [T], ``center`` [T, d]
    (after each step), ``sent`` [T, d] (the points actually sent) and
    ``target_distance`` [T] (``||c - t||`` after each step, if a target is given).
  """
  _checks.check_positive('radius', radius)
  _checks.check_choice('rule', rule, RULES)
  t_len = xs.shape[0]
  if is_attack is None:
    is_attack = jnp.zeros((t_len,), bool)
  if target is None:
    target = jnp.zeros_like(state.center)
    has_target = False
  else:
    has_target = True
  keys = jax.random.split(key, t_len)

  def step(st, inp):
    x, att, k = inp
    x = jnp.where(att, greedy_attack_point(st.center, target, radius, margin), x)
    st, acc = centroid_update(st, x, k, radius=radius, rule=rule)
    return st, (acc, st.center, x, jnp.linalg.norm(st.center - target))

  final, (acc, centers, sent, dist) = jax.lax.scan(step, state, (xs, is_attack, keys))
  info = {'accepted': acc, 'center': centers, 'sent': sent}
  if has_target:
    info['target_distance'] = dist
  return final, info


def centroid_poisoning(*, target: jax.Array, radius: float, fraction: float | None = None,
                       num_points: int | None = None, rule: str = 'average',
                       poison_label: int = 0) -> Callable:
  """Kloft-Laskov greedy poisoning of a centroid detector trained on ``x`` (injection).

  ``attack(x, y, key) -> PoisonOutput(x', y', info)``: the detector starts from ``centroid_init(x)``; the
  attacker appends ``n_poison`` greedy points (computed online against the simulated
  detector, in order), labelled ``poison_label`` (the attacker claims them normal). Size
  ``n + n_poison``. ``info``: ``poison_mask``, ``accepted`` and
  ``target_distance`` (after each poison point) and ``final_center``.
  """
  if (fraction is None) == (num_points is None):
    raise ValueError(f'Give exactly one of fraction={fraction!r} and num_points={num_points!r}.')
  if fraction is not None:
    fraction = check_fraction('fraction', fraction)
  else:
    num_points = _checks.check_int('num_points', num_points, minimum=0)
  radius = _checks.check_positive('radius', radius)
  _checks.check_choice('rule', rule, RULES)
  _checks.check_array('target', target, ndim=1, dtype_kind='f', finite=True)

  def attack(x, y, key):
    _checks.check_array('x', x, ndim=2, dtype_kind='f', finite=True)
    _checks.check_labels('y', y, batch=x.shape[0])
    if target.shape[0] != x.shape[1]:
      raise ValueError(f'target has {target.shape[0]} features; x has {x.shape[1]}.')
    n = x.shape[0]
    n_p = num_points if fraction is None else int(round(fraction * n))
    st = centroid_init(x)
    final, info = centroid_stream(st, jnp.zeros((n_p, x.shape[1]), x.dtype), key,
                                  radius=radius, rule=rule, is_attack=jnp.ones((n_p,), bool),
                                  target=target)
    x2 = jnp.concatenate([x, info['sent']])
    y2 = jnp.concatenate([y, jnp.full((n_p,), poison_label, y.dtype)])
    return PoisonOutput(x2, y2, {'poison_mask': jnp.arange(n + n_p) >= n,
                                 'accepted': info['accepted'],
                                 'target_distance': info['target_distance'],
                                 'final_center': final.center})
  return attack
