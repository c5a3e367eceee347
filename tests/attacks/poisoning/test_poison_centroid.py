"""Kloft-Laskov centroid poisoning (closed form for average-out) and signature noise."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning


def test_average_out_greedy_attack_moves_r_over_n_per_point():
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(20, 3).astype(np.float32))
  c0 = np.asarray(x).mean(0)
  target = jnp.asarray(c0 + np.array([10.0, 0, 0], np.float32))
  r, n = 2.0, 20
  atk = poisoning.centroid_poisoning(target=target, radius=r, num_points=30)
  out = atk(x, jnp.zeros(20, jnp.int32), jax.random.key(0))
  assert out.x.shape == (50, 3) and np.asarray(out.info['accepted']).all()
  d = np.asarray(out.info['target_distance'])
  expect = 10.0 - r * (1 - 1e-4) * np.arange(1, 31) / n     # D_i = i r / n exactly
  np.testing.assert_allclose(d, expect, rtol=1e-4, atol=1e-4)
  # the target gets inside the sphere after ceil(n (10 - r) / r) points
  final = np.asarray(out.info['final_center'])
  assert np.linalg.norm(final - np.asarray(target)) == pytest.approx(expect[-1], abs=1e-3)


def test_infinite_horizon_displacement_is_harmonic_not_linear():
  """Kloft-Laskov's infinite horizon (centre = mean of all points so far): the j-th greedy
  point moves the centre by r / (n + j), D_i = r (H_{n+i} - H_n) ~ r log(1 + i / n);
  average-out (finite horizon) moves it i r / n."""
  rng = np.random.RandomState(0)
  n, r, k = 20, 2.0, 60
  x = jnp.asarray(rng.randn(n, 3).astype(np.float32))
  c0 = np.asarray(x).mean(0)
  target = jnp.asarray(c0 + np.array([100.0, 0, 0], np.float32))
  r_eff = r * (1 - 1e-4)
  disp = {}
  for rule in ('infinite', 'average'):
    out = poisoning.centroid_poisoning(target=target, radius=r, num_points=k, rule=rule)(x, jnp.zeros(n, jnp.int32),
                                                         jax.random.key(0))
    assert np.asarray(out.info['accepted']).all()
    disp[rule] = 100.0 - np.asarray(out.info['target_distance'], np.float64)
  harmonic = r_eff * np.cumsum(1.0 / (n + np.arange(1, k + 1)))
  np.testing.assert_allclose(disp['infinite'], harmonic, rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(disp['average'], r_eff * np.arange(1, k + 1) / n, rtol=1e-4,
                             atol=2e-4)
  # after 3n points: log(4) ~ 1.39 radii against 3 radii
  assert disp['infinite'][-1] / r == pytest.approx(np.log((n + k + 0.5) / (n + 0.5)),
                                                   abs=1e-3)
  assert disp['average'][-1] > 2 * disp['infinite'][-1]
  # a rejected point leaves the count unchanged
  st = poisoning.centroid_init(x)
  st2, acc = poisoning.centroid_update(st, jnp.full((3,), 50.0), jax.random.key(0),
                                       radius=r, rule='infinite')
  assert not bool(acc) and float(st2.count) == n
  st3, acc = poisoning.centroid_update(st, jnp.asarray(c0), jax.random.key(0), radius=r,
                                       rule='infinite')
  assert bool(acc) and float(st3.count) == n + 1
  with pytest.raises(ValueError, match='state.count is None'):
    poisoning.centroid_update(poisoning.CentroidState(st.center, st.window),
                              jnp.asarray(c0), jax.random.key(0), radius=r, rule='infinite')


def test_other_rules_and_rejection():
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(10, 2).astype(np.float32))
  st = poisoning.centroid_init(x)
  far = jnp.full((1, 2), 100.0)
  for rule in ('average', 'random', 'nearest', 'infinite'):
    st2, acc = poisoning.centroid_update(st, far[0], jax.random.key(0), radius=1.0, rule=rule)
    assert not bool(acc)
    np.testing.assert_array_equal(np.asarray(st2.center), np.asarray(st.center))
    _, info = poisoning.centroid_stream(st, jnp.zeros((15, 2)), jax.random.key(0), radius=3.0,
                                        rule=rule, is_attack=jnp.ones(15, bool),
                                        target=jnp.asarray([20.0, 0.0]))
    assert np.asarray(info['accepted']).all()
    dist = np.asarray(info['target_distance'])
    d0 = np.linalg.norm(np.asarray(st.center) - np.array([20.0, 0]))
    if rule == 'nearest':
      # the boundary point replaces the previous attack point: the naive greedy attack
      # stalls against nearest-out (documented; Kloft-Laskov's optimal attack is needed)
      assert dist[-1] < d0 and dist[-1] > d0 - 0.5
    else:
      # ~ 15 r / n = 4.5 for average-out, r (H_25 - H_10) = 2.67 for the infinite horizon
      assert dist[-1] < d0 - (2.5 if rule == 'infinite' else 3.0)
  with pytest.raises(ValueError, match='rule'):
    poisoning.centroid_update(st, far[0], jax.random.key(0), radius=1.0, rule='oldest')
  with pytest.raises(ValueError, match='exactly one'):
    poisoning.centroid_poisoning(target=jnp.zeros(2), radius=1.0)


def test_signature_noise_injection_misleads_conjunction_signature():
  rng = np.random.RandomState(0)
  v, inv, fake = 40, [0, 1, 2], [3, 4]
  innoc = (rng.rand(200, v) < 0.1).astype(np.float32)
  innoc[:, :5] = 0
  worms = (rng.rand(50, v) < 0.1).astype(np.float32)
  worms[:, :5] = 0
  worms[:, inv] = 1
  xs, ys = jnp.asarray(worms), jnp.ones(50, jnp.int32)
  sig = poisoning.conjunction_signature(xs, jnp.asarray(innoc), coverage=0.9)
  assert set(np.flatnonzero(np.asarray(sig))) == set(inv)
  variant = jnp.asarray(worms)
  assert bool(jnp.all(poisoning.signature_matches(sig, variant)))
  assert not bool(jnp.any(poisoning.signature_matches(sig, jnp.asarray(innoc))))
  atk = poisoning.signature_noise_poisoning(fraction=0.2, invariant_tokens=inv,
                                            fake_tokens=fake)
  out = atk(xs, ys, jax.random.key(0))
  assert out.x.shape == (60, v) and np.asarray(out.info['poison_mask']).sum() == 10
  np.testing.assert_array_equal(np.asarray(out.x[:50]), worms)
  assert not np.asarray(out.x[50:, inv]).any() and np.asarray(out.x[50:, fake]).all()
  sig2 = poisoning.conjunction_signature(out.x, jnp.asarray(innoc), coverage=0.9)
  assert not np.asarray(sig2).any()              # 50/60 < 0.9: no signature survives
  assert not bool(jnp.any(poisoning.signature_matches(sig2, variant)))
  weak = poisoning.signature_noise_poisoning(fraction=0.1, invariant_tokens=inv)(
      xs, ys, jax.random.key(0))
  sig3 = poisoning.conjunction_signature(weak[0], jnp.asarray(innoc), coverage=0.9)
  assert set(np.flatnonzero(np.asarray(sig3))) == set(inv)   # 50/55 >= 0.9: survives
  with pytest.raises(ValueError, match='disjoint'):
    poisoning.signature_noise_poisoning(fraction=0.1, invariant_tokens=[1], fake_tokens=[1])
