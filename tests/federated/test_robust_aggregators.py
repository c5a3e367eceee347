"""FLTrust, centered clipping, bucketing, FLAME, FoolsGold: closed forms on tiny cases, and
their wiring into FedAvg (the server's root-data update, explicit aggregator state)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec.federated import aggregators as ra
from jaxsec.federated import fedavg


def test_fltrust_closed_form():
  g0 = {'w': jnp.array([3.0, 4.0])}                    # ||g0|| = 5
  u = {'w': jnp.array([[1.0, 0.0],                     # cos = 0.6 -> rescaled to (5, 0)
                       [-4.0, 3.0],                    # orthogonal to g0: weight 0
                       [-3.0, -4.0],                   # opposite: ReLU -> 0
                       [30.0, 40.0]])}                 # cos = 1, rescaled to (3, 4)
  out = jax.jit(ra.fltrust)(u, server_update=g0)['w']
  expected = (0.6 * np.array([5.0, 0.0]) + 1.0 * np.array([3.0, 4.0])) / 1.6
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # every score zero -> zero update; the rule is jittable and a registry entry
  zero = ra.aggregator('fltrust')({'w': u['w'][1:3]}, server_update=g0)['w']
  np.testing.assert_array_equal(zero, [0.0, 0.0])
  with pytest.raises(ValueError, match='server_update'):
    ra.fltrust(u, server_update={'w': jnp.ones(3)})


def test_centered_clipping_closed_forms():
  x = np.random.RandomState(0).randn(6, 5).astype(np.float32)
  u = {'a': jnp.asarray(x[:, :2]), 'b': jnp.asarray(x[:, 2:])}
  inf = ra.centered_clipping(u, tau=jnp.inf)               # tau = inf: the mean
  np.testing.assert_allclose(inf['a'], x[:, :2].mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inf['b'], x[:, 2:].mean(0), rtol=1e-5, atol=1e-6)
  # one iteration by hand, around a centre
  c = np.full(5, 0.3, np.float32)
  z = x - c
  n = np.linalg.norm(z, axis=1, keepdims=True)
  want = c + (z * np.minimum(1.0, 0.5 / n)).mean(0)
  got = ra.centered_clipping(u, tau=0.5, center={'a': jnp.asarray(c[:2]),
                                                 'b': jnp.asarray(c[2:])})
  np.testing.assert_allclose(np.concatenate([got['a'], got['b']]), want, rtol=1e-5)
  # a Byzantine client far away moves one iteration by at most tau / K
  far = {'w': jnp.concatenate([jnp.zeros((5, 2)), jnp.full((1, 2), 1e6)])}
  assert float(jnp.linalg.norm(ra.centered_clipping(far, tau=1.0)['w'])) <= 1.0 / 6 + 1e-6
  with pytest.raises(ValueError, match='tau'):
    ra.centered_clipping(u, tau=0.0)


def test_bucketing_s1_is_the_base_rule_and_s_k_is_the_mean():
  x = {'w': jnp.asarray(np.random.RandomState(1).randn(7, 3).astype(np.float32))}
  key = jax.random.key(3)
  bucket = jax.jit(ra.bucketing, static_argnames=('bucket_size', 'base'))
  med = np.median(np.asarray(x['w']), 0)
  np.testing.assert_allclose(bucket(x, key=key, bucket_size=1)['w'], med, rtol=1e-6)
  # one bucket of all K: the median of one mean is the mean
  np.testing.assert_allclose(bucket(x, key=key, bucket_size=7)['w'], x['w'].mean(0),
                             rtol=1e-5)
  # s = 2 on K = 7: 4 buckets, the last a single update; check against the permutation
  perm = np.asarray(jax.random.permutation(key, 7))
  xw = np.asarray(x['w'])
  means = np.stack([xw[perm[0:2]].mean(0), xw[perm[2:4]].mean(0), xw[perm[4:6]].mean(0),
                    xw[perm[6:7]].mean(0)])
  np.testing.assert_allclose(bucket(x, key=key, bucket_size=2)['w'], np.median(means, 0),
                             rtol=1e-5)


def test_flame_drops_the_odd_cluster_and_clips_to_the_median_norm():
  rng = np.random.RandomState(0)
  honest = np.array([1.0, 1.0, 0.0, 0.0]) + 0.05 * rng.randn(7, 4)
  evil = np.array([-1.0, 0.0, 1.0, 0.0]) * 10 + 0.01 * rng.randn(3, 4)
  x = np.concatenate([honest, evil]).astype(np.float32)
  adm = ra.flame_admitted(x)
  assert not adm[7:].any() and adm[:7].sum() >= 5     # HDBSCAN may call an honest one noise
  big = np.tile(x, (1, 500))                          # same angles, more coordinates
  run = jax.jit(lambda u, k, lam: ra.flame(u, key=k, noise_lambda=lam)['w'])
  out = run({'w': jnp.asarray(big)}, jax.random.key(0), 0.0)
  n = np.linalg.norm(big, axis=1)
  s = np.median(n)
  want = (big[adm] * np.minimum(1, s / n[adm])[:, None]).mean(0)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  # the noise has standard deviation lambda * S
  noisy = run({'w': jnp.asarray(big)}, jax.random.key(0), 0.1)
  assert abs(float(jnp.std(noisy - out)) / (0.1 * s) - 1) < 0.1


def _foolsgold_by_hand(h, eps=1e-5):
  """The authors' foolsgold() (numpy, loops) on the history matrix."""
  n = len(h)
  u = h / np.linalg.norm(h, axis=1, keepdims=True)
  cs = u @ u.T - np.eye(n)
  maxcs = np.max(cs, axis=1) + eps
  for i in range(n):
    for j in range(n):
      if i != j and maxcs[i] < maxcs[j]:
        cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
  wv = 1 - np.max(cs, axis=1)
  wv[wv > 1] = 1
  wv[wv < 0] = 0
  wv = wv / np.max(wv)
  wv[wv == 1] = .99
  wv = np.log(wv / (1 - wv) + eps) + 0.5
  wv[np.isinf(wv) | (wv > 1)] = 1
  wv[wv < 0] = 0
  return wv


