"""FedAvg rounds: equivalences with centralised training, vmap == loop, robust aggregation
against sign flipping, DP hooks, determinism and argument checks."""
import functools

import dp_accounting
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec.federated import aggregators as ra
from jaxsec.federated import byzantine
from jaxsec.federated import fedavg
from jaxsec.privacy import accounting


def apply_fn(p, x):
  return x @ p['w'] + p['b']


def mlp_apply(p, x):
  return jnp.tanh(x @ p['w1'] + p['b1']) @ p['w2'] + p['b2']


def _init_linear(d=4, c=3, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'w': 0.3 * jax.random.normal(k1, (d, c)), 'b': 0.1 * jax.random.normal(k2, (c,))}


def _init_mlp(d=4, h=6, c=3, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  return {'w1': 0.5 * jax.random.normal(ks[0], (d, h)), 'b1': 0.1 * jax.random.normal(ks[1], (h,)),
          'w2': 0.5 * jax.random.normal(ks[2], (h, c)), 'b2': 0.1 * jax.random.normal(ks[3], (c,))}


def _data(n=40, d=4, c=3, seed=0):
  rng = np.random.RandomState(seed)
  y = rng.randint(0, c, n).astype(np.int32)
  x = (rng.randn(n, d) + 1.5 * np.eye(c, d)[y]).astype(np.float32)
  return x, y


def _ce(p, x, y, f=apply_fn):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(p, x), y))


@functools.lru_cache(maxsize=None)
def _grad(f):
  return jax.jit(jax.grad(functools.partial(_ce, f=f)))


def _gd(f, p, x, y, lr, steps):
  """Centralised full-batch gradient descent (the single-model reference)."""
  grad = _grad(f)
  for _ in range(steps):
    p = jax.tree.map(lambda a, g: a - lr * g, p, grad(p, x, y))
  return p


def _close(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw),
               a, b)


def test_one_client_one_step_is_a_centralised_sgd_step():
  x, y = _data(24)
  p0 = _init_linear()
  lr = 0.3
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(lr), batch_size=24,
                           local_steps=1)
  res = fedavg.run(fed, p0, x, y, clients=[np.arange(24)], num_rounds=1,
                   key=jax.random.key(3))
  _close(res.params, _gd(apply_fn, p0, x, y, lr, 1), rtol=2e-6, atol=2e-7)
  # the update is not trivially zero
  assert float(jnp.abs(res.params['w'] - p0['w']).max()) > 1e-3


@pytest.mark.parametrize('schedule', [{'local_steps': 2}, {'local_epochs': 2}])
def test_identical_clients_with_mean_equal_single_client_training(schedule):
  """K clients holding the same data, full-batch local GD: the FedAvg mean is exactly
  single-client training, 2 local steps x R rounds of centralised GD."""
  x, y = _data(20)
  p0 = _init_mlp()
  fed = fedavg.make_fedavg(mlp_apply, client_optimizer=optax.sgd(0.2), batch_size=20,
                           **schedule)
  same = [np.arange(20)] * 4
  many = fedavg.run(fed, p0, x, y, clients=same, num_rounds=3, key=jax.random.key(0))
  _close(many.params, _gd(mlp_apply, p0, x, y, 0.2, 6), rtol=1e-5, atol=1e-6)


def test_weighted_fedsgd_equals_a_centralised_full_batch_step():
  """McMahan's FedSGD: one full-batch step per client and n_c/n weights give the gradient
  of the pooled data; uniform weights do not (unequal clients)."""
  x, y = _data(30)
  p0 = _init_linear()
  clients = [np.arange(0, 4), np.arange(4, 14), np.arange(14, 30)]
  lr = 0.5
  expected = _gd(apply_fn, p0, x, y, lr, 1)
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(lr), batch_size=64,
                           local_steps=1, client_weighting='num_examples')
  weighted = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=1,
                        key=jax.random.key(0)).params
  _close(weighted, expected, rtol=1e-5, atol=1e-6)
  # the unweighted mean of the clients' steps would not be the pooled step
  uniform_w = np.mean([np.asarray(_gd(apply_fn, p0, x[c], y[c], lr, 1)['w']) for c in clients],
                      axis=0)
  assert float(np.abs(uniform_w - np.asarray(expected['w'])).max()) > 1e-3


