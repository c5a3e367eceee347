"""The fixed-point codec under jaxsec.crypto: rounding error, exact big integers, the centred
lift, and overflow errors that name the value."""
import numpy as np
import pytest

from jaxsec.crypto import fixed_point as fp


def test_roundtrip_within_half_a_step_including_negatives():
  rng = np.random.default_rng(0)
  x = rng.normal(scale=50.0, size=(7, 5))
  x[0, 0], x[0, 1] = -0.0, -123.456
  for s in (0, 8, 20):
    v = fp.quantize(x, scale_bits=s, limit=2 ** 40)
    assert v.dtype == np.int64 and v.shape == x.shape
    err = np.abs(fp.dequantize(v, scale_bits=s) - x)
    assert err.max() <= 2.0 ** -(s + 1)
  # s = 8 really rounds (the bound is attained up to a factor, not trivially zero)
  assert np.abs(fp.dequantize(fp.quantize(x, scale_bits=8, limit=2 ** 40), scale_bits=8)
                - x).max() > 2.0 ** -12
  assert fp.dequantize(fp.quantize([-2.75], scale_bits=2, limit=100), scale_bits=2)[0] == -2.75


def test_big_integers_are_exact():
  v = fp.quantize([1e30, -3.5], scale_bits=100, limit=2 ** 400, big=True)
  assert v.dtype == object
  assert v[0] == int(1e30) * 2 ** 100 and v[1] == -7 * 2 ** 99
  np.testing.assert_array_equal(fp.dequantize(v, scale_bits=100), [1e30, -3.5])


def test_residues_centred_lift():
  p = 2 ** 31 - 1
  v = np.array([0, 1, -1, (p - 1) // 2, -((p - 1) // 2)], np.int64)
  r = fp.to_residues(v, p)
  assert r.min() >= 0 and r.max() < p and r[2] == p - 1
  np.testing.assert_array_equal(fp.from_residues(r, p), v)
  big = np.array([5, -5], dtype=object)
  n = 2 ** 521 - 1
  rb = fp.to_residues(big, n)
  assert rb[1] == n - 5
  assert list(fp.from_residues(rb, n)) == [5, -5]


def test_overflow_names_value_and_index():
  with pytest.raises(ValueError, match=r'x contains -300\.5 \(at index \(1, 0\)\).*'
                                       r'\|x\| must be <= 256'):
    fp.quantize(np.array([[1.0, 2.0], [-300.5, 0.0]]), scale_bits=4, limit=4096)
  with pytest.raises(ValueError, match='grad contains 1e.*num_summands=3'):
    fp.quantize([1e300], scale_bits=30, limit=10, name='grad', context=' (num_summands=3)')
  with pytest.raises(ValueError, match='non-finite'):
    fp.quantize([0.0, np.inf], scale_bits=1, limit=10)
  with pytest.raises(ValueError, match='dtype'):
    fp.quantize(np.array(['a']), scale_bits=1, limit=10)
  with pytest.raises(ValueError, match='big=True'):
    fp.quantize([1.0], scale_bits=1, limit=2 ** 70)
  assert fp.max_abs(scale_bits=3, limit=80) == 10.0
  assert fp.max_abs(scale_bits=0, limit=2 ** 2000) == float('inf')
