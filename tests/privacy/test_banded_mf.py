"""BandMF: the streamed noise is C^{-1} z solved densely, O(b d) state; one band is DP-SGD
(noise, training run and accounting); cyclic Poisson sampling separates participations by k
and is accounted as jax_privacy's own BandMF accountant does."""
from __future__ import annotations

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant
import jax
import jax.numpy as jnp
from jax_privacy.accounting import accountants as jp_accountants
from jax_privacy.accounting import analysis as jp_analysis
import numpy as np
import optax
import pytest

from jaxsec.privacy import banded_mf
from jaxsec.privacy import dpsgd
from jaxsec.privacy import noise
from jaxsec.privacy import sampling

NR = dp_accounting.NeighboringRelation


def _dense_strategy(coef, n):
  """C[i, j] = coef[i - j] for 0 <= i - j < b, then each column divided by its norm."""
  coef = np.asarray(coef, np.float64)
  c = np.zeros((n, n))
  for i in range(n):
    for j in range(max(0, i - len(coef) + 1), i + 1):
      c[i, j] = coef[i - j]
  return c / np.linalg.norm(c, axis=0)


def test_noise_stream_is_the_dense_solve_with_b_minus_1_buffers():
  n, coef, key = 8, (1.0, 0.6, 0.3), jax.random.key(0)
  priv = banded_mf.banded_mf_privatizer(coef=coef, num_steps=n, noise_multiplier=1.5,
                                        l2_norm_clip=2.0, normalizer=1.0, key=key)
  zeros = {'a': jnp.zeros((2, 3)), 'b': jnp.zeros(())}
  state = priv.init(zeros)
  assert isinstance(state, banded_mf.BandedNoiseState)
  # O(b d) memory: b - 1 = 2 buffered rows of the d = 7 parameters (plus row counters)
  floats = [l for l in jax.tree_util.tree_leaves(state.stream)
            if jnp.issubdtype(l.dtype, jnp.floating)]
  assert sum(l.size for l in floats) == 2 * 7

  def body(s, _):
    out, s = priv.update(zeros, s)
    return s, out
  _, outs = jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)
  k, zs = key, []
  for _ in range(n):                     # the privatizer's white noise, step by step
    kt, k = jax.random.split(k)
    zs.append(noise.add_gaussian_noise(zeros, kt, 3.0))
  c = _dense_strategy(coef, n)
  assert np.allclose(np.linalg.norm(c, axis=0), 1.0) and np.allclose(np.tril(c, -3), 0.0)
  for name in zeros:
    z = np.stack([np.asarray(x[name], np.float64).reshape(-1) for x in zs])
    w = np.asarray(outs[name], np.float64).reshape(n, -1)
    np.testing.assert_allclose(w, np.linalg.solve(c, z), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c @ w, z, rtol=1e-4, atol=1e-4)


def test_one_band_privatizer_is_gaussian_privatizer():
  key = jax.random.key(1)
  kw = dict(noise_multiplier=0.7, l2_norm_clip=1.5, normalizer=8.0, key=key)
  mf = banded_mf.banded_mf_privatizer(coef=[1.0], num_steps=4, **kw)
  sgd = noise.gaussian_privatizer(**kw)
  g = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(())}
  s1, s2 = mf.init(g), sgd.init(g)
  for _ in range(4):
    o1, s1 = mf.update(g, s1)
    o2, s2 = sgd.update(g, s2)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(
        np.asarray(a), np.asarray(b)), o1, o2)


def _problem(n=64, d=4):
  kx, kw = jax.random.split(jax.random.key(2))
  x = jax.random.normal(kx, (n, d))
  y = (x @ jax.random.normal(kw, (d,)) > 0).astype(jnp.float32)

  def loss_fn(p, xb, yb):
    z = xb @ p['w'] + p['b']
    return optax.sigmoid_binary_cross_entropy(z, yb)
  return loss_fn, {'w': jnp.zeros((d,)), 'b': jnp.zeros(())}, (x, y)


def test_one_band_training_is_dpsgd_and_accounting_is_poisson():
  loss_fn, params, data = _problem()
  sampler = sampling.PoissonSampler(dataset_size=64, num_steps=6, expected_batch_size=8)
  kw = dict(optimizer=optax.sgd(0.5), sampler=sampler, key=jax.random.key(3),
            l2_norm_clip=1.0, delta=1e-5, noise_multiplier=1.1, accountant='rdp',
            method='vmap', steps_per_call=3)
  mf = banded_mf.train(loss_fn, params, data, coef=[1.0], **kw)
  sgd = dpsgd.train(loss_fn, params, data, **kw)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7), mf.params, sgd.params)
  assert float(jnp.abs(mf.params['w']).sum()) > 0
  assert (mf.epsilon, mf.delta) == (sgd.epsilon, sgd.delta)
  cyc = sampling.CyclicPoissonSampler(dataset_size=64, num_steps=6, cycle_length=1,
                                      expected_batch_size=8)
  assert cyc.dp_event(1.1) == sampler.dp_event(1.1)
  assert cyc.neighboring_relation == NR.ADD_OR_REMOVE_ONE


