r"""Cost of the survey's encryption defenses (§3.4(1)): Paillier homomorphic encryption,
Shamir and additive secret sharing, against Bonawitz secure aggregation.

    python -m experiments.run --config=experiments/configs/crypto_overhead.py --workdir=docs/results  # full (2-3 min)
    python -m experiments.run --config=experiments/configs/crypto_overhead.py:smoke --workdir=/tmp/s

Measures, on the host CPU (everything here is Python / NumPy, not jitted):

1. Paillier (``phe``, 2048-bit keys in the full run): time per value to encrypt (fixed-point
   encoding included), to add two ciphertexts, to multiply one by a plaintext integer and
   to decrypt; ciphertext bytes per value and the expansion over a float32.
2. Encrypted FedAvg: 10 clients, IID shards of breast cancer, binary logistic regression
   (30 weights + bias), a few local full-batch gradient steps per round. Each round the
   clients encrypt their model deltas, the server adds ciphertexts and the key holder
   decrypts the mean. The same clients' deltas are also averaged in the clear: the
   decrypted mean must equal it to fixed-point precision (``2^-(s+1)``), and a plaintext
   FedAvg run from the same start must reach the same test accuracy.
3. Encrypted linear inference with the trained model: the client encrypts a test record,
   the server returns ``Enc(x.w + b)``, the client decrypts; predictions vs plaintext.
4. Shamir (t-of-n over GF(2^31 - 1)) share / reconstruct throughput and the additive
   (SPDZ-style) secure sum, on a large vector.
5. Bonawitz et al. secure aggregation (``jaxsec.federated.secure_aggregation``): bytes a
   client uploads, from the protocol's own messages, for the same model and a large one.

The smoke variant uses a 512-bit Paillier key (insecure, test-only) and fewer values.
"""
from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxsec import data
from jaxsec import federated
from jaxsec import io as jio
from jaxsec.crypto import additive
from jaxsec.crypto import paillier
from jaxsec.crypto import shamir
from jaxsec.federated import secure_aggregation as sa

NAME = 'crypto_overhead'
FLOAT32_BYTES = 4


