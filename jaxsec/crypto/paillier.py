"""Additively homomorphic encryption of arrays with Paillier (Eurocrypt 1999) via ``phe``.

Encrypted federated averaging and encrypted linear inference: the survey's
homomorphic-encryption defense (§3.4(1)). The cryptosystem is ``phe``'s (``n = p q``, ``g =
n + 1``, randomised encryption from the OS CSPRNG, not seedable), IND-CPA under the decisional
composite residuosity assumption; 2048-bit ``n`` (~112-bit security) is the default. Only sums
and plaintext-integer-weighted sums can be computed on ciphertexts. ``gmpy2`` makes it ~8x faster.

Deviation from ``phe``'s float encoding (a data-dependent, public exponent per value leaks
magnitudes): reals are fixed-point ``round(x * 2^s)`` with a public ``scale_bits``
(:mod:`~jaxsec.crypto.fixed_point`), signed as in ``phe`` (middle third of ``Z_n`` is an
overflow band). Every :class:`EncryptedArray` carries a public ``bound`` from the *declared*
``max_abs`` (never the data); operations raise ``ValueError`` before a result could wrap
modulo ``n``, and encryption raises on any ``|x| > max_abs``.

* Encrypted FedAvg (:func:`encrypted_mean` and its steps; Aono et al. 2017): the server adds
  ciphertexts, the key holder decrypts only the sum. Protects each update against an
  honest-but-curious server (key holder: the clients sharing one key pair over TLS with no
  server-client collusion, or a separate non-colluding decryptor). Not protected: integrity
  (Paillier is malleable), the aggregate (pair with :mod:`jaxsec.federated.dp`), poisoning.
* Encrypted linear inference (:func:`encrypted_linear`; CryptoNets, Gilad-Bachrach et al.
  2016, restricted to one linear layer): the server returns ``Enc(x @ w + b)``, re-randomised
  by a fresh ``Enc(b)`` (its public ``bound`` reveals ``||w||_1``). Protects ``x``; not ``w``
  against ``d + 1`` queries (Tramer et al. 2016), integrity, or non-linear layers.

>>> from jaxsec.crypto import paillier
>>> pk, sk = paillier.generate_keypair(512, allow_insecure=True)   # tests only
>>> c = paillier.homomorphic_sum([paillier.encrypt_array(pk, [1.5, -2.0]),
...                               paillier.encrypt_array(pk, [0.25, 4.0])])
>>> paillier.decrypt_array(sk, c).tolist()
[1.75, 2.0]
"""
from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Any, Sequence

import numpy as np
import phe

from jaxsec import _checks
from jaxsec.crypto import fixed_point

__all__ = ['DEFAULT_KEY_BITS', 'MIN_SECURE_KEY_BITS', 'DEFAULT_SCALE_BITS',
           'DEFAULT_MAX_ABS', 'generate_keypair', 'ciphertext_bytes', 'EncryptedArray',
           'encrypt_array', 'decrypt_array', 'add', 'mul_public', 'homomorphic_sum',
           'encrypted_linear', 'encrypt_update', 'decrypt_mean', 'encrypted_mean',
           'uses_gmpy2']

DEFAULT_KEY_BITS = 2048
MIN_SECURE_KEY_BITS = 2048
DEFAULT_SCALE_BITS = 32
DEFAULT_MAX_ABS = 2.0 ** 20

PublicKey = phe.PaillierPublicKey
PrivateKey = phe.PaillierPrivateKey


def uses_gmpy2() -> bool:
  """Whether ``phe`` found ``gmpy2`` (GMP arithmetic) or uses pure Python integers."""
  return bool(phe.util.HAVE_GMP)


def generate_keypair(key_bits: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
                     ) -> tuple[PublicKey, PrivateKey]:
  """A fresh Paillier key pair with a ``key_bits``-bit modulus ``n`` (``phe``; primes from
  the OS CSPRNG).

  Args:
    key_bits: bit length of ``n``; at least 2048 (about 112-bit security).
    allow_insecure: permit ``key_bits < 2048`` -- for fast unit tests and demos only; such
      keys can be factored.

  Raises:
    ValueError: ``key_bits`` below 2048 without ``allow_insecure``, below 128, or odd.
  """
  bits = _checks.check_int('key_bits', key_bits, minimum=128)
  if bits % 2:
    raise ValueError(f'key_bits={bits} must be even (n is a product of two equal-size '
                     f'primes).')
  if bits < MIN_SECURE_KEY_BITS and not allow_insecure:
    raise ValueError(f'key_bits={bits} is insecure (< {MIN_SECURE_KEY_BITS}); pass '
                     f'allow_insecure=True only for tests.')
  return phe.generate_paillier_keypair(n_length=bits)


