"""Sanitisers find planted outliers on constructed data; precision / recall by hand."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.poisoning import learners
from jaxsec.defenses.data import sanitize


def _clusters(n=120, d=5, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = 0.5 * rng.randn(n, d).astype(np.float32)
  x[:, 0] += 3.0 * (2 * y - 1)
  return x, y


def test_precision_recall_by_hand():
  keep = np.array([True, False, False, True, True])
  poison = np.array([False, True, False, True, False])
  pr = sanitize.precision_recall(keep, poison)
  assert pr['precision'] == 0.5 and pr['recall'] == 0.5 and pr['removed'] == 2
  assert sanitize.precision_recall(np.ones(3, bool), np.zeros(3, bool))['recall'] == 1.0
  with pytest.raises(ValueError, match='shapes'):
    sanitize.precision_recall(keep, poison[:4])


def test_sphere_and_slab_find_planted_outliers():
  x, y = _clusters()
  poison = np.zeros(120, bool)
  poison[[3, 10, 50, 77]] = True
  x[poison, 1] += 8.0      # far from the centroid, orthogonal to the class direction
  x[[20, 41], 0] += 6.0 * (2 * y[[20, 41]] - 1)  # far along the class direction
  keep = sanitize.sphere(jnp.asarray(x), jnp.asarray(y), num_classes=2, fraction=0.05)
  assert not np.asarray(keep)[poison].any()
  assert np.asarray(keep).sum() == 120 - 6   # round(0.05 * 60) per class
  slab_keep = np.asarray(sanitize.slab(jnp.asarray(x), jnp.asarray(y), num_classes=2,
                                       fraction=0.02))
  assert not slab_keep[[20, 41]].any()
  rad = sanitize.sphere(jnp.asarray(x), jnp.asarray(y), num_classes=2, radius=5.0)
  assert not np.asarray(rad)[poison].any() and np.asarray(rad)[~poison].mean() > 0.9
  with pytest.raises(ValueError, match='exactly one'):
    sanitize.sphere(jnp.asarray(x), jnp.asarray(y), num_classes=2)


def test_knn_finds_flipped_labels_and_relabels():
  x, y = _clusters()
  flipped = np.zeros(120, bool)
  flipped[::12] = True
  yp = np.where(flipped, 1 - y, y).astype(np.int32)
  keep = np.asarray(sanitize.knn_label_sanitize(jnp.asarray(x), jnp.asarray(yp),
                                                num_classes=2, k=7, eta=0.7))
  pr = sanitize.precision_recall(keep, flipped)
  assert pr['recall'] == 1.0 and pr['precision'] == 1.0
  fixed = sanitize.knn_relabel(jnp.asarray(x), jnp.asarray(yp), num_classes=2, k=7, eta=0.7)
  np.testing.assert_array_equal(np.asarray(fixed), y)


def test_spectral_signatures_and_robust_pca_find_planted_subpopulation():
  rng = np.random.RandomState(1)
  x, y = _clusters(200, d=8)
  poison = np.zeros(200, bool)
  poison[np.flatnonzero(y == 1)[:10]] = True
  x[poison] += np.array([0, 0, 0, 0, 0, 0, 2.5, 2.5], np.float32)   # a shifted cluster
  keep = np.asarray(sanitize.spectral_signatures(jnp.asarray(x), jnp.asarray(y),
                                                 num_classes=2, fraction=0.15))
  assert sanitize.precision_recall(keep, poison)['recall'] == 1.0
  score = np.asarray(sanitize.spectral_signature_scores(jnp.asarray(x), jnp.asarray(y),
                                                        num_classes=2))
  c1 = x[y == 1] - x[y == 1].mean(0)          # the score by hand for class 1
  v = np.linalg.svd(c1, full_matrices=False)[2][0]
  np.testing.assert_allclose(score[y == 1], (c1 @ v) ** 2, rtol=1e-3, atol=1e-4)
  assert score[poison].min() > np.median(score[y == 1])
  xr = rng.randn(150, 6).astype(np.float32) @ np.diag([3, 3, .1, .1, .1, .1]).astype(
      np.float32)
  off = np.zeros(150, bool)
  off[:6] = True
  xr[off, 4] += 2.0    # leaves the 2-D principal subspace
  k2 = np.asarray(sanitize.robust_pca(jnp.asarray(xr), fraction=0.05, rank=2))
  assert sanitize.precision_recall(k2, off)['recall'] == 1.0


def test_roni_rejects_harmful_points():
  x, y = _clusters(60, d=3)
  xv, yv = _clusters(100, d=3, seed=5)
  bad = np.zeros(60, bool)
  bad[:6] = True
  yb = np.where(bad, 1 - y, y).astype(np.int32)    # flipped labels
  train_fn = learners.logreg_train_fn(num_classes=2, l2=0.01, num_steps=8, implicit=False)

  def score_fn(p, xx, yy):
    return -jnp.mean(jax.nn.softplus(-(2.0 * yy - 1) * learners.linear_apply(p, xx)[:, 0]))
  keep, impact = sanitize.roni(jnp.asarray(x), jnp.asarray(yb), train_fn=train_fn,
                               score_fn=score_fn, x_val=jnp.asarray(xv), y_val=jnp.asarray(yv),
                               key=jax.random.key(0), base_size=20, num_trials=4,
                               fraction=0.1, return_impact=True)
  pr = sanitize.precision_recall(np.asarray(keep), bad)
  assert pr['recall'] == 1.0
  assert float(jnp.max(impact[:6])) < float(jnp.min(impact[6:]))


def test_empirical_mean_test_flags_drift():
  rng = np.random.RandomState(0)
  clean = rng.randn(300, 3).astype(np.float32)
  drift = rng.randn(100, 3).astype(np.float32) + np.linspace(0, 3, 100)[:, None]
  x = jnp.asarray(np.concatenate([clean, drift]))
  keep = np.asarray(sanitize.empirical_mean_test(x, reference_size=200, window=20,
                                                 alpha=0.01))
  assert keep[:200].all()
  assert keep[200:300].mean() > 0.9 and keep[-40:].mean() < 0.05


@pytest.mark.parametrize('window', [10, 40, 60])
def test_empirical_mean_test_clean_drop_rate_is_alpha(window):
  # 1000 clean Gaussian streams; reference 60 rows, 100 stream rows; window up to the
  # reference size. A threshold calibrated on the reference's own windows drops 10-100%.
  r, alpha = 60, 0.05
  xs = jax.random.normal(jax.random.key(window), (1000, r + 100, 3))
  test = jax.jit(jax.vmap(functools.partial(
      sanitize.empirical_mean_test, reference_size=r, window=window, alpha=alpha)))
  keep = np.asarray(test(xs))
  assert keep[:, :r].all()
  assert abs((1.0 - keep[:, r:].mean()) - alpha) < 0.012


def test_empirical_mean_test_errors():
  x = jnp.zeros((20, 5))
  with pytest.raises(ValueError, match='reference_size=5 must exceed the dimension 5'):
    sanitize.empirical_mean_test(x, reference_size=5, window=2)
  with pytest.raises(ValueError, match='alpha=1.0'):
    sanitize.empirical_mean_test(x, reference_size=10, window=2, alpha=1.0)


def test_noise_augment_and_errors():
  x, y = _clusters(10)
  xa, ya = sanitize.noise_augment(jnp.asarray(x), jnp.asarray(y), jax.random.key(0),
                                  sigma=0.1, copies=3)
  assert xa.shape == (40, 5) and ya.shape == (40,)
  np.testing.assert_array_equal(np.asarray(ya[10:20]), y)
  assert 0.05 < float(jnp.std(xa[10:] - jnp.tile(jnp.asarray(x), (3, 1)))) < 0.15
  with pytest.raises(ValueError, match='fraction'):
    sanitize.slab(jnp.asarray(x), jnp.asarray(y), num_classes=2, fraction=1.0)
  with pytest.raises(ValueError, match='label 2'):
    sanitize.sphere(jnp.asarray(x), jnp.asarray(y) + 1, num_classes=2, fraction=0.1)