def _counting_objective(apply_fn_, p, x, y, key):
  """Cross-entropy plus ``-p['c']``: every active step adds exactly lr to ``c``."""
  del key
  ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn_(p, x), y)
  return ce - p['c']


def test_local_epochs_step_counts_and_idle_steps():
  """local_epochs=E runs E * ceil(n_c / B) steps per client (a partial last batch counts);
  a 3-example client next to larger ones idles through the padded steps, exactly E
  full-batch GD steps on its own data."""
  x, y = _data(30)
  p0 = dict(_init_linear(), c=jnp.zeros(()))
  lr = 0.4
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(lr), batch_size=4,
                           local_epochs=3, objective=_counting_objective)
  clients = [np.arange(3), np.arange(3, 15), np.arange(15, 28)]   # 3, 12, 13 examples
  lists, counts = fedavg.client_index_lists(clients, 30)
  steps = []
  for c in range(3):
    upd, _ = fed.local_update(p0, x, y, lists[c], counts[c], jax.random.key(c), False)
    steps.append(float(upd['c']) / lr)
    if c == 0:
      local = jax.tree.map(lambda a, b: a + b, p0, upd)
      ref = _gd(apply_fn, _init_linear(), x[:3], y[:3], lr, 3)
      _close({'w': local['w'], 'b': local['b']}, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(steps, [3 * 1, 3 * 3, 3 * 4], rtol=1e-5)


def test_vmapped_round_equals_a_python_loop_over_clients():
  x, y = _data(60)
  p0 = _init_mlp()
  clients = [np.arange(0, 7), np.arange(7, 20), np.arange(20, 31), np.arange(31, 45),
             np.arange(45, 60)]
  lists, counts = fedavg.client_index_lists(clients, 60)
  byz = np.array([False, True, False, False, True])
  agg = ra.aggregator('trimmed_mean', trim=1)
  attack = byzantine.sign_flip(scale=3.0)
  flip = byzantine.label_flip(num_classes=3)
  fed = fedavg.make_fedavg(mlp_apply, client_optimizer=optax.sgd(0.1, momentum=0.9),
                           batch_size=4, local_epochs=2, aggregator=agg, server_lr=0.7,
                           clients_per_round=4, update_attack=attack, data_attack=flip)
  rk = jax.random.key(11)
  new, info = fed.round(p0, x, y, lists, counts, byz, rk)
  sel = np.asarray(info.clients)
  assert sel.shape == (4,) and len(set(sel.tolist())) == 4
  ups = [fed.local_update(p0, x, y, lists[c], counts[c], fedavg.client_key(rk, int(c)),
                          bool(byz[c]))[0] for c in sel]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *ups)
  stacked = attack(stacked, jnp.asarray(byz[sel]), jax.random.key(0))
  expected = jax.tree.map(lambda p, a: p + 0.7 * a, p0, agg(stacked))
  _close(new, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(info.byzantine), byz[sel])


def test_rounds_are_deterministic_by_key_and_sampling_varies():
  x, y = _data(40)
  p0 = _init_linear()
  clients = fedavg.iid_partition(jax.random.key(0), 40, 8)
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.1), batch_size=3,
                           local_steps=2, clients_per_round=3)
  a = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=2, key=jax.random.key(5))
  b = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=2, key=jax.random.key(5))
  c = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=2, key=jax.random.key(6))
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)),
               a.params, b.params)
  assert float(jnp.abs(a.params['w'] - c.params['w']).max()) > 1e-6
  lists, counts = fedavg.client_index_lists(clients, 40)
  picks = {tuple(np.asarray(fed.round(p0, x, y, lists, counts, np.zeros(8, bool),
                                      jax.random.key(r))[1].clients)) for r in range(6)}
  assert len(picks) > 1


def test_dp_fedavg_hook_clips_and_poisson_masks():
  x, y = _data(40)
  p0 = _init_linear()
  clients = fedavg.iid_partition(jax.random.key(0), 40, 8)
  lists, counts = fedavg.client_index_lists(clients, 40)
  clip = 1e-3
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.5), batch_size=5,
                           local_steps=2, sampling='poisson', sampling_rate=0.5,
                           l2_norm_clip=clip, noise_multiplier=0.0)
  rk = jax.random.key(2)
  new, info = fed.round(p0, x, y, lists, counts, np.zeros(8, bool), rk)
  part = np.asarray(info.participating)
  assert 0 < part.sum() < 8
  ups = [fed.local_update(p0, x, y, lists[c], counts[c], fedavg.client_key(rk, c), False)[0]
         for c in range(8) if part[c]]
  clipped = [jax.tree.map(lambda l, u=u: l * min(1.0, clip / float(
      jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(u))))), u) for u in ups]
  expected = jax.tree.map(lambda p, *cs: p + sum(cs) / (0.5 * 8), p0, *clipped)
  _close(new, expected, rtol=1e-4, atol=1e-8)


