"""Three-party MPC inference (jaxsec.crypto.mpc_inference): logits and the secure argmax
equal the plaintext fixed-point network within fixed-point precision, for square and ReLU
activations; bytes and latency are reported; bad input and a failed run raise."""
import numpy as np
import pytest

from jaxsec.crypto import mlp_export
from jaxsec.crypto import mpc_inference


def _layers(rng, sizes):
  return [mlp_export.Dense(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.5)
          for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def _check(activation):
  rng = np.random.default_rng(0)
  layers = _layers(rng, (12, 6, 4))
  x = rng.uniform(-1, 1, size=(3, 12))
  out = mpc_inference.mpc_mlp_logits(layers, x, activation=activation, frac_bits=20)
  ref = mpc_inference.fixed_point_reference(layers, x, frac_bits=20, activation=activation)
  # Truncation rounds each product to 2^-20 ~ 1e-6; a few units per layer, times the weights.
  assert out.logits.shape == (3, 4)
  np.testing.assert_allclose(out.logits, ref, atol=1e-4)
  np.testing.assert_array_equal(out.argmax, ref.argmax(1))      # the securely computed argmax
  info = out.info
  assert len(info['seconds']) == 3 and len(info['bytes']) == 3 and min(info['bytes']) > 0
  assert info['bytes_model'] > 0 and info['parties'] == 3 and info['threshold'] == 1
  return info


def test_square_net_matches_fixed_point_reference():
  _check('square')


@pytest.mark.slow
def test_relu_net_matches_fixed_point_reference_and_costs_more():
  relu = _check('relu')
  square = _check('square')
  assert min(relu['bytes']) > max(square['bytes'])    # secure comparisons (measured ~2x)


def test_fixed_point_reference_is_the_float_net_up_to_rounding():
  rng = np.random.default_rng(2)
  layers = _layers(rng, (5, 3, 2))
  x = rng.uniform(size=(4, 5))
  exact = mlp_export.mlp_forward(layers, x, 'relu')
  np.testing.assert_allclose(
      mpc_inference.fixed_point_reference(layers, x, frac_bits=24, activation='relu'), exact,
      atol=1e-5)
  assert np.abs(mpc_inference.fixed_point_reference(layers, x, frac_bits=4, activation='relu')
                - exact).max() > 1e-3


def test_bad_input_and_failed_run():
  rng = np.random.default_rng(1)
  layers = _layers(rng, (4, 3, 2))
  x = rng.uniform(size=(2, 4))
  with pytest.raises(ValueError, match="activation='tanh'"):
    mpc_inference.mpc_mlp_logits(layers, x, activation='tanh')
  with pytest.raises(ValueError, match='frac_bits=40'):
    mpc_inference.mpc_mlp_logits(layers, x, frac_bits=40)
  with pytest.raises(ValueError, match='x has 3 features'):
    mpc_inference.mpc_mlp_logits(layers, x[:, :3])
  with pytest.raises(ValueError, match='non-finite'):
    mpc_inference.mpc_mlp_logits(layers, np.full((1, 4), np.nan))
  with pytest.raises(RuntimeError, match='did not finish within timeout=0.01'):
    mpc_inference.mpc_mlp_logits(layers, x, timeout=0.01)
