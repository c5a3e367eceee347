"""DP-FTRL: tree noise = the binary decomposition of t (hand table and a transcription of the
DP-FTRL authors' CummuNoise), variance popcount(t) sigma^2, zero-noise DP-FTRL = SGD with a
fixed order, epsilon = dp_accounting's tree event = a Gaussian with sigma / sqrt(depth)."""
from __future__ import annotations

import dp_accounting
from dp_accounting import rdp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec.privacy import dpftrl

NR = dp_accounting.NeighboringRelation


def _run_tree(key, steps, depth, stddev=1.0):
  """Per step: (z_t, the fresh node drawn at t) for a scalar tree."""
  state = dpftrl.tree_noise_init(jnp.zeros(()), depth=depth, key=key)

  def body(s, _):
    t = s.step + 1
    level = jax.lax.population_count((t & -t) - 1)
    z, s = dpftrl.tree_noise_update(s, stddev)
    return s, (z, s.nodes[level])
  _, (z, fresh) = jax.lax.scan(body, state, None, length=steps)
  return z, fresh


def test_prefix_noise_is_the_sum_of_its_dyadic_nodes():
  z, fresh = map(np.asarray, jax.jit(_run_tree, static_argnums=(1, 2))(
      jax.random.key(0), 8, 4))
  # node drawn at step s covers (s - 2^ctz(s), s]; prefix (0, t] = these nodes, by hand:
  nodes_of = {1: [1], 2: [2], 3: [2, 3], 4: [4], 5: [4, 5], 6: [4, 6], 7: [4, 6, 7],
              8: [8]}
  for t, ss in nodes_of.items():
    assert z[t - 1] == pytest.approx(sum(fresh[s - 1] for s in ss), abs=1e-6), t
  assert len(set(np.round(fresh, 6))) == 8          # a fresh draw every step


def _cummu_noise_transcription(fresh):
  """The DP-FTRL authors' ftrl_noise.CummuNoise bookkeeping, fed our node draws."""
  binary, recorded, noise_sum, out = [0], [0.0], 0.0, []
  for n in fresh:
    idx = 0
    while idx < len(binary) and binary[idx] == 1:
      binary[idx] = 0
      noise_sum -= recorded[idx]
      idx += 1
    if idx >= len(binary):
      binary.append(0)
      recorded.append(0.0)
    noise_sum += n
    recorded[idx] = n
    binary[idx] = 1
    out.append(noise_sum)
  return np.asarray(out)


def test_matches_authors_cummu_noise_and_popcount_variance():
  steps = 31
  z, fresh = jax.jit(_run_tree, static_argnums=(1, 2))(jax.random.key(1), steps, 5)
  np.testing.assert_allclose(z, _cummu_noise_transcription(np.asarray(fresh, np.float64)),
                             atol=1e-5)
  # Var z_t = popcount(t) sigma^2 (sigma = 2), over independent trees.
  zs = jax.jit(jax.vmap(lambda k: _run_tree(k, 8, 4, 2.0)[0]))(
      jax.random.split(jax.random.key(2), 4000))
  var = np.var(np.asarray(zs), axis=0)
  pop = np.array([bin(t).count('1') for t in range(1, 9)])
  np.testing.assert_allclose(var, 4.0 * pop, rtol=0.12)


def test_privatizer_releases_prefix_sums_and_restarts():
  # Summed outputs * B = prefix sum of inputs + z_t of the current tree (+ the final z of
  # each finished tree): the FTRL identity, with a restart every 3 steps.
  key = jax.random.key(3)
  priv = dpftrl.tree_aggregation_privatizer(noise_multiplier=1.5, l2_norm_clip=2.0,
                                            normalizer=4.0, steps_per_tree=3, key=key)
  g = jnp.arange(1.0, 8.0)[:, None] * jnp.ones((7, 2))

  def body(st, gt):
    o, st = priv.update(gt, st)
    assert isinstance(st, dpftrl.TreeNoiseState)
    return st, (o, st.cumulative)
  state, (outs, zs) = jax.jit(lambda g: jax.lax.scan(body, priv.init(jnp.zeros(2)), g))(g)
  s = np.cumsum(np.asarray(outs) * 4.0, axis=0)
  prefix = np.cumsum(np.asarray(g), axis=0)
  zs = np.asarray(zs)
  carried = np.zeros_like(zs)
  carried[3:] += zs[2]
  carried[6:] += zs[5]
  np.testing.assert_allclose(s, prefix + zs + carried, rtol=1e-5, atol=1e-5)
  assert isinstance(state, dpftrl.TreeNoiseState) and int(state.step) == 1           # 7 = 3 + 3 + 1: the third tree is at its first leaf
  # at a restart z_t is the fresh leaf alone
  np.testing.assert_allclose(zs[3], np.asarray(outs[3]) * 4.0 - np.asarray(g[3]) + 0,
                             rtol=1e-5)


