"""Arithmetic in a small prime field ``GF(p)``, ``p < 2^31``, vectorised with NumPy ``int64``:
the ground for :mod:`~jaxsec.crypto.shamir` and :mod:`~jaxsec.crypto.additive`.

Elements are ``int64`` residues in ``[0, p)``. Since ``p < 2^31``, a product of two residues
is below ``2^62`` and a sum of two below ``2^32``, so every operation is exact in ``int64``
before its reduction modulo ``p``; nothing wraps.

**Randomness.** :func:`uniform` draws uniform residues from the operating system's CSPRNG
(``secrets``) when ``insecure_test_rng is None`` -- use this for real secrets -- or from a
``numpy.random.Generator`` for reproducible simulations and tests (not a source of secret
randomness: its state can be recovered from its output).
"""
from __future__ import annotations

import secrets
from typing import Any, Sequence

import numpy as np

from jaxsec import _checks

__all__ = ['DEFAULT_PRIME', 'MAX_PRIME', 'is_prime', 'check_prime', 'check_residues',
           'uniform', 'check_rng']

DEFAULT_PRIME = 2 ** 31 - 1   # the Mersenne prime M31
MAX_PRIME = 2 ** 31           # exclusive: products of residues must fit int64

# Deterministic Miller-Rabin: these bases decide primality for every n < 3.3 * 10^24.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_prime(n: int) -> bool:
  """Deterministic primality test for ``n < 3.3e24`` (Miller-Rabin with the first 12 prime
  bases, which has no false positive below that bound)."""
  n = int(n)
  if n < 2:
    return False
  for b in _MR_BASES:
    if n % b == 0:
      return n == b
  if n >= 3_317_044_064_679_887_385_961_981:
    raise ValueError(f'n={n} is beyond the deterministic Miller-Rabin range.')
  d, r = n - 1, 0
  while d % 2 == 0:
    d, r = d // 2, r + 1
  for a in _MR_BASES:
    x = pow(a, d, n)
    if x in (1, n - 1):
      continue
    for _ in range(r - 1):
      x = x * x % n
      if x == n - 1:
        break
    else:
      return False
  return True


def check_prime(prime: Any, name: str = 'prime') -> int:
  """Returns ``prime`` as an int; ``ValueError`` naming it unless it is a prime in
  ``[3, 2^31)``."""
  p = _checks.check_int(name, prime, minimum=3)
  if p >= MAX_PRIME:
    raise ValueError(f'{name}={p} must be < 2^31 so that products of residues fit int64.')
  if not is_prime(p):
    raise ValueError(f'{name}={p} is not prime; the shares live in the field GF({name}).')
  return p


def check_rng(rng: Any, name: str = 'insecure_test_rng') -> None:
  """``None`` (the OS CSPRNG, for real secrets) or a numpy Generator (tests only)."""
  if rng is not None and not isinstance(rng, np.random.Generator):
    raise ValueError(f'{name}={rng!r} must be None (the OS CSPRNG, the default) or a '
                     'numpy.random.Generator (reproducible and NOT secret: tests only).')


def check_residues(name: str, v: Any, p: int) -> np.ndarray:
  """An integer array with values in ``[0, p)``, returned as ``int64`` (never reduced
  silently)."""
  arr = np.asarray(v)
  if arr.dtype == object or arr.dtype.kind not in 'iu':
    raise ValueError(f'{name} has dtype {arr.dtype}; expected integers in [0, {p}) '
                     f'(encode real values first).')
  if arr.size:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= p:
      bad = arr[(arr < 0) | (arr >= p)].flat[0]
      raise ValueError(f'{name} contains {int(bad)}; expected residues in [0, {p}).')
  return arr.astype(np.int64)


def check_shares(shares: Sequence[Any], share_type: type, same: tuple[str, ...]) -> list[Any]:
  """``shares`` as a list, checked to be one sharing: non-empty, all ``share_type``, equal in
  the fields ``same`` and in the shape of ``y``; else a ``ValueError`` naming what differs."""
  shares = list(shares)
  if not shares:
    raise ValueError('shares is empty.')
  for s in shares:
    if not isinstance(s, share_type):
      raise ValueError(f'expected {share_type.__name__} objects, got {type(s).__name__}.')
  first = shares[0]
  key = lambda s: tuple(getattr(s, a) for a in same)
  for s in shares[1:]:
    if key(s) != key(first):
      raise ValueError(f'shares come from different sharings: ({", ".join(same)}) = '
                       f'{key(s)} vs {key(first)}.')
    if np.shape(s.y) != np.shape(first.y):
      raise ValueError(f'shares have different shapes {np.shape(s.y)} and {np.shape(first.y)}.')
  return shares


