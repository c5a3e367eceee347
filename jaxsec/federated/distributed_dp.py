"""Distributed DP: integer client noise summed by secure aggregation (survey §3.4).

The encoding of Kairouz, Liu, Steinke, "The distributed discrete Gaussian mechanism for
federated learning with secure aggregation" (ICML 2021), with the Skellam noise of Agarwal,
Kairouz, Liu, "The Skellam mechanism for differentially private federated learning"
(NeurIPS 2021). Per round, for a cohort of ``n`` clients and an update of ``d`` entries
(``D = 2^ceil(log2 d)``):

1. client (:meth:`DistributedSkellam.client_encode`, jitted): clip to l2 norm ``c``, pad to
   ``D``, rotate by the randomized Walsh-Hadamard transform ``H diag(s) / sqrt(D)`` (public
   random signs ``s`` per round; it flattens the vector so that few bits suffice), scale by
   ``gamma``, round each coordinate up with probability its fractional part and redraw
   until the l2 norm is at most ``Delta_2`` (conditional randomized rounding, bound of
   :func:`rounded_l2_bound`), add ``Sk(lam, lam) = Poisson(lam) - Poisson(lam)`` per
   coordinate with ``2 lam = mu / n``, and reduce modulo ``2^k``;
2. :func:`jaxsec.federated.secure_aggregation.secure_sum_mod2k` (Bonawitz et al.) sums the
   residues modulo ``2^k`` (wrap-around): the server sees only that sum, whose noise is
   ``Sk(mu/2, mu/2)`` (variance ``mu``) since independent Skellams add;
3. server (:meth:`DistributedSkellam.server_decode`): centre into ``[-2^(k-1), 2^(k-1))``,
   divide by ``gamma``, unrotate, cut to ``d``, divide by ``n``.

``noise_multiplier`` z sets ``mu = (z Delta_2)^2``: the integer-domain std over the
integer sensitivity, as the Gaussian multiplier of :mod:`jaxsec.federated.dp`.

Guarantee (:func:`skellam_rdp`): Agarwal et al. 2021, Theorem 3.5: noise of variance
``mu`` per coordinate on an integer query of l1 / l2 sensitivities ``D1``, ``D2`` is
``(alpha, eps(alpha))``-RDP for integer ``alpha > 1`` with
``eps(alpha) = alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu))``.
The cohort is every client every round under replace-one-client (the relation of fixed-size
DP-FedAvg in :mod:`jaxsec.federated.dp`, so epsilons compare): ``D2 = 2 Delta_2``,
``D1 = 2 Delta_2 min(sqrt(D), Delta_2)`` (an integer vector has ``||v||_1 <= ||v||_2^2``).
``T`` rounds compose as ``T eps(alpha)``, converted to ``(epsilon, delta)`` by dp_accounting
(:func:`jaxsec.privacy.accounting.epsilon_from_rdp`). dp_accounting has no Skellam event,
so no amplification by client sampling is claimed. Trust model: honest-but-curious server,
all ``n`` clients add their share and none drops (fewer shares = less noise). Sampling is
``jax.random.poisson`` (exact algorithms run in float32; no secure mode), each Poisson a
sum of draws of rate at most ``2^14`` because the float32 sampler's variance drifts at large
rates (:func:`skellam_noise`); accounted with the float32 rates actually drawn.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxsec import _checks
from jaxsec.crypto import field
from jaxsec.federated import secure_aggregation
from jaxsec.privacy import accounting, clipping

__all__ = ['DistributedSkellam', 'Cohort', 'DistributedInfo', 'rounded_l2_bound', 'skellam_rdp',
           'skellam_noise', 'conditional_round', 'hadamard', 'padded_dim', 'RDP_ORDERS']

NR = dp_accounting.NeighboringRelation
#: integer orders (Theorem 3.5 holds for integer alpha > 1)
RDP_ORDERS = tuple(range(2, 129)) + tuple(range(136, 1025, 8))
MAX_POISSON_RATE = 2.0 ** 14   # largest rate per jax.random.poisson draw (see skellam_noise)
_MAX_TRIES = 1000   # conditional rounding: after this many rejections send 0 (norm 0)


def padded_dim(d: int) -> int:
  """``D = 2^ceil(log2 d)``: the Walsh-Hadamard length."""
  d = _checks.check_int('d', d, minimum=1)
  return 1 << (d - 1).bit_length()


def hadamard(v: Any, xp: Any = jnp) -> Any:
  """Unnormalised fast Walsh-Hadamard transform ``H v`` along the last axis (length a power
  of two); ``H H = D I``. ``xp``: ``jax.numpy`` or ``numpy`` (the float64 server side)."""
  dim = v.shape[-1]
  if dim & (dim - 1):
    raise ValueError(f'hadamard needs a power-of-two length, got {dim}.')
  h = 1
  while h < dim:
    w = v.reshape(v.shape[:-1] + (dim // (2 * h), 2, h))
    a, b = w[..., 0, :], w[..., 1, :]
    v = xp.stack([a + b, a - b], axis=-2).reshape(v.shape[:-1] + (dim,))
    h *= 2
  return v


def rounded_l2_bound(l2_bound: float, dim: int, beta: float) -> float:
  """Kairouz et al. 2021, Theorem 1: a vector of l2 norm ``<= l2_bound`` randomly rounded
  coordinate-wise has norm ``<= sqrt(l2^2 + D/4 + sqrt(2 log(1/beta)) (l2 + sqrt(D)/2))``
  with probability ``>= 1 - beta``; always ``<= l2 + sqrt(D)``. The smaller bound."""
  _checks.check_float('l2_bound', l2_bound, minimum=0.0, strict_min=True, allow_traced=False)
  dim = _checks.check_int('dim', dim, minimum=1)
  _checks.check_float('beta', beta, minimum=0.0, maximum=1.0, strict_max=True,
                      allow_traced=False)
  always = l2_bound + math.sqrt(dim)
  if beta == 0:
    return always
  sq = (l2_bound ** 2 + 0.25 * dim
        + math.sqrt(2.0 * math.log(1.0 / beta)) * (l2_bound + 0.5 * math.sqrt(dim)))
  return min(always, math.sqrt(sq))


def conditional_round(x: jax.Array, key: jax.Array, max_sq_norm: int) -> jax.Array:
  """Conditional randomized rounding (Kairouz et al. 2021, §4): each coordinate rounds up
  with probability its fractional part (unbiased); the whole draw is repeated until the
  integer vector's squared l2 norm is ``<= max_sq_norm`` (exact int32 arithmetic). After
  1000 rejections it returns zeros, which is within the bound too (privacy never depends
  on acceptance)."""
  fl = jnp.floor(x)

  def draw(i):
    up = jax.random.uniform(jax.random.fold_in(key, i), x.shape) < (x - fl)
    return (fl + up).astype(jnp.int32)

  def too_long(z):
    return jnp.sum(z * z) > max_sq_norm

  def body(state):
    i, _ = state
    return i + 1, draw(i + 1)

  i, z = jax.lax.while_loop(lambda s: (s[0] < _MAX_TRIES) & too_long(s[1]), body,
                            (0, draw(0)))
  return jnp.where(too_long(z), jnp.zeros_like(z), z)


def skellam_noise(key: jax.Array, shape: tuple[int, ...], rate: Any,
                  num_draws: int = 1) -> jax.Array:
  """``Poisson(R) - Poisson(R)`` per entry, ``R = num_draws * rate`` (symmetric Skellam,
  variance ``2 R``), int32; each Poisson is the sum of ``num_draws`` independent
  ``Poisson(rate)`` (exactly Poisson). ``jax.random.poisson`` runs in float32 and its
  variance drifts above rates of about ``2^17`` (measured +8% at 4.9e6), so callers keep
  ``rate <= MAX_POISSON_RATE`` (where it matched to 0.1%)."""
  k1, k2 = jax.random.split(key)
  draw = lambda k: jnp.sum(jax.random.poisson(k, rate, (num_draws,) + tuple(shape),
                                              dtype=jnp.int32), axis=0)
  return draw(k1) - draw(k2)


def skellam_rdp(orders: Any, *, l2_sensitivity: float, l1_sensitivity: float,
                variance: float) -> np.ndarray:
  """Agarwal, Kairouz, Liu 2021, Theorem 3.5: RDP of Skellam noise of per-coordinate
  ``variance`` mu on an integer query, at integer ``orders`` alpha > 1:
  ``alpha D2^2/(2 mu) + min(((2 alpha - 1) D2^2 + 6 D1)/(4 mu^2), 3 D1/(2 mu))``."""
  a = np.asarray(orders, np.float64)
  if a.ndim != 1 or np.any(a < 2) or np.any(a != np.round(a)):
    raise ValueError(f'orders={orders!r} must be integers >= 2 (Theorem 3.5 is for integer '
                     'alpha > 1).')
  for name, v in (('l2_sensitivity', l2_sensitivity), ('l1_sensitivity', l1_sensitivity)):
    _checks.check_float(name, v, minimum=0.0, allow_traced=False)
  _checks.check_float('variance', variance, minimum=0.0, strict_min=True, allow_traced=False)
  d2sq, d1, mu = float(l2_sensitivity) ** 2, float(l1_sensitivity), float(variance)
  return (a * d2sq / (2 * mu)
          + np.minimum(((2 * a - 1) * d2sq + 6 * d1) / (4 * mu ** 2), 3 * d1 / (2 * mu)))


class Cohort(NamedTuple):
  """The clients' private encodings of one round (simulation side, never sent as such)."""
  ints: jax.Array    # [n, D] int32: clipped, rotated, scaled, rounded updates
  noise: jax.Array   # [n, D] int32: each client's Skellam noise
  norms: jax.Array   # [n] update norms before clipping
  signs: jax.Array   # [D] the round's public rotation signs


