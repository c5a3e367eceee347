"""Secure aggregation with pairwise masks (Bonawitz et al., CCS 2017), and additive sharing.

The survey's encryption / secret-sharing defense for gradients in transit (§3): a host-side
NumPy simulation (not jitted) of the honest-but-curious protocol (AdvertiseKeys, ShareKeys,
MaskedInputCollection, Unmasking). The server learns only the sum of the surviving clients'
inputs: it sees public keys, AEAD ciphertexts, masked vectors (uniform modulo ``2^k``) and the
shares it is entitled to. Unmasking needs at least ``t`` survivors.

Deviations from the paper: no signatures and no ConsistencyCheck round, so no defense against
an actively malicious server. A fresh 16-byte run id per aggregation (:func:`make_roster`)
enters every HKDF ``info`` and the GCM associated data (with the direction ``src || dst``), so
a ciphertext does not decrypt in another run, reflected, or at another recipient; a
:class:`ClientState` is single-use (a second ``share_keys``, ``masked_input`` or
``unmask_response`` raises). Each run still needs fresh key pairs (:func:`advertise_keys`), as
in the paper: a dropped client's reconstructed mask key yields its seeds for any run id.

Arithmetic: :func:`encode` is ``round(x * 2^s)`` in two's complement modulo ``2^k`` (``k <=
64``, ``uint64``) and raises instead of wrapping when ``num_summands`` values could overflow.
Crypto (``cryptography``): X25519 key pairs for the share channel (AES-256-GCM, HKDF-SHA256)
and for the pairwise seeds ``HKDF(X25519(sk_i, pk_j))``; the mask PRG is AES-256-CTR keyed by
the seed. Client ``i`` sends ``x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)``;
mask keys and seeds ``b_i`` are Shamir-shared ``t``-of-``n`` over ``GF(2^521 - 1)``
(:mod:`jaxsec.crypto`). Randomness comes from ``secrets``; ``insecure_test_rng`` replaces it
for reproducible tests and is NOT secret.

Rounds: :func:`advertise_keys`, :func:`make_roster`, :func:`share_keys`, :func:`route_shares`,
:func:`masked_input`, :func:`unmask_response`, :func:`unmask`; in one call: :func:`secure_sum` (real
values, fixed point) or :func:`secure_sum_mod2k` (integer residues, wrapping).
"""
from __future__ import annotations

import dataclasses
import secrets
from typing import Any, Iterable, Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jaxsec import _checks
from jaxsec.crypto import field
from jaxsec.crypto import fixed_point
from jaxsec.crypto import shamir

__all__ = [
    'PRIME', 'DEFAULT_MODULUS_BITS', 'DEFAULT_SCALE_BITS', 'encode', 'decode', 'prg',
    'key_agreement', 'KeyAdvertisement', 'Roster', 'ClientState', 'UnmaskResponse',
    'advertise_keys', 'make_roster', 'share_keys', 'route_shares', 'masked_input',
    'unmask_response', 'unmask', 'secure_sum', 'secure_sum_mod2k',
]

PRIME = shamir.BIG_PRIME      # Mersenne prime 2^521 - 1: Shamir field for 256-bit secrets.
DEFAULT_MODULUS_BITS = 64     # k: arithmetic modulo 2^k.
DEFAULT_SCALE_BITS = 24       # s: fixed-point resolution 2^-s.
_SECRET_BYTES = 32
_RUN_ID_BYTES = 16
_FIELD_BYTES = (PRIME.bit_length() + 7) // 8
# A client id: hashable and orderable against the other ids (all int or all str, say; the
# mask signs follow their order, checked by make_roster). Python's typing has no
# "hashable and orderable" type, hence Any.
ClientId = Any


# ------------------------------------------------------------------- checks, randomness

def _check_scale_bits(scale_bits: Any, modulus_bits: int) -> int:
  return _checks.check_int('scale_bits', scale_bits, minimum=0, maximum=modulus_bits - 2)


# --------------------------------------------------------------------- fixed-point codec