@pytest.mark.parametrize('accountant', ['pld', 'rdp'])
def test_epsilon_is_jax_privacy_bandmf_accountant(accountant):
  # N % k != 0 (one example left out) and T % k != 0 (ceil): jax_privacy's
  # DpsgdTrainingAccountant with cycle_length, the reduction of Choquette-Choo et al. Thm 4.
  n, k, steps, batch, sigma, delta = 1000, 3, 50, 20, 1.2, 1e-5
  cyc = sampling.CyclicPoissonSampler(dataset_size=n, num_steps=steps, cycle_length=k,
                                      expected_batch_size=batch)
  config = (jp_accountants.PldAccountantConfig() if accountant == 'pld' else
            jp_accountants.RdpAccountantConfig(
                orders=rdp_privacy_accountant.DEFAULT_RDP_ORDERS))  # pyrefly: ignore[bad-argument-type]
  theirs = jp_analysis.DpsgdTrainingAccountant(config).compute_epsilon(
      steps, jp_analysis.DpParams(noise_multipliers=sigma, num_samples=n, delta=delta,
                                  batch_size=batch, cycle_length=k))
  assert cyc.epsilon(sigma, delta, accountant=accountant) == pytest.approx(theirs, rel=1e-9)
  assert cyc.pool_size == 333 and cyc.participations() == 17
  assert cyc.neighboring_relation == NR.REPLACE_SPECIAL


def test_cyclic_sampler_separates_participations_by_k():
  n, k, steps = 50, 4, 96
  cyc = sampling.CyclicPoissonSampler(dataset_size=n, num_steps=steps, cycle_length=k,
                                      expected_batch_size=6)
  sched = cyc.schedule(jax.random.key(4))
  assert sched.perms is not None
  idx, mask = jax.jit(jax.vmap(lambda t: cyc.indices(sched, t)))(jnp.arange(steps))
  idx, mask = np.asarray(idx), np.asarray(mask)
  split = np.asarray(sched.perms[0])
  group_of = {int(e): g for g in range(k) for e in split[g * 12:(g + 1) * 12]}
  sizes = []
  for t in range(steps):
    real = idx[t][mask[t]]
    assert len(set(real.tolist())) == len(real)                  # no repeats in a batch
    assert all(group_of.get(int(e)) == t % k for e in real)      # only group t mod k
    sizes.append(len(real))
  np.testing.assert_array_equal(sizes, np.asarray(sched.sizes))
  assert abs(np.mean(sizes) - 6.0) < 0.7                         # q = 6 / 12, sd 0.18
  assert set(split[48:].tolist()).isdisjoint(idx[mask].tolist())  # N mod k never used


def test_train_accounts_with_its_sampler_and_refuses_short_separation():
  loss_fn, params, data = _problem()
  cyc = sampling.CyclicPoissonSampler(dataset_size=64, num_steps=8, cycle_length=2,
                                      expected_batch_size=8)
  kw = dict(optimizer=optax.sgd(0.5), key=jax.random.key(5), l2_norm_clip=1.0, delta=1e-5,
            noise_multiplier=1.0, accountant='rdp', method='vmap')
  res = banded_mf.train(loss_fn, params, data, coef=[0.9, 0.4], sampler=cyc, **kw)
  assert res.epsilon == cyc.epsilon(1.0, 1e-5, accountant='rdp')
  assert res.delta == cyc.delta_spent(res.epsilon, 1e-5)
  assert res.neighboring_relation == 'REPLACE_SPECIAL'
  assert np.isclose(np.linalg.norm(res.coef), 1.0)
  assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree_util.tree_leaves(res.params))
  with pytest.raises(ValueError, match='cycle_length >= 3'):
    banded_mf.train(loss_fn, params, data, coef=[0.9, 0.4, 0.1], sampler=cyc, **kw)
  fixed = sampling.FixedSizeSampler(dataset_size=64, num_steps=8, batch_size=8)
  with pytest.raises(ValueError, match='cyclic'):
    banded_mf.train(loss_fn, params, data, coef=[1.0], sampler=fixed, **kw)
  with pytest.raises(ValueError, match='at most num_steps=8'):
    banded_mf.train(loss_fn, params, data, coef=np.ones(9), sampler=cyc, **kw)


def test_optimized_strategy_beats_identity_and_its_initialisation():
  n, b = 12, 3
  coef = banded_mf.optimize_strategy(n, b, max_optimizer_steps=10)
  assert coef.shape == (b,) and np.isclose(np.linalg.norm(coef), 1.0)
  # identity (b = 1, DP-SGD): row t of the prefix-sum matrix has t + 1 ones -> mean (n+1)/2
  assert banded_mf.mean_squared_error([1.0], n) == pytest.approx((n + 1) / 2, rel=1e-6)
  init = np.cumprod([1.0] + [(2 * k - 1) / (2 * k) for k in range(1, b)])
  mse = banded_mf.mean_squared_error(coef, n)
  assert mse <= banded_mf.mean_squared_error(init, n) * (1 + 1e-5)
  assert mse < 0.8 * (n + 1) / 2
  # the error streamed = the dense ||A C^{-1}||_F^2 / n
  c = _dense_strategy(coef, n)
  dense = np.mean(np.sum((np.tril(np.ones((n, n))) @ np.linalg.inv(c)) ** 2, axis=1))
  assert mse == pytest.approx(dense, rel=1e-4)