def _per_value(fn, n):
  """Runs ``fn`` once; returns its output and the wall-clock and process-CPU seconds per
  value (CPU time is steadier on a shared host; the code timed is single-threaded)."""
  c0, t0 = time.process_time(), time.perf_counter()
  out = fn()
  return out, (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def _paillier_micro(c, pk, sk, rng) -> dict:
  n = c.timing_values
  x = rng.normal(size=(n,))
  k = rng.integers(-2 ** 31, 2 ** 31, size=n)
  enc, t_enc, c_enc = _per_value(lambda: paillier.encrypt_array(
      pk, x, scale_bits=c.scale_bits, max_abs=64.0), n)
  enc2 = paillier.encrypt_array(pk, x[::-1].copy(), scale_bits=c.scale_bits, max_abs=64.0)
  s, t_add, c_add = _per_value(lambda: paillier.add(enc, enc2), n)
  _, t_mul, c_mul = _per_value(lambda: paillier.mul_public(enc, k), n)
  dec, t_dec, c_dec = _per_value(lambda: paillier.decrypt_array(sk, s), n)
  err = float(np.max(np.abs(dec - (x + x[::-1]))))
  data_bytes = len(enc.to_bytes())
  return {'values': n, 'encrypt_s_per_value': t_enc, 'add_s_per_value': t_add,
          'mul_plain_s_per_value': t_mul, 'decrypt_s_per_value': t_dec,
          'encrypt_cpu_s_per_value': c_enc, 'add_cpu_s_per_value': c_add,
          'mul_plain_cpu_s_per_value': c_mul, 'decrypt_cpu_s_per_value': c_dec,
          'ciphertext_bytes_per_value': data_bytes / n,
          'expansion_vs_float32': data_bytes / n / FLOAT32_BYTES,
          'sum_max_abs_error': err, 'sum_error_bound': 2 * 2.0 ** -(c.scale_bits + 1)}


# ------------------------------------------------------------ logistic regression FedAvg

def _logits(params, x):
  return x @ params['w'] + params['b']


def _logistic_loss(z, y):
  """Per-example binary logistic loss of the logit ``z`` for the label ``y`` in {0, 1}."""
  return jnp.logaddexp(0.0, z) - y * z


def _accuracy(params, x, y):
  return float(np.mean((np.asarray(_logits(params, x)) > 0).astype(np.int32) == y))


def _to_f32(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tree)


def _fedavg(c, pk, sk, rng) -> tuple[dict, dict]:
  xtr, ytr = data.load('breast_cancer', 'train')
  xte, yte = data.load('breast_cancer', 'test')
  # The clients' shards, and FedAvg from jaxsec.federated: every client takes local_steps
  # full-batch gradient steps (batch_size >= the largest shard) from the global model.
  parts = np.array_split(rng.permutation(len(ytr)), c.num_clients)
  index_lists, counts = federated.client_index_lists(parts, len(ytr))
  fed = federated.make_fedavg(_logits, client_optimizer=optax.sgd(c.learning_rate),
                              batch_size=int(counts.max()), local_steps=c.local_steps,
                              loss=_logistic_loss)
  xj, yj = jnp.asarray(xtr, jnp.float32), jnp.asarray(ytr, jnp.float32)
  honest = jnp.zeros((c.num_clients,), bool)
  client_updates = jax.jit(jax.vmap(fed.local_update, in_axes=(None, None, None, 0, 0, 0, None)))
  d = xtr.shape[1]
  init = {'b': jnp.zeros((), jnp.float32), 'w': jnp.zeros((d,), jnp.float32)}
  plain, enc = init, init
  rounds = []
  key = jax.random.key(c.seed)
  for r in range(c.rounds):
    k_round = jax.random.fold_in(key, r)
    # plaintext FedAvg: one round of the library's FedAvg (mean of the client updates)
    plain, _ = fed.round(plain, xj, yj, index_lists, counts, honest, k_round)
    # encrypted FedAvg: the same local training per client, the mean under Paillier
    keys = jax.vmap(lambda i, k=k_round: federated.client_key(k, i))(jnp.arange(c.num_clients))
    de = jax.tree_util.tree_map(np.asarray, client_updates(enc, xj, yj, index_lists, counts,
                                                            keys, False)[0])
    updates = [jax.tree_util.tree_map(lambda a, i=i: a[i], de) for i in range(c.num_clients)]
    t0 = time.perf_counter()
    cts = [paillier.encrypt_update(pk, u, scale_bits=c.scale_bits, max_abs=c.update_max_abs)
           for u in updates]
    t_clients = time.perf_counter() - t0
    t0 = time.perf_counter()
    total = paillier.homomorphic_sum(cts)
    t_server = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean = paillier.decrypt_mean(sk, total, c.num_clients, like=updates[0])
    t_dec = time.perf_counter() - t0
    clear_mean = jax.tree_util.tree_map(lambda u: u.astype(np.float64).mean(0), de)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(mean), jax.tree_util.tree_leaves(clear_mean), strict=True))
    enc = _to_f32(jax.tree_util.tree_map(lambda p, u: np.asarray(p, np.float64) + u,
                                         enc, mean))
    # A float32 delta with |x| >= 2^(23 - s) is already on the 2^-s grid (its ulp is at
    # least 2^-s); count the values that the encoding really rounds (any aggregate error
    # comes from them alone).
    flat = np.concatenate([u.astype(np.float64).ravel()
                           for u in jax.tree_util.tree_leaves(de)])
    scaled = np.ldexp(flat, c.scale_bits)
    off_grid = int(np.sum(scaled != np.rint(scaled)))
    rounds.append({'round': r + 1, 'aggregate_max_abs_error': err,
                   'values_rounded_by_encoding': off_grid, 'values_encrypted': int(flat.size),
                   'client_encrypt_s_total': t_clients, 'server_add_s': t_server,
                   'decrypt_s': t_dec, 'upload_bytes_per_client': len(cts[0].to_bytes()),
                   'plain_accuracy': _accuracy(plain, xte, yte),
                   'encrypted_accuracy': _accuracy(enc, xte, yte)})
    print(f"round {r + 1}: aggregate error {err:.3g}, acc plain "
          f"{rounds[-1]['plain_accuracy']:.4f} / encrypted {rounds[-1]['encrypted_accuracy']:.4f}"
          f", clients encrypt {t_clients:.2f} s", flush=True)
  num_params = d + 1
  pred_p = np.asarray(_logits(plain, xte)) > 0
  pred_e = np.asarray(_logits(enc, xte)) > 0
  param_diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                   for a, b in zip(jax.tree_util.tree_leaves(plain),
                                   jax.tree_util.tree_leaves(enc), strict=True))
  fed = {'dataset': 'breast_cancer', 'num_train': int(len(ytr)), 'num_test': int(len(yte)),
         'num_params': num_params, 'num_clients': c.num_clients, 'rounds': c.rounds,
         'local_steps': c.local_steps, 'learning_rate': c.learning_rate,
         'update_max_abs': c.update_max_abs, 'per_round': rounds,
         'max_aggregate_error': max(x['aggregate_max_abs_error'] for x in rounds),
         'aggregate_error_bound': 2.0 ** -(c.scale_bits + 1),
         'values_rounded_by_encoding': sum(x['values_rounded_by_encoding'] for x in rounds),
         'values_encrypted': sum(x['values_encrypted'] for x in rounds),
         'plain_accuracy': _accuracy(plain, xte, yte),
         'encrypted_accuracy': _accuracy(enc, xte, yte),
         'prediction_agreement': float(np.mean(pred_p == pred_e)),
         'final_param_max_abs_diff': param_diff,
         'mean_round_s': float(np.mean([x['client_encrypt_s_total'] + x['server_add_s'] +
                                        x['decrypt_s'] for x in rounds])),
         'upload_bytes_per_client': rounds[0]['upload_bytes_per_client'],
         'upload_expansion_vs_float32': rounds[0]['upload_bytes_per_client'] / (
             FLOAT32_BYTES * num_params)}
  return fed, {'model': enc, 'xte': np.asarray(xte), 'yte': np.asarray(yte)}


