"""Distributed DP (Skellam + secure aggregation): exact modular sum, decoding, noise scale,
the Skellam RDP of Agarwal et al. 2021 (Theorem 3.5) and its composition."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxsec.federated import dp
from jaxsec.federated import distributed_dp as ddp
from jaxsec.federated import secure_aggregation as sa
from jaxsec.privacy import accounting, clipping


def _updates(n=6, scale=0.3):
  return {'w': jax.random.normal(jax.random.key(0), (n, 20, 3)) * scale,
          'b': jax.random.normal(jax.random.key(1), (n, 3)) * scale}   # d = 63, D = 64


def test_hadamard_is_the_sylvester_matrix_and_the_rotation_inverts():
  v = np.random.default_rng(0).normal(size=(3, 16))
  assert np.allclose(ddp.hadamard(v, np), v @ scipy.linalg.hadamard(16).T)
  assert ddp.padded_dim(63) == 64 and ddp.padded_dim(64) == 64 and ddp.padded_dim(65) == 128
  with pytest.raises(ValueError, match='power-of-two'):
    ddp.hadamard(np.ones(6), np)


def test_skellam_rdp_closed_form_and_gaussian_limit():
  # Theorem 3.5 at alpha = 3, D2 = 2, D1 = 3, mu = 5, by hand:
  # 3*4/10 + min((5*4 + 18)/100, 9/10) = 1.2 + 0.38.
  assert ddp.skellam_rdp([3], l2_sensitivity=2.0, l1_sensitivity=3.0,
                         variance=5.0)[0] == pytest.approx(1.58, rel=1e-12)
  # ... where the second branch is smaller: alpha = 2, D2 = 10, D1 = 100, mu = 20:
  # 2*100/40 + min((300 + 600)/1600, 300/40) = 5 + 0.5625.
  assert ddp.skellam_rdp([2], l2_sensitivity=10.0, l1_sensitivity=100.0,
                         variance=20.0)[0] == pytest.approx(5.5625, rel=1e-12)
  # Large variance: the Gaussian RDP alpha D2^2 / (2 mu) plus a vanishing correction.
  orders = np.arange(2, 50)
  r = ddp.skellam_rdp(orders, l2_sensitivity=1.0, l1_sensitivity=30.0, variance=1e6)
  assert np.all(r >= orders / 2e6) and np.allclose(r, orders / 2e6, rtol=1e-3)
  with pytest.raises(ValueError, match='integers >= 2'):
    ddp.skellam_rdp([1.5], l2_sensitivity=1.0, l1_sensitivity=1.0, variance=1.0)


def test_epsilon_composes_rounds_under_replace_one_and_tracks_the_gaussian():
  m = ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=3.0, scale=100.0)
  d, n, rounds, delta = 63, 6, 7, 1e-5
  d2 = ddp.rounded_l2_bound(100.0, 64, math.exp(-0.5))
  assert m.l2_bound(d) == pytest.approx(d2)
  mu = 2 * n * float(np.float32((3.0 * d2) ** 2 / (2 * n)))
  rdp = rounds * ddp.skellam_rdp(ddp.RDP_ORDERS, l2_sensitivity=2 * d2,
                                 l1_sensitivity=2 * d2 * 8.0, variance=mu)
  want = accounting.epsilon_from_rdp(ddp.RDP_ORDERS, rdp, delta)[0]
  got = m.epsilon(dim=d, num_clients=n, num_rounds=rounds, delta=delta)
  assert got == pytest.approx(want, rel=1e-12)
  # Same z as central fixed-cohort DP-FedAvg: a slightly larger epsilon (rounding
  # inflates the sensitivity; Skellam's extra term), within a few percent.
  gauss = dp.account(noise_multiplier=3.0, l2_norm_clip=1.0, num_rounds=rounds,
                     num_clients=n, delta=delta, sampling='uniform').epsilon
  assert gauss < got < 1.05 * gauss
  cal = m.calibrated(2.0, delta, dim=d, num_clients=n, num_rounds=rounds)
  eps_cal = cal.epsilon(dim=d, num_clients=n, num_rounds=rounds, delta=delta)
  assert 1.99 < eps_cal <= 2.0
  assert ddp.DistributedSkellam(1.0, 0.0, 10.0).epsilon(
      dim=d, num_clients=n, num_rounds=1, delta=delta) == math.inf


def test_server_sees_exactly_the_modular_sum_of_updates_plus_noise():
  # An 8-bit modulus: sums wrap around; the protocol's output must still be the exact sum.
  m = ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=2.0, scale=100.0,
                             modulus_bits=8)
  ups, key = _updates(), jax.random.key(3)
  cohort = m.encode_cohort(ups, key)
  ints, noise = np.asarray(cohort.ints, np.int64), np.asarray(cohort.noise, np.int64)
  assert np.abs(noise).max() > 0
  want = [(int(a) + int(b)) % 2 ** 8 for a, b in zip(ints.sum(0), noise.sum(0), strict=True)]
  got = sa.secure_sum_mod2k(dict(enumerate(m.residues(cohort.ints, cohort.noise))),
                            threshold=4, modulus_bits=8, insecure_test_seed=1)
  assert got.tolist() == want
  _, info = m.aggregate(ups, key, insecure_test_seed=1)
  assert info.sum_residues.tolist() == want and info.wrapped > 0
  _, clear = m.aggregate(ups, key, secure=False)
  assert clear.sum_residues.tolist() == want


def test_no_noise_large_modulus_decodes_the_clipped_mean_within_the_rounding_bound():
  scale = 50.0
  m = ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=0.0, scale=scale,
                             modulus_bits=40)
  ups = _updates()
  mean, info = m.aggregate(ups, jax.random.key(4), insecure_test_seed=2)
  clipped = jax.vmap(lambda u: clipping.clip_tree(u, 1.0)[0])(ups)
  want = jax.tree.map(lambda l: l.mean(0), clipped)
  err = math.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in
                      zip(jax.tree.leaves(mean), jax.tree.leaves(want), strict=True)))
  # each client's rounding moves each of D = 64 coordinates by < 1 integer: l2 <= 8 / scale
  # per client, so the mean moves by at most that (the rotation is orthonormal)
  assert 0 < err <= math.sqrt(64) / scale and info.wrapped == 0
  norms = np.sqrt(sum(np.sum(np.asarray(l) ** 2, axis=tuple(range(1, l.ndim)))
                      for l in jax.tree.leaves(ups)))
  assert np.allclose(info.norms, norms, rtol=1e-5)
  # rounded integer vectors respect the bound Delta_2
  cohort = m.encode_cohort(ups, jax.random.key(4))
  int_norms = np.sqrt(np.sum(np.asarray(cohort.ints, np.float64) ** 2, axis=1))
  assert np.all(int_norms <= m.l2_bound(63)) and np.all(np.asarray(cohort.noise) == 0)


def test_noise_on_the_decoded_mean_has_the_promised_scale():
  # Summed noise variance mu = (z Delta_2)^2 per integer coordinate (each client adds
  # Poisson(lam) - Poisson(lam), 2 lam = mu / n); the decoded mean's error has variance
  # mu / (scale n)^2 per coordinate (the rotation is orthonormal).
  n, scale, z = 6, 20.0, 1.5
  m = ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=z, scale=scale)
  ups = {'w': jax.random.normal(jax.random.key(0), (n, 1000)) * 0.1}    # D = 1024
  cohort = m.encode_cohort(ups, jax.random.key(5))
  noise = np.asarray(cohort.noise, np.float64)
  assert np.var(noise) == pytest.approx(m.variance(1000, n) / n, rel=0.05)
  decode = lambda v: m.server_decode(m.residues(v, 0).sum(0, dtype=np.uint64)
                                     & np.uint64(2 ** 32 - 1), cohort.signs, 1000, n)
  err = decode(cohort.ints + cohort.noise) - decode(cohort.ints)
  want = (z * m.l2_bound(1000)) ** 2 / (scale * n) ** 2
  assert np.var(err) == pytest.approx(want, rel=0.15) and abs(np.mean(err)) < 0.1 * want ** .5


def test_large_poisson_rates_are_split_into_accurate_draws():
  # jax.random.poisson's float32 sampler has ~8% excess variance at rate 4.9e6; the noise
  # is a sum of draws of rate <= 2^14, exactly Poisson, with the variance accounted.
  m = ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=31.3, scale=1000.0)
  k, r = m.poisson_draws(1970, 100)
  assert k > 1 and r <= ddp.MAX_POISSON_RATE
  assert m.variance(1970, 100) == pytest.approx(2 * 100 * k * float(r), rel=1e-12)
  assert k * float(r) == pytest.approx(float(m.client_rate(1970, 100)), rel=1e-6)
  s = np.asarray(jax.jit(ddp.skellam_noise, static_argnums=(1, 3))(
      jax.random.key(2), (10000,), r, k), np.float64)
  assert np.var(s) == pytest.approx(2 * k * float(r), rel=0.045)


def test_conditional_rounding():
  x = jnp.asarray(np.random.default_rng(1).uniform(-3, 3, size=(64,)), jnp.float32)
  rnd = jax.jit(ddp.conditional_round)
  z = rnd(x, jax.random.key(0), 10 ** 6)
  assert np.all(np.abs(np.asarray(z) - np.asarray(x)) < 1)
  # an unreachable bound: zeros (within any bound) rather than an over-long vector
  assert not np.any(np.asarray(rnd(x + 0.5, jax.random.key(0), 0)))


def test_bad_input():
  with pytest.raises(ValueError, match='scale'):
    ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=1.0, scale=0.0)
  with pytest.raises(ValueError, match='modulus_bits'):
    ddp.DistributedSkellam(l2_norm_clip=1.0, noise_multiplier=1.0, scale=1.0,
                           modulus_bits=65)
  with pytest.raises(ValueError, match='too large'):
    ddp.DistributedSkellam(1.0, 1.0, 1e6).aggregate(_updates(), jax.random.key(0))
  with pytest.raises(ValueError, match='at least 2 clients'):
    ddp.DistributedSkellam(1.0, 1.0, 10.0).aggregate(_updates(1), jax.random.key(0))
