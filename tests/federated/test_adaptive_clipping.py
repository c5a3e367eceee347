"""User-level DP-FedAvg with adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021):
the clip norm's fixed point, the noise split of their Theorem 1, and the reported epsilon of
the sampler used."""
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec.federated import dp, fedavg
from jaxsec.privacy import accounting
from jaxsec.privacy.dpsgd import AdaptiveClipping

NORMS = np.arange(1.0, 11.0)   # ten clients with update norms 1, 2, ..., 10


def _fixed_updates():
  return {'w': jnp.zeros((10, 4)).at[:, 0].set(jnp.asarray(NORMS, jnp.float32))}


@pytest.mark.parametrize('start', [0.1, 100.0])
def test_clip_norm_reaches_the_target_quantile_without_noise(start):
  """Geometric update C <- C exp(-eta (b - gamma)) with the exact count: b(C) = #{norms <=
  C} / 10 equals gamma = 0.3 exactly on [3, 4), so C stops there (from below the last
  factor is <= e^(0.2 * 0.1) and from above >= e^(-0.2 * 0.1): it cannot jump over)."""
  ac = AdaptiveClipping(target_quantile=0.3, learning_rate=0.2)
  step = jax.jit(lambda c, k: dp.dp_aggregate(_fixed_updates(), k, l2_norm_clip=c,
                                              noise_multiplier=0.0, expected_clients=10.0,
                                              adaptive_clipping=ac)[1].next_l2_norm_clip)
  c, path = jnp.float32(start), []
  for r in range(120):
    c = step(c, jax.random.key(r))
    path.append(float(c))
  assert 3.0 <= path[-1] < 4.0 and path[-1] == path[-30]
  assert np.mean(NORMS <= path[-1]) == 0.3


def test_noise_split_of_theorem_1():
  """sigma_update = (z^-2 - (2 sigma_b)^-2)^(-1/2) on the sum; the log clip step has std
  eta sigma_b / m (the noised count)."""
  z, m, ac = 0.5, 10.0, AdaptiveClipping(target_quantile=0.5, learning_rate=0.2)
  sigma_b = m / 20
  sigma_u = (z ** -2 - (2 * sigma_b) ** -2) ** -0.5
  zeros = {'w': jnp.zeros((10, 50))}
  agg, info = jax.jit(jax.vmap(lambda k: dp.dp_aggregate(
      zeros, k, l2_norm_clip=2.0, noise_multiplier=z, expected_clients=m,
      adaptive_clipping=ac)))(jax.random.split(jax.random.key(1), 2000))
  assert float(jnp.std(agg['w'])) == pytest.approx(sigma_u * 2.0 / m, rel=0.02)
  clips = info.next_l2_norm_clip
  steps = np.log(np.asarray(clips) / 2.0)
  # all ten zero updates are below S: b = 1 + noise / m, log step = -eta (b - gamma)
  assert np.mean(steps) == pytest.approx(-0.2 * 0.5, abs=0.002)
  assert np.std(steps) == pytest.approx(0.2 * sigma_b / m, rel=0.07)
  with pytest.raises(ValueError, match='too small'):
    dp.dp_aggregate(zeros, jax.random.key(0), l2_norm_clip=1.0, noise_multiplier=1.0,
                    expected_clients=m, adaptive_clipping=ac)   # 2 sigma_b = 1 <= z


def _fed(**kw):
  apply_fn = lambda p, x: x @ p['w']
  return fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.5), batch_size=4,
                            local_steps=1, l2_norm_clip=0.05, noise_multiplier=0.8,
                            adaptive_clipping=AdaptiveClipping(count_noise_std=1.0), **kw)


def test_run_reports_the_event_of_the_sampler_used_with_adaptive_clipping():
  x = np.asarray(jax.random.normal(jax.random.key(0), (32, 3)), np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  clients = fedavg.iid_partition(jax.random.key(1), 32, 8)
  p0, rounds, delta = {'w': jnp.zeros((3, 2))}, 4, 1e-5
  poi = _fed(sampling='poisson', sampling_rate=0.5)
  res = fedavg.run(poi, p0, x, y, clients=clients, num_rounds=rounds, key=jax.random.key(2),
                   delta=delta)
  ev = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(0.8)), rounds)
  assert res.privacy.event == ev
  assert res.privacy.epsilon == pytest.approx(accounting.epsilon(ev, delta), rel=1e-9)
  clips = res.history['l2_norm_clip']
  assert len(clips) == rounds + 1 and clips[0] == pytest.approx(0.05)
  assert len(set(clips)) > 1           # the clip norm moved
  # The other sampler: fixed size 4 of 8, replace-one, another event and epsilon.
  uni = _fed(clients_per_round=4)
  res_u = fedavg.run(uni, p0, x, y, clients=clients, num_rounds=rounds,
                     key=jax.random.key(2), delta=delta)
  ev_u = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
      8, 4, dp_accounting.GaussianDpEvent(0.4)), rounds)
  assert res_u.privacy.event == ev_u
  want = accounting.epsilon(ev_u, delta, accountant='rdp',
                            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  assert res_u.privacy.epsilon == pytest.approx(want, rel=1e-9)
  assert res_u.privacy.epsilon != pytest.approx(res.privacy.epsilon, rel=0.05)
  with pytest.raises(ValueError, match='adaptive_clipping'):
    fedavg.make_fedavg(lambda p, x: x @ p['w'], client_optimizer=optax.sgd(0.5),
                       batch_size=4, local_steps=1,
                       adaptive_clipping=AdaptiveClipping())   # no DP
