"""Byzantine client attacks: closed forms, honest rows untouched, argument checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.federated import aggregators as ra
from jaxsec.federated import byzantine


def _updates(k=6, seed=0):
  rng = np.random.RandomState(seed)
  return {'w': jnp.asarray(rng.randn(k, 3, 2).astype(np.float32)),
          'b': jnp.asarray(rng.randn(k, 4).astype(np.float32))}


BYZ = jnp.array([False, True, False, False, True, False])


def _honest_rows_unchanged(out, upd, byz=BYZ):
  for k in upd:
    np.testing.assert_array_equal(np.asarray(out[k])[~np.asarray(byz)],
                                  np.asarray(upd[k])[~np.asarray(byz)])


# Phi^{-1} from standard normal tables: z_max = Phi^{-1}((n - s) / n), s = floor(n/2+1) - m.
@pytest.mark.parametrize('n,m,z', [
    (4, 1, 0.0),                  # s = 2, Phi^{-1}(1/2)
    (4, 2, 0.6744897501960817),   # s = 1, Phi^{-1}(3/4)
    (10, 2, 0.2533471031357997),  # s = 4, Phi^{-1}(0.6)
    (10, 5, 1.2815515655446004),  # s = 1, Phi^{-1}(0.9)
    (5, 1, 0.2533471031357997),   # s = floor(3.5) - 1 = 2, Phi^{-1}(3/5)
    (50, 12, 0.5828415072712162),  # s = 14, Phi^{-1}(0.72)
    (20, 0, -0.12566134685507402),  # s = 11, Phi^{-1}(0.45): no attacker, z < 0
])
def test_alie_z_max_matches_the_paper_formula(n, m, z):
  assert byzantine.alie_z_max(n, m) == pytest.approx(z, abs=1e-9)
  traced = jax.jit(lambda mm: byzantine.alie_z_max(n, mm))(m)
  assert float(traced) == pytest.approx(z, abs=1e-5)


# The common re-implementation: Phi^{-1}((n - m - s) / (n - m)) (quantile among the honest).
@pytest.mark.parametrize('n,m,z', [
    (4, 2, 0.0),                  # s = 1, Phi^{-1}(1/2)
    (10, 2, 0.0),                 # s = 4, Phi^{-1}(4/8)
    (10, 5, 0.8416212335729143),  # s = 1, Phi^{-1}(4/5)
    (5, 1, 0.0),                  # s = floor(3.5) - 1 = 2, Phi^{-1}(2/4)
    (50, 12, 0.336038140371823),  # s = 14, Phi^{-1}(24/38)
    (20, 0, -0.12566134685507402),  # s = 11, Phi^{-1}(9/20): equal to the paper's
])
def test_alie_z_max_common_rule(n, m, z):
  assert byzantine.alie_z_max(n, m, rule='common') == pytest.approx(z, abs=1e-9)
  traced = jax.jit(lambda mm: byzantine.alie_z_max(n, mm, rule='common'))(m)
  assert float(traced) == pytest.approx(z, abs=1e-5)


def test_alie_z_max_majority_and_bad_arguments():
  with pytest.raises(ValueError, match='num_byzantine=6'):
    byzantine.alie_z_max(10, 6)     # s = 0: the attackers already are a majority
  with pytest.raises(ValueError, match='num_byzantine=11'):
    byzantine.alie_z_max(10, 11)
  assert np.isinf(float(jax.jit(lambda mm: byzantine.alie_z_max(10, mm))(6)))


@pytest.mark.parametrize('statistics', ['byzantine', 'benign'])
def test_alie_sends_mean_minus_z_max_std(statistics):
  upd = _updates()
  out = jax.jit(byzantine.alie(statistics=statistics))(upd, BYZ, jax.random.key(0))
  _honest_rows_unchanged(out, upd)
  rows = np.asarray(BYZ) if statistics == 'byzantine' else ~np.asarray(BYZ)
  z = byzantine.alie_z_max(6, 2)    # s = 2, Phi^{-1}(2/3)
  assert z == pytest.approx(0.4307272992954576, abs=1e-9)
  for k in upd:
    u = np.asarray(upd[k], np.float64)[rows]
    expected = u.mean(0) - z * u.std(0)
    for i in np.nonzero(np.asarray(BYZ))[0]:
      np.testing.assert_allclose(np.asarray(out[k])[i], expected, rtol=1e-5, atol=1e-6)
  fixed = byzantine.alie(z=1.5, statistics=statistics)(upd, BYZ, jax.random.key(0))
  u = np.asarray(upd['b'], np.float64)[rows]
  np.testing.assert_allclose(np.asarray(fixed['b'])[1], u.mean(0) - 1.5 * u.std(0),
                             rtol=1e-5, atol=1e-6)
  # the common rule: (n - m - s) / (n - m) = (6 - 2 - 2) / 4, Phi^{-1}(1/2) = 0: the mean
  common = jax.jit(byzantine.alie(z_rule='common', statistics=statistics))(
      upd, BYZ, jax.random.key(0))
  np.testing.assert_allclose(np.asarray(common['b'])[4], u.mean(0), rtol=1e-5, atol=1e-6)


def test_alie_value_hides_inside_the_honest_spread():
  """Baruch et al.'s point: with z_max the malicious coordinate stays within the honest
  values (so median / trimmed mean / Krum do not reject it) yet shifts the median."""
  rng = np.random.RandomState(1)
  k, m = 20, 4
  honest = rng.randn(k, 500).astype(np.float32)
  byz = jnp.arange(k) < m
  upd = {'g': jnp.asarray(honest)}
  out = byzantine.alie(statistics='benign')(upd, byz, jax.random.key(0))['g']
  mal = np.asarray(out)[0]
  lo, hi = honest[m:].min(0), honest[m:].max(0)
  assert np.all((mal > lo) & (mal < hi))
  shift = np.asarray(ra.coordinate_median({'g': out})['g']) - np.median(honest[m:], 0)
  assert shift.mean() < -0.1          # consistently dragged down, coordinate by coordinate


def test_sign_flip_and_ipm_closed_forms():
  upd = _updates()
  out = byzantine.sign_flip(scale=4.0)(upd, BYZ, jax.random.key(0))
  _honest_rows_unchanged(out, upd)
  for k in upd:
    np.testing.assert_allclose(np.asarray(out[k])[np.asarray(BYZ)],
                               -4.0 * np.asarray(upd[k])[np.asarray(BYZ)], rtol=1e-6)
  out = byzantine.ipm(epsilon=0.5)(upd, BYZ, jax.random.key(0))
  _honest_rows_unchanged(out, upd)
  honest_mean = np.asarray(upd['w'])[~np.asarray(BYZ)].mean(0)
  np.testing.assert_allclose(np.asarray(out['w'])[1], -0.5 * honest_mean, rtol=1e-5,
                             atol=1e-7)
  # IPM with a large epsilon turns the mean aggregate against the honest direction
  big = byzantine.ipm(epsilon=10.0)(upd, BYZ, jax.random.key(0))
  agg = np.concatenate([np.asarray(v).reshape(-1) for v in ra.mean(big).values()])
  mu = np.concatenate([np.asarray(upd[k])[~np.asarray(BYZ)].mean(0).reshape(-1)
                       for k in ('w', 'b')])
  assert float(agg @ mu) < 0


def test_gaussian_noise_scale():
  upd = {'g': jnp.zeros((4, 20000))}
  byz = jnp.array([True, False, True, False])
  out = byzantine.gaussian_noise(stddev=3.0)(upd, byz, jax.random.key(0))['g']
  out = np.asarray(out)
  assert np.all(out[[1, 3]] == 0)
  assert abs(out[0].std() - 3.0) < 0.1 and abs(out[2].std() - 3.0) < 0.1
  assert np.corrcoef(out[0], out[2])[0, 1] < 0.05      # independent per client
  honest = byzantine.gaussian_noise(stddev=1.0, center='honest')(
      {'g': jnp.full((2, 20000), 5.0)}, jnp.array([True, False]), jax.random.key(1))['g']
  assert abs(float(np.mean(honest[0])) - 5.0) < 0.05


def test_model_replacement_replaces_the_global_model():
  """gamma = n / eta: G + eta * mean(updates) = X + (eta / n) * sum of honest updates."""
  upd = _updates()
  byz = jnp.array([False, False, True, False, False, False])
  eta = 0.5
  out = byzantine.model_replacement(server_lr=eta)(upd, byz, jax.random.key(0))
  _honest_rows_unchanged(out, upd, byz)
  g = {k: jnp.ones(v.shape[1:]) for k, v in upd.items()}
  for k in upd:
    new = np.asarray(g[k] + eta * ra.mean(out)[k])
    x_attacker = np.asarray(g[k] + upd[k][2])
    honest_sum = np.asarray(upd[k])[np.asarray(~byz)].sum(0)
    np.testing.assert_allclose(new, x_attacker + eta / 6 * honest_sum, rtol=1e-5, atol=1e-5)
  explicit = byzantine.model_replacement(gamma=12.0)(upd, byz, jax.random.key(0))
  np.testing.assert_allclose(np.asarray(explicit['b'])[2], 12.0 * np.asarray(upd['b'])[2],
                             rtol=1e-6)


def test_model_replacement_with_client_weights_closed_form():
  """Weighted server mean G + eta * sum w_i u_i / W with gamma = W / (eta w_a): the new
  global model is X + (eta / W) sum_honest w_i u_i, exactly X with zero honest updates."""
  upd = _updates()
  byz = jnp.array([False, False, True, False, False, False])
  w = np.array([1.0, 5.0, 2.0, 7.0, 3.0, 10.0])
  eta = 0.5
  g = {k: jnp.ones(v.shape[1:]) for k, v in upd.items()}
  for how in ('factory', 'call'):
    if how == 'factory':
      out = byzantine.model_replacement(server_lr=eta, client_weights=w)(upd, byz, None)
    else:
      out = jax.jit(lambda u, ww: byzantine.model_replacement(server_lr=eta)(
          u, byz, None, weights=ww))(upd, jnp.asarray(w))
    _honest_rows_unchanged(out, upd, byz)
    for k in upd:
      agg = np.tensordot(w / w.sum(), np.asarray(out[k], np.float64), (0, 0))
      new = np.asarray(g[k]) + eta * agg
      x_attacker = np.asarray(g[k] + upd[k][2])
      honest = np.tensordot(w[~np.asarray(byz)], np.asarray(upd[k])[~np.asarray(byz)],
                            (0, 0))
      np.testing.assert_allclose(new, x_attacker + eta / w.sum() * honest, rtol=1e-5,
                                 atol=1e-5, err_msg=how)


def _replacement_problem():
  """A linear model and 4 clients of sizes 3, 9, 4, 12 whose inputs are 0 (zero gradient):
  ``(apply_fn, objective, sizes, clients, x, y, p0)``."""
  apply_fn = lambda p, x: x @ p['w']
  objective = lambda f, p, x, y, key: jnp.sum(f(p, x), axis=-1)    # gradient: x
  sizes = [3, 9, 4, 12]
  clients = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
  x = jnp.zeros((sum(sizes), 2))
  y = jnp.zeros((sum(sizes),), jnp.int32)
  return apply_fn, objective, sizes, clients, x, y, {'w': jnp.full((2, 3), 0.25)}


def test_model_replacement_through_weighted_fedavg_lands_on_the_target():
  """make_fedavg(client_weighting='num_examples'), every client, honest clients with zero
  gradient (inputs 0), the attacker trains on inputs 1: one round makes the global model
  exactly X = G + u_attacker, with factory client_weights or with the round's weights that
  make_fedavg passes. The uniform boost n / eta misses it (w_a != W / n)."""
  from jaxsec.federated import fedavg  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  apply_fn, objective, sizes, clients, x, y, p0 = _replacement_problem()
  lr, eta = 0.1, 0.5
  # one full-batch step on inputs 1: u_attacker = -lr * ones
  x_target = np.asarray(p0['w']) - lr
  for attack, exact in ((byzantine.model_replacement(server_lr=eta, client_weights=sizes),
                         True), (byzantine.model_replacement(server_lr=eta), True),
                        (byzantine.model_replacement(server_lr=eta, gamma=4 / eta), False)):
    fed = fedavg.make_fedavg(
        apply_fn, client_optimizer=optax.sgd(lr), batch_size=64, local_steps=1,
        server_lr=eta, client_weighting='num_examples', objective=objective,
        update_attack=attack, data_attack=lambda xb, yb, k: (jnp.ones_like(xb), yb))
    new = fedavg.run(fed, p0, x, y, clients=clients, num_rounds=1, key=jax.random.key(0),
                     byzantine_clients=[0]).params['w']
    if exact:
      np.testing.assert_allclose(np.asarray(new), x_target, rtol=1e-6, atol=1e-7)
    else:
      assert float(np.abs(np.asarray(new) - x_target).max()) > 0.05


def test_data_attacks():
  x = jnp.zeros((10, 5, 5, 1))
  y = jnp.arange(10, dtype=jnp.int32) % 4
  _, yf = byzantine.label_flip(num_classes=4)(x, y, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(yf), 3 - np.asarray(y))
  _, yt = byzantine.label_flip(num_classes=4, source=1, target=2)(x, y, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(yt), np.where(np.asarray(y) == 1, 2, np.asarray(y)))
  bd = byzantine.backdoor(target_label=3, fraction=0.3, size=2)
  xb, yb = bd(x, y, jax.random.key(0))
  hit = np.asarray(xb).reshape(10, -1).max(1) > 0
  assert hit.sum() == 3
  assert np.all(np.asarray(yb)[hit] == 3)
  np.testing.assert_array_equal(np.asarray(yb)[~hit], np.asarray(y)[~hit])
  np.testing.assert_array_equal(np.asarray(xb)[hit][:, 3:, 3:, 0], 1.0)


def test_bad_arguments_raise_value_error_naming_the_value():
  with pytest.raises(ValueError, match='scale=-1'):
    byzantine.sign_flip(scale=-1.0)
  with pytest.raises(ValueError, match='stddev=0'):
    byzantine.gaussian_noise(stddev=0.0)
  with pytest.raises(ValueError, match="center='mean'"):
    byzantine.gaussian_noise(stddev=1.0, center='mean')
  with pytest.raises(ValueError, match='z=-0.5'):
    byzantine.alie(z=-0.5)
  with pytest.raises(ValueError, match="statistics='all'"):
    byzantine.alie(statistics='all')
  with pytest.raises(ValueError, match="z_rule='median'"):
    byzantine.alie(z_rule='median')
  with pytest.raises(ValueError, match="z=1.5 is a fixed shift; z_rule='common'"):
    byzantine.alie(z=1.5, z_rule='common')
  with pytest.raises(ValueError, match="rule='x'"):
    byzantine.alie_z_max(10, 2, rule='x')
  with pytest.raises(ValueError, match='client_weights='):
    byzantine.model_replacement(client_weights=[1.0, -1.0])
  with pytest.raises(ValueError, match='client weights have shape \\(3,\\); the round has 6'):
    byzantine.model_replacement(client_weights=[1, 2, 3])(_updates(), BYZ, None)
  with pytest.raises(ValueError, match='epsilon=0'):
    byzantine.ipm(epsilon=0.0)
  with pytest.raises(ValueError, match='gamma=-2'):
    byzantine.model_replacement(gamma=-2.0)
  with pytest.raises(ValueError, match='num_classes=1'):
    byzantine.label_flip(num_classes=1)
  with pytest.raises(ValueError, match='source=1, target=None'):
    byzantine.label_flip(num_classes=3, source=1)
  with pytest.raises(ValueError, match='source=2 equals target=2'):
    byzantine.label_flip(num_classes=3, source=2, target=2)
  with pytest.raises(ValueError, match='fraction=1.5'):
    byzantine.backdoor(target_label=0, fraction=1.5)
  with pytest.raises(ValueError, match=r'byzantine has shape \(3,\)'):
    byzantine.sign_flip()(_updates(), jnp.zeros(3, bool), jax.random.key(0))


def test_model_replacement_through_sampled_weighted_fedavg_lands_on_the_target():
  """Client sampling (2 of 4 per round) + num_examples weighting: make_fedavg passes the
  round's weights (the sampled clients' example counts) to the attack, so the boost
  W_round / (eta w_attacker) makes the global model exactly X = G + u_attacker in a round
  where the attacker is sampled; the factory-time uniform boost would miss it."""
  from jaxsec.federated import fedavg  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  apply_fn, objective, sizes, clients, x, y, p0 = _replacement_problem()
  lr, eta = 0.1, 0.5
  x_target = np.asarray(p0['w']) - lr
  fed = fedavg.make_fedavg(
      apply_fn, client_optimizer=optax.sgd(lr), batch_size=64, local_steps=1,
      server_lr=eta, clients_per_round=2, client_weighting='num_examples',
      objective=objective, update_attack=byzantine.model_replacement(server_lr=eta),
      data_attack=lambda xb, yb, k: (jnp.ones_like(xb), yb))
  lists, counts = fedavg.client_index_lists(clients, sum(sizes))
  byz = jnp.array([False, False, False, True])   # the largest client attacks
  seen = 0
  for r in range(12):
    new, info = fed.round(p0, x, y, jnp.asarray(lists), jnp.asarray(counts), byz,
                          jax.random.key(r))
    if not bool(np.any(np.asarray(info.byzantine))):
      np.testing.assert_allclose(np.asarray(new['w']), np.asarray(p0['w']), atol=1e-7)
      continue
    seen += 1
    np.testing.assert_allclose(np.asarray(new['w']), x_target, rtol=1e-6, atol=1e-7,
                               err_msg=f'round key {r}, clients {np.asarray(info.clients)}')
  assert seen >= 2
