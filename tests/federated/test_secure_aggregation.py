"""Secure aggregation (Bonawitz et al. 2017): exact sums with dropouts, uniform-looking masked
inputs, Shamir thresholds, the fixed-point codec, X25519 agreement, additive sharing."""
import numpy as np
import pytest

from jaxsec.federated import secure_aggregation as sa


def _updates(n, seed=0):
  rng = np.random.default_rng(seed)
  return {i: {'w': rng.normal(size=(2, 3)), 'b': (rng.normal(size=(4,)).astype(np.float32),)}
          for i in range(n)}


def _plain_sum(updates, ids):
  return {'w': sum(updates[i]['w'] for i in ids),
          'b': (sum(updates[i]['b'][0].astype(np.float64) for i in ids),)}


def _assert_tree_close(got, want, atol):
  np.testing.assert_allclose(got['w'], want['w'], rtol=0, atol=atol)
  np.testing.assert_allclose(got['b'][0], want['b'][0], rtol=0, atol=atol)


def test_encode_decode_roundtrip_and_overflow():
  x = np.array([0.0, -1.5, 3.25, 1e-3, -1234.5678])
  v = sa.encode(x, scale_bits=16, modulus_bits=32)
  assert v.dtype == np.uint64 and v.max() < 2 ** 32
  np.testing.assert_allclose(sa.decode(v, scale_bits=16, modulus_bits=32), x, atol=2 ** -17)
  assert sa.decode(sa.encode([-1.0], scale_bits=0, modulus_bits=64), scale_bits=0,
                   modulus_bits=64)[0] == -1.0
  # Sums of encodings decode to the sum of the values (mod 2^k arithmetic).
  s = (sa.encode([-2.5], scale_bits=8, modulus_bits=16) +
       sa.encode([1.25], scale_bits=8, modulus_bits=16)) & np.uint64(2 ** 16 - 1)
  assert sa.decode(s, scale_bits=8, modulus_bits=16)[0] == -1.25
  with pytest.raises(ValueError, match=r'x contains 200.0, which overflows.*= 128\.'):
    sa.encode([1.0, 200.0], scale_bits=8, modulus_bits=16)
  with pytest.raises(ValueError, match=r'num_summands=4.*= 32\.'):
    sa.encode([40.0], scale_bits=8, modulus_bits=16, num_summands=4)
  big = np.array([2 ** 60 + 1, -(2 ** 60 + 3)])   # integers are encoded exactly
  v = sa.encode(big, scale_bits=1, modulus_bits=64)
  assert v[0] == 2 ** 61 + 2 and v[1] == 2 ** 64 - 2 ** 61 - 6
  with pytest.raises(ValueError, match=r'x contains -1152921504606846979, which overflows'):
    sa.encode(big, scale_bits=3, modulus_bits=64)
  with pytest.raises(ValueError, match='non-finite'):
    sa.encode([np.nan])
  with pytest.raises(ValueError, match=r'values in \[70000, 70000\].*2\^16'):
    sa.decode(np.array([70000]), scale_bits=8, modulus_bits=16)


def test_x25519_shared_secrets_agree():
  rng = np.random.default_rng(0)
  a, ad_a = sa.advertise_keys('a', insecure_test_rng=rng)
  b, ad_b = sa.advertise_keys('b', insecure_test_rng=rng)
  ab = sa.key_agreement(a.mask_private_key, ad_b.mask_public_key, info=b'pair')
  ba = sa.key_agreement(b.mask_private_key, ad_a.mask_public_key, info=b'pair')
  assert ab == ba and len(ab) == 32
  assert sa.key_agreement(a.mask_private_key, ad_b.mask_public_key, info=b'other') != ab
  assert sa.key_agreement(a.channel_private_key, ad_b.channel_public_key, info=b'pair') != ab