def test_robust_aggregators_resist_sign_flipping_where_the_mean_does_not():
  rng = np.random.RandomState(0)
  n, d = 1200, 5
  y = rng.randint(0, 2, n).astype(np.int32)
  x = (rng.randn(n, d) + 2.0 * (2 * y[:, None] - 1) * np.ones(d) / np.sqrt(d)
       ).astype(np.float32)
  xt, yt = x[1000:], y[1000:]
  x, y = x[:1000], y[:1000]
  clients = fedavg.iid_partition(jax.random.key(0), 1000, 10)
  p0 = {'w': jnp.zeros((d, 2)), 'b': jnp.zeros((2,))}
  attack = byzantine.sign_flip(scale=10.0)
  acc = {}
  runs = [('mean', 'mean', attack),
          ('median', 'coordinate_median', attack),
          ('krum', ra.aggregator('krum', num_byzantine=2), attack)]
  for name, agg, att in runs:
    fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.2), batch_size=20,
                             local_steps=2, aggregator=agg, update_attack=att)
    res = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=8, key=jax.random.key(1),
                     byzantine_clients=(3, 7), eval_data=(xt, yt), eval_every=8)
    acc[name] = res.history['eval_accuracy'][-1]
  assert acc['mean'] < 0.5, acc                      # sign flipping breaks the mean ...
  assert acc['median'] > 0.9 and acc['krum'] > 0.9, acc   # ... but not the robust rules


def test_label_flipping_client_trains_on_flipped_labels():
  x, y = _data(12)
  p0 = _init_linear()
  flip = byzantine.label_flip(num_classes=3)
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.3), batch_size=5,
                           local_steps=3, data_attack=flip)
  lists, counts = fedavg.client_index_lists([np.arange(12)], 12)
  k = jax.random.key(4)
  poisoned, _ = fed.local_update(p0, x, y, lists[0], counts[0], k, True)
  honest, _ = fed.local_update(p0, x, y, lists[0], counts[0], k, False)
  reference, _ = fed.local_update(p0, x, (2 - y).astype(np.int32), lists[0], counts[0], k,
                                  False)
  _close(poisoned, reference, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(poisoned['w'] - honest['w']).max()) > 1e-3


def test_bad_arguments_raise_value_error_naming_the_value():
  mk = functools.partial(fedavg.make_fedavg, apply_fn, client_optimizer=optax.sgd(0.1))
  with pytest.raises(ValueError, match='local_steps=2, local_epochs=1'):
    mk(batch_size=4, local_steps=2, local_epochs=1)
  with pytest.raises(ValueError, match='local_steps=None, local_epochs=None'):
    mk(batch_size=4)
  with pytest.raises(ValueError, match='batch_size=0'):
    mk(batch_size=0, local_steps=1)
  with pytest.raises(ValueError, match='local_steps=0'):
    mk(batch_size=4, local_steps=0)
  with pytest.raises(ValueError, match="name='bogus'"):
    mk(batch_size=4, local_steps=1, aggregator='bogus')
  with pytest.raises(ValueError, match='server_lr=-1.0'):
    mk(batch_size=4, local_steps=1, server_lr=-1.0)
  with pytest.raises(ValueError, match="sampling='random'"):
    mk(batch_size=4, local_steps=1, sampling='random')
  with pytest.raises(ValueError, match='sampling_rate'):
    mk(batch_size=4, local_steps=1, sampling='poisson')
  with pytest.raises(ValueError, match='sampling_rate=1.5'):
    mk(batch_size=4, local_steps=1, sampling='poisson', sampling_rate=1.5)
  with pytest.raises(ValueError, match="aggregator='coordinate_median'"):
    mk(batch_size=4, local_steps=1, aggregator='coordinate_median', l2_norm_clip=1.0)
  with pytest.raises(ValueError, match='l2_norm_clip=0.0'):
    mk(batch_size=4, local_steps=1, l2_norm_clip=0.0)
  with pytest.raises(ValueError, match='noise_multiplier=1.0'):
    mk(batch_size=4, local_steps=1, noise_multiplier=1.0)
  with pytest.raises(ValueError, match="client_weighting='num_examples'"):
    mk(batch_size=4, local_steps=1, client_weighting='num_examples',
       aggregator='coordinate_median')
  with pytest.raises(ValueError, match='update_attack=3'):
    mk(batch_size=4, local_steps=1, update_attack=3)
  x, y = _data(10)
  fed = mk(batch_size=2, local_steps=1, clients_per_round=4)
  clients = fedavg.iid_partition(jax.random.key(0), 10, 3)
  with pytest.raises(ValueError, match='clients_per_round=4'):
    fedavg.run(fed, _init_linear(), x, y, clients=clients, num_rounds=1, key=jax.random.key(0))
  fed = mk(batch_size=2, local_steps=1)
  with pytest.raises(ValueError, match='byzantine_clients.*=3'):
    fedavg.run(fed, _init_linear(), x, y, clients=clients, num_rounds=1,
               key=jax.random.key(0), byzantine_clients=(3,))
  with pytest.raises(ValueError, match='num_rounds=-1'):
    fedavg.run(fed, _init_linear(), x, y, clients=clients, num_rounds=-1,
               key=jax.random.key(0))