class DistributedInfo(NamedTuple):
  """What a round produced. ``sum_residues`` is all the server sees; the rest is
  NON-PRIVATE simulation diagnostics (never released by the protocol)."""
  sum_residues: np.ndarray     # [D] uint64: sum of the clients' residues modulo 2^k
  norms: np.ndarray            # non-private: [n] client update norms before clipping
  wrapped: int                 # non-private: coordinates whose true integer sum left the range


@dataclasses.dataclass(frozen=True)
class DistributedSkellam:
  """Distributed Skellam mechanism over secure aggregation (module docstring).

  Attributes:
    l2_norm_clip: c, the client update's l2 bound.
    noise_multiplier: z: the summed noise has std ``z Delta_2`` in the integer domain.
    scale: gamma, integers per unit (resolution ``1 / gamma``).
    modulus_bits: k, the secure sum is modulo ``2^k`` (at most 64).
    beta: conditional rounding's failure bound (Kairouz et al.'s default ``e^-0.5``).
    rotate: the randomized Hadamard rotation (off: coordinates as they are).
  """
  l2_norm_clip: float
  noise_multiplier: float
  scale: float
  modulus_bits: int = 32
  beta: float = math.exp(-0.5)
  rotate: bool = True

  def __post_init__(self):
    _checks.check_float('l2_norm_clip', self.l2_norm_clip, minimum=0.0, strict_min=True,
                        allow_traced=False)
    _checks.check_float('noise_multiplier', self.noise_multiplier, minimum=0.0,
                        allow_traced=False)
    _checks.check_float('scale', self.scale, minimum=0.0, strict_min=True, allow_traced=False)
    field.check_modulus_bits(self.modulus_bits)
    _checks.check_float('beta', self.beta, minimum=0.0, maximum=1.0, strict_max=True,
                        allow_traced=False)

  # ------------------------------------------------------------------ parameters
  def l2_bound(self, dim: int) -> float:
    """``Delta_2``: the l2 bound of a client's integer vector (before noise)."""
    return rounded_l2_bound(self.scale * self.l2_norm_clip, padded_dim(dim), self.beta)

  def _max_sq_norm(self, dim: int) -> int:
    big = (self.scale * self.l2_norm_clip + math.sqrt(padded_dim(dim)) + 2.0) ** 2
    if big >= 2 ** 31:
      raise ValueError(f'scale={self.scale} * l2_norm_clip={self.l2_norm_clip} is too large '
                       f'for int32 norms in dimension {padded_dim(dim)}: need (scale c + '
                       f'sqrt(D))^2 < 2^31.')
    return int(math.floor(self.l2_bound(dim) ** 2))

  def client_rate(self, dim: int, num_clients: int) -> np.float32:
    """Each client's Poisson rate ``lam = mu / (2 n)`` in float32 (what is drawn)."""
    num_clients = _checks.check_int('num_clients', num_clients, minimum=1)
    lam = np.float32((self.noise_multiplier * self.l2_bound(dim)) ** 2 / (2.0 * num_clients))
    if lam >= 2 ** 28:
      raise ValueError(f'the Poisson rate {float(lam):.3g} exceeds 2^28 (int32 noise); '
                       'lower scale or noise_multiplier.')
    return lam

  def poisson_draws(self, dim: int, num_clients: int) -> tuple[int, np.float32]:
    """``(k, r)``: each client's ``Poisson(lam)`` is drawn as ``k`` draws of rate ``r``
    (float32, ``r <= MAX_POISSON_RATE``, ``k r ~ lam``)."""
    lam = float(self.client_rate(dim, num_clients))
    k = max(1, math.ceil(lam / MAX_POISSON_RATE))
    return k, np.float32(lam / k)

  def variance(self, dim: int, num_clients: int) -> float:
    """mu: the variance per coordinate of the summed noise (from the float32 rates drawn)."""
    k, r = self.poisson_draws(dim, num_clients)
    return 2.0 * num_clients * k * float(r)

  # ------------------------------------------------------------------ accounting
  def rdp(self, *, dim: int, num_clients: int, num_rounds: int,
          orders: Any = RDP_ORDERS) -> np.ndarray:
    """RDP of ``num_rounds`` rounds, replace-one-client, at ``orders`` (module doc)."""
    num_rounds = _checks.check_int('num_rounds', num_rounds, minimum=0)
    d2 = self.l2_bound(dim)
    d1 = d2 * min(math.sqrt(padded_dim(dim)), d2)
    return num_rounds * skellam_rdp(orders, l2_sensitivity=2 * d2, l1_sensitivity=2 * d1,
                                    variance=self.variance(dim, num_clients))

  def epsilon(self, *, dim: int, num_clients: int, num_rounds: int, delta: float) -> float:
    """User-level epsilon at ``delta`` (replace-one-client) of ``num_rounds`` rounds with
    all ``num_clients`` clients; ``inf`` without noise."""
    if self.noise_multiplier == 0:
      return math.inf
    rdp = self.rdp(dim=dim, num_clients=num_clients, num_rounds=num_rounds)
    return accounting.epsilon_from_rdp(RDP_ORDERS, rdp, delta)[0]

  def calibrated(self, target_epsilon: float, delta: float, *, dim: int, num_clients: int,
                 num_rounds: int, tol: float = 1e-3) -> 'DistributedSkellam':
    """A copy with the smallest ``noise_multiplier`` (to ``tol``, rounded up) meeting
    ``(target_epsilon, delta)``; the epsilon is decreasing in the multiplier."""
    _checks.check_float('target_epsilon', target_epsilon, minimum=0.0, strict_min=True,
                        allow_traced=False)

    def eps(z):
      return dataclasses.replace(self, noise_multiplier=z).epsilon(
          dim=dim, num_clients=num_clients, num_rounds=num_rounds, delta=delta)
    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
      lo, hi = hi, 2 * hi
      if hi > 1e6:
        raise ValueError(f'target_epsilon={target_epsilon} needs noise_multiplier > 1e6.')
    while hi - lo > tol * hi:
      mid = 0.5 * (lo + hi)
      lo, hi = (mid, hi) if eps(mid) > target_epsilon else (lo, mid)
    return dataclasses.replace(self, noise_multiplier=hi)

  # ------------------------------------------------------------------ the protocol
  def signs(self, key: jax.Array, dim: int) -> jax.Array:
    """The round's public rotation signs (all ones without rotation)."""
    big = padded_dim(dim)
    if not self.rotate:
      return jnp.ones((big,), jnp.float32)
    return jax.random.rademacher(key, (big,), jnp.float32)

  def client_encode(self, update: Any, key: jax.Array, signs: jax.Array,
                    num_clients: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One client: ``(integer update [D], Skellam noise [D], norm)`` (int32, int32,
    float32); what it sends is ``(update + noise) mod 2^k`` (:meth:`residues`). Jittable."""
    d = ravel_pytree(update)[0].shape[0]
    draws, rate = self.poisson_draws(d, num_clients)
    return _client_encode(update, key, signs, self.l2_norm_clip, self.scale,
                          self._max_sq_norm(d), rate, self.rotate, draws)

  def residues(self, ints: Any, noise: Any) -> np.ndarray:
    """``(ints + noise) mod 2^k`` as uint64 (two's complement wrap-around)."""
    total = np.asarray(ints, np.int64) + np.asarray(noise, np.int64)
    return total.astype(np.uint64) & field.low_bits(self.modulus_bits)

  def server_decode(self, sum_residues: Any, signs: Any, dim: int,
                    num_clients: int) -> np.ndarray:
    """The mean update (float64 ``[dim]``) from the secure sum modulo ``2^k``."""
    signed = secure_aggregation.decode(sum_residues, scale_bits=0,
                                       modulus_bits=self.modulus_bits) / self.scale
    s = np.asarray(signs, np.float64)
    flat = s * hadamard(signed, np) / math.sqrt(s.size) if self.rotate else signed
    return flat[:dim] / num_clients

  def encode_cohort(self, updates: Any, key: jax.Array) -> Cohort:
    """Every client's :meth:`client_encode` (one jitted vmap) with the round's public signs
    from ``key`` and client ``i``'s key ``fold_in(split(key)[1], i)``."""
    leaves = jax.tree_util.tree_leaves(updates)
    if not leaves:
      raise ValueError('updates is empty; expected stacked client updates.')
    n = leaves[0].shape[0]
    if n < 2:
      raise ValueError(f'distributed DP needs at least 2 clients, got {n}.')
    d = sum(math.prod(l.shape[1:]) for l in leaves)
    k_rot, k_clients = jax.random.split(key)
    signs = self.signs(k_rot, d)
    keys = jax.vmap(lambda i: jax.random.fold_in(k_clients, i))(jnp.arange(n))
    max_sq = self._max_sq_norm(d)
    draws, rate = self.poisson_draws(d, n)
    ints, noise, norms = _encode_many(updates, keys, signs, self.l2_norm_clip, self.scale,
                                      max_sq, rate, self.rotate, draws)
    return Cohort(ints, noise, norms, signs)

  def aggregate(self, updates: Any, key: jax.Array, *, secure: bool = True,
                threshold: int | None = None, insecure_test_seed: int | None = None
                ) -> tuple[Any, DistributedInfo]:
    """One round over stacked client updates (leading axis n): the decoded mean update
    (a pytree like one client's) and :class:`DistributedInfo`.

    ``secure=True`` runs the Bonawitz protocol (``threshold`` default ``n // 2 + 1``;
    ``insecure_test_seed`` as in :func:`secure_aggregation.secure_sum_mod2k`);
    ``secure=False`` adds the residues in the clear modulo ``2^k`` (the same sum, for
    simulations that do not need the protocol's cost)."""
    cohort = self.encode_cohort(updates, key)
    n = cohort.ints.shape[0]
    flat0, unravel = ravel_pytree(jax.tree_util.tree_map(lambda l: l[0], updates))
    d = flat0.shape[0]
    res = self.residues(cohort.ints, cohort.noise)
    if secure:
      total = secure_aggregation.secure_sum_mod2k(
          dict(enumerate(res)), threshold=n // 2 + 1 if threshold is None else threshold,
          modulus_bits=self.modulus_bits, insecure_test_seed=insecure_test_seed)
    else:
      total = np.sum(res, axis=0, dtype=np.uint64) & field.low_bits(self.modulus_bits)
    true_sum = np.sum(np.asarray(cohort.ints, np.int64) + np.asarray(cohort.noise, np.int64),
                      axis=0)
    half = 2 ** (self.modulus_bits - 1)
    wrapped = int(np.sum((true_sum < -half) | (true_sum >= half)))
    mean = self.server_decode(total, cohort.signs, d, n)
    return (unravel(jnp.asarray(mean, flat0.dtype)),
            DistributedInfo(np.asarray(total, np.uint64), np.asarray(cohort.norms), wrapped))


def _client_encode(update, key, signs, l2_norm_clip, scale, max_sq_norm, rate, rotate,
                   draws):
  vec = ravel_pytree(update)[0].astype(jnp.float32)
  d = vec.shape[0]
  big = padded_dim(d)
  clipped, norm = clipping.clip_tree(vec, l2_norm_clip)
  padded = jnp.zeros((big,), jnp.float32).at[:d].set(clipped)
  rotated = hadamard(signs * padded) / math.sqrt(big) if rotate else padded
  k_round, k_noise = jax.random.split(key)
  ints = conditional_round(rotated * scale, k_round, max_sq_norm)
  noise = skellam_noise(k_noise, (big,), rate, draws)
  return ints, noise, norm


@functools.partial(jax.jit, static_argnames=('rotate', 'draws'))
def _encode_many(updates, keys, signs, l2_norm_clip, scale, max_sq_norm, rate, rotate, draws):
  return jax.vmap(lambda u, k: _client_encode(u, k, signs, l2_norm_clip, scale, max_sq_norm,
                                              rate, rotate, draws))(updates, keys)