def test_secure_aggregation_takes_its_shamir_sharing_from_crypto(monkeypatch):
  """One home (issue 13): the protocol's t-of-n sharing of the mask keys and self-mask
  seeds is jaxsec.crypto.shamir's; secure_aggregation has no sharing code of its own (the
  modulo-2^k additive sharing is crypto.additive.share_mod2k)."""
  from jaxsec.crypto import shamir  # pylint: disable=g-import-not-at-top
  calls = {'share': 0, 'reconstruct': 0}
  share, rec = shamir.share_int, shamir.reconstruct_int

  def counted_share(*a, **k):
    calls['share'] += 1
    return share(*a, **k)

  def counted_rec(*a, **k):
    calls['reconstruct'] += 1
    return rec(*a, **k)
  monkeypatch.setattr(shamir, 'share_int', counted_share)
  monkeypatch.setattr(shamir, 'reconstruct_int', counted_rec)
  ups = {c: np.full(3, float(c)) for c in range(4)}
  out = sa.secure_sum(ups, threshold=2, dropped=[3], insecure_test_seed=0)
  np.testing.assert_allclose(out, np.full(3, 0.0 + 1 + 2))
  assert calls['share'] == 2 * 4 and calls['reconstruct'] == 3 + 1
  for name in ('shamir_share', 'shamir_reconstruct', '_random_below', 'additive_shares',
               'reconstruct_additive', '_random_words', '_check_residues'):
    assert not hasattr(sa, name), name


def test_secure_sum_equals_plain_sum():
  ups = _updates(5)
  got = sa.secure_sum(ups, threshold=3, insecure_test_seed=0)
  _assert_tree_close(got, _plain_sum(ups, range(5)), atol=5 * 2.0 ** -25)
  got16 = sa.secure_sum(ups, threshold=5, scale_bits=16, modulus_bits=32)  # OS randomness
  _assert_tree_close(got16, _plain_sum(ups, range(5)), atol=5 * 2.0 ** -17)


def test_secure_sum_with_dropouts_equals_the_survivors_sum():
  ups = _updates(8, seed=1)
  for dropped in ([3], [0, 7], [1, 2, 5]):
    got = sa.secure_sum(ups, threshold=5, dropped=dropped,
                        insecure_test_seed=len(dropped))
    survivors = [i for i in range(8) if i not in dropped]
    _assert_tree_close(got, _plain_sum(ups, survivors), atol=8 * 2.0 ** -25)


def test_too_many_dropouts_and_bad_arguments_raise():
  ups = _updates(6)
  with pytest.raises(ValueError, match=r'3 of 6 clients dropped, leaving 3 < threshold=4.*'
                     r'at most n - t = 2'):
    sa.secure_sum(ups, threshold=4, dropped=[0, 1, 2])
  with pytest.raises(ValueError, match='threshold=1 must be >= 2'):
    sa.secure_sum(ups, threshold=1)
  with pytest.raises(ValueError, match=r'dropped=\[9\]'):
    sa.secure_sum(ups, threshold=4, dropped=[9])
  bad = dict(ups)
  bad[5] = {'w': np.zeros((3, 2)), 'b': (np.zeros(4),)}
  with pytest.raises(ValueError, match='client 5 has update structure'):
    sa.secure_sum(bad, threshold=4)
  big = dict(ups)
  big[2] = {'w': np.full((2, 3), 1e12), 'b': (np.zeros(4),)}
  with pytest.raises(ValueError, match='client 2: x contains 1000000000000.0, which overflows'):
    sa.secure_sum(big, threshold=4)


def _run_rounds(n, t, length, k=64, seed=0):
  rng = np.random.default_rng(seed)
  states, ads = {}, []
  for i in range(n):
    states[i], ad = sa.advertise_keys(i, insecure_test_rng=rng)
    ads.append(ad)
  roster = sa.make_roster(ads, threshold=t, modulus_bits=k)
  outboxes = {}
  for i in range(n):
    states[i], outboxes[i] = sa.share_keys(states[i], roster, insecure_test_rng=rng)
  return rng, roster, states, outboxes, sa.route_shares(roster, outboxes)