def encode(x: Any, *, scale_bits: int = DEFAULT_SCALE_BITS,
           modulus_bits: int = DEFAULT_MODULUS_BITS, num_summands: int = 1) -> np.ndarray:
  """Fixed-point encodes real values as ``round(x * 2^s)`` modulo ``2^k`` (two's complement).

  Args:
    x: real array (any shape).
    scale_bits: s, the resolution is ``2^-s``.
    modulus_bits: k, at most 64.
    num_summands: how many such values will be added modulo ``2^k``; raises unless
      ``num_summands * |round(x * 2^s)| < 2^(k-1)``, so that the sum decodes exactly.

  Returns:
    uint64 array of x's shape, values in ``[0, 2^k)``.
  """
  k = field.check_modulus_bits(modulus_bits)
  s = _check_scale_bits(scale_bits, k)
  n = _checks.check_int('num_summands', num_summands, minimum=1)
  arr = np.asarray(x)
  if arr.dtype.kind not in 'fiu':
    raise ValueError(f'x has dtype {arr.dtype}; expected real numbers.')
  if arr.dtype.kind in 'iu':   # exact: no detour through float64 for large integers
    if arr.size:
      worst = max(int(arr.max()), -int(arr.min()))
      if worst * n * 2 ** s >= 2 ** (k - 1):
        raise ValueError(
            f'x contains {worst if worst == int(arr.max()) else -worst}, which overflows the '
            f'fixed-point range: with scale_bits={s}, modulus_bits={k} and num_summands={n}, '
            f'|x| must be < 2^({k}-1-{s}) / {n} = {2.0 ** (k - 1 - s) / n:.6g}.')
    return (arr.astype(np.int64) * np.int64(2 ** s)).astype(np.uint64) & field.low_bits(k)
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    bad = np.argwhere(~np.isfinite(arr))[0]
    raise ValueError(f'x contains non-finite values (first at index {tuple(bad)}: '
                     f'{arr[tuple(bad)]}); only finite values can be encoded.')
  v = np.rint(arr * 2.0 ** s)
  limit = 2.0 ** (k - 1) / n
  if v.size and np.max(np.abs(v)) >= limit:
    worst = arr.flat[int(np.argmax(np.abs(v)))]
    raise ValueError(
        f'x contains {float(worst)!r}, which overflows the fixed-point range: with scale_bits={s}, '
        f'modulus_bits={k} and num_summands={n}, |x| must be < 2^({k}-1-{s}) / {n} = '
        f'{limit / 2.0 ** s:.6g}. Raise modulus_bits or lower scale_bits.')
  return v.astype(np.int64).astype(np.uint64) & field.low_bits(k)


def decode(v: Any, *, scale_bits: int = DEFAULT_SCALE_BITS,
           modulus_bits: int = DEFAULT_MODULUS_BITS) -> np.ndarray:
  """Inverse of :func:`encode`: residues in ``[0, 2^k)`` -> float64 (signed, ``/ 2^s``).

  The result is float64, so integers beyond ``2^53`` (values beyond ``2^(53-s)``) are
  rounded to float64 precision."""
  k = field.check_modulus_bits(modulus_bits)
  s = _check_scale_bits(scale_bits, k)
  u = field.check_residues_mod2k('v', v, k)
  signed = u.astype(np.int64)        # k = 64: the two's complement reinterpretation
  if k < 64:
    signed = np.where(signed >= 2 ** (k - 1), signed - 2 ** k, signed)
  return signed.astype(np.float64) / 2.0 ** s


# ------------------------------------------------------------------------ crypto pieces

def prg(seed: bytes, length: int, *, modulus_bits: int = DEFAULT_MODULUS_BITS) -> np.ndarray:
  """Expands a 32-byte seed into ``length`` values modulo ``2^k`` with AES-256-CTR."""
  k = field.check_modulus_bits(modulus_bits)
  n = _checks.check_int('length', length, minimum=0)
  if not isinstance(seed, bytes) or len(seed) != _SECRET_BYTES:
    raise ValueError(f'seed must be {_SECRET_BYTES} bytes, got {type(seed).__name__} of '
                     f'length {len(seed) if isinstance(seed, bytes) else "?"}.')
  enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
  stream = enc.update(bytes(8 * n)) + enc.finalize()
  return np.frombuffer(stream, '<u8').astype(np.uint64) & field.low_bits(k)


def _new_private_key(rng) -> bytes:
  return field.random_bytes(_SECRET_BYTES, rng)


