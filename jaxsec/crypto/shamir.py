"""Shamir ``t``-of-``n`` secret sharing (Shamir 1979) of arrays over ``GF(p)``, ``p < 2^31``.

Fixed-point encoding for parameters and gradients, and the Shamir secure sum: the survey's
secret-sharing defense (§3.4(1)). Each coordinate ``v`` is the constant term of a uniformly
random polynomial of degree ``t - 1``; party ``i = 1..n`` gets ``f(i)``. Any ``t`` shares
give ``v`` (Lagrange, :func:`reconstruct`); any ``t - 1`` are uniform and independent of
``v``: perfect, information-theoretic secrecy (``t = 1`` gives no secrecy; allowed). Sharing
is linear (:func:`add`, :func:`mul_public` act locally on shares).

:func:`secure_sum`: each client shares its encoded update among ``n`` parties, each party
publishes only the sum of its shares, any ``t`` reconstruct the sum. Threat model:
honest-but-curious parties; a coalition of at most ``t - 1`` learns nothing about any update;
the sum is public by design (pair with DP); up to ``n - t`` parties may drop out. Not covered:
wrong shares (no integrity check: reconstruction silently yields a wrong value; verifiable
secret sharing or SPDZ MACs would be needed), coalitions of ``t`` or more, and the channels
(encrypt and authenticate them, e.g. :mod:`jaxsec.federated.secure_aggregation`).

Encoding: ``round(x * 2^s)`` modulo ``p``, centred (:mod:`~jaxsec.crypto.fixed_point`); the
encoder raises ``ValueError`` unless a sum of ``num_summands`` values stays within ``(p -
1) / 2``. Defaults ``p = 2^31 - 1``, ``s = 16``: ``|x| <= 16384 / num_summands`` at
resolution ``2^-16``, meant for clipped gradients; lower ``scale_bits`` for more range.

>>> import numpy as np
>>> from jaxsec.crypto import shamir
>>> sh = shamir.share_array(np.array([1.5, -2.25]), threshold=2, num_shares=3)
>>> shamir.reconstruct_array([sh[0], sh[2]]).tolist()
[1.5, -2.25]
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxsec import _checks
from jaxsec.crypto import field
from jaxsec.crypto import fixed_point

__all__ = ['DEFAULT_PRIME', 'DEFAULT_SCALE_BITS', 'BIG_PRIME', 'ShamirShare', 'share',
           'reconstruct', 'add', 'mul_public', 'lagrange_coefficients', 'share_array',
           'reconstruct_array', 'max_abs', 'secure_sum', 'share_int', 'reconstruct_int']

DEFAULT_PRIME = field.DEFAULT_PRIME
#: the Mersenne prime 2^521 - 1: one field element holds a 256-bit key (secure aggregation)
BIG_PRIME = 2 ** 521 - 1
DEFAULT_SCALE_BITS = 16


class ShamirShare(NamedTuple):
  """One party's share of an array: the evaluation point ``x`` (the party's index,
  ``1..n``), the values ``y = f(x)`` (``int64`` residues, the secret's shape), and the
  public parameters: ``threshold`` t, the field's ``prime`` and, for encoded real arrays,
  the fixed-point ``scale_bits`` (``None`` for raw field elements)."""
  x: int
  y: np.ndarray
  threshold: int
  prime: int
  scale_bits: int | None = None


def _check_tn(threshold: Any, num_shares: Any, p: int) -> tuple[int, int]:
  t = _checks.check_int('threshold', threshold, minimum=1)
  n = _checks.check_int('num_shares', num_shares, minimum=1)
  if t > n:
    raise ValueError(f'threshold={t} must be <= num_shares={n}: with fewer shares than '
                     f'the threshold the secret could never be reconstructed.')
  if n >= p:
    raise ValueError(f'num_shares={n} must be < prime={p} (the evaluation points 1..n '
                     f'must be distinct non-zero field elements).')
  return t, n


def share(secret: Any, *, threshold: int, num_shares: int, prime: int = DEFAULT_PRIME,
          insecure_test_rng: np.random.Generator | None = None,
          scale_bits: int | None = None) -> list[ShamirShare]:
  """``threshold``-of-``num_shares`` Shamir shares of an array of field elements.

  Args:
    secret: integers in ``[0, prime)``, any shape (each coordinate is shared with its own
      independent polynomial).
    threshold: t >= 1, the number of shares that reconstruct; ``t - 1`` reveal nothing.
    num_shares: n >= t, one share per party, evaluation points ``1..n``.
    prime: the field modulus, a prime below ``2^31``.
    insecure_test_rng: ``None`` (the OS CSPRNG; use it for real secrets) or a
      ``numpy.random.Generator`` (reproducible simulations).
    scale_bits: recorded in the shares when ``secret`` is a fixed-point encoding (see
      :func:`share_array`); not used otherwise.

  Returns:
    ``n`` :class:`ShamirShare` s, party ``i`` at index ``i - 1``.

  Raises:
    ValueError: ``threshold < 1``, ``threshold > num_shares``, ``num_shares >= prime``,
      a ``prime`` that is not prime or not below ``2^31``, or a secret outside
      ``[0, prime)``, each naming the value.
  """
  p = field.check_prime(prime)
  t, n = _check_tn(threshold, num_shares, p)
  field.check_rng(insecure_test_rng)
  v = field.check_residues('secret', secret, p)
  coeffs = field.uniform((t - 1,) + v.shape, p, insecure_test_rng)   # a_1 .. a_{t-1}
  xs = np.arange(1, n + 1, dtype=np.int64).reshape((n,) + (1,) * v.ndim)
  # Horner: f(x) = (...(a_{t-1} x + a_{t-2}) x + ... + a_1) x + v, reduced after each
  # step; every intermediate is < p * n + p < 2^62.
  y = np.zeros((n,) + v.shape, np.int64)
  for c in list(coeffs[::-1]) + [v]:
    y = (y * xs + c) % p
  return [ShamirShare(i + 1, y[i], t, p, scale_bits) for i in range(n)]


def _check_shares(shares: Sequence[ShamirShare]) -> list[ShamirShare]:
  shares = field.check_shares(shares, ShamirShare, ('threshold', 'prime', 'scale_bits'))
  xs = [int(s.x) for s in shares]
  if len(set(xs)) != len(xs) or any(not 0 < x < shares[0].prime for x in xs):
    raise ValueError(f'share points x={xs} must be distinct and in [1, prime).')
  return shares


def _lagrange(xs: list[int], p: int) -> list[int]:
  lams = []
  for j, xj in enumerate(xs):
    num, den = 1, 1
    for m, xm in enumerate(xs):
      if m != j:
        num = num * xm % p
        den = den * (xm - xj) % p
    lams.append(num * pow(den, -1, p) % p)
  return lams


def _check_points(xs: Sequence[int], p: int, name: str = 'xs') -> list[int]:
  xs = [int(x) for x in xs]
  if len(set(xs)) != len(xs) or any(not 0 < x < p for x in xs):
    raise ValueError(f'{name}={xs} must be distinct and in [1, prime).')
  return xs


def lagrange_coefficients(xs: Sequence[int], prime: int) -> list[int]:
  """``lambda_j = prod_{m != j} x_m / (x_m - x_j)`` in ``GF(prime)``: ``f(0) = sum_j
  lambda_j f(x_j)`` for every polynomial of degree below ``len(xs)``."""
  p = field.check_prime(prime)
  return _lagrange(_check_points(xs, p), p)


def reconstruct(shares: Sequence[ShamirShare]) -> np.ndarray:
  """The shared field elements (``int64`` residues) from at least ``threshold`` shares.

  Uses the first ``threshold`` shares given (any ``t`` determine the polynomial; more add
  nothing, and Shamir cannot detect a wrong one among them).

  Raises:
    ValueError: fewer than ``threshold`` shares (the message names how many), shares of
      different sharings, or repeated evaluation points.
  """
  shares = _check_shares(shares)
  t, p = shares[0].threshold, shares[0].prime
  if len(shares) < t:
    raise ValueError(f'{len(shares)} shares given; threshold={t} are needed (fewer reveal '
                     f'nothing about the secret).')
  use = shares[:t]
  lams = lagrange_coefficients([s.x for s in use], p)
  acc = np.zeros(np.shape(use[0].y), np.int64)
  for lam, s in zip(lams, use, strict=True):
    y = field.check_residues(f'share {s.x}', s.y, p)
    acc = (acc + (np.int64(lam) * y) % p) % p
  return acc


def add(a: ShamirShare, b: ShamirShare) -> ShamirShare:
  """A party's share of ``u + v`` from its shares of ``u`` and ``v`` (same point, same
  sharing parameters): local, no communication."""
  _check_shares([a])
  _check_shares([b])
  if (a.x, a.threshold, a.prime, a.scale_bits) != (b.x, b.threshold, b.prime, b.scale_bits):
    raise ValueError(f'cannot add shares with (x, threshold, prime, scale_bits) = '
                     f'{(a.x, a.threshold, a.prime, a.scale_bits)} and '
                     f'{(b.x, b.threshold, b.prime, b.scale_bits)}.')
  if np.shape(a.y) != np.shape(b.y):
    raise ValueError(f'cannot add shares of shapes {np.shape(a.y)} and {np.shape(b.y)}.')
  p = a.prime
  y = (field.check_residues('a.y', a.y, p) + field.check_residues('b.y', b.y, p)) % p
  return a._replace(y=y)


def mul_public(a: ShamirShare, c: int) -> ShamirShare:
  """A party's share of ``c * v`` for a public integer ``c`` (reduced modulo ``p``).

  On encoded reals, ``c`` multiplies the fixed-point integers, so the decoded value is
  ``c * x`` as long as it stays in range (not checked here: the parties do not know x)."""
  _check_shares([a])
  c = _checks.check_int('c', c)
  p = a.prime
  return a._replace(y=(field.check_residues('a.y', a.y, p) * np.int64(c % p)) % p)


def _limit(p: int, num_summands: int) -> int:
  return (p - 1) // 2 // num_summands


def max_abs(*, scale_bits: int = DEFAULT_SCALE_BITS, prime: int = DEFAULT_PRIME,
            num_summands: int = 1) -> float:
  """The largest ``|x|`` that :func:`share_array` accepts: ``((p-1)/2 // n) / 2^s``."""
  p = field.check_prime(prime)
  n = _checks.check_int('num_summands', num_summands, minimum=1)
  return fixed_point.max_abs(scale_bits=scale_bits, limit=_limit(p, n))


def share_array(x: Any, *, threshold: int, num_shares: int,
                scale_bits: int = DEFAULT_SCALE_BITS, num_summands: int = 1,
                prime: int = DEFAULT_PRIME,
                insecure_test_rng: np.random.Generator | None = None) -> list[ShamirShare]:
  """Fixed-point encodes a real array and Shamir-shares it ``threshold``-of-``num_shares``.

  Args:
    x: real array (parameters, a gradient), any shape.
    threshold, num_shares, prime, insecure_test_rng: as in :func:`share`.
    scale_bits: s, resolution ``2^-s`` (rounding error at most ``2^-(s+1)``).
    num_summands: how many such arrays will be added before reconstruction; raises unless
      ``num_summands * |round(x * 2^s)| <= (p - 1) / 2`` (so that the sum decodes).

  Raises:
    ValueError: a value of ``x`` too large for the field (the message names the value and
      the largest admissible ``|x|``), or bad sharing parameters.
  """
  p = field.check_prime(prime)
  _check_tn(threshold, num_shares, p)
  n = _checks.check_int('num_summands', num_summands, minimum=1)
  s = _checks.check_int('scale_bits', scale_bits, minimum=0, maximum=30)
  v = fixed_point.quantize(x, scale_bits=s, limit=_limit(p, n),
                           context=f' (prime={p}, num_summands={n})')
  return share(fixed_point.to_residues(v, p), threshold=threshold, num_shares=num_shares,
               prime=p, insecure_test_rng=insecure_test_rng, scale_bits=s)


def reconstruct_array(shares: Sequence[ShamirShare]) -> np.ndarray:
  """Inverse of :func:`share_array` (float64), from at least ``threshold`` shares."""
  return fixed_point.from_shares(_check_shares(shares), reconstruct)


def secure_sum(updates: Sequence[Any], *, threshold: int, num_parties: int,
               scale_bits: int = DEFAULT_SCALE_BITS, prime: int = DEFAULT_PRIME,
               dropped_parties: Sequence[int] = (),
               insecure_test_rng: np.random.Generator | None = None) -> np.ndarray:
  """Simulates the Shamir secure sum of client updates over ``num_parties`` aggregators.

  Each client calls :func:`share_array` (``num_summands = len(updates)``) and sends share
  ``i`` to party ``i``; each party adds its shares (:func:`add`); the parties not in
  ``dropped_parties`` publish their sum shares, and the first ``threshold`` of them are
  interpolated. The result equals ``sum(updates)`` up to fixed-point rounding (at most
  ``len(updates) * 2^-(s+1)`` per coordinate).

  Args:
    updates: client arrays, one shape.
    threshold: t, any ``t`` parties reconstruct; ``t - 1`` colluding parties learn nothing.
    num_parties: n >= t aggregation parties.
    scale_bits, prime, insecure_test_rng: as in :func:`share_array`.
    dropped_parties: party indices (``1..n``) that go offline after receiving their
      shares; at most ``n - t``.
  """
  updates = field.check_updates(updates)
  p = field.check_prime(prime)
  t, n = _check_tn(threshold, num_parties, p)
  dropped = {_checks.check_int('dropped party', d, minimum=1, maximum=n)
             for d in dropped_parties}
  if n - len(dropped) < t:
    raise ValueError(f'{len(dropped)} of {n} parties dropped, leaving {n - len(dropped)} < '
                     f'threshold={t}.')

  totals = field.summed_shares(
      updates, lambda u: share_array(u, threshold=t, num_shares=n, scale_bits=scale_bits,
                                     num_summands=len(updates), prime=p,
                                     insecure_test_rng=insecure_test_rng), add)
  return reconstruct_array([s for s in totals if s.x not in dropped])


# ------------------------------------------------------- one big field element (keys)

def _check_big_prime(prime: Any) -> int:
  p = _checks.check_int('prime', prime, minimum=3)
  if p != BIG_PRIME and p < field.MAX_PRIME:
    field.check_prime(p)           # decidable here; larger primes are the caller's claim
  return p


def share_int(secret: int, *, threshold: int, num_shares: int, prime: int = BIG_PRIME,
              insecure_test_rng: np.random.Generator | None = None
              ) -> list[tuple[int, int]]:
  """``t``-of-``n`` Shamir shares ``(x, f(x))``, ``x = 1..n``, of ONE element ``secret`` of
  a large field ``GF(prime)`` (Python integers; default ``2^521 - 1``, so a 256-bit key is
  one element): the sharing of secure aggregation's keys and seeds. Same scheme and
  secrecy as :func:`share`; the ``t - 1`` coefficients come from ``secrets`` unless
  ``insecure_test_rng`` (reproducible, NOT secret: tests only) is given.
  """
  p = _check_big_prime(prime)
  t = _checks.check_int('threshold', threshold, minimum=1)
  n = _checks.check_int('num_shares', num_shares, minimum=t)
  field.check_rng(insecure_test_rng)
  if isinstance(secret, bool) or not isinstance(secret, int) or not 0 <= secret < p:
    raise ValueError(f'secret={secret!r} must be an int in [0, prime).')
  if n >= p:
    raise ValueError(f'num_shares={n} must be < prime.')
  coeffs = [secret] + [field.uniform_below(p, insecure_test_rng) for _ in range(t - 1)]
  shares = []
  for x in range(1, n + 1):
    y = 0
    for c in reversed(coeffs):
      y = (y * x + c) % p
    shares.append((x, y))
  return shares


def reconstruct_int(shares: Sequence[tuple[int, int]], *, prime: int = BIG_PRIME) -> int:
  """Lagrange interpolation at 0 of ``(x, y)`` shares from :func:`share_int` (all of those
  given are used). With fewer than ``t`` shares the result is a field element unrelated to
  the secret (Shamir cannot detect this)."""
  p = _check_big_prime(prime)
  shares = [(int(x), int(y)) for x, y in shares]
  if not shares:
    raise ValueError('shares is empty; need at least threshold shares.')
  xs = _check_points([x for x, _ in shares], p, 'share x-coordinates')
  lams = _lagrange(xs, p)
  return sum(lam * (y % p) for lam, (_, y) in zip(lams, shares, strict=True)) % p