def test_a_masked_vector_looks_uniform_and_hides_the_input():
  length = 4096
  _, roster, states, outboxes, inboxes = _run_rounds(3, 2, length)
  x = sa.encode(np.full(length, 0.25))
  # What the server sees of the shares is ciphertext it cannot open or alter.
  ct = outboxes[0][1]
  assert len(ct) == 2 * 66 + 16
  forged = dict(inboxes[1])
  forged[0] = ct[:-1] + bytes([ct[-1] ^ 1])
  with pytest.raises(ValueError, match='failed authentication'):
    sa.masked_input(states[1], roster, forged, x)
  for i in range(3):              # (a failed authentication does not spend the state)
    _, y = sa.masked_input(states[i], roster, inboxes[i], x)
    assert y.dtype == np.uint64 and np.mean(y == x) < 0.01
    u = y.astype(np.float64) / 2.0 ** 64
    assert abs(u.mean() - 0.5) < 0.03 and abs(x[0] / 2.0 ** 64 - u.mean()) > 0.4
    counts = np.bincount((y >> np.uint64(60)).astype(np.int64), minlength=16)
    chi2 = ((counts - length / 16) ** 2 / (length / 16)).sum()
    assert chi2 < 37.7, chi2   # 99.9% quantile of chi-square with 15 degrees of freedom
    low = np.bincount((y & np.uint64(15)).astype(np.int64), minlength=16)
    assert ((low - length / 16) ** 2 / (length / 16)).sum() < 37.7


def test_rounds_with_dropouts_at_both_stages():
  n, t, length = 6, 3, 5
  _, roster, states, outboxes, inboxes = _run_rounds(n, t, length, k=32, seed=3)
  xs = {i: sa.encode(np.arange(length) * (i + 1) / 8, scale_bits=8, modulus_bits=32,
                     num_summands=n) for i in range(n)}
  masked = {}
  for i in (0, 2, 3, 5):          # clients 1 and 4 drop before sending a masked input
    states[i], masked[i] = sa.masked_input(states[i], roster, inboxes[i], xs[i])
  responses = [sa.unmask_response(states[i], roster, masked) for i in (0, 3, 5)]  # 2 drops
  assert set(responses[0].mask_key_shares) == {1, 4}
  assert set(responses[0].self_mask_shares) == {0, 2, 3, 5}
  total = sa.unmask(roster, outboxes, masked, responses)
  want = sum(np.arange(length) * (i + 1) / 8 for i in (0, 2, 3, 5))
  np.testing.assert_array_equal(sa.decode(total, scale_bits=8, modulus_bits=32), want)
  with pytest.raises(ValueError, match='only 2 survivors answered.*threshold=3'):
    sa.unmask(roster, outboxes, masked, responses[:2])
  with pytest.raises(ValueError, match='not among the survivors'):
    sa.unmask_response(states[1], roster, masked)


# --------------------------------------------- single-use state, run binding (issue 14, item 1)

def _advertise(n, rng):
  states, ads = {}, []
  for i in range(n):
    states[i], ad = sa.advertise_keys(i, insecure_test_rng=rng)
    ads.append(ad)
  return states, ads


def _same_keys(states):
  """Fresh client states holding the same long-term key pairs (a client that kept them)."""
  return {i: sa.ClientState(i, s.channel_private_key, s.mask_private_key)
          for i, s in states.items()}


def _share(states, roster, seed):
  outboxes = {}
  for i in roster.client_ids:   # the same seed per run: identical plaintexts and self-masks
    states[i], outboxes[i] = sa.share_keys(states[i], roster,
                                           insecure_test_rng=np.random.default_rng(seed + i))
  return outboxes, sa.route_shares(roster, outboxes)