# ------------------------------------------------------------------ DP-FedAvg accounting

def _dp_fed(**kw):
  return fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.1), batch_size=4,
                            local_steps=1, l2_norm_clip=0.5, **kw)


def test_dp_fedavg_run_reports_user_level_epsilon_of_the_sampler_used():
  """``run`` reports (epsilon, delta) for the client sampler that ran: Poisson ->
  PoissonSampledDpEvent under add/remove-one-client, fixed-size uniform ->
  SampledWithoutReplacementDpEvent under replace-one-client, where the clipped sum moves
  by 2 S, i.e. noise multiplier z / 2 (Wang, Balle, Kasiviswanathan 2019)."""
  x, y = _data(32)
  clients = fedavg.iid_partition(jax.random.key(0), 32, 8)
  z, rounds, delta = 2.0, 3, 1e-5
  orders = np.asarray(accounting.DEFAULT_ORDERS)
  # all clients every round: replace-one Gaussian, RDP 2 lambda / z^2 per round
  full = _dp_fed(noise_multiplier=z)
  res = fedavg.run(full, _init_linear(), x, y, clients=clients, num_rounds=rounds,
                   key=jax.random.key(1), delta=delta)
  closed, _ = accounting.epsilon_from_rdp(orders, rounds * 2 * orders / z ** 2, delta)
  acct = res.privacy
  assert acct.epsilon == pytest.approx(closed, rel=1e-9)
  assert acct.delta == delta and acct.accountant == 'rdp'
  assert acct.neighboring_relation == accounting.NeighboringRelation.REPLACE_ONE
  # 3 of 8 clients per round: the without-replacement event, amplified
  uni = _dp_fed(noise_multiplier=z, clients_per_round=3)
  ev = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
      8, 3, dp_accounting.GaussianDpEvent(z / 2)), rounds)
  want = accounting.epsilon(ev, delta, accountant='rdp',
                            neighboring_relation=accounting.NeighboringRelation.REPLACE_ONE)
  got = uni.dp_account(num_clients=8, num_rounds=rounds, delta=delta)
  assert got.epsilon == pytest.approx(want, rel=1e-9) and got.epsilon < closed
  assert isinstance(got.event.event, dp_accounting.SampledWithoutReplacementDpEvent)
  # Poisson with rate 1: the add/remove Gaussian, RDP lambda / (2 z^2) per round
  poi = _dp_fed(noise_multiplier=z, sampling='poisson', sampling_rate=1.0)
  p1 = poi.dp_account(num_clients=8, num_rounds=rounds, delta=delta, accountant='rdp')
  closed_ar, _ = accounting.epsilon_from_rdp(orders, rounds * orders / (2 * z ** 2), delta)
  assert p1.epsilon == pytest.approx(closed_ar, rel=1e-9)
  assert p1.neighboring_relation == accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  poi = _dp_fed(noise_multiplier=z, sampling='poisson', sampling_rate=0.375)
  p_acct = poi.dp_account(num_clients=8, num_rounds=rounds, delta=delta)
  ev_p = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
      0.375, dp_accounting.GaussianDpEvent(z)), rounds)
  assert p_acct.accountant == 'pld'
  assert p_acct.epsilon == pytest.approx(accounting.epsilon(ev_p, delta), rel=1e-9)
  # without noise there is no guarantee; without DP there is nothing to report
  assert _dp_fed().dp_account(num_clients=8, num_rounds=1, delta=delta).epsilon == np.inf
  plain = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.1), batch_size=4,
                             local_steps=1)
  assert fedavg.run(plain, _init_linear(), x, y, clients=clients, num_rounds=0,
                    key=jax.random.key(1)).privacy is None
  with pytest.raises(ValueError, match='delta=None'):
    fedavg.run(full, _init_linear(), x, y, clients=clients, num_rounds=1,
               key=jax.random.key(1))
  with pytest.raises(ValueError, match='delta=1e-05'):
    fedavg.run(plain, _init_linear(), x, y, clients=clients, num_rounds=1,
               key=jax.random.key(1), delta=1e-5)
  with pytest.raises(ValueError, match="accountant='pld'"):
    uni.dp_account(num_clients=8, num_rounds=rounds, delta=delta, accountant='pld')