def _check_public_key(public_key: Any) -> PublicKey:
  if not isinstance(public_key, PublicKey):
    raise ValueError(f'public_key must be a phe.PaillierPublicKey, got '
                     f'{type(public_key).__name__}.')
  return public_key


def ciphertext_bytes(public_key: PublicKey) -> int:
  """Bytes of one serialised ciphertext (an element of ``Z_{n^2}``): ``2 * key_bits / 8``."""
  return (_check_public_key(public_key).nsquare.bit_length() + 7) // 8


@dataclasses.dataclass(frozen=True, eq=False)
class EncryptedArray:
  """An array of Paillier ciphertexts of fixed-point integers.

  Attributes:
    public_key: the ``phe.PaillierPublicKey`` they are encrypted under.
    ciphertexts: NumPy object array of ``phe.EncryptedNumber`` (all with exponent 0), the
      plaintext array's shape.
    scale_bits: the plaintext is ``integer / 2^scale_bits``.
    bound: public upper bound on ``|integer|`` (from declared ranges, never from data).
  """
  public_key: PublicKey
  ciphertexts: np.ndarray
  scale_bits: int
  bound: int

  @property
  def shape(self) -> tuple[int, ...]:
    return self.ciphertexts.shape

  @property
  def size(self) -> int:
    return int(self.ciphertexts.size)

  @property
  def nbytes(self) -> int:
    """Bytes on the wire: ``size * ciphertext_bytes`` (see :meth:`to_bytes`)."""
    return self.size * ciphertext_bytes(self.public_key)

  def to_bytes(self) -> bytes:
    """Fixed-width big-endian serialisation of the ciphertexts (C order). The metadata
    (shape, scale_bits, bound, the public key) travels separately."""
    w = ciphertext_bytes(self.public_key)
    return b''.join(c.ciphertext(be_secure=False).to_bytes(w, 'big')
                    for c in self.ciphertexts.flat)

  @classmethod
  def from_bytes(cls, public_key: PublicKey, data: bytes, shape: Sequence[int], *,
                 scale_bits: int, bound: int) -> 'EncryptedArray':
    """Inverse of :meth:`to_bytes`; checks the length and that each ciphertext is in
    ``[1, n^2)``."""
    pk = _check_public_key(public_key)
    shape = tuple(int(d) for d in shape)
    w = ciphertext_bytes(pk)
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) != size * w:
      raise ValueError(f'data has {len(data)} bytes; shape {shape} needs {size} x {w}.')
    cts = []
    for i in range(size):
      c = int.from_bytes(data[i * w:(i + 1) * w], 'big')
      if not 0 < c < pk.nsquare:
        raise ValueError(f'ciphertext {i} is not in [1, n^2).')
      cts.append(phe.EncryptedNumber(pk, c, 0))
    arr = np.empty(size, dtype=object)
    arr[:] = cts
    return cls(pk, arr.reshape(shape), _checks.check_int('scale_bits', scale_bits,
                                                         minimum=0),
               _checks.check_int('bound', bound, minimum=0))


def _check_encrypted(name: str, a: Any) -> EncryptedArray:
  if not isinstance(a, EncryptedArray):
    raise ValueError(f'{name} must be an EncryptedArray, got {type(a).__name__}.')
  return a


def _check_bound(bound: int, pk: PublicKey, what: str) -> int:
  if bound > pk.max_int:
    raise ValueError(
        f'{what} could reach |integer| = {bound} (2^{math.log2(bound):.1f}), beyond the '
        f'largest value the {pk.n.bit_length()}-bit key represents without wrapping, '
        f'{pk.max_int} (about n / 3, 2^{math.log2(pk.max_int):.1f}). Lower scale_bits or '
        f'max_abs, or use a larger key.')
  return bound


