"""Shamir t-of-n sharing over GF(p) (jaxsec.crypto.shamir): any t shares reconstruct, t - 1
shares are uniform whatever the secret (chi-square, fixed seeds), linearity, the secure
sum with dropped parties, and argument checks."""
import itertools

import numpy as np
import pytest
from scipy import stats

from jaxsec.crypto import field
from jaxsec.crypto import shamir


def test_any_t_of_n_shares_reconstruct():
  rng = np.random.default_rng(0)
  p = shamir.DEFAULT_PRIME
  secret = rng.integers(0, p, size=(4, 3))
  shares = shamir.share(secret, threshold=3, num_shares=5, insecure_test_rng=rng)
  assert [s.x for s in shares] == [1, 2, 3, 4, 5]
  for combo in itertools.combinations(shares, 3):
    np.testing.assert_array_equal(shamir.reconstruct(combo), secret)
  for combo in itertools.permutations(shares, 4):   # more than t, any order
    np.testing.assert_array_equal(shamir.reconstruct(combo), secret)
  with pytest.raises(ValueError, match='2 shares given; threshold=3'):
    shamir.reconstruct(shares[:2])
  # real arrays through the fixed-point code, CSPRNG randomness
  x = np.array([[0.0, -1.5], [1234.25, -0.0001]])
  sh = shamir.share_array(x, threshold=2, num_shares=4)
  for combo in itertools.combinations(sh, 2):
    np.testing.assert_allclose(shamir.reconstruct_array(combo), x, rtol=0, atol=2.0 ** -17)
  # t = 1: every share is the secret (no secrecy, but consistent)
  one = shamir.share(secret, threshold=1, num_shares=3, insecure_test_rng=rng)
  assert all(np.array_equal(s.y, secret) for s in one)


def _joint_cells(shares, idx, p):
  cells = np.zeros_like(shares[0].y)
  for i in idx:
    cells = cells * p + shares[i].y
  return cells


@pytest.mark.parametrize('secret_value', [0, 7])
def test_t_minus_one_shares_are_uniform_whatever_the_secret(secret_value):
  p, t, n, trials = 11, 3, 5, 24200
  rng = np.random.default_rng(1234 + secret_value)
  secret = np.full((trials,), secret_value)   # one independent sharing per coordinate
  shares = shamir.share(secret, threshold=t, num_shares=n, prime=p, insecure_test_rng=rng)
  # joint law of the t - 1 = 2 shares of parties 2 and 4: uniform on GF(11)^2 (121 cells)
  counts = np.bincount(_joint_cells(shares, (1, 3), p), minlength=p * p)
  assert stats.chisquare(counts).pvalue > 1e-3
  # single shares too
  for s in shares:
    assert stats.chisquare(np.bincount(s.y, minlength=p)).pvalue > 1e-3
  # negative control (the test has power): t shares are far from uniform, they pin the
  # secret -- (y1, y2, y3) takes only p^2 of the p^3 values.
  counts_t = np.bincount(_joint_cells(shares, (0, 1, 2), p), minlength=p ** 3)
  assert stats.chisquare(counts_t).pvalue < 1e-12


def test_t_minus_one_shares_independent_of_secret():
  p, trials = 11, 12100
  rng = np.random.default_rng(7)
  table = []
  for v in (0, 3, 10):
    sh = shamir.share(np.full((trials,), v), threshold=3, num_shares=4, prime=p, insecure_test_rng=rng)
    table.append(np.bincount(_joint_cells(sh, (0, 3), p), minlength=p * p))
  assert stats.chi2_contingency(np.array(table)).pvalue > 1e-3