def _linear_inference(c, pk, sk, trained) -> dict:
  params = trained['model']
  w = np.asarray(params['w'], np.float64)
  b = float(params['b'])
  xq = trained['xte'][:c.inference_queries].astype(np.float64)
  t_enc = t_srv = t_dec = 0.0
  ys = []
  for x in xq:
    t0 = time.perf_counter()
    ex = paillier.encrypt_array(pk, x, scale_bits=c.scale_bits, max_abs=c.input_max_abs)
    t1 = time.perf_counter()
    ey = paillier.encrypted_linear(ex, w, b)
    t2 = time.perf_counter()
    ys.append(float(paillier.decrypt_array(sk, ey)))
    t3 = time.perf_counter()
    t_enc, t_srv, t_dec = t_enc + t1 - t0, t_srv + t2 - t1, t_dec + t3 - t2
  ys = np.array(ys)
  plain = xq @ w + b
  q = len(xq)
  return {'queries': q, 'dim': int(xq.shape[1]),
          'max_abs_logit_error': float(np.max(np.abs(ys - plain))),
          'prediction_agreement': float(np.mean((ys > 0) == (plain > 0))),
          'client_encrypt_s_per_query': t_enc / q, 'server_s_per_query': t_srv / q,
          'client_decrypt_s_per_query': t_dec / q,
          'query_bytes': int(xq.shape[1]) * paillier.ciphertext_bytes(pk),
          'answer_bytes': paillier.ciphertext_bytes(pk)}


def _sharing(c, rng) -> dict:
  n_val, t, n = c.shamir_values, c.shamir_threshold, c.shamir_parties
  x = rng.uniform(-100, 100, size=(n_val,))
  sh, t_share, _ = _per_value(lambda: shamir.share_array(
      x, threshold=t, num_shares=n, scale_bits=c.sharing_scale_bits), n_val)
  rec, t_rec, _ = _per_value(lambda: shamir.reconstruct_array(sh[n - t:]), n_val)
  _, t_add, _ = _per_value(lambda: [shamir.add(a, b) for a, b in zip(sh, sh, strict=True)], n_val)
  m = c.additive_parties
  parts = [x, x[::-1].copy()]
  tot, t_ass, _ = _per_value(lambda: additive.secure_sum(
      parts, num_parties=m, scale_bits=c.sharing_scale_bits), 2 * n_val)
  return {
      'prime': shamir.DEFAULT_PRIME, 'scale_bits': c.sharing_scale_bits,
      'values': n_val, 'threshold': t, 'parties': n,
      'shamir_share_values_per_s': 1.0 / t_share,
      'shamir_reconstruct_values_per_s': 1.0 / t_rec,
      'shamir_add_values_per_s': 1.0 / t_add,
      'shamir_max_abs_error': float(np.max(np.abs(rec - x))),
      'shamir_error_bound': 2.0 ** -(c.sharing_scale_bits + 1),
      # a share is one residue below 2^31: 4 bytes on the wire
      'shamir_upload_bytes_per_value': 4 * n,
      'shamir_expansion_vs_float32': 4 * n / FLOAT32_BYTES,
      'additive_parties': m,
      'additive_secure_sum_values_per_s': 1.0 / t_ass,
      'additive_max_abs_error': float(np.max(np.abs(tot - (x + x[::-1])))),
      'additive_upload_bytes_per_value': 4 * m,
      'additive_expansion_vs_float32': 4 * m / FLOAT32_BYTES}


