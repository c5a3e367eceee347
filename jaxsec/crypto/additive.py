"""Additive ``n``-of-``n`` secret sharing over ``GF(p)``, ``p < 2^31``, and the secure sum.

The linear part of SPDZ (Damgard, Pastro, Smart, Zakarias, CRYPTO 2012), the survey's
secret-sharing defense. ``v`` is split into ``v_1..v_{n-1}`` uniform in ``GF(p)`` and ``v_n
= v - sum_i v_i``: any ``n - 1`` shares are jointly uniform and independent of ``v``
(information-theoretic secrecy). :func:`secure_sum`: each client gives one share of its
encoded update to each computing party, each party publishes the sum of its shares, and
these add up to the sum of the updates.

Deviations from SPDZ (additions and public-constant multiplications only, no interaction):
no multiplication triples (only needed to multiply two secrets) and no information-theoretic
MACs, hence passive security only: a party publishing a wrong sum share shifts the result
undetectably (SPDZ's MAC share ``alpha * v`` would detect it, with abort).

Threat model: a coalition of up to ``n - 1`` parties learns nothing beyond the (public) sum.
Every party must stay online: use :mod:`~jaxsec.crypto.shamir` (``t``-of-``n``) or
:mod:`jaxsec.federated.secure_aggregation` for dropouts. Channels must be encrypted and
authenticated (not simulated). Encoding: the centred fixed point of
:mod:`~jaxsec.crypto.fixed_point`, range ``|x| <= ((p - 1) / 2 // num_summands) / 2^s``,
checked (``ValueError``). Over the ring ``Z / 2^k`` (``uint64``, as in
:mod:`jaxsec.federated.secure_aggregation`): :func:`share_mod2k` / :func:`reconstruct_mod2k`.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxsec import _checks
from jaxsec.crypto import field
from jaxsec.crypto import fixed_point

__all__ = ['DEFAULT_PRIME', 'DEFAULT_SCALE_BITS', 'AdditiveShare', 'share', 'reconstruct',
           'add', 'share_array', 'reconstruct_array', 'secure_sum', 'share_mod2k',
           'reconstruct_mod2k']

DEFAULT_PRIME = field.DEFAULT_PRIME
DEFAULT_SCALE_BITS = 16


class AdditiveShare(NamedTuple):
  """Party ``index``'s (``0..n-1``) share: ``int64`` residues ``y`` modulo ``prime``, and
  the public parameters ``num_shares`` and (for encoded reals) ``scale_bits``."""
  index: int
  y: np.ndarray
  num_shares: int
  prime: int
  scale_bits: int | None = None


def share(secret: Any, *, num_shares: int, prime: int = DEFAULT_PRIME,
          insecure_test_rng: np.random.Generator | None = None,
          scale_bits: int | None = None) -> list[AdditiveShare]:
  """Splits field elements ``secret`` (integers in ``[0, prime)``) into ``num_shares >= 2``
  additive shares; ``insecure_test_rng`` as in :func:`jaxsec.crypto.field.uniform`."""
  p = field.check_prime(prime)
  n = _checks.check_int('num_shares', num_shares, minimum=2)
  field.check_rng(insecure_test_rng)
  v = field.check_residues('secret', secret, p)
  rand = field.uniform((n - 1,) + v.shape, p, insecure_test_rng)
  last = v.copy()
  for r in rand:
    last = (last - r) % p      # np.mod of int64 is non-negative for p > 0
  ys = list(rand) + [last]
  return [AdditiveShare(i, ys[i], n, p, scale_bits) for i in range(n)]


def _check_shares(shares: Sequence[AdditiveShare]) -> list[AdditiveShare]:
  return field.check_shares(shares, AdditiveShare, ('num_shares', 'prime', 'scale_bits'))


def reconstruct(shares: Sequence[AdditiveShare]) -> np.ndarray:
  """The secret (``int64`` residues) from *all* ``num_shares`` shares.

  Raises:
    ValueError: a missing or repeated share (naming the indices), or mixed sharings.
  """
  shares = _check_shares(shares)
  n, p = shares[0].num_shares, shares[0].prime
  idx = sorted(int(s.index) for s in shares)
  if idx != list(range(n)):
    raise ValueError(f'additive sharing needs all {n} shares exactly once; got indices '
                     f'{idx}.')
  acc = np.zeros(np.shape(shares[0].y), np.int64)
  for s in shares:
    acc = (acc + field.check_residues(f'share {s.index}', s.y, p)) % p
  return acc


def add(a: AdditiveShare, b: AdditiveShare) -> AdditiveShare:
  """A party's share of ``u + v`` from its shares of ``u`` and ``v`` (local)."""
  _check_shares([a, b])
  if a.index != b.index:
    raise ValueError(f'cannot add shares of different parties {a.index} and {b.index}.')
  p = a.prime
  return a._replace(y=(field.check_residues('a.y', a.y, p) +
                       field.check_residues('b.y', b.y, p)) % p)


