"""Fang et al. 2020 and Shejwalkar & Houmansadr 2021 (min-max / min-sum), and DBA."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.federated import byzantine
from jaxsec.federated import model_poisoning as mp


def _updates(k=12, d=40, seed=0):
  rng = np.random.RandomState(seed)
  return {'a': jnp.asarray(0.05 + 0.1 * rng.randn(k, d - 8), jnp.float32),
          'b': jnp.asarray(0.05 + 0.1 * rng.randn(k, 8), jnp.float32)}


def _flat(u):
  return np.concatenate([np.asarray(u['a']), np.asarray(u['b'])], axis=1)


def test_fang_krum_makes_krum_select_a_malicious_update():
  u = _updates()
  byz = jnp.arange(12) < 3
  out = jax.jit(mp.fang_krum())(u, byz, jax.random.key(0))
  x, xo = _flat(u), _flat(out)
  np.testing.assert_array_equal(xo[3:], x[3:])                 # honest rows untouched
  mal = xo[0]
  np.testing.assert_array_equal(xo[:3], np.stack([mal] * 3))
  s = np.sign(x[3:].mean(0))
  lam = -mal[0] / s[0]
  np.testing.assert_allclose(mal, -lam * s, rtol=1e-6)          # -lambda * sign(benign mean)
  # Krum (told f = 3; scores by hand) now selects a malicious row
  d = ((xo[:, None] - xo[None]) ** 2).sum(-1)
  scores = [np.sort(np.delete(d[i], i))[:12 - 3 - 2].sum() for i in range(12)]
  assert int(np.argmin(scores)) < 3
  # lambda came from the paper's bound by halvings
  bound = float(jax.jit(mp.fang_krum_lambda_bound, static_argnums=2)(jnp.asarray(x), ~byz, 3))
  ratio = np.log2(bound / lam)
  assert ratio >= -1e-5 and abs(ratio - round(ratio)) < 1e-4


def test_fang_krum_bound_by_hand():
  x = _flat(_updates(k=9, d=12, seed=1)).astype(np.float64)
  benign = np.arange(9) >= 2
  m, c, d = 9, 2, 12
  b = x[benign]
  dist = np.linalg.norm(b[:, None] - b[None], axis=-1)
  near = [np.sort(np.delete(dist[i], i))[:m - c - 2].sum() for i in range(len(b))]
  want = min(near) / ((m - 2 * c - 1) * np.sqrt(d)) + np.linalg.norm(b, axis=1).max() / np.sqrt(d)
  got = float(mp.fang_krum_lambda_bound(jnp.asarray(x, jnp.float32), jnp.asarray(benign), c))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_fang_trimmed_mean_samples_beyond_the_benign_range_against_its_direction():
  u = _updates()
  byz = jnp.arange(12) < 3
  xo = _flat(mp.fang_trimmed_mean()(u, byz, jax.random.key(1)))
  b = _flat(u)[3:]
  s, wmax, wmin = np.sign(b.mean(0)), b.max(0), b.min(0)
  lo = np.where(s > 0, np.where(wmin > 0, wmin / 2, 2 * wmin), wmax)
  hi = np.where(s > 0, wmin, np.where(wmax > 0, 2 * wmax, wmax / 2))
  assert np.all((xo[:3] >= lo - 1e-7) & (xo[:3] <= hi + 1e-7))
  assert not np.allclose(xo[0], xo[1])                       # independent draws per attacker


def _reference_search(all_updates, model_re, deviation, objective, lamda=10.0,
                      threshold_diff=1e-5):
  """A transcription of Shejwalkar & Houmansadr's our_attack_dist / our_attack_score
  (github.com/vrt1shjwlkr/NDSS21-Model-Poisoning), NumPy in float64."""
  distances = np.stack([np.linalg.norm(all_updates - u, axis=1) ** 2 for u in all_updates])
  if objective == 'min_max':
    threshold = np.max(distances)
  else:
    threshold = np.min(np.sum(distances, axis=1))
  lamda_fail, lamda_succ = lamda, 0.0
  while abs(lamda_succ - lamda) > threshold_diff:
    mal_update = model_re - lamda * deviation
    distance = np.linalg.norm(all_updates - mal_update, axis=1) ** 2
    stat = np.max(distance) if objective == 'min_max' else np.sum(distance)
    if stat <= threshold:
      lamda_succ = lamda
      lamda = lamda + lamda_fail / 2
    else:
      lamda = lamda - lamda_fail / 2
    lamda_fail = lamda_fail / 2
  return lamda_succ


@pytest.mark.parametrize('objective', ['min_max', 'min_sum'])
@pytest.mark.parametrize('deviation', ['unit_vec', 'std', 'sign'])
def test_agr_agnostic_matches_the_reference_and_meets_its_constraint(objective, deviation):
  u = _updates()
  byz = jnp.arange(12) < 3
  attack = (mp.min_max if objective == 'min_max' else mp.min_sum)(deviation=deviation)
  xo = _flat(jax.jit(attack)(u, byz, jax.random.key(0)))
  b = _flat(u)[3:].astype(np.float64)
  mu = b.mean(0)
  p = {'unit_vec': mu / np.linalg.norm(mu), 'sign': np.sign(mu),
       'std': b.std(0, ddof=1)}[deviation]
  gamma_ref = _reference_search(b, mu, p, objective)
  gamma = float(np.linalg.norm(mu - xo[0]) / np.linalg.norm(p))
  assert abs(gamma - gamma_ref) < 1e-3 * max(gamma_ref, 1.0)
  np.testing.assert_array_equal(xo[:3], np.stack([xo[0]] * 3))
  # the constraint holds, with equality up to the search tolerance: gamma + 2e-5 breaks it
  dist = lambda g: np.linalg.norm(b - (mu - g * p), axis=1) ** 2
  pair = np.linalg.norm(b[:, None] - b[None], axis=-1) ** 2
  if objective == 'min_max':
    stat, bound = (lambda g: dist(g).max()), pair.max()
  else:
    stat, bound = (lambda g: dist(g).sum()), pair.sum(1).min()
  assert stat(gamma) <= bound * (1 + 1e-5)
  assert stat(gamma + 2e-5 * max(1.0, gamma)) > bound * (1 - 1e-5)


def test_min_max_gamma_exceeds_min_sum_gamma():
  u = _updates()
  byz = jnp.arange(12) < 3
  b = _flat(u)[3:]
  mu = b.mean(0)
  g = [np.linalg.norm(mu - _flat(a()(u, byz, jax.random.key(0)))[0]) for a in (mp.min_max,
                                                                             mp.min_sum)]
  assert g[0] > g[1] > 0


def test_dba_pieces_tile_the_global_trigger():
  attack = byzantine.dba(target_label=7, fraction=1.0, num_pieces=4, bar_length=4, gap=2)
  x = jnp.zeros((2, 12, 12, 1))
  y = jnp.array([1, 2])
  pieces = []
  for i in range(4):
    xp, yp = attack(x, y, jax.random.key(0), attacker=i)
    np.testing.assert_array_equal(yp, [7, 7])
    pieces.append(np.asarray(xp[0, ..., 0]) > 0)
    assert pieces[-1].sum() == 4                              # one 1x4 bar
  union = np.any(pieces, axis=0)
  np.testing.assert_array_equal(union, np.asarray(attack.trigger(x)[0, ..., 0]) > 0)
  assert union.sum() == 16                                    # disjoint pieces
  np.testing.assert_array_equal(pieces[0], pieces[0] & ~np.any(pieces[1:], axis=0))
  np.testing.assert_array_equal(attack(x, y, jax.random.key(0), attacker=5)[0],
                                attack(x, y, jax.random.key(0), attacker=1)[0])
  with pytest.raises(ValueError, match='does not fit'):
    attack(jnp.zeros((1, 3, 3)), jnp.zeros(1, jnp.int32), jax.random.key(0))


def test_bad_hyperparameters_raise():
  with pytest.raises(ValueError, match='deviation'):
    mp.min_max(deviation='gauss')
  with pytest.raises(ValueError, match='b='):
    mp.fang_trimmed_mean(b=1.0)
  with pytest.raises(ValueError, match='statistics'):
    mp.fang_krum(statistics='all')
  with pytest.raises(ValueError, match='num_pieces'):
    byzantine.dba(target_label=0, fraction=0.1, num_pieces=0)
