"""DP-SGD: noise std is sigma * C / m, the step is the clipped mean + noise, adaptive
clipping tracks the quantile and is accounted, and ``train`` reports the sampler's epsilon."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jaxsec.federated import dp as dp_fedavg
from jaxsec.privacy import dpsgd, noise, sampling




def test_privatizer_noise_std_is_sigma_c_over_m():
  d, sigma, c, m = 20000, 1.3, 0.7, 4.0
  tx = noise.gaussian_privatizer(noise_multiplier=sigma, l2_norm_clip=c, normalizer=m,
                                key=jax.random.key(0))
  grads = {'a': jnp.zeros(d), 'b': jnp.zeros((d // 4, 4))}
  state = tx.init(grads)
  out, state2 = jax.jit(tx.update)(grads, state)
  z = np.concatenate([np.asarray(out['a']), np.asarray(out['b']).ravel()])
  target = sigma * c / m
  # chi-square 99.9% interval for the sample std of 2d normals; mean ~ 0
  lo, hi = (np.sqrt(stats.chi2.ppf(q, z.size) / z.size) * target for q in (5e-4, 1 - 5e-4))
  assert lo < z.std() < hi
  assert abs(z.mean()) < 4 * target / np.sqrt(z.size)
  assert stats.kstest(z / target, 'norm').pvalue > 1e-3
  # fresh noise next step
  out2, _ = tx.update(grads, state2)
  assert not np.allclose(out2['a'], out['a'])


def test_step_equals_clipped_mean_plus_noise_of_right_std():
  w = jnp.array([1.0, -2.0, 0.5])
  x = jnp.array([[1.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.5, 0.5], [2.0, 2.0, 2.0]])
  y = jnp.array([0.0, 1.0, 0.0, 0.0])
  mask = jnp.array([True, True, True, False])
  lf = lambda w, x, y: (x @ w - y) ** 2
  c, m = 1.0, 3.5
  # sigma = 0: exact clipped mean; one SGD step with lr 1
  step = dpsgd.make_step(lf, optax.sgd(1.0), noise_multiplier=0.0, normalizer=m)
  new, _, _, met = step(w, optax.sgd(1.0).init(w), c, (x, y), mask, jax.random.key(0))
  per = 2 * (x @ w - y)[:, None] * x
  fac = np.minimum(1, c / np.linalg.norm(per, axis=1)) * np.asarray(mask)
  np.testing.assert_allclose(new, w - (per * fac[:, None]).sum(0) / m, rtol=1e-6)
  assert float(met.batch_size) == 3
  # sigma > 0: the deviation from that mean over many keys has std sigma * C / m
  sigma = 2.0
  step = jax.jit(dpsgd.make_step(lf, optax.sgd(1.0), noise_multiplier=sigma, normalizer=m))
  outs = jax.vmap(lambda k: step(w, optax.sgd(1.0).init(w), c, (x, y), mask, k)[0])(
      jax.random.split(jax.random.key(1), 3000))
  dev = np.asarray(outs) - np.asarray(new)
  np.testing.assert_allclose(dev.std(0), sigma * c / m, rtol=0.06)


def test_adaptive_clipping_noise_split_and_quantile_tracking():
  ac = dpsgd.AdaptiveClipping(target_quantile=0.5, learning_rate=0.2, count_noise_std=1.0)
  sg = ac.gradient_noise_multiplier(1.0, normalizer=100.0)
  assert sg ** -2 + (2 * 1.0) ** -2 == pytest.approx(1.0)   # Andrew et al. Thm 1
  with pytest.raises(ValueError, match='count_noise_std'):
    ac.gradient_noise_multiplier(3.0, normalizer=100.0)
  # per-example norms |x_i| for f(w)=w*x: median of |N(0, 1)| is 0.674
  n = 400
  x = jax.random.normal(jax.random.key(0), (n,))
  lf = lambda w, x: w * x
  ac = dpsgd.AdaptiveClipping(target_quantile=0.5, learning_rate=0.2,
                              count_noise_std=0.5)
  step = jax.jit(dpsgd.make_step(lf, optax.sgd(0.0), noise_multiplier=0.1,
                                 normalizer=float(n), adaptive_clipping=ac))
  c = jnp.float32(5.0)
  w = jnp.float32(0.0)
  for t in range(150):
    w, _, c, _ = step(w, optax.sgd(0.0).init(w), c, (x,), jnp.ones(n, bool),
                      jax.random.key(t))
  assert abs(float(c) - float(np.median(np.abs(np.asarray(x))))) < 0.05


def test_train_end_to_end_reports_sampler_epsilon():
  k1, k2 = jax.random.split(jax.random.key(0))
  n, d = 400, 5
  x = jax.random.normal(k1, (n, d))
  w_true = jax.random.normal(k2, (d,))
  y = (x @ w_true > 0).astype(jnp.float32)
  lf = lambda w, x, y: optax.sigmoid_binary_cross_entropy(x @ w, y)
  s = sampling.PoissonSampler(dataset_size=n, num_steps=60, expected_batch_size=80)
  res = dpsgd.train(lf, jnp.zeros(d), (x, y), optimizer=optax.sgd(1.0), sampler=s,
                    key=jax.random.key(1), l2_norm_clip=1.0, delta=1e-5,
                    noise_multiplier=1.0, accountant='rdp', steps_per_call=30)
  assert res.epsilon == pytest.approx(s.epsilon(1.0, 1e-5, accountant='rdp'))
  # the reported delta includes the (tiny) Poisson overflow term of the padded batch size
  assert res.delta == pytest.approx(1e-5 + s.overflow_delta(res.epsilon), rel=1e-12)
  assert res.delta > 1e-5 and res.overflow_delta == s.overflow_delta(res.epsilon)
  acc = float(jnp.mean(((x @ res.params) > 0) == (y > 0)))
  assert acc > 0.85
  assert len(res.history['step']) == 2 and res.history['step'][-1] == 60
  # statistics computed from the private batches without noise live apart, named so
  assert set(res.history) == {'step', 'l2_norm_clip'}
  diag = res.nonprivate_diagnostics
  assert set(diag) == {'step', 'clipped_fraction', 'mean_norm', 'batch_size'}
  assert diag['step'] == [30, 60] and all(0 <= f <= 1 for f in diag['clipped_fraction'])
  assert abs(np.mean(diag['batch_size']) - 80) < 10 and min(diag['mean_norm']) > 0
  assert 'NOT covered' in ' '.join(dpsgd.DPResult.__doc__.split())
  with pytest.raises(ValueError, match='dataset_size'):
    dpsgd.train(lf, jnp.zeros(d), (x[:10], y[:10]), optimizer=optax.sgd(1.0), sampler=s,
                key=jax.random.key(1), l2_norm_clip=1.0, delta=1e-5, noise_multiplier=1.0)
  with pytest.raises(ValueError, match='exactly one'):
    dpsgd.train(lf, jnp.zeros(d), (x, y), optimizer=optax.sgd(1.0), sampler=s,
                key=jax.random.key(1), l2_norm_clip=1.0, delta=1e-5)


def test_train_is_deterministic_and_resumable():
  x = jax.random.normal(jax.random.key(3), (100, 3))
  lf = lambda w, x: jnp.sum((x - w) ** 2, axis=-1)
  s = sampling.PoissonSampler(dataset_size=100, num_steps=20, expected_batch_size=10)
  kw = dict(optimizer=optax.sgd(0.1), sampler=s, key=jax.random.key(4), l2_norm_clip=1.0,
            delta=1e-5, noise_multiplier=1.0, accountant='rdp', steps_per_call=10)
  full = dpsgd.train(lf, jnp.zeros(3), (x,), **kw)
  saved = {}
  def cb(t, p, extra):
    if t == 10:
      saved['p'], saved['s'] = p, extra['opt_state']
  dpsgd.train(lf, jnp.zeros(3), (x,), callback=cb, **kw)
  resumed = dpsgd.train(lf, saved['p'], (x,), start_step=10, opt_state=saved['s'], **kw)
  np.testing.assert_allclose(resumed.params, full.params, rtol=1e-6)


def test_no_module_level_compile_cache():
  """Compiled chunks live in jax's jit cache (cleared by ``jax.clear_caches``), not in a
  module-level dict: the module holds no mutable containers."""
  assert not [k for k, v in vars(dpsgd).items() if isinstance(v, (dict, list, set))
              and not k.startswith('__')]


def test_unhashable_static_argument_is_refused():
  class Loss:                     # defines __eq__ without __hash__: unhashable
    __eq__ = object.__eq__
    __hash__ = None

    def __call__(self, w, x):
      return jnp.sum((x - w) ** 2, axis=-1)
  s = sampling.PoissonSampler(dataset_size=20, num_steps=2, expected_batch_size=5)
  with pytest.raises(ValueError, match='loss_fn=.* is not hashable'):
    dpsgd.train(Loss(), jnp.zeros(3), (jnp.zeros((20, 3)),), optimizer=optax.sgd(0.1),
                sampler=s, key=jax.random.key(0), l2_norm_clip=1.0, delta=1e-5,
                noise_multiplier=1.0, accountant='rdp')


def test_repeated_trains_reuse_one_compiled_chunk_without_leaking_state(count_compiles):
  """A loop of DP-SGD trainings (shadow models) compiles once: data, schedule and noise
  keys are jit arguments. The warm result equals a cold-cache one bit for bit, and a new
  data set of the same shape really is used (not a stale constant)."""
  x = jax.random.normal(jax.random.key(3), (100, 3))
  lf = lambda w, x: jnp.sum((x - w) ** 2, axis=-1)
  opt = optax.sgd(0.1)
  def run(xx, k):
    s = sampling.PoissonSampler(dataset_size=100, num_steps=20, expected_batch_size=10)
    return dpsgd.train(lf, jnp.zeros(3), (xx,), optimizer=opt, sampler=s,
                       key=jax.random.key(k), l2_norm_clip=1.0, delta=1e-5,
                       noise_multiplier=1.0, accountant='rdp', steps_per_call=10)
  x2 = x + 5.0
  with count_compiles() as compiles:
    first = run(x, 0)
    n_first = len(compiles)
    assert n_first > 0, 'the listener saw no compilation at all'
    shifted = run(x2, 1)
  assert len(compiles) == n_first, 'a second train with the same shapes recompiled'
  jax.clear_caches()
  cold = run(x2, 1)
  np.testing.assert_array_equal(np.asarray(shifted.params), np.asarray(cold.params))
  assert float(jnp.mean(shifted.params)) > float(jnp.mean(first.params)) + 0.5


def test_train_refuses_poisson_overflow_outside_delta():
  """The issue's run (N=1000, q=0.1, T=50, max_batch_size=115) reported eps 5.15 at delta
  1e-5 although some batch overflows with probability 1: refused before training."""
  x = jax.random.normal(jax.random.key(3), (1000, 3))
  lf = lambda w, x: jnp.sum((x - w) ** 2, axis=-1)
  s = sampling.PoissonSampler(dataset_size=1000, num_steps=50, sampling_probability=0.1,
                              max_batch_size=115)
  # refused by the accounting (the old code only raised if this key's draw overflowed)
  with pytest.raises(ValueError, match=r'max_batch_size=115: overflow probability 1\b.*'
                     r'smallest max_batch_size that passes'):
    dpsgd.train(lf, jnp.zeros(3), (x,), optimizer=optax.sgd(0.1), sampler=s,
                key=jax.random.key(4), l2_norm_clip=1.0, delta=1e-5, noise_multiplier=1.0)


def test_secure_mode_draws_noise_and_batches_from_os_randomness():
  x = jax.random.normal(jax.random.key(3), (50, 3))
  lf = lambda w, x: jnp.sum((x - w) ** 2, axis=-1)
  def run(**kw):
    s = sampling.PoissonSampler(dataset_size=50, num_steps=4, expected_batch_size=10)
    return dpsgd.train(lf, jnp.zeros(3), (x,), optimizer=optax.sgd(0.1), sampler=s,
                       l2_norm_clip=1.0, delta=1e-5, noise_multiplier=1.0,
                       accountant='rdp', **kw)
  a, b = run(key=jax.random.key(4)), run(key=jax.random.key(4))
  np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
  c = run(key=jax.random.key(4), secure_mode=True)
  d = run(key=jax.random.key(4), secure_mode=True)
  e = run(key=None, secure_mode=True)
  outs = [np.asarray(r.params) for r in (a, c, d, e)]
  assert all(not np.array_equal(outs[i], outs[j]) for i in range(4) for j in range(i))
  assert c.epsilon == a.epsilon        # same mechanism, same accounting
  with pytest.raises(ValueError, match='secure_mode'):
    run(key=None)
  k1, k2 = dpsgd.secure_key(), dpsgd.secure_key()
  assert jax.random.key_data(k1).shape == jax.random.key_data(jax.random.key(0)).shape
  assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))


def test_one_noise_addition_for_dpsgd_and_dp_fedavg():
  """DP-SGD's step, the optax privatizer and DP-FedAvg's server aggregate all add exactly
  noise.add_gaussian_noise(sum, key, sigma * C) for their noise key (issue 13: one home)."""
  lf = lambda p, x: 0.5 * jnp.sum((p['w'][None] - x) ** 2, -1) + jnp.sum(p['b']) * x[:, 0]
  params = {'w': jnp.zeros(3), 'b': jnp.zeros((2, 2))}
  x = jnp.arange(12.0).reshape(4, 3) / 10
  mask = jnp.ones(4, bool)
  sigma, c, m = 1.7, 0.5, 4.0
  key = jax.random.key(3)
  k_noise, _ = jax.random.split(key)
  summed, _ = dpsgd.clipping_lib.clipped_grad(lf)(params, x, mask=mask, l2_norm_clip=c)
  want = jax.tree.map(lambda l: l / m, noise.add_gaussian_noise(summed, k_noise, sigma * c))
  step = dpsgd.make_step(lf, optax.sgd(-1.0), noise_multiplier=sigma, normalizer=m)
  new, _, _, _ = step(params, optax.sgd(-1.0).init(params), c, (x,), mask, key)
  for k in params:   # sgd(-1) from zeros: params = the privatised gradient
    np.testing.assert_array_equal(np.asarray(new[k]), np.asarray(want[k]))
  tx = noise.gaussian_privatizer(noise_multiplier=sigma, l2_norm_clip=c, normalizer=m, key=key)
  out, _ = tx.update(summed, tx.init(params))
  k_tx, _ = jax.random.split(key)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), out,
               jax.tree.map(lambda l: l / m,
                            noise.add_gaussian_noise(summed, k_tx, sigma * c)))
  updates = {'w': jnp.ones((3, 3)) * 0.1, 'b': jnp.zeros((3, 2, 2))}
  agg, _ = dp_fedavg.dp_aggregate(updates, key, l2_norm_clip=c, noise_multiplier=sigma,
                                  expected_clients=3.0)
  s = jax.tree.map(lambda l: jnp.sum(l, 0), updates)   # norms 0.17 < c: no clipping
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), agg,
               jax.tree.map(lambda l: l / 3.0, noise.add_gaussian_noise(s, key, sigma * c)))
