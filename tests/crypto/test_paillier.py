"""Paillier arrays (jaxsec.crypto.paillier): round trips, homomorphic sums and encrypted
FedAvg, encrypted linear inference, overflow checks.

TEST-ONLY: the key pair is 512-bit (``allow_insecure=True``) so that the suite stays fast;
512-bit moduli can be factored and must never protect real data (the default is 2048).
"""
import numpy as np
import phe
import pytest

from jaxsec.crypto import paillier


@pytest.fixture(scope='module')
def keys():
  return paillier.generate_keypair(512, allow_insecure=True)


def test_roundtrip_within_fixed_point_precision(keys):
  pk, sk = keys
  rng = np.random.default_rng(0)
  x = rng.normal(scale=100.0, size=(3, 4))
  x[0, 0], x[0, 1] = -1e-9, -7.125
  for s in (8, 32):
    enc = paillier.encrypt_array(pk, x, scale_bits=s, max_abs=1e3)
    assert enc.shape == (3, 4) and enc.scale_bits == s
    got = paillier.decrypt_array(sk, enc)
    assert np.abs(got - x).max() <= 2.0 ** -(s + 1)
    assert got[0, 1] == -7.125
  # s = 8 visibly quantises: the bound above is not met trivially
  assert np.abs(paillier.decrypt_array(sk, paillier.encrypt_array(pk, x, scale_bits=8,
                                                                  max_abs=1e3)) - x
                ).max() > 2.0 ** -12


def test_encryption_is_randomised_and_serialises(keys):
  pk, sk = keys
  a = paillier.encrypt_array(pk, [3.0, 3.0])
  c0, c1 = (c.ciphertext(be_secure=False) for c in a.ciphertexts)
  assert c0 != c1                                   # IND-CPA needs fresh randomness
  data = a.to_bytes()
  assert len(data) == a.nbytes == 2 * paillier.ciphertext_bytes(pk) == 2 * 128
  b = paillier.EncryptedArray.from_bytes(pk, data, (2,), scale_bits=a.scale_bits,
                                         bound=a.bound)
  np.testing.assert_array_equal(paillier.decrypt_array(sk, b), [3.0, 3.0])
  with pytest.raises(ValueError, match='bytes'):
    paillier.EncryptedArray.from_bytes(pk, data[:-1], (2,), scale_bits=32, bound=1)


def test_homomorphic_sum_equals_plaintext_sum(keys):
  pk, sk = keys
  rng = np.random.default_rng(1)
  xs = [rng.uniform(-50, 50, size=(6,)) for _ in range(10)]
  enc = paillier.homomorphic_sum([paillier.encrypt_array(pk, x, max_abs=50.0) for x in xs])
  assert enc.bound == 10 * int(50 * 2 ** 32)
  np.testing.assert_allclose(paillier.decrypt_array(sk, enc), np.sum(xs, axis=0), rtol=0,
                             atol=10 * 2.0 ** -33 + 1e-12)
  two = paillier.mul_public(paillier.encrypt_array(pk, [1.5, -0.25]), [2, -3])
  np.testing.assert_array_equal(paillier.decrypt_array(sk, two), [3.0, 0.75])


