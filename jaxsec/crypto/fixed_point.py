"""Fixed-point encoding of real arrays into integers modulo ``M``, with explicit scale and
overflow checks: the codec under every scheme in :mod:`jaxsec.crypto`.

A real ``x`` is represented by the signed integer ``v = round(x * 2^s)`` (``s =
scale_bits``, resolution ``2^-s``, rounding error at most ``2^-(s+1)``), and ``v`` by its
residue ``v mod M``. Residues in ``[0, M/2)`` are non-negative, the rest negative (the
centred lift). Sums and public-integer multiples of encodings are encodings of the sums and
multiples *as long as no intermediate leaves the signed range*: every encoder here therefore
takes a ``limit`` (the largest admissible ``|v|``, set by the caller from the modulus and the
number of summands or the weights) and raises a ``ValueError`` naming the offending value
instead of wrapping silently. A wrapped value would decode to garbage without any error.

Integers are NumPy ``int64`` (for moduli below ``2^62``: the prime-field schemes) or NumPy
object arrays of Python ``int`` (for Paillier, whose plaintext space has 2048 bits).

(:func:`jaxsec.federated.secure_aggregation.encode` is the same codec specialised to the
modulus ``2^k`` with ``uint64`` wrap-around arithmetic; it cannot serve a prime modulus.)
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxsec import _checks

__all__ = ['quantize', 'dequantize', 'to_residues', 'from_residues', 'max_abs', 'flatten_real',
           'unflatten_real']


def _check_scale_bits(scale_bits: Any) -> int:
  return _checks.check_int('scale_bits', scale_bits, minimum=0, maximum=512)


def max_abs(*, scale_bits: int, limit: int) -> float:
  """``limit / 2^s``: the largest ``|x|`` that :func:`quantize` accepts for this
  ``scale_bits`` and ``limit`` (up to half a unit of rounding); ``inf`` beyond float64."""
  s = _check_scale_bits(scale_bits)
  limit = _checks.check_int('limit', limit, minimum=0)
  try:
    return limit / 2 ** s      # int / int: correctly rounded
  except OverflowError:
    return float('inf')


def quantize(x: Any, *, scale_bits: int, limit: int, name: str = 'x',
             context: str = '', big: bool = False) -> np.ndarray:
  """``round(x * 2^s)`` as signed integers, raising if any ``|round(x * 2^s)| > limit``.

  Args:
    x: real array (any shape; Python scalars and lists are accepted).
    scale_bits: s >= 0, the resolution is ``2^-s``.
    limit: the largest admissible ``|round(x * 2^s)|`` (a Python int, may be huge).
    name: the argument's name for error messages.
    context: appended to the overflow message (what set ``limit``).
    big: return an object array of Python ints (exact for any ``limit``) instead of
      ``int64`` (which requires ``limit < 2^63``).

  Returns:
    Signed integers of ``x``'s shape: ``int64``, or ``object`` when ``big``.

  Raises:
    ValueError: non-real or non-finite input, or a value whose encoding exceeds ``limit``
      (the message names the value, its index and the largest admissible ``|x|``).
  """
  s = _check_scale_bits(scale_bits)
  limit = _checks.check_int('limit', limit, minimum=0)
  if not big and limit >= 2 ** 63:
    raise ValueError(f'limit={limit} does not fit int64; pass big=True.')
  arr = np.asarray(x)
  if arr.dtype == object or arr.dtype.kind not in 'fiub':
    raise ValueError(f'{name} has dtype {arr.dtype}; expected real numbers.')
  arr = arr.astype(np.float64)  # exact for floats; integers beyond 2^53 are rounded
  if not np.all(np.isfinite(arr)):
    idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
    raise ValueError(f'{name} contains non-finite values (first at index {idx}: '
                     f'{arr[idx]}); only finite values can be encoded.')
  # Scaling by a power of two is exact in float64 unless it overflows to inf.
  with np.errstate(over='ignore'):
    v = np.rint(np.ldexp(arr, s))
  if v.size:
    flat = int(np.argmax(np.abs(v)))
    worst_v = v.flat[flat]
    if not np.isfinite(worst_v) or abs(int(worst_v)) > limit:
      idx = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
      raise ValueError(
          f'{name} contains {float(arr.flat[flat])!r} (at index {idx}), which is too large '
          f'for the fixed-point range: with scale_bits={s}, |{name}| must be <= '
          f'{max_abs(scale_bits=s, limit=limit):.6g}{context}.')
  if not big:
    return v.astype(np.int64)
  out = np.empty(v.shape, dtype=object)
  out.flat[:] = [int(e) for e in v.flat]
  return out


def dequantize(v: Any, *, scale_bits: int) -> np.ndarray:
  """Signed integers (``int64`` or Python ints) -> float64 ``v / 2^s`` (correctly rounded)."""
  s = _check_scale_bits(scale_bits)
  arr = np.asarray(v)
  if arr.dtype != object:
    if arr.dtype.kind not in 'iu':
      raise ValueError(f'v has dtype {arr.dtype}; expected integers.')
    return np.ldexp(arr.astype(np.float64), -s) if np.all(np.abs(arr) < 2 ** 53) else \
        dequantize(arr.astype(object), scale_bits=s)
  out = np.empty(arr.shape, np.float64)
  d = 1 << s
  out.flat[:] = [int(e) / d for e in arr.flat]   # int / int is correctly rounded
  return out


def to_residues(v: Any, modulus: int) -> np.ndarray:
  """Signed integers -> residues in ``[0, modulus)`` (same dtype: int64 or object)."""
  m = _checks.check_int('modulus', modulus, minimum=2)
  arr = np.asarray(v)
  if arr.dtype == object:
    out = np.empty(arr.shape, dtype=object)
    out.flat[:] = [int(e) % m for e in arr.flat]
    return out
  return np.mod(arr.astype(np.int64), np.int64(m))


def from_residues(r: Any, modulus: int) -> np.ndarray:
  """Residues in ``[0, modulus)`` -> the signed integers in ``(-modulus/2, modulus/2]``
  that they represent (the centred lift; same dtype: int64 or object)."""
  m = _checks.check_int('modulus', modulus, minimum=2)
  arr = np.asarray(r)
  half = m // 2
  if arr.dtype == object:
    out = np.empty(arr.shape, dtype=object)
    out.flat[:] = [int(e) - m if int(e) > half else int(e) for e in arr.flat]
    return out
  arr = arr.astype(np.int64)
  return np.where(arr > half, arr - np.int64(m), arr)


def from_shares(shares: Any, reconstruct: Any) -> np.ndarray:
  """The float64 array that checked fixed-point ``shares`` hold: ``reconstruct(shares)``
  (the field residues) decoded at their ``scale_bits``; shares of raw field elements
  (``scale_bits=None``) are a ``ValueError``."""
  s = shares[0].scale_bits
  if s is None:
    raise ValueError('these shares hold raw field elements (scale_bits=None); use '
                     'reconstruct().')
  return dequantize(from_residues(reconstruct(shares), shares[0].prime), scale_bits=s)


def flatten_real(update: Any, name: str) -> tuple[np.ndarray, Any, list[tuple[int, ...]]]:
  """A pytree of real arrays as one float64 vector (leaves in ``jax.tree_util`` order), its
  treedef and leaf shapes; a non-real leaf is refused, naming ``name``."""
  leaves, treedef = jax.tree_util.tree_flatten(update)
  arrs = [np.asarray(l) for l in leaves]
  for a in arrs:
    if a.dtype == object or a.dtype.kind not in 'fiu':
      raise ValueError(f'{name} has a leaf of dtype {a.dtype}; expected real numbers.')
  vec = (np.concatenate([a.reshape(-1).astype(np.float64) for a in arrs]) if arrs
         else np.zeros((0,)))
  return vec, treedef, [a.shape for a in arrs]


def unflatten_real(vec: np.ndarray, treedef: Any, shapes: list[tuple[int, ...]]) -> Any:
  """Inverse of :func:`flatten_real`."""
  out, off = [], 0
  for shape in shapes:
    size = int(np.prod(shape, dtype=np.int64))
    out.append(vec[off:off + size].reshape(shape))
    off += size
  return jax.tree_util.tree_unflatten(treedef, out)