def _loss(w, x, y):
  return 0.5 * (x @ w - y) ** 2


@pytest.mark.parametrize('momentum,epochs', [(None, 2), (0.9, 1)])
def test_zero_noise_ftrl_equals_sgd_in_fixed_order(momentum, epochs):
  # FTRL = SGD with a constant step in the fixed order; FTRLM = the authors'
  # optimizers.FTRLOptimizer (theta = theta_0 - lr m, m = beta m + S_t), transcribed.
  # optax's momentum trace survives a tree restart (the authors' does not), so FTRLM is
  # compared within one epoch (one tree).
  n, b, d, lr = 12, 4, 3, 0.05
  x = jax.random.normal(jax.random.key(4), (n, d))
  y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1
  w0 = jnp.zeros(d)
  key = jax.random.key(5)
  res = dpftrl.train(_loss, w0, (x, y), optimizer=optax.sgd(lr, momentum=momentum),
                     batch_size=b, epochs=epochs, key=key, l2_norm_clip=1e6, delta=1e-5,
                     noise_multiplier=0.0, steps_per_call=4, method='vmap')
  order = np.asarray(jax.random.permutation(jax.random.split(key)[0], n))
  grad = jax.grad(lambda w, xb, yb: jnp.sum(_loss(w, xb, yb)))
  w = np.asarray(w0)
  for _ in range(epochs):
    w_start, gsum, m = w, np.zeros(d), np.zeros(d)   # the authors reset at a restart
    for j in range(n // b):
      idx = order[j * b:(j + 1) * b]
      gsum = gsum + np.asarray(grad(jnp.asarray(w), x[idx], y[idx])) / b
      m = (momentum or 0.0) * m + gsum
      w = w_start - lr * m
  np.testing.assert_allclose(res.params, w, rtol=1e-5, atol=1e-6)
  assert res.epsilon == float('inf') and res.steps_per_epoch == 3


def test_epsilon_is_dp_accountings_tree_event_and_a_gaussian_with_depth():
  sigma, spe, epochs, delta = 3.0, 100, 4, 1e-5
  eps = dpftrl.epsilon(sigma, delta, steps_per_epoch=spe, epochs=epochs)
  acc = rdp.RdpAccountant(neighboring_relation=NR.REPLACE_SPECIAL)
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.SingleEpochTreeAggregationDpEvent(sigma, spe), epochs))
  assert eps == pytest.approx(acc.get_epsilon(delta), rel=1e-12)
  # closed form (paper Thm. / App. D): each example in depth = ceil(log2(101)) = 7 nodes
  # of each of 4 trees: a Gaussian mechanism with sigma / sqrt(7 * 4)
  assert dpftrl.tree_depth(spe) == 7 and dpftrl.tree_depth(8) == 4
  gauss = rdp.RdpAccountant()
  gauss.compose(dp_accounting.GaussianDpEvent(sigma / np.sqrt(7 * 4)))
  assert eps == pytest.approx(gauss.get_epsilon(delta), rel=1e-9)
  s = dpftrl.calibrate(eps, delta, steps_per_epoch=spe, epochs=epochs, tol=1e-4)
  assert s == pytest.approx(sigma, abs=2e-4)


def test_bad_inputs_name_the_value():
  with pytest.raises(ValueError, match='noise_multiplier'):
    dpftrl.dp_event(-1.0, steps_per_epoch=3, epochs=1)
  with pytest.raises(ValueError, match='steps_per_tree|num_steps'):
    dpftrl.tree_aggregation_privatizer(noise_multiplier=1.0, l2_norm_clip=1.0,
                                       normalizer=1.0, steps_per_tree=0,
                                       key=jax.random.key(0))
  with pytest.raises(ValueError, match='exactly one'):
    dpftrl.train(_loss, jnp.zeros(2), (jnp.ones((4, 2)), jnp.ones(4)),
                 optimizer=optax.sgd(0.1), batch_size=2, epochs=1, key=jax.random.key(0),
                 l2_norm_clip=1.0, delta=1e-5)