def _bound_from_max_abs(max_abs: Any, scale_bits: int, pk: PublicKey) -> int:
  _checks.check_float('max_abs', max_abs, minimum=0.0, strict_min=True,
                      allow_traced=False)
  bound = math.floor(fractions.Fraction(float(max_abs)) * 2 ** scale_bits)
  if bound > pk.max_int:
    raise ValueError(
        f'max_abs={float(max_abs)!r} is too large for the key: with scale_bits='
        f'{scale_bits} it encodes to 2^{math.log2(bound):.1f}, and a '
        f'{pk.n.bit_length()}-bit key holds |integer| <= 2^{math.log2(pk.max_int):.1f}.')
  return bound


def encrypt_array(public_key: PublicKey, x: Any, *, scale_bits: int = DEFAULT_SCALE_BITS,
                  max_abs: float = DEFAULT_MAX_ABS) -> EncryptedArray:
  """Fixed-point encodes and encrypts a real array, one ciphertext per value.

  Args:
    public_key: the recipient's ``phe.PaillierPublicKey``.
    x: real array, any shape.
    scale_bits: s, resolution ``2^-s`` (rounding error at most ``2^-(s+1)``).
    max_abs: the public range ``|x| <= max_abs`` that the encryptor promises; it sets the
      ciphertexts' ``bound`` (``floor(max_abs * 2^s)``) and so how many of them can be
      added before overflow is possible.

  Raises:
    ValueError: a value with ``|x| > max_abs`` (the message names it and its index), a
      non-finite value, or a ``max_abs`` too large for the key (naming ``max_abs``).
  """
  pk = _check_public_key(public_key)
  s = _checks.check_int('scale_bits', scale_bits, minimum=0, maximum=512)
  bound = _bound_from_max_abs(max_abs, s, pk)
  v = fixed_point.quantize(x, scale_bits=s, limit=bound, big=True,
                           context=f' (max_abs={float(max_abs)!r})')
  out = np.empty(v.shape, dtype=object)
  out.flat[:] = [pk.encrypt(int(e)) for e in v.flat]   # exponent 0, fresh obfuscation
  return EncryptedArray(pk, out, s, bound)


def _decrypt_ints(private_key: PrivateKey, enc: EncryptedArray) -> np.ndarray:
  if not isinstance(private_key, PrivateKey):
    raise ValueError(f'private_key must be a phe.PaillierPrivateKey, got '
                     f'{type(private_key).__name__}.')
  enc = _check_encrypted('enc', enc)
  if private_key.public_key.n != enc.public_key.n:
    raise ValueError('private_key does not match the public key of the ciphertexts.')
  out = np.empty(enc.shape, dtype=object)
  vals = []
  for i, c in enumerate(enc.ciphertexts.flat):
    if c.exponent != 0:
      raise ValueError(f'ciphertext {i} has phe exponent {c.exponent}; this module '
                       f'only produces fixed-point ciphertexts with exponent 0.')
    try:
      vals.append(int(private_key.decrypt_encoded(c).decode()))
    except OverflowError:
      raise ValueError(f'ciphertext {i} decrypts into the overflow band (n/3, 2n/3): '
                       f'it was combined beyond the key range or tampered with.') from None
  out.flat[:] = vals
  return out


def decrypt_array(private_key: PrivateKey, enc: EncryptedArray) -> np.ndarray:
  """Decrypts and decodes to float64 (``integer / 2^scale_bits``, correctly rounded).

  Raises:
    ValueError: a mismatched key, or a plaintext in the overflow band.
  """
  return fixed_point.dequantize(_decrypt_ints(private_key, enc), scale_bits=enc.scale_bits)


def add(a: EncryptedArray, b: EncryptedArray) -> EncryptedArray:
  """``Enc(u) (+) Enc(v) = Enc(u + v)`` element-wise (same key, scale and shape).

  Raises ``ValueError`` when ``a.bound + b.bound`` could leave the key's range."""
  a, b = _check_encrypted('a', a), _check_encrypted('b', b)
  if a.public_key.n != b.public_key.n:
    raise ValueError('a and b are encrypted under different public keys.')
  if a.scale_bits != b.scale_bits:
    raise ValueError(f'a has scale_bits={a.scale_bits} and b has {b.scale_bits}; '
                     f'fixed-point values of different scales cannot be added.')
  if a.shape != b.shape:
    raise ValueError(f'a has shape {a.shape} and b has {b.shape}.')
  bound = _check_bound(a.bound + b.bound, a.public_key, 'the sum')
  return EncryptedArray(a.public_key, a.ciphertexts + b.ciphertexts, a.scale_bits, bound)