def share_array(x: Any, *, num_shares: int, scale_bits: int = DEFAULT_SCALE_BITS,
                num_summands: int = 1, prime: int = DEFAULT_PRIME,
                insecure_test_rng: np.random.Generator | None = None) -> list[AdditiveShare]:
  """Fixed-point encodes a real array and splits it into ``num_shares`` additive shares.

  Raises ``ValueError`` naming the value when ``num_summands * |round(x * 2^s)|`` exceeds
  ``(p - 1) / 2`` (the sum of that many encodings would wrap around)."""
  p = field.check_prime(prime)
  n = _checks.check_int('num_summands', num_summands, minimum=1)
  s = _checks.check_int('scale_bits', scale_bits, minimum=0, maximum=30)
  v = fixed_point.quantize(x, scale_bits=s, limit=(p - 1) // 2 // n,
                           context=f' (prime={p}, num_summands={n})')
  return share(fixed_point.to_residues(v, p), num_shares=num_shares, prime=p,
               insecure_test_rng=insecure_test_rng, scale_bits=s)


def reconstruct_array(shares: Sequence[AdditiveShare]) -> np.ndarray:
  """Inverse of :func:`share_array` (float64), from all shares."""
  return fixed_point.from_shares(_check_shares(shares), reconstruct)


def secure_sum(updates: Sequence[Any], *, num_parties: int = 2,
               scale_bits: int = DEFAULT_SCALE_BITS, prime: int = DEFAULT_PRIME,
               insecure_test_rng: np.random.Generator | None = None) -> np.ndarray:
  """Simulates the SPDZ-style secure sum of client updates among ``num_parties >= 2``
  computing parties (see the module docstring for the threat model). Returns
  ``sum(updates)`` (float64) up to fixed-point rounding (at most ``len(updates) *
  2^-(s+1)`` per coordinate)."""
  updates = field.check_updates(updates)
  totals = field.summed_shares(
      updates, lambda u: share_array(u, num_shares=num_parties, scale_bits=scale_bits,
                                     num_summands=len(updates), prime=prime,
                                     insecure_test_rng=insecure_test_rng), add)
  return reconstruct_array(totals)


# -------------------------------------------------------------------- modulo 2^k

def share_mod2k(x: Any, num_shares: int, *, modulus_bits: int = 64,
                insecure_test_rng: np.random.Generator | None = None) -> list[np.ndarray]:
  """``n``-of-``n`` additive secret sharing modulo ``2^k``: ``num_shares`` ``uint64``
  arrays, each uniform on its own (any ``n - 1`` of them are independent of ``x``),
  summing to ``x`` modulo ``2^k``.

  Args:
    x: integers in ``[0, 2^k)`` (e.g. from ``secure_aggregation.encode``).
    num_shares: n >= 2 (2-of-2 for two non-colluding servers).
    modulus_bits: k, ``2 <= k <= 64``.
    insecure_test_rng: ``None`` (OS CSPRNG) or a ``numpy.random.Generator`` (reproducible,
      not secret: tests only).
  """
  rng = insecure_test_rng
  k = field.check_modulus_bits(modulus_bits)
  n = _checks.check_int('num_shares', num_shares, minimum=2)
  field.check_rng(rng)
  xu = field.check_residues_mod2k('x', x, k)
  shares = [field.uniform_mod2k(xu.size, k, rng).reshape(xu.shape) for _ in range(n - 1)]
  last = xu.copy()
  for s in shares:
    last = np.subtract(last, s)
  return shares + [last & field.low_bits(k)]


def reconstruct_mod2k(shares: Sequence[Any], *, modulus_bits: int = 64) -> np.ndarray:
  """Sum of all additive shares modulo ``2^k`` (``uint64``)."""
  k = field.check_modulus_bits(modulus_bits)
  if len(shares) < 1:
    raise ValueError('shares is empty.')
  arrs = [field.check_residues_mod2k(f'shares[{i}]', s, k) for i, s in enumerate(shares)]
  if len({a.shape for a in arrs}) != 1:
    raise ValueError(f'shares have different shapes {[a.shape for a in arrs]}.')
  total = np.zeros(arrs[0].shape, np.uint64)
  for a in arrs:
    total = np.add(total, a)
  return total & field.low_bits(k)
