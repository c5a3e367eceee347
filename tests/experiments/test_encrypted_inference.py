"""Smoke run of the encrypted-inference study (experiments/encrypted_inference.py): CKKS and
three-party MPC predictions agree with the plaintext network; the rendered section cites
CryptoNets."""
import os

import numpy as np
import pytest

from experiments import encrypted_inference
from experiments.configs import encrypted_inference as config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
@pytest.mark.slow
def test_encrypted_inference_smoke(tmp_path):
  cfg, _, r = run_smoke(encrypted_inference, config, tmp_path)
  assert r['name'] == 'encrypted_inference' and r['variant'] == 'smoke'
  assert r['plaintext']['n'] == cfg.n_test and 0 <= r['plaintext']['accuracy'] <= 1
  h, m = r['inference']['ckks'], r['inference']['mpc']
  assert h['n'] == cfg.n_ckks and m['n'] == cfg.n_mpc
  # Same network, same images: the encrypted / shared predictions are the plaintext ones.
  assert h['agreement'] == 1.0 and m['agreement'] == 1.0 and m['logits_argmax_agree']
  assert h['accuracy'] == h['plaintext_accuracy'] and m['accuracy'] == m['plaintext_accuracy']
  assert h['max_abs_logit_error'] < 1e-3 and m['max_abs_logit_error'] < 1e-3
  assert h['bytes_query'] > h['bytes_reply'] > 0 and m['bytes_per_query'] > 0
  assert len(h['prediction']) == cfg.n_ckks and np.all(np.array(m['prediction']) < 10)
  md = encrypted_inference.render_markdown(r)
  assert 'CryptoNets' in md and '8192' in md and '| CKKS | 3 |' in md
  assert encrypted_inference.headline(r) == []            # smoke: no README row
  # resume: the stage cache returns the same figures without recomputing them
  encrypted_inference.run(cfg, str(tmp_path))
  again = jio.read_json(os.path.join(tmp_path, 'encrypted_inference.json'))
  assert again['inference'] == r['inference']
