"""Secret-shared inference of an MLP among three parties with MPyC (Shamir sharing, BGW).

The client's input and the model owner's weights are secret-shared among three parties
running MPyC (Schoenmakers, https://github.com/lschoe/mpyc): degree-1 Shamir sharing over a
prime field, multiplication with resharing (Ben-Or, Goldwasser & Wigderson 1988; Gennaro,
Rabin & Rabin 1998), fixed-point numbers ``mpc.SecFxp(l, f)`` (``l``-bit signed values with
``f`` fractional bits, probabilistic truncation after each product: Catrina & Saxena 2010),
and secure comparisons for ReLU and the argmax (bit decomposition, Catrina & de Hoogh 2010).
No primitive is written here: sharing, matrix products, truncation, comparisons and opening
are MPyC's.

Parties and threat model. Party 0 is the client (inputs one image per query, the only party
that receives the logits and the argmax), party 1 the model owner (inputs every layer's
weights and biases once), party 2 a helper; each is a separate OS process on this machine,
talking over localhost TCP (:mod:`jaxsec.crypto.mpc_party`). Security is *semi-honest* with
an *honest majority*: threshold ``t = 1`` of ``m = 3``, so any single party that follows the
protocol learns nothing beyond its own input and output (information-theoretically, up to
the statistical security of truncation and comparison, ``k = 30`` bits by default); two
colluding parties learn everything, and a party that deviates from the protocol can corrupt
the result undetected (no MACs, unlike SPDZ). The public shapes (layer sizes, number of
queries) and the timing are revealed.

The network is the same :class:`jaxsec.models.MLP` as in :mod:`~jaxsec.crypto.ckks`:
``'square'`` activations (one secure multiplication each, as CryptoNets) or ``'relu'``
(``max(h, 0)``: one secure comparison per unit, ``O(l)`` rounds). Logits are exact
fixed-point arithmetic up to one unit ``2^-f`` of rounding per truncation:
:func:`fixed_point_reference` is the plaintext computation on the same ``2^-f`` grid.

>>> import numpy as np
>>> from jaxsec.crypto import mpc_inference
>>> layers = [mpc_inference.mlp_export.Dense(np.eye(2), np.zeros(2)),
...           mpc_inference.mlp_export.Dense(np.ones((2, 1)), np.zeros(1))]
>>> out = mpc_inference.mpc_mlp_logits(layers, np.array([[1.0, -2.0]]))  # 3 processes
>>> round(float(out.logits[0, 0]), 6), out.argmax.tolist()
(5.0, [0])
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

import numpy as np

from jaxsec import _checks
from jaxsec.crypto import mlp_export

__all__ = ['MPCOutput', 'mpc_mlp_logits', 'fixed_point_reference', 'PARTY_SCRIPT']

PARTY_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mpc_party.py')
NUM_PARTIES = 3


class MPCOutput(NamedTuple):
  """Opened logits ``[B, K]``, the securely computed argmax ``[B]`` and costs (``info``)."""
  logits: np.ndarray
  argmax: np.ndarray
  info: dict


def fixed_point_reference(params: Any, x: Any, *, frac_bits: int = 24,
                          activation: str = 'square') -> np.ndarray:
  """The plaintext forward pass on the fixed-point grid MPC computes on: inputs, weights and
  biases rounded to multiples of ``2^-frac_bits``, then float64 arithmetic. MPC's logits
  differ from it only by the rounding of its truncations (a few units of ``2^-f`` per
  layer, amplified by the next layers' weights)."""
  f = _checks.check_int('frac_bits', frac_bits, minimum=1, maximum=60)
  q = lambda a: np.round(np.asarray(a, np.float64) * 2.0 ** f) / 2.0 ** f
  layers = params if isinstance(params, list) else mlp_export.mlp_layers(params)
  layers = [mlp_export.Dense(q(w), q(b)) for w, b in layers]
  return mlp_export.mlp_forward(layers, q(mlp_export.check_inputs(layers, x)), activation)


def _free_base_port(count: int) -> int:
  """A base port with ``count`` consecutive free localhost ports (checked by binding)."""
  rng = np.random.default_rng()
  for _ in range(100):
    base = int(rng.integers(20000, 60000 - count))
    socks = []
    try:
      for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(s)
        s.bind(('localhost', base + i))
      return base
    except OSError:
      continue
    finally:
      for s in socks:
        s.close()
  raise RuntimeError(f'no {count} consecutive free localhost ports found.')


def mpc_mlp_logits(params: Any, x: Any, *, activation: str = 'square', bit_length: int = 64,
                   frac_bits: int = 24, timeout: float = 600.0) -> MPCOutput:
  """Three-party secret-shared inference; returns the logits opened to the client.

  Starts the three parties of :mod:`jaxsec.crypto.mpc_party` as subprocesses on free
  localhost ports, waits for them (all queries run in one MPC session; the weights are
  shared once), and collects party 0's output.

  Args:
    params: a :class:`jaxsec.models.MLP`'s params, or
      :func:`~jaxsec.crypto.mlp_export.mlp_layers`' layers.
    x: inputs ``[B, ...]``, flattened per example.
    activation: ``'square'`` or ``'relu'`` (the network's).
    bit_length: ``l`` of ``mpc.SecFxp(l, f)``: signed values must stay below ``2^(l-f-1)``.
    frac_bits: ``f``, fractional bits (resolution ``2^-f``), at most ``bit_length // 2`` (the
      integer part keeps at least half of the bits).
    timeout: seconds before the parties are killed and a ``RuntimeError`` raised.

  Returns:
    ``MPCOutput(logits [B, K] float64, argmax [B] int, info)``; ``info`` has party 0's
    seconds per query (``seconds``, input sharing to opened output), the bytes all three
    parties sent per query (``bytes``) and for sharing the model once (``bytes_model``),
    the wall seconds of the whole run with process start-up (``wall_seconds``).

  Raises:
    ValueError: an unknown activation, bad ``bit_length`` / ``frac_bits``, or bad ``x``.
    RuntimeError: a party failed or timed out (its stderr is in the message).
  """
  _checks.check_choice('activation', activation, mlp_export.ACTIVATIONS)
  l = _checks.check_int('bit_length', bit_length, minimum=8, maximum=256)
  f = _checks.check_int('frac_bits', frac_bits, minimum=1, maximum=l // 2)
  _checks.check_float('timeout', timeout, minimum=0.0, strict_min=True)
  layers = params if isinstance(params, list) else mlp_export.mlp_layers(params)
  x = mlp_export.check_inputs(layers, x)
  with tempfile.TemporaryDirectory(prefix='jaxsec_mpc_') as job:
    np.save(os.path.join(job, 'x.npy'), x)
    arrays: dict[str, Any] = {}
    for i, (w, b) in enumerate(layers):
      arrays[f'w{i}'], arrays[f'b{i}'] = w, b
    np.savez(os.path.join(job, 'layers.npz'), **arrays)
    with open(os.path.join(job, 'job.json'), 'w') as fh:
      json.dump({'bit_length': l, 'frac_bits': f, 'activation': activation,
                 'num_queries': int(x.shape[0]),
                 'layer_shapes': [list(w.shape) for w, _ in layers]}, fh)
    t0 = time.perf_counter()
    base = _free_base_port(NUM_PARTIES)
    procs, logs = [], []
    for i in range(NUM_PARTIES):
      log = open(os.path.join(job, f'party{i}.log'), 'w')
      logs.append(log)
      procs.append(subprocess.Popen(
          [sys.executable, PARTY_SCRIPT, '--job', job, '-M3', f'-I{i}', '-B', str(base),
           '--no-log'], stdout=log, stderr=subprocess.STDOUT, cwd=job))
    failed = None
    try:
      deadline = time.monotonic() + timeout
      for i, p in enumerate(procs):
        rc = p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        if rc != 0 and failed is None:
          failed = f'party {i} exited with status {rc}'
    except subprocess.TimeoutExpired:
      failed = f'the parties did not finish within timeout={timeout} s'
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
      for log in logs:
        log.close()
    wall = time.perf_counter() - t0
    if failed is not None:
      tails = []
      for i in range(NUM_PARTIES):
        with open(os.path.join(job, f'party{i}.log')) as fh:
          tails.append(f'--- party {i} ---\n' + fh.read()[-2000:])
      raise RuntimeError(f'MPC inference failed: {failed}.\n' + '\n'.join(tails))
    res = []
    for i in range(NUM_PARTIES):
      with open(os.path.join(job, f'party{i}.json')) as fh:
        res.append(json.load(fh))
  per_query = np.sum([r['bytes_sent'] for r in res], axis=0)
  info = {'seconds': res[0]['seconds'], 'bytes': [int(b) for b in per_query],
          'bytes_model': int(sum(r['model_share_bytes'] for r in res)),
          'bytes_per_party': [int(np.sum(r['bytes_sent'])) for r in res],
          'wall_seconds': wall, 'parties': NUM_PARTIES, 'threshold': 1,
          'bit_length': l, 'frac_bits': f, 'activation': activation}
  return MPCOutput(np.asarray(res[0]['logits'], np.float64),
                   np.asarray(res[0]['argmax'], np.int64), info)
