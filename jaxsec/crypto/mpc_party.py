"""One MPyC party of :func:`jaxsec.crypto.mpc_inference.mpc_mlp_logits` (run as a script).

    python mpc_party.py --job DIR -M3 -I<i> -B<base port> --no-log

Started three times by :func:`~jaxsec.crypto.mpc_inference.mpc_mlp_logits`, one process
per party on localhost; it imports only NumPy and MPyC (not jaxsec, not JAX), so that a
party starts in well under a second. ``DIR`` holds ``job.json`` (shapes, activation,
fixed-point format) and the private inputs: ``x.npy`` is read by party 0 only (the client),
``layers.npz`` by party 1 only (the model owner); every other party feeds zeros of the
public shape to ``mpc.input``, which ignores them. Party ``i`` writes ``party<i>.json``:
its bytes sent per query and, for party 0 (the only output receiver), the logits, the
securely computed argmax and the latency per query.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np
from mpyc.runtime import mpc as _mpc

mpc: Any = _mpc   # MPyC's coroutine decorators hide the awaitable types from checkers


def _bytes_sent() -> int:
  return sum(p.protocol.nbytes_sent for p in mpc.parties
             if p.pid != mpc.pid and p.protocol is not None)


def _array(secfxp, a):
  # integral=False on every party: MPyC otherwise infers the flag from the value, and the
  # parties that feed zeros (integral) would run a different protocol than the sender.
  return secfxp.array(np.asarray(a, np.float64), integral=False)


async def _main(job_dir: str) -> None:
  with open(os.path.join(job_dir, 'job.json')) as f:
    job = json.load(f)
  secfxp = mpc.SecFxp(job['bit_length'], job['frac_bits'])
  shapes = [tuple(s) for s in job['layer_shapes']]
  await mpc.start()
  pid = mpc.pid
  out: dict = {'pid': pid, 'bytes_sent': [], 'seconds': [], 'logits': [], 'argmax': []}
  # The model owner (party 1) secret-shares the weights once.
  t0 = time.perf_counter()
  if pid == 1:
    npz = np.load(os.path.join(job_dir, 'layers.npz'))
    mats = [(npz[f'w{i}'], npz[f'b{i}']) for i in range(len(shapes))]
  else:
    mats = [(np.zeros(s), np.zeros(s[1])) for s in shapes]
  layers = [(mpc.input(_array(secfxp, w), senders=1), mpc.input(_array(secfxp, b), senders=1))
            for w, b in mats]
  await mpc.barrier('model shared')
  out['model_share_seconds'] = time.perf_counter() - t0
  out['model_share_bytes'] = _bytes_sent()
  xs = np.load(os.path.join(job_dir, 'x.npy')) if pid == 0 else None
  for q in range(job['num_queries']):
    before = _bytes_sent()
    t0 = time.perf_counter()
    x = xs[q] if xs is not None else np.zeros(shapes[0][0])
    h = mpc.input(_array(secfxp, x), senders=0)          # the client secret-shares its input
    for i, (w, b) in enumerate(layers):
      h = h @ w + b
      if i < len(layers) - 1:
        h = h * h if job['activation'] == 'square' else mpc.np_maximum(h, secfxp(0))
    k = mpc.np_argmax(h)                              # secure comparisons
    logits = await mpc.output(h, receivers=0)
    arg = await mpc.output(k, receivers=0)
    out['seconds'].append(time.perf_counter() - t0)
    out['bytes_sent'].append(_bytes_sent() - before)
    if pid == 0:
      out['logits'].append([float(v) for v in logits])
      out['argmax'].append(int(arg))
  await mpc.shutdown()
  with open(os.path.join(job_dir, f'party{pid}.json'), 'w') as f:
    json.dump(out, f)


if __name__ == '__main__':
  parser = argparse.ArgumentParser()
  parser.add_argument('--job', required=True)
  args = parser.parse_args(sys.argv[1:])   # MPyC has already removed its own options
  mpc.run(_main(args.job))