def _secagg_bytes(num_clients, length, threshold, seed) -> dict:
  """Runs the Bonawitz rounds and counts the bytes each client uploads, from the
  messages themselves (masked vector at modulus_bits bits per value)."""
  rng = np.random.default_rng(seed)
  k = sa.DEFAULT_MODULUS_BITS
  x = {i: sa.encode(rng.normal(size=(length,)), num_summands=num_clients)
       for i in range(num_clients)}
  t0 = time.perf_counter()
  states, ads = {}, []
  for i in range(num_clients):
    states[i], ad = sa.advertise_keys(i, insecure_test_rng=rng)
    ads.append(ad)
  roster = sa.make_roster(ads, threshold=threshold)
  outboxes = {}
  for i in roster.client_ids:
    states[i], outboxes[i] = sa.share_keys(states[i], roster, insecure_test_rng=rng)
  inboxes = sa.route_shares(roster, outboxes)
  masked = {}
  for i in roster.client_ids:
    states[i], masked[i] = sa.masked_input(states[i], roster, inboxes[i], x[i])
  responses = [sa.unmask_response(states[i], roster, masked) for i in masked]
  total = sa.unmask(roster, outboxes, masked, responses)
  seconds = time.perf_counter() - t0
  want = np.zeros((length,), np.uint64)
  for v in x.values():
    want = np.add(want, v)
  exact = bool(np.array_equal(total, want & np.uint64((1 << k) - 1)))
  field_bytes = (sa.PRIME.bit_length() + 7) // 8
  per = {
      'advertise_keys': len(ads[0].channel_public_key) + len(ads[0].mask_public_key),
      'share_keys': sum(len(ct) for ct in outboxes[0].values()),
      'masked_input': (k * length + 7) // 8,
      'unmask_response': field_bytes * (len(responses[0].mask_key_shares) +
                                        len(responses[0].self_mask_shares)),
  }
  up = sum(per.values())
  return {'length': length, 'num_clients': num_clients, 'threshold': threshold,
          'modulus_bits': k, 'upload_bytes_per_client': up, 'upload_bytes_by_round': per,
          'upload_expansion_vs_float32': up / (FLOAT32_BYTES * length),
          'sum_exact': exact, 'protocol_seconds': seconds}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  rng = np.random.default_rng(c.seed)
  t0 = time.perf_counter()
  pk, sk = paillier.generate_keypair(c.key_bits, allow_insecure=c.key_bits < 2048)
  keygen = time.perf_counter() - t0
  out = {'name': NAME, 'variant': c.variant, 'config': c.to_dict(),
         'device': common.device_info(),
         'host': {'machine': platform.machine(), 'python': platform.python_version(),
                  'cpu_count': os.cpu_count()},
         'phe_gmpy2': paillier.uses_gmpy2(), 'key_bits': c.key_bits,
         'insecure_test_key': c.key_bits < paillier.MIN_SECURE_KEY_BITS,
         'keygen_seconds': keygen}
  out['paillier'] = _paillier_micro(c, pk, sk, rng)
  print('paillier', out['paillier'], flush=True)
  out['fedavg'], trained = _fedavg(c, pk, sk, rng)
  out['linear_inference'] = _linear_inference(c, pk, sk, trained)
  print('inference', out['linear_inference'], flush=True)
  out['sharing'] = _sharing(c, rng)
  print('sharing', out['sharing'], flush=True)
  out['secure_aggregation'] = [
      _secagg_bytes(c.num_clients, L, c.secagg_threshold, c.seed) for L in c.secagg_lengths]
  print('secagg', out['secure_aggregation'], flush=True)
  out['seconds'] = time.perf_counter() - t0
  jio.write_json_atomic(os.path.join(workdir, NAME + '.json'), out)
  return out