def homomorphic_sum(arrays: Sequence[EncryptedArray]) -> EncryptedArray:
  """The encryption of the element-wise sum of all ``arrays`` (the server's step)."""
  arrays = list(arrays)
  if not arrays:
    raise ValueError('arrays is empty.')
  total = _check_encrypted('arrays[0]', arrays[0])
  bound = sum(_check_encrypted(f'arrays[{i}]', a).bound for i, a in enumerate(arrays))
  _check_bound(bound, total.public_key, f'the sum of {len(arrays)} arrays')
  for a in arrays[1:]:
    total = add(total, a)
  return total


def mul_public(a: EncryptedArray, k: Any) -> EncryptedArray:
  """``Enc(u)^k = Enc(k u)`` for public integers ``k`` (scalar or broadcastable to
  ``a.shape``); the scale is unchanged."""
  a = _check_encrypted('a', a)
  karr = np.asarray(k)
  if karr.dtype == object or karr.dtype.kind not in 'iu':
    raise ValueError(f'k has dtype {karr.dtype}; expected integers (multiply the scale '
                     f'yourself for real factors, see encrypted_linear).')
  kb = np.broadcast_to(karr, a.shape)
  bound = _check_bound(a.bound * (max(abs(int(e)) for e in kb.flat) if kb.size else 0),
                       a.public_key, 'the product')
  out = np.empty(a.shape, dtype=object)
  out.flat[:] = [c * int(e) for c, e in zip(a.ciphertexts.flat, kb.flat, strict=True)]
  return EncryptedArray(a.public_key, out, a.scale_bits, bound)


def encrypted_linear(enc_x: EncryptedArray, weights: Any, bias: Any = None, *,
                     weight_scale_bits: int | None = None) -> EncryptedArray:
  """The server's half of encrypted linear inference: ``Enc(x) -> Enc(x @ w + b)``.

  The weights are fixed-point encoded at ``weight_scale_bits`` (default: ``enc_x``'s
  scale) and the bias at the product scale, so the result has ``scale_bits = s_x + s_w``.
  Each output is ``Enc(b_j) * prod_l Enc(x_l)^{w_lj}``: the fresh ``Enc(b_j)`` (``Enc(0)``
  without a bias) re-randomises it, so it is distributed as a fresh encryption of
  ``x @ w + b``. The error of the decrypted result, relative to the float computation, is
  that of rounding ``w``, ``b`` and ``x`` to their grids.

  Args:
    enc_x: ``Enc(x)`` of shape ``[..., d]`` (the client's query, a batch allowed).
    weights: real ``[d]`` or ``[d, k]``.
    bias: ``None``, a real scalar or ``[k]`` (scalar for 1-D weights).
    weight_scale_bits: s_w.

  Returns:
    ``EncryptedArray`` of shape ``[...]`` (1-D weights) or ``[..., k]``.

  Raises:
    ValueError: shapes that do not match, or a result whose bound (from ``enc_x.bound``,
      ``|w|`` and ``|b|``) could leave the key's range (the message names the bound).
  """
  enc_x = _check_encrypted('enc_x', enc_x)
  pk = enc_x.public_key
  sx = enc_x.scale_bits
  sw = sx if weight_scale_bits is None else _checks.check_int(
      'weight_scale_bits', weight_scale_bits, minimum=0, maximum=512)
  w = np.asarray(weights)
  if w.ndim not in (1, 2):
    raise ValueError(f'weights has shape {w.shape}; expected [d] or [d, k].')
  if not enc_x.shape or enc_x.shape[-1] != w.shape[0]:
    raise ValueError(f'enc_x has shape {enc_x.shape} and weights {w.shape}: the last axis '
                     f'of x must equal the first of w.')
  vector_out = w.ndim == 1
  w2 = w.reshape(w.shape[0], -1)
  k = w2.shape[1]
  w_int = fixed_point.quantize(w2, scale_bits=sw, limit=pk.max_int, big=True,
                               name='weights')
  b = np.zeros(()) if bias is None else np.asarray(bias)
  if b.shape not in ((), (k,)) or (vector_out and b.shape != ()):
    raise ValueError(f'bias has shape {b.shape}; expected () or ({k},) for weights of '
                     f'shape {w.shape}.')
  b_int = fixed_point.quantize(np.broadcast_to(b, (k,)), scale_bits=sx + sw,
                               limit=pk.max_int, big=True, name='bias')
  col_l1 = [sum(abs(int(w_int[l, j])) for l in range(w2.shape[0])) for j in range(k)]
  bound = max(col_l1[j] * enc_x.bound + abs(int(b_int[j])) for j in range(k))
  _check_bound(bound, pk, f'x @ w + b (weights with max column l1 norm '
               f'{max(col_l1) / 2 ** sw:.6g}, |x| <= {enc_x.bound / 2 ** sx:.6g})')
  xs = enc_x.ciphertexts.reshape(-1, w2.shape[0])
  out = np.empty((xs.shape[0], k), dtype=object)
  for i in range(xs.shape[0]):
    for j in range(k):
      acc = pk.encrypt(int(b_int[j]))             # fresh randomness: re-randomises
      for l in range(w2.shape[0]):
        wl = int(w_int[l, j])
        if wl:
          acc = acc + xs[i, l] * wl
      out[i, j] = acc
  batch = enc_x.shape[:-1]
  out = out.reshape(batch) if vector_out else out.reshape(batch + (k,))
  return EncryptedArray(pk, out, sx + sw, bound)


