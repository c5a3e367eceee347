"""Smoke run of experiments/crypto_overhead.py (512-bit test key, two FedAvg rounds)."""

from experiments import crypto_overhead
from experiments.configs import crypto_overhead as crypto_overhead_config
from tests.experiments import run_smoke


def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(crypto_overhead, crypto_overhead_config, tmp_path)
  assert saved['insecure_test_key'] and saved['key_bits'] == 512
  p = saved['paillier']
  assert p['ciphertext_bytes_per_value'] == 2 * 512 / 8          # an element of Z_{n^2}
  assert 0 <= p['sum_max_abs_error'] <= p['sum_error_bound']
  assert p['encrypt_s_per_value'] > 0 and p['decrypt_s_per_value'] > 0
  f = saved['fedavg']
  assert len(f['per_round']) == cfg.rounds and f['num_params'] == 31
  assert f['max_aggregate_error'] <= f['aggregate_error_bound']
  assert f['encrypted_accuracy'] == f['plain_accuracy'] > 0.85
  assert f['upload_bytes_per_client'] == 31 * 128
  li = saved['linear_inference']
  assert li['prediction_agreement'] == 1.0 and li['max_abs_logit_error'] < 1e-6
  s = saved['sharing']
  assert s['shamir_max_abs_error'] <= s['shamir_error_bound']
  assert s['additive_max_abs_error'] <= 2 * s['shamir_error_bound']
  for g in saved['secure_aggregation']:
    assert g['sum_exact'] and g['upload_expansion_vs_float32'] > 2.0
  assert 'Encrypted FedAvg' in crypto_overhead.render_markdown(res)