def test_encrypted_fedavg_mean_of_pytrees(keys):
  pk, sk = keys
  rng = np.random.default_rng(2)
  updates = [{'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=(2,)).astype(np.float32)}
             for _ in range(5)]
  got = paillier.encrypted_mean(updates, public_key=pk, private_key=sk, max_abs=10.0)
  for k in ('w', 'b'):
    want = np.mean([u[k].astype(np.float64) for u in updates], axis=0)
    assert got[k].shape == want.shape
    np.testing.assert_allclose(got[k], want, rtol=0, atol=2.0 ** -33 + 1e-12)
  with pytest.raises(ValueError, match=r'client 3: x contains'):
    paillier.encrypted_mean(updates[:3] + [{'w': np.full((3, 2), 11.0), 'b': updates[0]['b']}],
                            public_key=pk, private_key=sk, max_abs=10.0)
  with pytest.raises(ValueError, match='structure'):
    paillier.encrypted_mean([updates[0], {'w': updates[0]['w']}], public_key=pk,
                            private_key=sk)


def test_encrypted_linear_inference_equals_affine_map(keys):
  pk, sk = keys
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 5))
  w = rng.normal(size=(5, 3))
  b = rng.normal(size=(3,))
  enc_x = paillier.encrypt_array(pk, x, scale_bits=24, max_abs=10.0)
  enc_y = paillier.encrypted_linear(enc_x, w, b)
  assert enc_y.shape == (2, 3) and enc_y.scale_bits == 48
  y = paillier.decrypt_array(sk, enc_y)
  # Error of rounding x and w to 2^-24 each (and b to 2^-48): |dx.w| + |x.dw| + ...
  tol = 2.0 ** -25 * (np.abs(w).sum(0) + np.abs(x).sum(1, keepdims=True) + 1e-3)
  assert np.all(np.abs(y - (x @ w + b)) <= tol)
  # 1-D weights, scalar bias, a single query
  v = paillier.encrypted_linear(paillier.encrypt_array(pk, [1.0, -2.0, 0.5]),
                                [3.0, 0.25, -4.0], -1.5)
  assert v.shape == () and paillier.decrypt_array(sk, v) == 3.0 - 0.5 - 2.0 - 1.5
  # The output is re-randomised: the same query twice gives different ciphertexts.
  e1 = paillier.encrypt_array(pk, [1.0, 2.0])
  r1 = paillier.encrypted_linear(e1, [1.0, 1.0])
  r2 = paillier.encrypted_linear(e1, [1.0, 1.0])
  assert r1.ciphertexts[()].ciphertext(False) != r2.ciphertexts[()].ciphertext(False)
  with pytest.raises(ValueError, match='last axis'):
    paillier.encrypted_linear(e1, np.ones((3, 2)))


def test_overflow_raises_value_error_naming_the_value(keys):
  pk, sk = keys
  with pytest.raises(ValueError, match=r'x contains -5\.0 \(at index \(1,\)\).*max_abs=4\.0'):
    paillier.encrypt_array(pk, [1.0, -5.0], max_abs=4.0)
  with pytest.raises(ValueError, match=r'max_abs=1e\+200 is too large for the key'):
    paillier.encrypt_array(pk, [1.0], max_abs=1e200)
  big = paillier.encrypt_array(pk, [1.0], max_abs=2.0 ** 470)   # bound 2^502
  # n is any 512-bit modulus, so max_int ~ n / 3 lies in [2^509.4, 2^510.4): derive the
  # smallest number of summands that overflows from the key instead of fixing it.
  k = pk.max_int // big.bound + 1
  assert k * big.bound > pk.max_int >= (k - 1) * big.bound
  paillier.homomorphic_sum([big] * (k - 1))                      # fits: no error
  with pytest.raises(ValueError, match=rf'the sum of {k} arrays could reach .*beyond'):
    paillier.homomorphic_sum([big] * k)
  with pytest.raises(ValueError, match=r'x @ w \+ b .*could reach'):
    paillier.encrypted_linear(big, [1e10])
  with pytest.raises(ValueError, match='weights contains'):
    paillier.encrypted_linear(big, [1e300])
  # A plaintext in the overflow band (n/3, 2n/3) is rejected at decryption.
  middle = phe.EncryptedNumber(pk, pk.raw_encrypt(pk.n // 2), 0)
  bad = paillier.EncryptedArray(pk, np.array([middle], dtype=object), 32, 1)
  with pytest.raises(ValueError, match='overflow band'):
    paillier.decrypt_array(sk, bad)


def test_bad_arguments(keys):
  pk, sk = keys
  with pytest.raises(ValueError, match='key_bits=1024 is insecure'):
    paillier.generate_keypair(1024)
  with pytest.raises(ValueError, match='key_bits=511 must be even'):
    paillier.generate_keypair(511, allow_insecure=True)
  other_pk, other_sk = paillier.generate_keypair(256, allow_insecure=True)
  a = paillier.encrypt_array(pk, [1.0])
  with pytest.raises(ValueError, match='does not match'):
    paillier.decrypt_array(other_sk, a)
  with pytest.raises(ValueError, match='different public keys'):
    paillier.add(a, paillier.encrypt_array(other_pk, [1.0], max_abs=1.0))
  with pytest.raises(ValueError, match='scale_bits=32 and b has 16'):
    paillier.add(a, paillier.encrypt_array(pk, [1.0], scale_bits=16))
  with pytest.raises(ValueError, match='shape'):
    paillier.add(a, paillier.encrypt_array(pk, [1.0, 2.0]))
  with pytest.raises(ValueError, match='max_abs=-1.0'):
    paillier.encrypt_array(pk, [1.0], max_abs=-1.0)
  with pytest.raises(ValueError, match='public_key'):
    paillier.encrypt_array(sk, [1.0])