# ----------------------------------------------------------------- encrypted FedAvg

def encrypt_update(public_key: PublicKey, update: Any, *,
                   scale_bits: int = DEFAULT_SCALE_BITS,
                   max_abs: float = DEFAULT_MAX_ABS) -> EncryptedArray:
  """Client side of encrypted FedAvg: flattens a pytree update (leaves in
  ``jax.tree_util`` order, float64) and encrypts it (see :func:`encrypt_array`)."""
  vec, _, _ = fixed_point.flatten_real(update, 'update')
  return encrypt_array(public_key, vec, scale_bits=scale_bits, max_abs=max_abs)


def decrypt_mean(private_key: PrivateKey, encrypted_sum: EncryptedArray, num_clients: int,
                 like: Any = None) -> Any:
  """Key holder's side: decrypts the encrypted sum, divides by the public ``num_clients``
  and restores the structure of ``like`` (a pytree shaped like one update; ``None``
  returns the flat float64 vector)."""
  m = _checks.check_int('num_clients', num_clients, minimum=1)
  mean = decrypt_array(private_key, encrypted_sum) / m
  if like is None:
    return mean
  _, treedef, shapes = fixed_point.flatten_real(like, 'like')
  total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
  if total != mean.size:
    raise ValueError(f'like has {total} values; the encrypted sum has {mean.size}.')
  return fixed_point.unflatten_real(mean, treedef, shapes)


def encrypted_mean(updates: Sequence[Any], *, public_key: PublicKey,
                   private_key: PrivateKey, scale_bits: int = DEFAULT_SCALE_BITS,
                   max_abs: float = DEFAULT_MAX_ABS) -> Any:
  """Simulates one encrypted FedAvg aggregation: every client encrypts its update
  (:func:`encrypt_update`), the server adds the ciphertexts (:func:`homomorphic_sum`), the
  key holder decrypts the mean (:func:`decrypt_mean`).

  Returns the mean update as a pytree of float64 arrays, equal to the plaintext mean up to
  fixed-point rounding: at most ``2^-(s+1)`` per coordinate (each client's rounding error
  is at most ``2^-(s+1)``, and their mean no more), plus float64 rounding.

  Raises:
    ValueError: updates of different structure or shapes, a value with
      ``|x| > max_abs`` (naming the client and the value), or a sum that could overflow.
  """
  updates = list(updates)
  if not updates:
    raise ValueError('updates is empty.')
  _, treedef, shapes = fixed_point.flatten_real(updates[0], 'updates[0]')
  encrypted = []
  for i, u in enumerate(updates):
    _, td, sh = fixed_point.flatten_real(u, f'updates[{i}]')
    if td != treedef or sh != shapes:
      raise ValueError(f'updates[{i}] has structure {td} with shapes {sh}; updates[0] has '
                       f'{treedef} with {shapes}.')
    try:
      encrypted.append(encrypt_update(public_key, u, scale_bits=scale_bits,
                                      max_abs=max_abs))
    except ValueError as e:
      raise ValueError(f'client {i}: {e}') from None
  total = homomorphic_sum(encrypted)
  return decrypt_mean(private_key, total, len(updates), like=updates[0])