def test_csprng_shares_of_large_field_are_uniform():
  # rng=None draws from the OS CSPRNG (not seedable): the alpha is tiny to keep it stable.
  p = shamir.DEFAULT_PRIME
  sh = shamir.share(np.zeros((64000,), np.int64), threshold=2, num_shares=3)
  for s in sh:
    assert s.y.min() >= 0 and s.y.max() < p
    counts = np.bincount((s.y * 64) // p, minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-6


def test_share_addition_is_a_sharing_of_the_sum():
  rng = np.random.default_rng(2)
  p = shamir.DEFAULT_PRIME
  u, v = rng.integers(0, p, size=10), rng.integers(0, p, size=10)
  su = shamir.share(u, threshold=2, num_shares=3, insecure_test_rng=rng)
  sv = shamir.share(v, threshold=2, num_shares=3, insecure_test_rng=rng)
  summed = [shamir.add(a, b) for a, b in zip(su, sv, strict=True)]
  for combo in itertools.combinations(summed, 2):
    np.testing.assert_array_equal(shamir.reconstruct(combo), (u + v) % p)
  tripled = [shamir.mul_public(a, -3) for a in su]
  np.testing.assert_array_equal(shamir.reconstruct(tripled[1:]), (-3 * u) % p)
  # on encoded reals
  x, y = np.array([1.25, -3.0]), np.array([-0.5, 10.75])
  sx = shamir.share_array(x, threshold=2, num_shares=3, num_summands=2, insecure_test_rng=rng)
  sy = shamir.share_array(y, threshold=2, num_shares=3, num_summands=2, insecure_test_rng=rng)
  got = shamir.reconstruct_array([shamir.add(a, b) for a, b in zip(sx, sy, strict=True)][::2])
  np.testing.assert_array_equal(got, x + y)
  with pytest.raises(ValueError, match='cannot add'):
    shamir.add(sx[0], sy[1])


def test_secure_sum_with_dropped_parties():
  rng = np.random.default_rng(3)
  updates = [rng.uniform(-100, 100, size=(3, 4)) for _ in range(8)]
  got = shamir.secure_sum(updates, threshold=3, num_parties=5, dropped_parties=(1, 4),
                          insecure_test_rng=rng)
  np.testing.assert_allclose(got, np.sum(updates, axis=0), rtol=0, atol=8 * 2.0 ** -17)
  with pytest.raises(ValueError, match='leaving 2 < threshold=3'):
    shamir.secure_sum(updates, threshold=3, num_parties=5, dropped_parties=(1, 2, 3))
  with pytest.raises(ValueError, match=r'client 2: x contains 6000\.0'):
    shamir.secure_sum([np.ones(2), np.ones(2), np.array([6000.0, 0.0])], threshold=2,
                      num_parties=3)   # 3 summands: |x| <= 16384 / 3


def test_bad_arguments_name_the_value():
  s = np.array([1, 2])
  with pytest.raises(ValueError, match='threshold=6 must be <= num_shares=5'):
    shamir.share(s, threshold=6, num_shares=5)
  with pytest.raises(ValueError, match='threshold=0 must be >= 1'):
    shamir.share(s, threshold=0, num_shares=5)
  with pytest.raises(ValueError, match='prime=1000 is not prime'):
    shamir.share(s, threshold=2, num_shares=3, prime=1000)
  with pytest.raises(ValueError, match='prime=561 is not prime'):   # a Carmichael number
    shamir.share_array([1.0], threshold=2, num_shares=3, prime=561)
  with pytest.raises(ValueError, match=r'prime=2147483659 must be < 2\^31'):
    shamir.share(s, threshold=2, num_shares=3, prime=2147483659)
  with pytest.raises(ValueError, match='num_shares=11 must be < prime=11'):
    shamir.share(s, threshold=2, num_shares=11, prime=11)
  with pytest.raises(ValueError, match='secret contains 2147483647'):
    shamir.share(np.array([2 ** 31 - 1]), threshold=2, num_shares=3)
  with pytest.raises(ValueError, match=r'x contains -20000\.0 \(at index \(1,\)\)'):
    shamir.share_array([1.0, -20000.0], threshold=2, num_shares=3)
  with pytest.raises(ValueError, match='numpy.random.Generator'):
    shamir.share(s, threshold=2, num_shares=3, insecure_test_rng=0)
  assert shamir.max_abs() == ((2 ** 31 - 2) // 2) / 2 ** 16


def test_is_prime_matches_trial_division():
  def slow(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))
  assert [n for n in range(3000) if field.is_prime(n)] == [n for n in range(3000) if slow(n)]
  assert field.is_prime(2 ** 31 - 1) and not field.is_prime(2 ** 31 + 1)
  assert not any(field.is_prime(c) for c in (561, 1105, 1729, 41041, 3215031751))


def test_share_int_any_t_shares_reconstruct_t_minus_1_do_not():
  """Big-field sharing of one element (secure aggregation's 256-bit keys, GF(2^521 - 1))."""
  rng = np.random.default_rng(1)
  secret = int.from_bytes(rng.bytes(32), 'big')
  shares = shamir.share_int(secret, threshold=3, num_shares=5, insecure_test_rng=rng)
  assert all(0 <= y < shamir.BIG_PRIME for _, y in shares)
  for subset in itertools.combinations(shares, 3):
    assert shamir.reconstruct_int(subset) == secret
  assert shamir.reconstruct_int(shares) == secret
  for subset in itertools.combinations(shares, 2):
    assert shamir.reconstruct_int(subset) != secret
  with pytest.raises(ValueError, match='distinct'):
    shamir.reconstruct_int([shares[0], shares[0]])
  with pytest.raises(ValueError, match='num_shares=2 must be >= 3'):
    shamir.share_int(secret, threshold=3, num_shares=2)
  with pytest.raises(ValueError, match='secret=-1'):
    shamir.share_int(-1, threshold=2, num_shares=3)
  with pytest.raises(ValueError, match='prime=15 is not prime'):
    shamir.share_int(3, threshold=2, num_shares=3, prime=15)
  with pytest.raises(ValueError, match='insecure_test_rng=1'):
    shamir.share_int(3, threshold=2, num_shares=3, insecure_test_rng=1)