def _public_key(private_key: bytes) -> bytes:
  return x25519.X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(
      serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_agreement(private_key: bytes, peer_public_key: bytes, *, info: bytes) -> bytes:
  """X25519 Diffie-Hellman, then HKDF-SHA256 to 32 bytes bound to ``info``.

  ``key_agreement(sk_a, pk_b, info=i) == key_agreement(sk_b, pk_a, info=i)``.
  """
  for name, b in (('private_key', private_key), ('peer_public_key', peer_public_key)):
    if not isinstance(b, bytes) or len(b) != _SECRET_BYTES:
      raise ValueError(f'{name} must be {_SECRET_BYTES} raw bytes (X25519).')
  shared = x25519.X25519PrivateKey.from_private_bytes(private_key).exchange(
      x25519.X25519PublicKey.from_public_bytes(peer_public_key))
  return HKDF(algorithm=hashes.SHA256(), length=_SECRET_BYTES, salt=None,
              info=info).derive(shared)


def _pair_info(purpose: bytes, run_id: bytes, i: int, j: int) -> bytes:
  """HKDF ``info``: purpose, run id and the (unordered) pair; fixed-length fields."""
  a, b = min(i, j), max(i, j)
  return (b'jaxsec/secagg/' + purpose + b'/' + run_id + a.to_bytes(4, 'big') +
          b.to_bytes(4, 'big'))


# ----------------------------------------------------------------------- secret sharing

# ------------------------------------------------------------------- protocol messages

@dataclasses.dataclass(frozen=True)
class KeyAdvertisement:
  """Round 0, client -> server -> all: the two X25519 public keys (raw 32 bytes)."""
  client_id: ClientId
  channel_public_key: bytes
  mask_public_key: bytes


@dataclasses.dataclass(frozen=True)
class Roster:
  """The server's broadcast after round 0: clients in sorted order (a client's position is
  its index ``i``; its Shamir x-coordinate is ``i + 1``), their public keys, the session
  parameters, and the run id (16 fresh random bytes) that binds every key of this run."""
  client_ids: tuple
  channel_public_keys: Mapping[ClientId, bytes]
  mask_public_keys: Mapping[ClientId, bytes]
  threshold: int
  modulus_bits: int
  run_id: bytes

  def index(self, client_id: ClientId) -> int:
    try:
      return self.client_ids.index(client_id)
    except ValueError:
      raise ValueError(f'client {client_id!r} is not in the roster {self.client_ids}.'
                       ) from None


@dataclasses.dataclass(frozen=True)
class ClientState:
  """A client's private state across rounds (never sent). ``received`` maps each client
  ``u`` that completed ShareKeys to the shares (of ``u``'s mask key and self-mask seed)
  that this client holds; ``run_id`` is the run its ``share_keys`` joined.

  Single-use: each round function may run once on a state and on all the states derived
  from it (they share the record ``_spent`` of the rounds already run)."""
  client_id: ClientId
  channel_private_key: bytes = dataclasses.field(repr=False)
  mask_private_key: bytes = dataclasses.field(repr=False)
  self_mask_seed: bytes | None = dataclasses.field(default=None, repr=False)
  received: Mapping[ClientId, tuple[int, int, int]] = dataclasses.field(
      default_factory=dict, repr=False)
  run_id: bytes | None = None
  _spent: set = dataclasses.field(default_factory=set, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class UnmaskResponse:
  """Round 4, client -> server: the responder's Shamir x-coordinate, its shares of the mask
  private keys of dropped clients and of the self-mask seeds of surviving clients."""
  client_id: ClientId
  x: int
  mask_key_shares: Mapping[ClientId, int]
  self_mask_shares: Mapping[ClientId, int]


# ---------------------------------------------------------------------------- the rounds

def advertise_keys(client_id: ClientId, *, insecure_test_rng=None
                   ) -> tuple[ClientState, KeyAdvertisement]:
  """Round 0 (client): generates fresh channel and mask X25519 key pairs for one run (from
  ``secrets``, or from ``insecure_test_rng``: reproducible, not secret, tests only)."""
  rng = insecure_test_rng
  field.check_rng(rng)
  c_sk, s_sk = _new_private_key(rng), _new_private_key(rng)
  return (ClientState(client_id, c_sk, s_sk),
          KeyAdvertisement(client_id, _public_key(c_sk), _public_key(s_sk)))


def make_roster(advertisements: Iterable[KeyAdvertisement], *, threshold: int,
                modulus_bits: int = DEFAULT_MODULUS_BITS, run_id: bytes | None = None) -> Roster:
  """Server after round 0: checks the advertisements and fixes the roster and the run id.

  ``run_id=None`` draws 16 fresh bytes from ``secrets`` (one per aggregation run); an
  explicit ``run_id`` (16 bytes) is for reproducible tests.

  Requires at least 2 clients, distinct ids and keys, and ``2 <= threshold <= n``
  (``threshold = 1`` would make each share equal to the secret). Privacy against a server
  that also corrupts clients needs ``threshold`` above the number of corrupted parties;
  Bonawitz et al. suggest ``threshold > n / 2`` at least.
  """
  k = field.check_modulus_bits(modulus_bits)
  if run_id is None:
    run_id = secrets.token_bytes(_RUN_ID_BYTES)
  elif not isinstance(run_id, bytes) or len(run_id) != _RUN_ID_BYTES:
    raise ValueError(f'run_id={run_id!r} must be None (fresh random) or {_RUN_ID_BYTES} '
                     f'bytes.')
  ads = list(advertisements)
  ids = [a.client_id for a in ads]
  if len(ids) < 2:
    raise ValueError(f'secure aggregation needs at least 2 clients; got {len(ids)}.')
  if len(set(ids)) != len(ids):
    raise ValueError(f'client ids {ids} are not distinct.')
  try:
    order = sorted(ids)
  except TypeError:
    raise ValueError(f'client ids {ids} must be mutually orderable (e.g. all int or all '
                     f'str): the mask signs depend on their order.') from None
  t = _checks.check_int('threshold', threshold, minimum=2, maximum=len(ids))
  keys = [a.channel_public_key for a in ads] + [a.mask_public_key for a in ads]
  if len(set(keys)) != len(keys):
    raise ValueError('two advertised public keys are equal; every key must be fresh.')
  by_id = {a.client_id: a for a in ads}
  return Roster(tuple(order), {i: by_id[i].channel_public_key for i in order},
                {i: by_id[i].mask_public_key for i in order}, t, k, run_id)


def _channel(state: ClientState, roster: Roster, peer: ClientId) -> AESGCM:
  info = _pair_info(b'channel', roster.run_id, roster.index(state.client_id),
                    roster.index(peer))
  return AESGCM(key_agreement(state.channel_private_key, roster.channel_public_keys[peer],
                              info=info))


def _nonce_aad(run_id: bytes, src: int, dst: int) -> tuple[bytes, bytes]:
  # The key is specific to the run and the pair, and each single-use state encrypts one
  # message per direction: the direction is a unique nonce. The AAD binds run and direction.
  nonce = src.to_bytes(4, 'big') + dst.to_bytes(4, 'big') + bytes(4)
  return nonce, b'jaxsec/secagg/shares/' + run_id + nonce


def _spend(state: ClientState, step: str, why: str) -> None:
  """Marks ``step`` as run on ``state`` (and every state derived from it); raises if it was."""
  if step in state._spent:   # pylint: disable=protected-access
    raise ValueError(f'client {state.client_id!r} {why}: a ClientState is single-use (one '
                     f'run, each round once). Start a new run with advertise_keys.')
  state._spent.add(step)     # pylint: disable=protected-access


def _check_run(state: ClientState, roster: Roster, step: str) -> None:
  if state.run_id != roster.run_id:
    raise ValueError(f'{step}: client {state.client_id!r} joined run '
                     f'{state.run_id.hex() if state.run_id else None} in share_keys, but the '
                     f'roster is for run {roster.run_id.hex()}.')


def share_keys(state: ClientState, roster: Roster, *, insecure_test_rng=None
               ) -> tuple[ClientState, dict[ClientId, bytes]]:
  """Round 1 (client): draws the self-mask seed ``b``, Shamir-shares ``b`` and the mask
  private key ``t``-of-``n``, and encrypts to every other client its share of both under
  the run's channel key. Binds the state to ``roster.run_id``; runs once per state.

  Returns the new state (holding the client's own shares) and ``{recipient: ciphertext}``.
  """
  rng = insecure_test_rng
  field.check_rng(rng)
  me = roster.index(state.client_id)
  _spend(state, 'share_keys', 'already ran share_keys (a second run would reuse a GCM key '
         'and nonce)')
  n, t = len(roster.client_ids), roster.threshold
  b = field.random_bytes(_SECRET_BYTES, rng)
  sk_shares = shamir.share_int(int.from_bytes(state.mask_private_key, 'big'), threshold=t,
                               num_shares=n, insecure_test_rng=rng)
  b_shares = shamir.share_int(int.from_bytes(b, 'big'), threshold=t, num_shares=n,
                              insecure_test_rng=rng)
  out = {}
  for v, peer in enumerate(roster.client_ids):
    if v == me:
      continue
    plain = (sk_shares[v][1].to_bytes(_FIELD_BYTES, 'big') +
             b_shares[v][1].to_bytes(_FIELD_BYTES, 'big'))
    nonce, aad = _nonce_aad(roster.run_id, me, v)
    out[peer] = _channel(state, roster, peer).encrypt(nonce, plain, aad)
  own = {state.client_id: (me + 1, sk_shares[me][1], b_shares[me][1])}
  return (dataclasses.replace(state, self_mask_seed=b, received=own, run_id=roster.run_id),
          out)


def route_shares(roster: Roster, outboxes: Mapping[ClientId, Mapping[ClientId, bytes]]
                 ) -> dict[ClientId, dict[ClientId, bytes]]:
  """Server after round 1: ``{sender: {recipient: ct}}`` -> ``{recipient: {sender: ct}}``
  for the clients that completed the round (U2). Requires ``|U2| >= threshold``."""
  senders = list(outboxes)
  for u in senders:
    expected = set(roster.client_ids) - {u}
    if set(outboxes[u]) != expected:
      raise ValueError(f'client {u!r} sent shares to {sorted(outboxes[u])}; expected one '
                       f'for every other client {sorted(expected)}.')
  if len(senders) < roster.threshold:
    raise ValueError(f'only {len(senders)} clients completed ShareKeys; the protocol needs '
                     f'threshold={roster.threshold}.')
  return {v: {u: outboxes[u][v] for u in senders if u != v} for v in senders}


def masked_input(state: ClientState, roster: Roster, inbox: Mapping[ClientId, bytes],
                 x: Any) -> tuple[ClientState, np.ndarray]:
  """Round 2 (client): decrypts and keeps the shares in ``inbox``, then masks its encoded
  input ``x`` (1-D integers in ``[0, 2^k)``) as
  ``x + PRG(b) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)`` over the senders in ``inbox``.
  Runs once per state (a second masked input under the same masks would reveal
  ``x1 - x2``); a failed authentication consumes nothing.
  """
  if state.self_mask_seed is None:
    raise ValueError(f'client {state.client_id!r} has not run share_keys.')
  _check_run(state, roster, 'masked_input')
  k = roster.modulus_bits
  xu = field.check_residues_mod2k('x', x, k)
  if xu.ndim != 1:
    raise ValueError(f'x has shape {xu.shape}; expected a 1-D encoded vector.')
  me = roster.index(state.client_id)
  received = dict(state.received)
  for u, ct in inbox.items():
    src = roster.index(u)
    nonce, aad = _nonce_aad(roster.run_id, src, me)
    try:
      plain = _channel(state, roster, u).decrypt(nonce, ct, aad)
    except InvalidTag:
      raise ValueError(f'the share ciphertext from client {u!r} to {state.client_id!r} '
                       f'failed authentication.') from None
    received[u] = (me + 1, int.from_bytes(plain[:_FIELD_BYTES], 'big'),
                   int.from_bytes(plain[_FIELD_BYTES:], 'big'))
  if len(received) < roster.threshold:
    raise ValueError(f'only {len(received)} clients completed ShareKeys; the protocol needs '
                     f'threshold={roster.threshold}.')
  _spend(state, 'masked_input', 'already sent its masked input in this run (a second one '
         'under the same masks would reveal x1 - x2)')
  y = np.add(xu, prg(state.self_mask_seed, xu.size, modulus_bits=k))
  for u in inbox:
    j = roster.index(u)
    seed = key_agreement(state.mask_private_key, roster.mask_public_keys[u],
                         info=_pair_info(b'pairwise-mask', roster.run_id, me, j))
    mask = prg(seed, xu.size, modulus_bits=k)
    y = np.add(y, mask) if j > me else np.subtract(y, mask)
  return dataclasses.replace(state, received=received), y & field.low_bits(k)


def unmask_response(state: ClientState, roster: Roster,
                    survivors: Iterable[ClientId]) -> UnmaskResponse:
  """Round 4 (client): given the server's list of clients whose masked input arrived
  (U3), reveals its shares of the self-mask seeds of those clients and of the mask private
  keys of the others that completed ShareKeys (the dropped ones) -- never both for one, so
  it answers once per state. Refuses (as the paper's clients abort) when fewer than
  ``threshold`` survived or when it did not send its own masked input."""
  _check_run(state, roster, 'unmask_response')
  survivors = set(survivors)
  known = set(state.received)
  if state.client_id not in survivors:
    raise ValueError(f'client {state.client_id!r} is not among the survivors; it must not '
                     f'answer the unmasking round.')
  unknown = survivors - known
  if unknown:
    raise ValueError(f'survivors {sorted(unknown)} did not complete ShareKeys with client '
                     f'{state.client_id!r}.')
  if len(survivors) < roster.threshold:
    raise ValueError(f'only {len(survivors)} survivors; the protocol needs '
                     f'threshold={roster.threshold}.')
  if 'masked_input' not in state._spent:   # pylint: disable=protected-access
    raise ValueError(f'client {state.client_id!r} is listed as a survivor but did not send '
                     f'its masked input.')
  _spend(state, 'unmask_response', 'already answered the unmasking round (a second answer '
         'to another survivor set could reveal both secrets of a client)')
  dropped = known - survivors
  x = state.received[state.client_id][0]
  return UnmaskResponse(state.client_id, x,
                        {u: state.received[u][1] for u in sorted(dropped)},
                        {u: state.received[u][2] for u in sorted(survivors)})


def _reconstruct_secret(what: str, shares: list[tuple[int, int]], t: int) -> bytes:
  if len(shares) < t:
    raise ValueError(f'only {len(shares)} shares of {what}; threshold={t} are needed.')
  value = shamir.reconstruct_int(shares[:t])
  if value >= 2 ** (8 * _SECRET_BYTES):
    raise ValueError(f'the shares of {what} are inconsistent (the reconstruction is not a '
                     f'{8 * _SECRET_BYTES}-bit value).')
  return value.to_bytes(_SECRET_BYTES, 'big')


def unmask(roster: Roster, shared: Iterable[ClientId], masked_inputs: Mapping[ClientId, Any],
           responses: Iterable[UnmaskResponse]) -> np.ndarray:
  """Server, round 4: the sum modulo ``2^k`` of the survivors' encoded inputs.

  Args:
    roster: from :func:`make_roster`.
    shared: the clients that completed ShareKeys (U2; the senders in :func:`route_shares`).
    masked_inputs: ``{client: y}`` for the clients whose masked input arrived (U3).
    responses: :class:`UnmaskResponse` from at least ``threshold`` survivors.
  """
  k, t = roster.modulus_bits, roster.threshold
  shared = set(shared)
  survivors = set(masked_inputs)
  if not survivors <= shared:
    raise ValueError(f'masked inputs from {sorted(survivors - shared)}, which did not '
                     f'complete ShareKeys.')
  dropped = shared - survivors
  if len(survivors) < t:
    raise ValueError(f'{len(survivors)} of {len(shared)} clients sent a masked input; '
                     f'dropout recovery needs at least threshold={t} survivors '
                     f'(at most {len(shared) - t} may drop).')
  ys = {u: field.check_residues_mod2k(f'masked_inputs[{u!r}]', y, k) for u, y in masked_inputs.items()}
  lengths = {y.shape for y in ys.values()}
  if len(lengths) != 1 or len(next(iter(lengths))) != 1:
    raise ValueError(f'masked inputs must be 1-D of one length; got shapes {sorted(lengths)}.')
  length = next(iter(lengths))[0]
  responses = list(responses)
  by_x: dict[int, UnmaskResponse] = {}
  for r in responses:
    if r.client_id not in survivors:
      raise ValueError(f'unmasking response from {r.client_id!r}, which is not a survivor.')
    if r.x != roster.index(r.client_id) + 1 or r.x in by_x:
      raise ValueError(f'unmasking response from {r.client_id!r} has x={r.x}; expected '
                       f'{roster.index(r.client_id) + 1}, once.')
    if set(r.mask_key_shares) & set(r.self_mask_shares):
      raise ValueError(f'response from {r.client_id!r} reveals both secrets of '
                       f'{sorted(set(r.mask_key_shares) & set(r.self_mask_shares))}.')
    by_x[r.x] = r
  if len(by_x) < t:
    raise ValueError(f'only {len(by_x)} survivors answered the unmasking round; '
                     f'threshold={t} are needed.')

  def shares_of(u, field):
    return [(x, getattr(r, field)[u]) for x, r in sorted(by_x.items())
            if u in getattr(r, field)]

  total = np.zeros((length,), np.uint64)
  for u in sorted(survivors):
    total = np.add(total, ys[u])
    b = _reconstruct_secret(f"client {u!r}'s self-mask seed",
                            shares_of(u, 'self_mask_shares'), t)
    total = np.subtract(total, prg(b, length, modulus_bits=k))
  for u in sorted(dropped):
    sk = _reconstruct_secret(f"dropped client {u!r}'s mask key",
                             shares_of(u, 'mask_key_shares'), t)
    i = roster.index(u)
    for v in survivors:
      j = roster.index(v)
      seed = key_agreement(sk, roster.mask_public_keys[v],
                           info=_pair_info(b'pairwise-mask', roster.run_id, i, j))
      mask = prg(seed, length, modulus_bits=k)
      # Survivor v added +mask if i > j (u comes after v), else -mask: undo it.
      total = np.subtract(total, mask) if i > j else np.add(total, mask)
  return total & field.low_bits(k)


# -------------------------------------------------------------------------- high level

def secure_sum(updates_by_client: Mapping[ClientId, Any], *, threshold: int,
               dropped: Iterable[ClientId] = (), scale_bits: int = DEFAULT_SCALE_BITS,
               modulus_bits: int = DEFAULT_MODULUS_BITS,
               insecure_test_seed: int | None = None) -> Any:
  """Runs the whole protocol and returns the sum of the surviving clients' updates.

  Every client runs AdvertiseKeys and ShareKeys; the clients in ``dropped`` then drop out
  before sending their masked input (the case that needs recovery); the survivors send
  masked inputs and answer the unmasking round.

  Args:
    updates_by_client: ``{client_id: pytree}``; one structure and shapes for all clients,
      real leaves. Ids must be mutually orderable.
    threshold: t, Shamir threshold, ``2 <= t <= n``; at most ``n - t`` clients may drop.
    dropped: ids of the clients that drop out.
    scale_bits, modulus_bits: fixed-point resolution ``2^-s`` and modulus ``2^k``; each
      client's values must satisfy ``n * |x| < 2^(k-1-s)`` (checked, see :func:`encode`).
    insecure_test_seed: ``None`` (the default) draws every key, seed, share and the run id
      from the OS CSPRNG (``secrets``). An int replaces it by
      ``numpy.random.default_rng(insecure_test_seed)`` to make a test reproducible:
      **INSECURE**, every key is recomputable from the int; never for real data.

  Returns:
    The pytree of float64 NumPy arrays ``sum_{surviving u} update_u``, exact up to the
    fixed-point rounding (at most ``survivors * 2^-(s+1)`` per coordinate).
  """
  if not isinstance(updates_by_client, Mapping) or len(updates_by_client) < 2:
    raise ValueError('updates_by_client must be a mapping of at least 2 client ids to '
                     'pytrees.')
  k = field.check_modulus_bits(modulus_bits)
  s = _check_scale_bits(scale_bits, k)
  n = len(updates_by_client)
  ids = list(updates_by_client)
  # Every client's update must have the first client's structure and shapes.
  first = ids[0]
  _, treedef, shapes = fixed_point.flatten_real(updates_by_client[first], f'client {first!r}')
  vectors = {}
  for cid in ids:
    vec, td, sh = fixed_point.flatten_real(updates_by_client[cid], f'client {cid!r}')
    if td != treedef or sh != shapes:
      raise ValueError(f'client {cid!r} has update structure {td} with shapes {sh}; client '
                       f'{first!r} has {treedef} with {shapes}.')
    try:
      vectors[cid] = encode(vec, scale_bits=s, modulus_bits=k, num_summands=n)
    except ValueError as e:
      raise ValueError(f'client {cid!r}: {e}') from None
  total = secure_sum_mod2k(vectors, threshold=threshold, dropped=dropped, modulus_bits=k,
                           insecure_test_seed=insecure_test_seed)
  return fixed_point.unflatten_real(decode(total, scale_bits=s, modulus_bits=k), treedef,
                                    shapes)


def secure_sum_mod2k(vectors_by_client: Mapping[ClientId, Any], *, threshold: int,
                     dropped: Iterable[ClientId] = (),
                     modulus_bits: int = DEFAULT_MODULUS_BITS,
                     insecure_test_seed: int | None = None) -> np.ndarray:
  """The whole protocol on already encoded inputs: ``sum_{surviving u} x_u mod 2^k``.

  ``vectors_by_client`` maps ids to 1-D integer vectors of one length with values in
  ``[0, 2^k)``; nothing is checked for overflow, the sum wraps around modulo ``2^k`` (the
  modular arithmetic that distributed DP's integer encodings rely on,
  :mod:`jaxsec.federated.distributed_dp`). Other arguments as in :func:`secure_sum`.
  Returns the ``uint64`` residues of the sum, the only thing the server learns.
  """
  if not isinstance(vectors_by_client, Mapping) or len(vectors_by_client) < 2:
    raise ValueError('vectors_by_client must be a mapping of at least 2 client ids to '
                     'encoded vectors.')
  k = field.check_modulus_bits(modulus_bits)
  n = len(vectors_by_client)
  t = _checks.check_int('threshold', threshold, minimum=2, maximum=n)
  dropped = list(dropped)
  unknown = [d for d in dropped if d not in vectors_by_client]
  if unknown:
    raise ValueError(f'dropped={unknown} are not clients in the inputs.')
  dropped = set(dropped)
  if n - len(dropped) < t:
    raise ValueError(f'{len(dropped)} of {n} clients dropped, leaving {n - len(dropped)} '
                     f'< threshold={t}: secure aggregation recovers from at most n - t = '
                     f'{n - t} dropouts.')
  seed = insecure_test_seed
  if not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool))):
    raise ValueError(f'insecure_test_seed={seed!r} must be None (OS CSPRNG, the default) or '
                     f'an int (reproducible and NOT secret: tests only).')
  rng = None if seed is None else np.random.default_rng(seed)
  vectors = {cid: field.check_residues_mod2k(f'vectors_by_client[{cid!r}]', v, k)
             for cid, v in vectors_by_client.items()}
  lengths = {v.shape for v in vectors.values()}
  if len(lengths) != 1 or len(next(iter(lengths))) != 1:
    raise ValueError(f'encoded inputs must be 1-D of one length; got shapes '
                     f'{sorted(lengths)}.')

  states, ads = {}, []
  for cid in vectors:
    states[cid], ad = advertise_keys(cid, insecure_test_rng=rng)
    ads.append(ad)
  roster = make_roster(ads, threshold=t, modulus_bits=k,
                       run_id=None if rng is None else rng.bytes(_RUN_ID_BYTES))
  outboxes = {}
  for cid in roster.client_ids:
    states[cid], outboxes[cid] = share_keys(states[cid], roster, insecure_test_rng=rng)
  inboxes = route_shares(roster, outboxes)
  masked = {}
  for cid in roster.client_ids:
    if cid not in dropped:
      states[cid], masked[cid] = masked_input(states[cid], roster, inboxes[cid],
                                              vectors[cid])
  responses = [unmask_response(states[cid], roster, masked) for cid in masked]
  return unmask(roster, outboxes, masked, responses)