def test_second_masked_input_on_one_state_raises():
  """Two masked inputs under one self-mask and one set of pairwise masks would give the
  server x1 - x2 exactly."""
  _, roster, states, _, inboxes = _run_rounds(3, 2, 8)
  x1 = sa.encode(np.linspace(-1, 1, 8))
  x2 = sa.encode(np.linspace(2, 3, 8))
  new_state, _ = sa.masked_input(states[0], roster, inboxes[0], x1)
  for s in (states[0], new_state):
    with pytest.raises(ValueError, match=r'client 0.*already sent its masked input.*single-use'):
      sa.masked_input(s, roster, inboxes[0], x2)


def test_a_new_run_with_the_same_keys_gives_fresh_masks():
  """Even with the same long-term keys and the same self-mask seed, a new run id gives new
  pairwise masks, so masked inputs of two runs do not reveal x1 - x2."""
  n, length = 3, 64
  states1, ads = _advertise(n, np.random.default_rng(0))
  states2 = _same_keys(states1)
  x1 = sa.encode(np.linspace(-1, 1, length))
  x2 = sa.encode(np.linspace(2, 3, length))
  ys, run_ids = [], []
  for states, x in ((states1, x1), (states2, x2)):
    roster = sa.make_roster(ads, threshold=2)    # the server's fresh run id
    _, inboxes = _share(states, roster, seed=5)
    ys.append(sa.masked_input(states[0], roster, inboxes[0], x)[1])
    run_ids.append(roster.run_id)
  assert run_ids[0] != run_ids[1]
  diff = np.subtract(ys[0], ys[1])
  assert np.mean(diff == np.subtract(x1, x2)) < 0.05


def test_second_share_keys_on_one_state_raises():
  states, ads = _advertise(3, np.random.default_rng(1))
  roster = sa.make_roster(ads, threshold=2)
  new_state, _ = sa.share_keys(states[0], roster)
  for s in (states[0], new_state):
    with pytest.raises(ValueError, match=r'client 0.*already ran share_keys.*single-use'):
      sa.share_keys(s, roster)
  other = sa.make_roster(ads, threshold=2)      # another run: the state is bound to one run
  with pytest.raises(ValueError, match=r'client 0.*already ran share_keys'):
    sa.share_keys(states[0], other)


def test_ciphertexts_do_not_replay_across_runs_or_directions():
  n = 3
  states1, ads = _advertise(n, np.random.default_rng(2))
  states2 = _same_keys(states1)
  roster1 = sa.make_roster(ads, threshold=2)
  roster2 = sa.make_roster(ads, threshold=2)
  out1, _ = _share(states1, roster1, seed=9)
  out2, in2 = _share(states2, roster2, seed=9)
  # Same long-term keys, same plaintext: a different GCM key (or nonce) per run.
  assert out1[0][1] != out2[0][1]
  x = sa.encode(np.zeros(4))
  replayed = dict(in2[1])
  replayed[0] = out1[0][1]                     # run 1's share ciphertext 0 -> 1, in run 2
  with pytest.raises(ValueError, match=r'from client 0 to 1 failed authentication'):
    sa.masked_input(states2[1], roster2, replayed, x)
  swapped = dict(in2[0])
  swapped[1] = out2[0][1]                      # 0 -> 1 reflected back to 0 as if from 1
  with pytest.raises(ValueError, match=r'from client 1 to 0 failed authentication'):
    sa.masked_input(states2[0], roster2, swapped, x)
  redirected = dict(in2[1])
  redirected[0] = out2[0][2]                   # 0 -> 2 delivered to 1
  with pytest.raises(ValueError, match=r'from client 0 to 1 failed authentication'):
    sa.masked_input(states2[1], roster2, redirected, x)
  # The honest inbox still works after the failed attempts, and only in its own run.
  with pytest.raises(ValueError, match=r'run'):
    sa.masked_input(states2[1], roster1, in2[1], x)
  sa.masked_input(states2[1], roster2, in2[1], x)


