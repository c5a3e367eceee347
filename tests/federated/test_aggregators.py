"""Robust aggregation: closed forms on hand-made cases, the breakdown test, pytrees, jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.federated import aggregators as ra

ROBUST = [('coordinate_median', {}), ('trimmed_mean', {'trim': 1}),
          ('krum', {'num_byzantine': 1}), ('krum', {'num_byzantine': 1, 'multi': 3}),
          ('bulyan', {'num_byzantine': 1}), ('geometric_median', {'iters': 100, 'eps': 1e-8})]


def _honest(k=6, d=3, seed=0):
  return np.random.RandomState(seed).randn(k, d).astype(np.float32)


def _krum_scores_by_hand(x, f):
  k = len(x)
  d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  return np.array([np.sort(np.delete(d[i], i))[:k - f - 2].sum() for i in range(k)])


def test_mean_median_trimmed_mean_by_hand():
  u = {'w': jnp.array([[3.0, -1.0], [1.0, 5.0], [2.0, 0.0], [10.0, 2.0], [-4.0, 1.0]])}
  np.testing.assert_allclose(ra.mean(u)['w'], [12 / 5, 7 / 5], rtol=1e-6)
  np.testing.assert_allclose(ra.coordinate_median(u)['w'], [2.0, 1.0])
  # Sorted columns: [-4, 1, 2, 3, 10] and [-1, 0, 1, 2, 5]; trim one from each end.
  np.testing.assert_allclose(ra.trimmed_mean(u, trim=1)['w'], [2.0, 1.0])
  np.testing.assert_allclose(ra.trimmed_mean(u, trim=0.2)['w'], [2.0, 1.0])   # floor(1.0)
  np.testing.assert_allclose(ra.trimmed_mean(u, trim=0)['w'], ra.mean(u)['w'])
  even = {'w': jnp.array([4.0, 1.0, 3.0, 100.0])}
  assert float(ra.coordinate_median(even)['w']) == 3.5
  assert float(ra.trimmed_mean(even, trim=1)['w']) == 3.5
  assert ra.trim_count(0.3, 10) == 3 and ra.trim_count(0.29, 10) == 2


def test_krum_picks_the_honest_point_and_scores_match_by_hand():
  x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, -0.1],
                [50.0, 50.0], [-40.0, 60.0]], np.float32)   # f = 2 far outliers
  u = {'w': jnp.asarray(x)}
  scores = ra.krum_scores(u, num_byzantine=2)
  np.testing.assert_allclose(scores, _krum_scores_by_hand(x, 2), rtol=1e-5, atol=1e-6)
  assert int(np.argmin(scores)) == 0   # the centre of the honest cross
  np.testing.assert_array_equal(ra.krum(u, num_byzantine=2)['w'], x[0])


def test_multi_krum_averages_the_lowest_scores():
  x = _honest(7, 4, seed=1)
  x[5] += 30.0
  x[6] -= 30.0
  u = {'w': jnp.asarray(x)}
  best = np.argsort(_krum_scores_by_hand(x, 2), kind='stable')[:3]
  assert not set(best) & {5, 6}
  np.testing.assert_allclose(ra.krum(u, num_byzantine=2, multi=3)['w'], x[best].mean(0),
                             rtol=1e-5)
  np.testing.assert_allclose(ra.krum(u, num_byzantine=2, multi=5)['w'], x[:5].mean(0),
                             rtol=1e-5)


def test_bulyan_stays_in_the_honest_range_under_large_outliers():
  honest = _honest(9, 5, seed=2)   # K = 11 = 4f + 3 with f = 2
  lo, hi = honest.min(0), honest.max(0)
  for attack in (np.full((2, 5), 1e6), np.array([[1e6] * 5, [-1e6] * 5]),
                 np.array([[1e6] * 5, [-3e5] * 5])):   # colluding, opposite, uneven
    x = np.concatenate([honest, attack.astype(np.float32)])
    agg = np.asarray(ra.bulyan({'w': jnp.asarray(x)}, num_byzantine=2)['w'])
    assert np.all(agg >= lo - 1e-6) and np.all(agg <= hi + 1e-6), (attack[0, 0], agg)
  sel = np.asarray(ra.bulyan_selection({'w': jnp.asarray(x)}, num_byzantine=2))
  assert sel.shape == (7,) and len(set(sel.tolist())) == 7 and not {9, 10} & set(sel.tolist())
  # f = 0: theta = beta = K, Bulyan is the mean.
  np.testing.assert_allclose(ra.bulyan({'w': jnp.asarray(honest)}, num_byzantine=0)['w'],
                             honest.mean(0), rtol=1e-5, atol=1e-6)


def test_breakdown_one_huge_outlier_breaks_only_the_mean():
  honest = _honest(6, 3, seed=3)
  lo, hi = honest.min(0), honest.max(0)
  u = {'w': jnp.asarray(np.concatenate([honest, np.full((1, 3), 1e8, np.float32)]))}
  assert np.all(np.asarray(ra.mean(u)['w']) > 1e6)
  for name, kw in ROBUST:
    agg = np.asarray(ra.aggregator(name, **kw)(u)['w'])
    assert np.all(agg >= lo - 1e-5) and np.all(agg <= hi + 1e-5), (name, agg)
  # Norm bounding does not keep the honest range but caps the outlier's pull at max_norm/K.
  nb = np.asarray(ra.norm_bounding(u, max_norm=1.0)['w'])
  assert np.linalg.norm(nb - ra.norm_bounding({'w': jnp.asarray(honest)}, max_norm=1.0)['w']
                        * 6 / 7) <= 1.0 / 7 + 1e-5


def test_non_finite_client_is_handled_by_the_robust_rules():
  honest = _honest(6, 3, seed=4)
  x = np.concatenate([honest, np.full((1, 3), np.nan, np.float32)])
  u = {'w': jnp.asarray(x)}
  for name, kw in ROBUST:
    agg = np.asarray(ra.aggregator(name, **kw)(u)['w'])
    assert np.all(np.isfinite(agg)), name
    assert np.all(agg >= honest.min(0) - 1e-5) and np.all(agg <= honest.max(0) + 1e-5), name


def test_geometric_median_closed_forms():
  # Collinear, symmetric about c along a direction v: the median is c.
  c, v = np.array([1.0, -2.0, 0.5]), np.array([0.6, 0.0, 0.8])
  pts = np.stack([c + t * v for t in (-3.0, -1.0, 0.0, 1.0, 3.0)]).astype(np.float32)
  np.testing.assert_allclose(ra.geometric_median({'p': jnp.asarray(pts)}, iters=50,
                                                 eps=1e-8)['p'], c, atol=1e-5)
  # Equilateral triangle: the Fermat point is the centroid, not the coordinate median.
  tri = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, np.sqrt(3.0)]], np.float32)
  np.testing.assert_allclose(ra.geometric_median({'p': jnp.asarray(tri)}, iters=200,
                                                 eps=1e-8)['p'], [1.0, np.sqrt(3) / 3],
                             atol=1e-4)


def test_norm_bounding_by_hand_and_traced_max_norm():
  u = {'w': jnp.array([[3.0, 4.0], [0.3, 0.4]])}
  np.testing.assert_allclose(ra.norm_bounding(u, max_norm=1.0)['w'],
                             (np.array([0.6, 0.8]) + np.array([0.3, 0.4])) / 2, rtol=1e-6)
  sweep = jax.vmap(lambda m: ra.norm_bounding(u, max_norm=m)['w'])(jnp.array([1.0, 10.0]))
  np.testing.assert_allclose(sweep[1], [1.65, 2.2], rtol=1e-6)


def test_pytree_structure_dtypes_and_jit():
  rng = np.random.RandomState(5)
  u = {'a': jnp.asarray(rng.randn(7, 2, 3), jnp.float32),
       'b': (jnp.asarray(rng.randn(7), jnp.bfloat16), jnp.asarray(rng.randn(7, 4)))}
  rules = ROBUST + [('mean', {}), ('norm_bounding', {'max_norm': 2.0})]
  for name, kw in rules:
    fn = ra.aggregator(name, **kw)
    eager, jitted = fn(u), jax.jit(fn)(u)
    assert jax.tree_util.tree_structure(eager) == jax.tree_util.tree_structure(u)
    for e, j, l in zip(*map(jax.tree_util.tree_leaves, (eager, jitted, u)), strict=True):
      assert e.shape == l.shape[1:] and e.dtype == l.dtype, (name, e.shape, e.dtype)
      np.testing.assert_allclose(np.asarray(e, np.float32), np.asarray(j, np.float32),
                                 rtol=2e-2, atol=1e-5, err_msg=name)
  # Distances are over the whole flattened update: leaf sums equal the concatenation.
  flat = np.concatenate([np.asarray(l, np.float32).reshape(7, -1)
                         for l in jax.tree_util.tree_leaves(u)], 1)
  np.testing.assert_allclose(ra.pairwise_sq_distances(u),
                             ((flat[:, None] - flat[None]) ** 2).sum(-1), rtol=1e-4)


def test_bad_arguments_raise_naming_the_value():
  u = {'w': jnp.zeros((5, 2))}
  with pytest.raises(ValueError, match=r'num_byzantine=2 needs K > .*6.*K=5'):
    ra.krum(u, num_byzantine=2)
  with pytest.raises(ValueError, match=r'num_byzantine=1 needs K >= .*7.*K=5'):
    ra.bulyan(u, num_byzantine=1)
  with pytest.raises(ValueError, match='trim=-1'):
    ra.trimmed_mean(u, trim=-1)
  with pytest.raises(ValueError, match=r'trim=3 removes 3 .* K=5'):
    ra.trimmed_mean(u, trim=3)
  with pytest.raises(ValueError, match='trim=0.5'):
    ra.aggregator('trimmed_mean', trim=0.5)
  with pytest.raises(ValueError, match='multi=5'):
    ra.krum(u, num_byzantine=1, multi=5)
  with pytest.raises(ValueError, match='num_byzantine=-1'):
    ra.aggregator('krum', num_byzantine=-1)
  with pytest.raises(ValueError, match='max_norm=0.0'):
    ra.aggregator('norm_bounding', max_norm=0.0)
  with pytest.raises(ValueError, match="name='median'"):
    ra.aggregator('median')
  with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['f'\]"):
    ra.aggregator('krum', f=1)
  with pytest.raises(ValueError, match=r"needs hyperparameter\(s\) \['trim'\]"):
    ra.aggregator('trimmed_mean')
  with pytest.raises(ValueError, match=r"updates\['b'\] has 4 clients"):
    ra.mean({'a': jnp.zeros((5, 2)), 'b': jnp.zeros((4,))})
  with pytest.raises(ValueError, match='int32.*floating'):
    ra.coordinate_median({'w': jnp.zeros((5, 2), jnp.int32)})
