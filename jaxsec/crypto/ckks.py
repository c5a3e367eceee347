"""Homomorphic inference of a square-activation MLP on CKKS ciphertexts (TenSEAL / SEAL).

CryptoNets (Gilad-Bachrach et al., ICML 2016) evaluates a network whose non-linearities are
squares on homomorphically encrypted inputs; this is the same network family (dense layers,
:func:`~jaxsec.crypto.mlp_export.square` activations) on the approximate-arithmetic scheme
CKKS (Cheon, Kim, Kim & Song, "Homomorphic Encryption for Arithmetic of Approximate
Numbers", Asiacrypt 2017) through TenSEAL (Benaissa et al. 2021, on Microsoft SEAL). No
primitive is written here: encryption, plaintext-matrix products (TenSEAL's diagonal method,
with Galois-key rotations), squaring, rescaling and (de)serialisation are TenSEAL's.

Protocol and threat model. The client holds the secret key (:func:`ckks_context`), encrypts
one image per query and sends the ciphertext; the server holds the plaintext weights and a
*public* copy of the context (relinearisation and Galois keys, no secret key), evaluates the
network and returns one ciphertext of the logits, which the client decrypts. CKKS is IND-CPA
under Ring-LWE, so an honest-but-curious server learns nothing about the input; the client
learns the logits (hence, from enough queries, the model: Tramer et al. 2016); the weights
are not hidden from a malicious client by any circuit privacy, and integrity is not protected.

Parameters and security (HomomorphicEncryption.org standard, Albrecht et al. 2018, Table 1,
uniform ternary secret, 128-bit classical security): ``log2 Q`` (the sum of
``coeff_mod_bit_sizes``) may be at most 27 / 54 / 109 / 218 / 438 / 881 bits for
``poly_modulus_degree`` N = 1024 / 2048 / 4096 / 8192 / 16384 / 32768
(:data:`MAX_LOG_Q_128`, the table SEAL enforces). :func:`ckks_context` refuses anything
else with a ``ValueError``. The default, N = 8192 with primes of 60, 40, 40, 40 and 38 bits
(``log2 Q = 218``, exactly the limit) and scale ``2^40``, gives N/2 = 4096 slots and three
rescaling levels, the depth of an MLP with one hidden layer (matrix product, square, matrix
product); each extra hidden layer needs two more 40-bit primes (N = 16384). The first prime
(60 bits) leaves 20 bits above the scale for the logits' integer part; the last (38 bits)
is SEAL's special key-switching prime.

Deviations. One image per ciphertext (latency per query), not CryptoNets' batching of 8192
images across the slots (throughput: 8192 predictions per 250 s on their 2016 hardware).
Biases are folded into the matrices (an input feature and a hidden unit held at constant 1,
as ``x' = [x, 1]``): adding a plain bias vector between two of TenSEAL's vector-matrix
products breaks the replicated slot layout its diagonal method expects, and the second
product then returns wrong values (TenSEAL issue #462; we measured a 0.07 logit error on
784 inputs), while the folded form is exact up to CKKS noise.

TenSEAL serialises through protobuf and crashes (segmentation fault) in a process that has
imported TensorFlow (``jaxsec.data`` loads datasets with it): both ship a protobuf runtime.
:func:`encrypted_mlp_logits_isolated` runs the same computation in a fresh Python process
that never imports TensorFlow, and returns the same :class:`CKKSOutput`.

>>> import numpy as np
>>> from jaxsec.crypto import ckks, mlp_export
>>> rng = np.random.default_rng(0)
>>> params = {'params': {'dense0': {'kernel': rng.normal(size=(4, 3)), 'bias': np.ones(3)},
...                      'head': {'kernel': rng.normal(size=(3, 2)), 'bias': np.zeros(2)}}}
>>> x = rng.uniform(size=(1, 4))
>>> out = ckks.encrypted_mlp_logits(params, x, ckks.ckks_context())
>>> ref = mlp_export.mlp_forward(mlp_export.mlp_layers(params), x, 'square')
>>> out.logits.shape, bool(abs(out.logits - ref).max() < 1e-4)
((1, 2), True)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxsec import _checks
from jaxsec.crypto import mlp_export

__all__ = ['MAX_LOG_Q_128', 'CKKSContext', 'CKKSOutput', 'ckks_context', 'levels_needed',
           'encrypted_mlp_logits', 'encrypted_mlp_logits_isolated']

# HomomorphicEncryption.org security standard (Albrecht et al. 2018), Table 1: the largest
# log2 of the ciphertext modulus Q for 128-bit classical security, uniform ternary secret.
MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


class CKKSContext(NamedTuple):
  """A TenSEAL CKKS context (holding the secret key) with the parameters that made it."""
  context: Any                          # tenseal.Context
  poly_modulus_degree: int
  coeff_mod_bit_sizes: tuple[int, ...]
  global_scale_bits: int

  @property
  def levels(self) -> int:
    """Rescalings available: the primes other than the first (output) and the last
    (special) one."""
    return len(self.coeff_mod_bit_sizes) - 2

  @property
  def slots(self) -> int:
    return self.poly_modulus_degree // 2


class CKKSOutput(NamedTuple):
  """Decrypted logits ``[B, num_classes]`` and per-query costs (``info``)."""
  logits: np.ndarray
  info: dict


def _check_params(poly_modulus_degree: Any, coeff_mod_bit_sizes: Any, global_scale_bits: Any
                  ) -> tuple[int, tuple[int, ...], int]:
  """The checks of :func:`ckks_context` (its Raises), without building a context."""
  n = _checks.check_int('poly_modulus_degree', poly_modulus_degree)
  if n not in MAX_LOG_Q_128:
    raise ValueError(f'poly_modulus_degree={n} is not one of {tuple(MAX_LOG_Q_128)} (the '
                     'HE standard table for 128-bit security).')
  bits = tuple(_checks.check_int('coeff_mod_bit_sizes[i]', b, minimum=1, maximum=60)
               for b in coeff_mod_bit_sizes)
  scale = _checks.check_int('global_scale_bits', global_scale_bits, minimum=1, maximum=60)
  if len(bits) < 3:
    raise ValueError(f'coeff_mod_bit_sizes={bits} needs at least 3 primes (output, one '
                     'rescaling level, special prime).')
  log_q = sum(bits)
  if log_q > MAX_LOG_Q_128[n]:
    raise ValueError(
        f'coeff_mod_bit_sizes={bits} (log2 Q = {log_q}) with poly_modulus_degree={n} is below '
        f'128-bit security: the HE standard allows log2 Q <= {MAX_LOG_Q_128[n]} for N={n}.')
  if any(b != scale for b in bits[1:-1]):
    raise ValueError(f'coeff_mod_bit_sizes={bits}: the middle primes must equal '
                     f'global_scale_bits={scale} so that rescaling keeps the scale.')
  if bits[0] <= scale:
    raise ValueError(f'coeff_mod_bit_sizes[0]={bits[0]} must exceed global_scale_bits='
                     f'{scale} (room for the integer part of the result).')
  return n, bits, scale


def ckks_context(*, poly_modulus_degree: int = 8192,
                 coeff_mod_bit_sizes: Sequence[int] = (60, 40, 40, 40, 38),
                 global_scale_bits: int = 40) -> CKKSContext:
  """A CKKS context with Galois keys, at 128-bit security or refused.

  Args:
    poly_modulus_degree: ring dimension N (a power of two in :data:`MAX_LOG_Q_128`).
    coeff_mod_bit_sizes: bit sizes of the RNS primes of Q: the first holds the final value,
      the middle ones are consumed by rescaling (each must equal ``global_scale_bits``),
      the last is the special key-switching prime.
    global_scale_bits: log2 of the encoding scale.

  Raises:
    ValueError: naming the values, when N is not in the table, ``sum(coeff_mod_bit_sizes)``
      exceeds the 128-bit bound for N, a middle prime differs from the scale, the first
      prime is not larger than the scale, or a prime has more than 60 bits.
  """
  import tenseal as ts  # pylint: disable=import-outside-toplevel

  n, bits, scale = _check_params(poly_modulus_degree, coeff_mod_bit_sizes, global_scale_bits)
  ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=list(bits))
  ctx.global_scale = 2.0 ** scale
  ctx.generate_galois_keys()
  return CKKSContext(ctx, n, bits, scale)


def levels_needed(num_layers: int) -> int:
  """Rescalings an MLP with ``num_layers`` dense layers uses: one per product, one per
  square."""
  return 2 * num_layers - 1


def _folded(layers: list[mlp_export.Dense]) -> list[np.ndarray]:
  """Each layer as one matrix acting on ``[h, 1]``: ``[[W, 0], [b, 1]]`` (the head: ``[[W],
  [b]]``), so that no plain vector is added between two products (module docstring)."""
  mats = []
  for i, (w, b) in enumerate(layers):
    last = i == len(layers) - 1
    m = np.zeros((w.shape[0] + 1, w.shape[1] + (0 if last else 1)))
    m[:-1, :w.shape[1]] = w
    m[-1, :w.shape[1]] = b
    if not last:
      m[-1, -1] = 1.0          # the constant unit: 1 -> 1 through the square
    mats.append(m)
  return mats


def _check_network(layers: list[mlp_export.Dense], coeff_mod_bit_sizes: tuple[int, ...],
                   poly_modulus_degree: int) -> list[np.ndarray]:
  """Depth and slot checks of :func:`encrypted_mlp_logits`; returns the folded matrices."""
  levels, slots = len(coeff_mod_bit_sizes) - 2, poly_modulus_degree // 2
  need = levels_needed(len(layers))
  if need > levels:
    raise ValueError(f'a network of {len(layers)} dense layers needs {need} rescaling levels; '
                     f'coeff_mod_bit_sizes={coeff_mod_bit_sizes} gives '
                     f'{levels}.')
  mats = _folded(layers)
  for i, m in enumerate(mats):
    if m.shape[0] + m.shape[1] > slots:
      raise ValueError(f'layer {i} ({m.shape[0]} x {m.shape[1]} with the folded bias) needs '
                       f'more than the {slots} slots of poly_modulus_degree='
                       f'{poly_modulus_degree}.')
  return mats


def encrypted_mlp_logits(params: Any, x: Any, context: CKKSContext, *,
                         activation: str = 'square') -> CKKSOutput:
  """Encrypted inference, one CKKS ciphertext per query; returns the decrypted logits.

  Args:
    params: a :class:`jaxsec.models.MLP`'s params (its activation must be ``square``), or
      the layers from :func:`~jaxsec.crypto.mlp_export.mlp_layers`.
    x: inputs ``[B, ...]`` (flattened per example).
    context: from :func:`ckks_context` (client side: holds the secret key).
    activation: must be ``'square'`` (ReLU has no exact CKKS evaluation).

  Returns:
    ``CKKSOutput(logits [B, K] float64, info)``; ``info`` has per-query wall seconds
    (``seconds``, and its ``encrypt`` / ``evaluate`` / ``decrypt`` parts), the serialised
    ciphertext bytes client -> server (``bytes_query``) and back (``bytes_reply``) per query,
    and the serialised public evaluation context (``bytes_public_context``: relinearisation
    and Galois keys, sent once).

  Raises:
    ValueError: another activation, a network deeper than ``context.levels`` allows, a layer
      wider than the slots (TenSEAL's diagonal product needs ``d_in + d_out <= N/2``), or
      bad ``x``.
    RuntimeError: this process has imported TensorFlow (see the module docstring).
  """
  import tenseal as ts  # pylint: disable=import-outside-toplevel

  if activation != 'square':
    raise ValueError(f"activation={activation!r}: CKKS evaluates polynomials only; the "
                     "network must use 'square'.")
  if not isinstance(context, CKKSContext):
    raise ValueError(f'context must be a CKKSContext from ckks_context(); got '
                     f'{type(context).__name__}.')
  layers = params if isinstance(params, list) else mlp_export.mlp_layers(params)
  mats = _check_network(layers, context.coeff_mod_bit_sizes, context.poly_modulus_degree)
  x = mlp_export.check_inputs(layers, x)
  x_aug = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
  mats_l = [m.tolist() for m in mats]

  if 'tensorflow' in sys.modules:
    raise RuntimeError('TenSEAL cannot serialise ciphertexts in a process that has imported '
                       'TensorFlow (both ship a protobuf runtime; jaxsec.data imports it to '
                       'load datasets): use encrypted_mlp_logits_isolated.')
  server_ctx = context.context.copy()
  server_ctx.make_context_public()       # the server never holds the secret key
  public_bytes = len(server_ctx.serialize(save_galois_keys=True, save_relin_keys=True))

  logits, t_enc, t_eval, t_dec, b_in, b_out = [], [], [], [], [], []
  for row in x_aug:
    t0 = time.perf_counter()
    query = ts.ckks_vector(context.context, row.tolist()).serialize()         # client
    t1 = time.perf_counter()
    h: Any = ts.ckks_vector_from(server_ctx, query)                             # server
    for j, m in enumerate(mats_l):
      h = h.mm(m)
      if j < len(mats_l) - 1:
        h = h.square()
    reply = h.serialize()
    t2 = time.perf_counter()
    out = ts.ckks_vector_from(context.context, reply).decrypt()               # client
    t3 = time.perf_counter()
    logits.append(out)
    t_enc.append(t1 - t0)
    t_eval.append(t2 - t1)
    t_dec.append(t3 - t2)
    b_in.append(len(query))
    b_out.append(len(reply))
  seconds = np.add(np.add(t_enc, t_eval), t_dec)
  info = {'seconds': seconds.tolist(), 'encrypt_seconds': t_enc, 'evaluate_seconds': t_eval,
          'decrypt_seconds': t_dec, 'bytes_query': b_in, 'bytes_reply': b_out,
          'bytes_public_context': public_bytes,
          'poly_modulus_degree': context.poly_modulus_degree,
          'coeff_mod_bit_sizes': list(context.coeff_mod_bit_sizes),
          'global_scale_bits': context.global_scale_bits}
  return CKKSOutput(np.asarray(logits, np.float64), info)


def encrypted_mlp_logits_isolated(params: Any, x: Any, *,
                                  context_kwargs: dict | None = None,
                                  timeout: float = 3600.0) -> CKKSOutput:
  """:func:`encrypted_mlp_logits` with a fresh :func:`ckks_context` (``**context_kwargs``)
  in a child Python process (``python -m jaxsec.crypto.ckks``), for callers that have
  imported TensorFlow (module docstring). Same arguments checks, same output.

  Raises:
    ValueError: as :func:`ckks_context` and :func:`encrypted_mlp_logits`, checked in this
      process before the child starts.
    RuntimeError: the child failed or ran past ``timeout`` seconds (its output is in the
      message).
  """
  layers = params if isinstance(params, list) else mlp_export.mlp_layers(params)
  x = mlp_export.check_inputs(layers, x)
  kwargs = dict(context_kwargs or {})
  defaults = {'poly_modulus_degree': 8192, 'coeff_mod_bit_sizes': (60, 40, 40, 40, 38),
              'global_scale_bits': 40}
  unknown = set(kwargs) - set(defaults)
  if unknown:
    raise ValueError(f'context_kwargs has unknown keys {sorted(unknown)}; expected some of '
                     f'{sorted(defaults)}.')
  n, bits, scale = _check_params(**{**defaults, **kwargs})
  _check_network(layers, bits, n)
  kwargs = {'poly_modulus_degree': n, 'coeff_mod_bit_sizes': list(bits),
            'global_scale_bits': scale}
  _checks.check_float('timeout', timeout, minimum=0.0, strict_min=True)
  with tempfile.TemporaryDirectory(prefix='jaxsec_ckks_') as job:
    arrays: dict[str, Any] = {'x': x}
    for i, (w, b) in enumerate(layers):
      arrays[f'w{i}'], arrays[f'b{i}'] = w, b
    np.savez(os.path.join(job, 'job.npz'), **arrays)
    with open(os.path.join(job, 'job.json'), 'w') as fh:
      json.dump({'num_layers': len(layers), 'context_kwargs': kwargs}, fh)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    try:
      proc = subprocess.run([sys.executable, '-m', 'jaxsec.crypto.ckks', job], env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
      raise RuntimeError(f'CKKS child process ran past timeout={timeout} s.') from e
    if proc.returncode != 0:
      raise RuntimeError(f'CKKS child process failed (status {proc.returncode}):\n'
                         f'{(proc.stdout + proc.stderr)[-3000:]}')
    logits = np.load(os.path.join(job, 'logits.npy'))
    with open(os.path.join(job, 'info.json')) as fh:
      info = json.load(fh)
  return CKKSOutput(logits, info)


def _child(job: str) -> None:
  """The child of :func:`encrypted_mlp_logits_isolated`: reads the job, writes the output."""
  with open(os.path.join(job, 'job.json')) as fh:
    spec = json.load(fh)
  npz = np.load(os.path.join(job, 'job.npz'))
  layers = [mlp_export.Dense(npz[f'w{i}'], npz[f'b{i}']) for i in range(spec['num_layers'])]
  kwargs = spec['context_kwargs']
  if 'coeff_mod_bit_sizes' in kwargs:
    kwargs['coeff_mod_bit_sizes'] = tuple(kwargs['coeff_mod_bit_sizes'])
  out = encrypted_mlp_logits(layers, npz['x'], ckks_context(**kwargs))
  np.save(os.path.join(job, 'logits.npy'), out.logits)
  with open(os.path.join(job, 'info.json'), 'w') as fh:
    json.dump(out.info, fh)


if __name__ == '__main__':
  _child(sys.argv[1])