def render_markdown(r: dict) -> str:
  """The docs tables, rendered from the results JSON."""
  p, f, li, s = r['paillier'], r['fedavg'], r['linear_inference'], r['sharing']
  kb = r['key_bits']
  gmp = 'with gmpy2' if r['phe_gmpy2'] else 'pure Python (no gmpy2)'
  warn = ' **(insecure test key)**' if r.get('insecure_test_key') else ''
  lines = [
      '## Encryption defenses: cost of Paillier, secret sharing and secure aggregation', '',
      f"Host CPU ({r['host']['machine']}, Python {r['host']['python']}); `phe` {gmp}; "
      f"Paillier key {kb} bits{warn}, fixed point 2^-{r['config']['scale_bits']}.", '',
      '| Paillier, per value | wall clock | CPU |', '|---|---|---|',
      f"| encrypt (incl. encoding) | {1e3 * p['encrypt_s_per_value']:.2f} ms | "
      f"{1e3 * p['encrypt_cpu_s_per_value']:.2f} ms |",
      f"| add two ciphertexts | {1e6 * p['add_s_per_value']:.1f} us | "
      f"{1e6 * p['add_cpu_s_per_value']:.1f} us |",
      f"| multiply by a plaintext integer | {1e3 * p['mul_plain_s_per_value']:.3f} ms | "
      f"{1e3 * p['mul_plain_cpu_s_per_value']:.3f} ms |",
      f"| decrypt (incl. decoding) | {1e3 * p['decrypt_s_per_value']:.2f} ms | "
      f"{1e3 * p['decrypt_cpu_s_per_value']:.2f} ms |",
      f"| ciphertext size | {p['ciphertext_bytes_per_value']:.0f} bytes "
      f"({p['expansion_vs_float32']:.0f}x a float32) | |", '',
      f"**Encrypted FedAvg** on {f['dataset']} ({f['num_clients']} clients, "
      f"{f['num_params']} parameters, {f['rounds']} rounds of {f['local_steps']} local "
      f"steps): decrypted mean vs plaintext mean of the same deltas, max error "
      f"{f['max_aggregate_error']:.2g} (bound 2^-{r['config']['scale_bits'] + 1} = "
      f"{f['aggregate_error_bound']:.2g}; {f['values_rounded_by_encoding']} of the "
      f"{f['values_encrypted']} float32 values encrypted were off the 2^-"
      f"{r['config']['scale_bits']} grid); test accuracy encrypted "
      f"{100 * f['encrypted_accuracy']:.2f}% vs plaintext FedAvg "
      f"{100 * f['plain_accuracy']:.2f}% (predictions agree on "
      f"{100 * f['prediction_agreement']:.1f}% of the test set, final parameters differ "
      f"by at most {f['final_param_max_abs_diff']:.2g}); {f['mean_round_s']:.2f} s of "
      f"crypto per round, {f['upload_bytes_per_client']} bytes uploaded per client "
      f"({f['upload_expansion_vs_float32']:.0f}x the float32 update).", '',
      f"**Encrypted linear inference** ({li['queries']} test records, d = {li['dim']}): "
      f"max logit error {li['max_abs_logit_error']:.2g}, predictions agree on "
      f"{100 * li['prediction_agreement']:.0f}%; client encrypts in "
      f"{1e3 * li['client_encrypt_s_per_query']:.0f} ms, server evaluates in "
      f"{1e3 * li['server_s_per_query']:.0f} ms, client decrypts in "
      f"{1e3 * li['client_decrypt_s_per_query']:.1f} ms; {li['query_bytes']} bytes up, "
      f"{li['answer_bytes']} down.", '',
      '| scheme | throughput | upload per value (per client) | expansion vs float32 |',
      '|---|---|---|---|',
      f"| Paillier-{kb} encrypt | {1 / p['encrypt_s_per_value']:,.0f} values/s | "
      f"{p['ciphertext_bytes_per_value']:.0f} B | {p['expansion_vs_float32']:.0f}x |",
      f"| Shamir {s['threshold']}-of-{s['parties']} share, GF(2^31-1) | "
      f"{s['shamir_share_values_per_s']:,.0f} values/s (reconstruct "
      f"{s['shamir_reconstruct_values_per_s']:,.0f}/s) | {s['shamir_upload_bytes_per_value']}"
      f" B | {s['shamir_expansion_vs_float32']:.0f}x |",
      f"| additive secure sum, {s['additive_parties']} parties | "
      f"{s['additive_secure_sum_values_per_s']:,.0f} values/s | "
      f"{s['additive_upload_bytes_per_value']} B | {s['additive_expansion_vs_float32']:.0f}x |",
  ]
  for g in r['secure_aggregation']:
    lines.append(
        f"| Bonawitz secure aggregation, {g['num_clients']} clients, {g['length']:,} values"
        f" | {g['length'] * g['num_clients'] / g['protocol_seconds']:,.0f} values/s "
        f"(whole protocol) | {g['upload_bytes_per_client'] / g['length']:.1f} B | "
        f"{g['upload_expansion_vs_float32']:.2f}x |")
  lines += ['', f"Shamir reconstruction error {s['shamir_max_abs_error']:.2g} (bound "
            f"{s['shamir_error_bound']:.2g}); every secure-aggregation sum exact: "
            f"{all(g['sum_exact'] for g in r['secure_aggregation'])}.", '']
  return '\n'.join(lines)
