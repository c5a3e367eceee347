"""Additive n-of-n sharing over GF(p) and the SPDZ-style secure sum
(jaxsec.crypto.additive)."""
import numpy as np
import pytest
from scipy import stats

from jaxsec.crypto import additive


def test_shares_sum_to_secret_and_need_all():
  rng = np.random.default_rng(0)
  p = additive.DEFAULT_PRIME
  secret = rng.integers(0, p, size=(5, 2))
  sh = additive.share(secret, num_shares=3, insecure_test_rng=rng)
  np.testing.assert_array_equal(additive.reconstruct(sh), secret)
  np.testing.assert_array_equal(additive.reconstruct(sh[::-1]), secret)
  np.testing.assert_array_equal(sum(s.y for s in sh) % p, secret)
  with pytest.raises(ValueError, match=r'all 3 shares exactly once; got indices \[0, 2\]'):
    additive.reconstruct([sh[0], sh[2]])
  with pytest.raises(ValueError, match=r'got indices \[0, 0, 1\]'):
    additive.reconstruct([sh[0], sh[0], sh[1]])


@pytest.mark.parametrize('secret_value', [0, 9])
def test_n_minus_one_shares_uniform_whatever_the_secret(secret_value):
  p, trials = 11, 24200
  rng = np.random.default_rng(99 + secret_value)
  sh = additive.share(np.full((trials,), secret_value), num_shares=3, prime=p, insecure_test_rng=rng)
  for i, j in ((0, 1), (0, 2), (1, 2)):
    counts = np.bincount(sh[i].y * p + sh[j].y, minlength=p * p)
    assert stats.chisquare(counts).pvalue > 1e-3
  # negative control: all three shares are determined by the secret (p^2 of p^3 cells)
  allc = np.bincount((sh[0].y * p + sh[1].y) * p + sh[2].y, minlength=p ** 3)
  assert stats.chisquare(allc).pvalue < 1e-12


@pytest.mark.parametrize('num_parties', [2, 3])
def test_secure_sum_equals_plain_sum(num_parties):
  rng = np.random.default_rng(num_parties)
  updates = [rng.uniform(-300, 300, size=(4, 3)) for _ in range(10)]
  got = additive.secure_sum(updates, num_parties=num_parties, insecure_test_rng=rng)
  np.testing.assert_allclose(got, np.sum(updates, axis=0), rtol=0, atol=10 * 2.0 ** -17)
  # the CSPRNG path
  got = additive.secure_sum(updates[:2], num_parties=num_parties)
  np.testing.assert_allclose(got, updates[0] + updates[1], rtol=0, atol=2 * 2.0 ** -17)


def test_linearity_and_arguments():
  rng = np.random.default_rng(5)
  a = additive.share_array([1.5, -2.0], num_shares=2, num_summands=2, insecure_test_rng=rng)
  b = additive.share_array([-0.25, 8.0], num_shares=2, num_summands=2, insecure_test_rng=rng)
  s = [additive.add(x, y) for x, y in zip(a, b, strict=True)]
  np.testing.assert_array_equal(additive.reconstruct_array(s), [1.25, 6.0])
  with pytest.raises(ValueError, match='different parties'):
    additive.add(a[0], b[1])
  with pytest.raises(ValueError, match='num_shares=1 must be >= 2'):
    additive.share(np.array([1]), num_shares=1)
  with pytest.raises(ValueError, match='prime=100 is not prime'):
    additive.share(np.array([1]), num_shares=2, prime=100)
  with pytest.raises(ValueError, match=r'x contains 9000\.0.*num_summands=2'):
    additive.share_array([9000.0], num_shares=2, num_summands=2)


def test_numpy_randomness_only_under_the_insecure_test_name():
  # A numpy Generator is reproducible and not secret: it is accepted only as
  # insecure_test_rng, and the old name is refused rather than mistaken for a key.
  with pytest.raises(TypeError, match='rng'):
    additive.share(np.array([1]), num_shares=2, rng=np.random.default_rng(0))
  with pytest.raises(ValueError, match=r'insecure_test_rng=0 .*NOT secret'):
    additive.share(np.array([1]), num_shares=2, insecure_test_rng=0)


def test_share_mod2k_n_of_n_over_the_ring_of_secure_aggregation():
  from jaxsec.federated import secure_aggregation as sa  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  x = sa.encode(np.linspace(-3, 3, 50), scale_bits=16, modulus_bits=32)
  for n in (2, 5):
    shares = additive.share_mod2k(x, n, insecure_test_rng=rng, modulus_bits=32)
    assert len(shares) == n and all(np.any(s != x) for s in shares)
    assert all(s.dtype == np.uint64 and int(s.max()) < 2 ** 32 for s in shares)
    np.testing.assert_array_equal(additive.reconstruct_mod2k(shares, modulus_bits=32), x)
    assert not np.array_equal(additive.reconstruct_mod2k(shares[1:], modulus_bits=32), x)
  with pytest.raises(ValueError, match='float64.*encode'):
    additive.share_mod2k(np.ones(3), 2, insecure_test_rng=rng)
  with pytest.raises(ValueError, match='num_shares=1'):
    additive.share_mod2k(x, 1, insecure_test_rng=rng)
  with pytest.raises(ValueError, match='modulus_bits=65'):
    additive.share_mod2k(x, 2, modulus_bits=65)