def test_foolsgold_weights_match_the_reference_and_sybils_get_zero():
  rng = np.random.RandomState(0)
  h = 3 * np.eye(6, 8) + 0.3 * rng.randn(6, 8)      # four honest, nearly orthogonal
  h[4] = h[5] + 1e-3 * rng.randn(8)                 # two Sybils with one goal
  w = np.asarray(ra.foolsgold_weights(jnp.asarray(h, jnp.float32)))
  np.testing.assert_allclose(w, _foolsgold_by_hand(h), rtol=1e-4, atol=1e-5)
  assert w[4] == 0 and w[5] == 0 and np.all(w[:4] > 0)
  # the state is explicit: two rounds accumulate per-client histories
  fg = ra.foolsgold()
  state = fg.init({'w': jnp.zeros(8)}, 10)
  clients = jnp.array([0, 2, 3, 5, 7, 9])
  update = jax.jit(fg.update)
  agg, state = update({'w': jnp.asarray(h[:, :8] / 2, jnp.float32)}, state, clients=clients)
  agg, state = update({'w': jnp.asarray(h[:, :8] / 2, jnp.float32)}, state, clients=clients)
  np.testing.assert_allclose(state[clients], h, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(state[1]).sum()) == 0.0
  np.testing.assert_allclose(agg['w'], (w @ (h / 2)) / w.sum(), rtol=1e-4, atol=1e-6)


def _toy(n=120, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(n, 3).astype(np.float32)
  return x, (x[:, 0] > 0).astype(np.int32)


def test_fedavg_wires_root_data_and_aggregator_state():
  x, y = _toy()
  apply_fn = lambda p, xx: xx @ p['w']
  p0 = {'w': jnp.zeros((3, 2))}
  # Every client holds all the data and trains full batch, so every update equals the
  # server's update on the same root data: FLTrust's weights are all 1 and its norms equal,
  # i.e. the plain mean.
  same = [np.arange(x.shape[0])] * 4
  kw = dict(client_optimizer=optax.sgd(0.5), batch_size=x.shape[0], local_steps=1)
  run = lambda fed: fedavg.run(fed, p0, x, y, clients=same, num_rounds=2,
                               key=jax.random.key(1)).params['w']
  mean = run(fedavg.make_fedavg(apply_fn, aggregator='mean', **kw))
  fl = run(fedavg.make_fedavg(apply_fn, aggregator='fltrust', root_data=(x, y), **kw))
  np.testing.assert_allclose(fl, mean, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='root_data'):
    fedavg.make_fedavg(apply_fn, aggregator='fltrust', **kw)
  with pytest.raises(ValueError, match='server_update'):
    fedavg.make_fedavg(apply_fn, aggregator='mean', root_data=(x, y), **kw)
  # a stateful rule: the round takes and returns its state
  fg = fedavg.make_fedavg(apply_fn, aggregator=ra.aggregator('foolsgold'), **kw)
  lists, counts = fedavg.client_index_lists(same, x.shape[0])
  state = fg.init_aggregator_state(p0, 4)
  _, info = fg.round(p0, x, y, lists, counts, np.zeros(4, bool), jax.random.key(0),
                     aggregator_state=state)
  assert info.aggregator_state.shape == (4, 6) and float(jnp.abs(info.aggregator_state).sum()) > 0


def test_bad_hyperparameters_raise():
  with pytest.raises(ValueError, match='bucket_size'):
    ra.aggregator('bucketing', bucket_size=0)
  with pytest.raises(ValueError, match='base'):
    ra.aggregator('bucketing', bucket_size=2, base='nope')
  with pytest.raises(ValueError, match='noise_lambda'):
    ra.aggregator('flame', noise_lambda=-1.0)
  with pytest.raises(ValueError, match='tau'):
    ra.aggregator('centered_clipping_momentum', tau=-1.0)
