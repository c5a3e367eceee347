"""CKKS inference (jaxsec.crypto.ckks): decrypted logits equal the plaintext square-activation
MLP within CKKS precision, the 128-bit parameter check, and bad input."""
import functools
import subprocess
import sys

import numpy as np
import pytest

from jaxsec.crypto import ckks
from jaxsec.crypto import mlp_export


def _params(rng, sizes):
  """A random MLP params dict (``dense<i>`` then ``head``) with non-zero biases."""
  names = [f'dense{i}' for i in range(len(sizes) - 2)] + ['head']
  return {'params': {n: {'kernel': rng.normal(size=(a, b)) / np.sqrt(a),
                         'bias': rng.normal(size=b) * 0.5}
                     for n, a, b in zip(names, sizes[:-1], sizes[1:], strict=True)}}


def _mlp_and_inputs(seed, sizes, batch):
  """A generator seeded ``seed``, a random MLP of ``sizes`` drawn from it and then
  ``batch`` inputs uniform in [0, 1): (rng, params, x)."""
  rng = np.random.default_rng(seed)
  params = _params(rng, sizes)
  return rng, params, rng.uniform(size=(batch, sizes[0]))


def _clean_process(test):
  """Runs ``test`` here, or in a fresh interpreter when this one has imported TensorFlow
  (another test of this worker loaded a dataset): TenSEAL cannot serialise beside it."""
  @functools.wraps(test)
  def run(*args, **kwargs):
    if 'tensorflow' not in sys.modules:
      return test(*args, **kwargs)
    with pytest.raises(RuntimeError, match='encrypted_mlp_logits_isolated'):
      ckks.encrypted_mlp_logits(_params(np.random.default_rng(0), (2, 2, 2)),
                                np.zeros((1, 2)), ckks.ckks_context())
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:xdist',
                           '-p', 'no:cacheprovider', f'{__file__}::{test.__name__}'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  return run


@pytest.fixture(scope='module')
def context():
  return ckks.ckks_context()


@_clean_process
def test_logits_match_plaintext_polynomial_net(context):
  _, params, x = _mlp_and_inputs(0, (20, 8, 3), 4)
  out = ckks.encrypted_mlp_logits(params, x, context)
  ref = mlp_export.mlp_forward(mlp_export.mlp_layers(params), x, 'square')
  err = np.abs(out.logits - ref).max()
  # Measured max abs error ~3e-6 at scale 2^40 (logits of order 1); CKKS is approximate, so
  # the check is a precision bound, not equality. The biases matter (they are non-zero).
  assert out.logits.shape == (4, 3) and err < 1e-4, err
  np.testing.assert_array_equal(out.logits.argmax(1), ref.argmax(1))
  assert not np.allclose(ref, mlp_export.mlp_forward(
      [mlp_export.Dense(w, 0 * b) for w, b in mlp_export.mlp_layers(params)], x, 'square'))
  info = out.info
  assert len(info['seconds']) == 4 and all(s > 0 for s in info['seconds'])
  # one 8192-degree ciphertext each way: hundreds of kB (query) and ~130 kB (reply, 1 prime)
  assert all(100_000 < b < 1_000_000 for b in info['bytes_query'])
  assert all(50_000 < b < info['bytes_query'][0] for b in info['bytes_reply'])
  assert info['bytes_public_context'] > info['bytes_query'][0]


def test_context_parameters_and_128_bit_refusal():
  with pytest.raises(ValueError, match=r'coeff_mod_bit_sizes=\(60, 40, 40, 60\) \(log2 Q = 200\)'
                     r'.*poly_modulus_degree=4096.*log2 Q <= 109'):
    ckks.ckks_context(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 40, 40, 60))
  with pytest.raises(ValueError, match='log2 Q = 220'):
    ckks.ckks_context(coeff_mod_bit_sizes=(60, 40, 40, 40, 40))
  with pytest.raises(ValueError, match='poly_modulus_degree=5000'):
    ckks.ckks_context(poly_modulus_degree=5000)
  with pytest.raises(ValueError, match='middle primes must equal global_scale_bits=30'):
    ckks.ckks_context(global_scale_bits=30)
  assert ckks.MAX_LOG_Q_128[8192] == 218 == sum((60, 40, 40, 40, 38))


def test_bad_input(context):
  rng, params, x = _mlp_and_inputs(1, (6, 4, 2), 2)
  with pytest.raises(ValueError, match="activation='relu'"):
    ckks.encrypted_mlp_logits(params, x, context, activation='relu')
  with pytest.raises(ValueError, match='x has 5 features'):
    ckks.encrypted_mlp_logits(params, x[:, :5], context)
  with pytest.raises(ValueError, match='needs 5 rescaling levels'):
    ckks.encrypted_mlp_logits(_params(rng, (6, 4, 4, 2)), x, context)
  with pytest.raises(ValueError, match='CKKSContext'):
    ckks.encrypted_mlp_logits(params, x, context.context)
  with pytest.raises(ValueError, match='slots'):
    ckks.encrypted_mlp_logits(_params(rng, (4096, 2, 2)), np.zeros((1, 4096)), context)


@pytest.mark.slow    # a child Python process that imports jaxsec (~10-25 s on 2 busy cores)
@_clean_process
def test_isolated_child_process_matches_in_process(context):
  _, params, x = _mlp_and_inputs(3, (10, 4, 3), 2)
  here = ckks.encrypted_mlp_logits(params, x, context)
  there = ckks.encrypted_mlp_logits_isolated(params, x)
  np.testing.assert_allclose(there.logits, here.logits, atol=1e-4)
  assert there.info['coeff_mod_bit_sizes'] == [60, 40, 40, 40, 38]
  assert len(there.info['bytes_query']) == 2
  # checked here, before a child starts
  with pytest.raises(ValueError, match='log2 Q = 200'):
    ckks.encrypted_mlp_logits_isolated(
        params, x, context_kwargs={'poly_modulus_degree': 4096,
                                   'coeff_mod_bit_sizes': (60, 40, 40, 60)})
  with pytest.raises(ValueError, match='unknown keys'):
    ckks.encrypted_mlp_logits_isolated(params, x, context_kwargs={'scale': 40})