def test_unmask_response_is_single_use():
  """Answering twice with different survivor sets would reveal both the self-mask seed and
  the mask key of one client."""
  _, roster, states, outboxes, inboxes = _run_rounds(4, 2, 3)
  masked = {}
  for i in range(4):
    states[i], masked[i] = sa.masked_input(states[i], roster, inboxes[i],
                                           sa.encode(np.ones(3)))
  first = sa.unmask_response(states[0], roster, masked)
  assert 3 in first.self_mask_shares
  with pytest.raises(ValueError, match=r'client 0 already answered the unmasking round'):
    sa.unmask_response(states[0], roster, [0, 1, 2])


def test_make_roster_run_id():
  _, ads = _advertise(2, np.random.default_rng(3))
  r = sa.make_roster(ads, threshold=2)
  assert isinstance(r.run_id, bytes) and len(r.run_id) == 16
  # Fresh per run: drawn from the OS, so two rosters of the same clients never share one.
  assert sa.make_roster(ads, threshold=2).run_id != r.run_id
  assert sa.make_roster(ads, threshold=2, run_id=bytes(range(16))).run_id == bytes(range(16))
  with pytest.raises(ValueError, match=r'run_id=.*16 bytes'):
    sa.make_roster(ads, threshold=2, run_id=b'short')


# ------------------------------------------------------------------ PRG known answer

def _aes256_ctr_zero_iv_by_hand(seed, length, k):
  """Independent construction: AES-256 (ECB, one block at a time) of the big-endian 128-bit
  counters 0, 1, 2, ..., concatenated, read as little-endian uint64, low k bits."""
  from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
  enc = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
  nblocks = (8 * length + 15) // 16
  stream = b''.join(enc.update(c.to_bytes(16, 'big')) for c in range(nblocks))
  words = [int.from_bytes(stream[8 * i:8 * i + 8], 'little') for i in range(length)]
  return np.array([w % 2 ** k for w in words], dtype=np.uint64)


def test_prg_known_answer():
  # FIPS-197 / NIST AESAVS: AES-256 of the zero block under the zero key.
  zero = sa.prg(bytes(32), 2)
  assert (zero[0].tobytes() + zero[1].tobytes()).hex() == 'dc95c078a2408989ad48a21492842087'
  seed = bytes(range(32))
  for length, k in ((7, 64), (5, 32), (3, 13), (0, 64)):
    np.testing.assert_array_equal(sa.prg(seed, length, modulus_bits=k),
                                  _aes256_ctr_zero_iv_by_hand(seed, length, k))


# ------------------------------------------- secure_sum randomness (issue 14, item 7)

def test_secure_sum_draws_keys_from_the_os_unless_an_insecure_test_seed_is_named(monkeypatch):
  ups = _updates(3)
  calls = []
  real = sa.secrets.token_bytes
  monkeypatch.setattr(sa.secrets, 'token_bytes', lambda n: calls.append(n) or real(n))
  sa.secure_sum(ups, threshold=2)
  assert calls                                   # keys, seeds, run id from the CSPRNG
  calls.clear()
  a = sa.secure_sum(ups, threshold=2, insecure_test_seed=4)
  assert not calls
  _assert_tree_close(a, _plain_sum(ups, range(3)), atol=3 * 2.0 ** -25)
  with pytest.raises(TypeError, match='seed'):
    sa.secure_sum(ups, threshold=2, seed=0)      # pylint: disable=unexpected-keyword-arg
  for bad in (np.random.default_rng(0), 1.5, True):
    with pytest.raises(ValueError, match=r'insecure_test_seed=.*must be None.*or an int'):
      sa.secure_sum(ups, threshold=2, insecure_test_seed=bad)
  with pytest.raises(ValueError, match=r'insecure_test_rng=.*numpy.random.Generator'):
    sa.advertise_keys(0, insecure_test_rng=0)