def check_updates(updates: Sequence[Any]) -> list[np.ndarray]:
  """The client updates of a secure sum as arrays: non-empty, one shape."""
  updates = [np.asarray(u) for u in updates]
  if not updates:
    raise ValueError('updates is empty.')
  if len({u.shape for u in updates}) != 1:
    raise ValueError(f'updates have different shapes {[u.shape for u in updates]}.')
  return updates


def summed_shares(updates: Sequence[np.ndarray], share_fn: Any, add: Any) -> list[Any]:
  """Each party's sum of the clients' shares: ``share_fn(u)`` gives client ``u``'s shares
  (one per party) and ``add`` adds two shares. A client whose update cannot be shared is
  named in the error."""
  def client_shares(ci: int) -> list[Any]:
    try:
      return share_fn(updates[ci])
    except ValueError as e:
      raise ValueError(f'client {ci}: {e}') from None

  totals = client_shares(0)
  for ci in range(1, len(updates)):
    totals = [add(a, b) for a, b in zip(totals, client_shares(ci), strict=True)]
  return totals


def uniform(shape: Any, p: int,
            insecure_test_rng: np.random.Generator | None = None) -> np.ndarray:
  """Uniform residues in ``[0, p)`` of ``shape`` (``int64``).

  ``insecure_test_rng=None``: rejection sampling on 32-bit words from ``secrets`` (the top
  bits above ``p``'s bit length are masked off, so each round accepts more than half of the
  words; exact uniformity, no modulo bias). A Generator (tests only): ``integers(0, p)``.
  """
  rng = insecure_test_rng
  check_rng(rng)
  shape = tuple(int(d) for d in shape) if isinstance(shape, (tuple, list)) else (int(shape),)
  size = int(np.prod(shape, dtype=np.int64))
  if rng is not None:
    return rng.integers(0, p, size=shape, dtype=np.int64)
  mask = np.uint32((1 << int(p).bit_length()) - 1)
  out = np.empty((0,), np.int64)
  while out.size < size:
    need = size - out.size
    words = np.frombuffer(secrets.token_bytes(4 * (need + need // 2 + 8)), '<u4') & mask
    out = np.concatenate([out, words[words < p].astype(np.int64)])
  return out[:size].reshape(shape)


def uniform_below(p: int, insecure_test_rng: np.random.Generator | None = None) -> int:
  """One uniform integer in ``[0, p)`` for a big ``p`` (Python int): rejection sampling on
  ``bit_length(p)`` random bits from ``secrets``, or from ``insecure_test_rng.bytes``
  (tests only); exact uniformity, no modulo bias."""
  rng = insecure_test_rng
  check_rng(rng)
  p = _checks.check_int('p', p, minimum=1)
  nbits = p.bit_length()
  nbytes = (nbits + 7) // 8
  while True:
    raw = secrets.token_bytes(nbytes) if rng is None else rng.bytes(nbytes)
    v = int.from_bytes(raw, 'big') & ((1 << nbits) - 1)
    if v < p:
      return v


# ------------------------------------------------ the ring Z / 2^k (secure aggregation)

def check_modulus_bits(modulus_bits: Any) -> int:
  """``k`` of the ring ``Z / 2^k`` held in ``uint64``: ``2 <= k <= 64``."""
  return _checks.check_int('modulus_bits', modulus_bits, minimum=2, maximum=64)


def low_bits(k: int) -> np.uint64:
  """The mask ``2^k - 1`` that reduces a ``uint64`` (wrapped modulo ``2^64``) mod ``2^k``."""
  return np.uint64((1 << k) - 1)


def random_bytes(n: int, insecure_test_rng: np.random.Generator | None = None) -> bytes:
  """``n`` bytes from ``secrets`` (the OS CSPRNG) or from ``insecure_test_rng`` (tests)."""
  check_rng(insecure_test_rng)
  return (secrets.token_bytes(n) if insecure_test_rng is None
          else insecure_test_rng.bytes(n))


def uniform_mod2k(n: int, k: int,
                  insecure_test_rng: np.random.Generator | None = None) -> np.ndarray:
  """``n`` uniform values modulo ``2^k`` as ``uint64`` (low ``k`` bits of random words)."""
  words = np.frombuffer(random_bytes(8 * n, insecure_test_rng), '<u8').astype(np.uint64)
  return words & low_bits(k)


def check_residues_mod2k(name: str, v: Any, k: int) -> np.ndarray:
  """An integer array with values in ``[0, 2^k)``, returned as ``uint64`` (never reduced
  silently)."""
  arr = np.asarray(v)
  if arr.dtype.kind not in 'iu':
    raise ValueError(f'{name} has dtype {arr.dtype}; expected integers in [0, 2^{k}) '
                     f'(use encode() for real values).')
  if arr.size:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= 2 ** k:
      raise ValueError(f'{name} has values in [{lo}, {hi}]; expected integers in '
                       f'[0, 2^{k}) for modulus_bits={k}.')
  return arr.astype(np.uint64)
