"""STRIP (Gao et al. 2019): closed-form entropies, the normal-fit threshold, and trojaned
digits told apart from clean ones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from jaxsec import models
from jaxsec.defenses.inference import detectors
from jaxsec.defenses.inference.strip import strip_entropy, strip_score, strip_threshold
from tests.defenses import backdoor_bed

_CLEAN = jnp.asarray(np.random.RandomState(0).rand(30, 4, 4, 1), jnp.float32)


def test_constant_predictors_have_closed_form_entropy():
  x = jnp.asarray(np.random.RandomState(1).rand(7, 4, 4, 1), jnp.float32)
  uniform = lambda z: jnp.zeros((z.shape[0], 8))            # p = 1/8 everywhere
  h = strip_entropy(uniform, _CLEAN, num_samples=5, key=jax.random.key(0))(x)
  np.testing.assert_allclose(h, 3.0, rtol=1e-6)              # log2(8) bits
  two = lambda z: jnp.tile(jnp.array([[0.0, jnp.log(3.0)]]), (z.shape[0], 1))  # p = 1/4, 3/4
  h2 = -0.25 * np.log2(0.25) - 0.75 * np.log2(0.75)
  s = strip_score(two, _CLEAN, num_samples=3, key=jax.random.key(0), batch_size=2)(x)
  np.testing.assert_allclose(s, -h2, rtol=1e-6)


def test_superimposition_weights_and_clipping():
  seen = []

  def spy(z):     # records the perturbed inputs from inside the jitted block
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), z)
    return jnp.zeros((z.shape[0], 2))
  x = jnp.full((2, 4, 4, 1), 0.8)
  clean = jnp.full((3, 4, 4, 1), 0.5)
  strip_entropy(spy, clean, num_samples=4, key=jax.random.key(0))(x)
  np.testing.assert_allclose(seen[-1], 1.0)                  # 0.8 + 0.5 saturates at 1
  strip_entropy(spy, clean, num_samples=4, key=jax.random.key(0), weights=(0.5, 0.5))(x)
  np.testing.assert_allclose(seen[-1], 0.65, rtol=1e-6)      # ART's blend
  assert seen[-1].shape == (8, 4, 4, 1)


def test_threshold_is_the_normal_quantile():
  rng = np.random.RandomState(0)
  h = rng.normal(2.0, 0.3, size=500)
  t = strip_threshold(-h, frr=0.05)
  mu, sd = h.mean(), h.std()
  np.testing.assert_allclose(t, -(mu - 1.6448536269514722 * sd), rtol=1e-9)
  assert abs(np.mean(-h > t) - 0.05) < 0.02                 # about frr of clean rejected
  np.testing.assert_allclose(-t, stats.norm.ppf(0.05, mu, sd))


def test_bad_input_is_refused():
  f = lambda z: jnp.zeros((z.shape[0], 2))
  with pytest.raises(ValueError, match='num_samples'):
    strip_entropy(f, _CLEAN, num_samples=0, key=jax.random.key(0))
  with pytest.raises(ValueError, match='weights'):
    strip_entropy(f, _CLEAN, key=jax.random.key(0), weights=(1.0,))
  with pytest.raises(ValueError, match='x_clean'):
    strip_entropy(f, _CLEAN[:0], key=jax.random.key(0))
  with pytest.raises(ValueError, match='frr'):
    strip_threshold(np.zeros(5), frr=1.0)
  with pytest.raises(ValueError, match='clean_scores'):
    strip_threshold(np.zeros(1))
  with pytest.raises(ValueError, match='x has shape'):
    strip_entropy(f, _CLEAN, key=jax.random.key(0))(jnp.zeros((2, 5, 5, 1)))


@pytest.mark.slow
def test_trojaned_inputs_have_low_entropy():
  b = backdoor_bed.bed()
  f = models.logits_fn(b.model, b.params)
  score = strip_score(f, b.x_test[:200], num_samples=20, key=jax.random.key(0))
  clean = np.asarray(score(b.x_test[200:400]))
  trojan = np.asarray(score(backdoor_bed.trigger(b.x_test[200:400])))
  labels = np.r_[np.zeros(200), np.ones(200)]
  assert roc_auc_score(labels, np.r_[clean, trojan]) > 0.95
  t = strip_threshold(clean, frr=0.05)
  assert np.mean(trojan > t) > 0.9 and np.mean(clean > t) < 0.15
  # the package's detector plumbing takes STRIP as any score function
  assert detectors.detection_report(clean, trojan)['auc'] > 0.95
