"""Membership scores (stable, closed forms), threshold calibration, label-only scores."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec.attacks import privacy as priv
from jaxsec.attacks.privacy import membership


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def test_logit_confidence_matches_probability_form_and_stays_finite():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(20, 5)) * 3
  y = rng.integers(0, 5, 20)
  p = _np_softmax(z)[np.arange(20), y]
  want = np.log(p / (1 - p))
  got = np.asarray(priv.logit_confidence(jnp.asarray(z, jnp.float32), jnp.asarray(y)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # p_y rounds to 1.0 in float32 here; the log-sum-exp form is still exact.
  z = jnp.array([[60.0, 0.0, 0.0]])
  assert float(priv.logit_confidence(z, jnp.array([0]))[0]) == pytest.approx(60 - np.log(2))
  assert float(priv.loss_score(z, jnp.array([0]))[0]) == pytest.approx(-2 * np.exp(-60),
                                                                    rel=1e-4)


def test_scores_closed_forms():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(16, 4)) * 2
  y = rng.integers(0, 4, 16)
  zj, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.int32)
  p = _np_softmax(z)
  ce = -np.log(p[np.arange(16), y])
  np.testing.assert_allclose(priv.loss_score(zj, yj), -ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(priv.cross_entropy_loss(zj, yj),
                             optax.softmax_cross_entropy_with_integer_labels(zj, yj),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(priv.entropy_score(zj, yj), -np.log(-np.sum(p * np.log(p), -1)),
                             rtol=1e-4, atol=1e-5)
  py = p[np.arange(16), y]
  mentr = -(1 - py) * np.log(py)
  for i in range(4):
    other = y != i
    mentr = mentr - np.where(other, p[:, i] * np.log(1 - p[:, i]), 0)
  np.testing.assert_allclose(priv.modified_entropy_score(zj, yj), -np.log(mentr), rtol=1e-4,
                             atol=1e-5)
  # Confident predictions (Mentr, H ~ 1e-40 and below) stay ordered instead of tying at 0.
  conf = jnp.array([[60.0, 0.0, 0.0], [50.0, 0.0, 0.0], [40.0, 0.0, 0.0]])
  for fn in (priv.modified_entropy_score, priv.entropy_score):
    s = np.asarray(fn(conf, jnp.zeros(3, jnp.int32)))
    assert np.all(np.isfinite(s)) and s[0] > s[1] > s[2]
  # z = [60, 0, 0]: 1 - p_y ~ -log p_y ~ 2e-60 and p_i ~ -log(1 - p_i) ~ e-60, so
  # Mentr ~ 4e-120 + 2 * e-120 and -log Mentr ~ 120 - log 6 (beyond float32 as a value).
  assert float(priv.modified_entropy_score(conf, jnp.zeros(3, jnp.int32))[0]) == \
      pytest.approx(120 - np.log(6), rel=1e-5)
  pmax = p.max(-1)
  np.testing.assert_allclose(priv.confidence_score(zj, yj), np.log(pmax / (1 - pmax)),
                             rtol=1e-4, atol=1e-4)
  # Modified entropy punishes confident mistakes; entropy does not.
  conf_wrong = jnp.array([[8.0, 0.0, 0.0]])
  conf_right = conf_wrong
  assert float(priv.modified_entropy_score(conf_right, jnp.array([0]))[0]) > float(
      priv.modified_entropy_score(conf_wrong, jnp.array([1]))[0])
  assert float(priv.entropy_score(conf_right, jnp.array([0]))[0]) == float(
      priv.entropy_score(conf_wrong, jnp.array([1]))[0])


def test_bad_inputs():
  with pytest.raises(ValueError, match='y'):
    priv.loss_score(jnp.zeros((3, 4)), jnp.array([0, 1, 4]))
  with pytest.raises(ValueError, match='column'):
    priv.loss_score(jnp.zeros((3, 1)), jnp.array([0, 1, 0]))
  with pytest.raises(ValueError, match='name'):
    priv.score('nope', jnp.zeros((1, 2)), jnp.array([0]))


def test_yeom_and_calibrated_thresholds():
  train_losses = np.array([0.1, 0.2, 0.3])
  tau = priv.yeom_threshold(train_losses)
  assert tau == pytest.approx(0.2)
  losses = jnp.array([0.05, 0.2, 0.5])
  np.testing.assert_array_equal(priv.threshold_predict(-losses, -tau), [True, True, False])
  non = np.arange(100.0)
  t = priv.calibrate_threshold(non, 0.05)
  assert np.sum(non >= t) == 5 and t > 94
  assert np.sum(non >= priv.calibrate_threshold(non, 0.0)) == 0
  assert priv.calibrate_threshold(non, 1.0) == 0.0


def test_shift_and_augmentation_scores():
  x = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(1.0)
  s = membership._shift(x, 1, 0)
  assert float(s[0, 1, 0, 0]) == 1.0 and float(s.sum()) == 1.0
  s = membership._shift(x, -1, 0)   # shifted out of the image: zero fill
  assert float(s.sum()) == 0.0
  assert len(priv.translations(1)) == 5 and len(priv.translations(2)) == 13

  # Oracle: label 1 iff the left half is brighter than the right half. Flipping swaps it.
  def label_fn(v):
    return (v[:, :, :4].sum((1, 2, 3)) > v[:, :, 4:].sum((1, 2, 3))).astype(jnp.int32)
  img = jnp.zeros((2, 8, 8, 1)).at[:, 2:6, 0:3].set(1.0)
  y = jnp.array([1, 0])
  sc, mat = priv.augmentation_robustness_scores(label_fn, img, y, max_shift=1, flip=True,
                                                return_matrix=True)
  assert mat.shape == (2, 10)
  # Example 0 (label 1): every translation keeps it left, every flip moves it right -> 0.5.
  np.testing.assert_allclose(sc, [0.5, 0.5])
  np.testing.assert_allclose(priv.gap_scores(label_fn, img, y), [1.0, 0.0])
  ns = priv.noise_robustness_scores(label_fn, img, y, jax.random.key(0), sigma=0.01,
                                    num_samples=4)
  np.testing.assert_allclose(ns, [1.0, 0.0])