@pytest.mark.parametrize('sampling', [dict(clients_per_round=3),
                                      dict(sampling='poisson', sampling_rate=0.5)])
def test_dp_fedavg_round_noise_has_the_promised_scale(sampling):
  """Zero client updates (learning rate 0): the global step is the server noise alone,
  N(0, (z S)^2) divided by the expected number of clients (3, or 0.5 * 8)."""
  x, y = _data(32, d=40)
  clients = fedavg.iid_partition(jax.random.key(0), 32, 8)
  lists, counts = fedavg.client_index_lists(clients, 32)
  z, clip, lr = 3.0, 0.5, 0.7
  fed = fedavg.make_fedavg(apply_fn, client_optimizer=optax.sgd(0.0), batch_size=4,
                           local_steps=1, l2_norm_clip=clip, noise_multiplier=z,
                           server_lr=lr, **sampling)
  p0 = _init_linear(d=40)
  keys = jax.random.split(jax.random.key(9), 100)
  new = jax.vmap(lambda k: fed.round(p0, x, y, lists, counts, np.zeros(8, bool), k)[0])(keys)
  steps = np.concatenate([(np.asarray(new[k]) - np.asarray(p0[k])[None]).reshape(100, -1)
                          for k in p0], axis=1) / lr     # [100 seeds, 123 coordinates]
  expected = 3.0 if 'clients_per_round' in sampling else 4.0
  assert abs(float(steps.mean())) < 4 * z * clip / expected / np.sqrt(steps.size)
  np.testing.assert_allclose(steps.std(), z * clip / expected, rtol=0.05)


def test_a_poisoning_attack_output_is_a_data_attack():
  # jaxsec.attacks.poisoning attacks return PoisonOutput(x, y, info): the round takes it as
  # the pair (x', y') it contains, the same as an attack returning that pair.
  from jaxsec.attacks import poisoning
  x, y = _data(40)
  p0 = _init_mlp()
  lists, counts = fedavg.client_index_lists([np.arange(0, 20), np.arange(20, 40)], 40)
  byz = np.array([True, False])
  flip = poisoning.random_label_flip(fraction=0.5, num_classes=3)
  rounds = []
  for attack in (flip, lambda xb, yb, k: tuple(flip(xb, yb, k))[:2]):
    fed = fedavg.make_fedavg(mlp_apply, client_optimizer=optax.sgd(0.1), batch_size=4,
                             local_epochs=1, data_attack=attack)
    rounds.append(fed.round(p0, x, y, lists, counts, byz, jax.random.key(3))[0])
  chex.assert_trees_all_close(rounds[0], rounds[1])
  clean = fedavg.make_fedavg(mlp_apply, client_optimizer=optax.sgd(0.1), batch_size=4,
                             local_epochs=1).round(p0, x, y, lists, counts, byz,
                                                   jax.random.key(3))[0]
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), rounds[0], clean)
  assert max(jax.tree.leaves(diff)) > 0     # the flipped labels did change the update
