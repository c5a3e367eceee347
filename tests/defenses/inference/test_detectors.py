"""Preprocessors, the DAE, detectors and detection metrics."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage
from sklearn.metrics import roc_auc_score

from jaxsec import train
from jaxsec.attacks.evasion import bpda, fgsm, pgd
from jaxsec.defenses.inference import dae, detectors, preprocessors


def test_bit_depth_reduction_levels():
  x = jnp.array([0.0, 0.2, 0.49, 0.51, 0.8, 1.0]).reshape(1, 6)
  np.testing.assert_allclose(preprocessors.bit_depth_reduction(bits=1)(x),
                             [[0, 0, 0, 1, 1, 1]])
  q = preprocessors.bit_depth_reduction(bits=3)(x)
  np.testing.assert_allclose(q * 7, jnp.round(q * 7), atol=1e-5)
  np.testing.assert_allclose(q, jnp.round(x * 7) / 7, atol=1e-6)
  q2 = preprocessors.bit_depth_reduction(bits=1, bounds=(-1.0, 1.0))(jnp.array([[-0.3, 0.2]]))
  np.testing.assert_allclose(q2, [[-1.0, 1.0]])


@pytest.mark.parametrize('size', [2, 3])
def test_median_filter_matches_scipy(size):
  x = np.random.default_rng(0).uniform(size=(2, 6, 5, 2)).astype(np.float32)
  got = preprocessors.median_filter(size=size)(jnp.asarray(x))
  want = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode='reflect')
  np.testing.assert_allclose(got, want, rtol=1e-6)


def _binary_setup():
  """Binary-valued inputs: 1-bit squeezing is the identity on clean points and undoes any
  L_inf perturbation below 0.5."""
  d, c = 16, 3
  W = jax.random.normal(jax.random.key(0), (d, c))
  f = lambda x: (x.reshape(x.shape[0], -1) - 0.5) @ W
  x = jax.random.bernoulli(jax.random.key(1), 0.5, (64, d)).astype(jnp.float32)
  y = jnp.argmax(f(x), 1)
  return f, x, y


def test_feature_squeezing_score_separates_clean_from_adversarial():
  f, x, y = _binary_setup()
  x_adv = fgsm(eps=0.3)(f, x, y, None).x_adv
  score = detectors.feature_squeezing_score(f, [preprocessors.bit_depth_reduction(bits=1)])
  s_clean, s_adv = score(x), score(x_adv)
  np.testing.assert_allclose(s_clean, 0.0, atol=1e-6)
  assert float(jnp.min(s_adv)) > 0
  rep = detectors.detection_report(s_clean, s_adv)
  assert rep['auc'] == 1.0 and rep['tpr_at_0.05_fpr'] == 1.0
  # the squeezed model classifies the adversarial points correctly
  squeezed = preprocessors.preprocessed(f, preprocessors.bit_depth_reduction(bits=1))
  np.testing.assert_array_equal(jnp.argmax(squeezed(x_adv), 1), y)


def test_detection_report_matches_sklearn_and_threshold():
  rng = np.random.default_rng(0)
  a, b = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
  rep = detectors.detection_report(a, b)
  want = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b])
  np.testing.assert_allclose(rep['auc'], want, rtol=1e-9)
  t = detectors.threshold_at_fpr(np.arange(1.0, 101.0), 0.05)
  assert t == 95.0 and np.mean(np.arange(1.0, 101.0) > t) == 0.05
  assert 0 < rep['tpr_at_0.05_fpr'] < 1


def test_detector_aware_pgd_evades_a_detector_that_plain_pgd_trips():
  # class 1 iff x1 + x2 > 1; the detector flags x2 > 0.5. From (0.45, 0.45) with eps 0.1,
  # plain PGD moves both coordinates up (detected); the joint attack must keep x2 <= 0.5.
  f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), 10 * (x[:, 0] + x[:, 1] - 1.0)], 1)
  score = lambda x: x[:, 1]
  x = jnp.full((4, 2), 0.45)
  y = jnp.zeros(4, jnp.int32)
  plain = pgd(eps=0.1, num_steps=20)(f, x, y, jax.random.key(0)).x_adv
  r_plain = detectors.defended_success(f, score, 0.5, x, y, plain)
  assert r_plain['misclassified'] == 1.0 and r_plain['misclassified_and_undetected'] == 0.0
  joint = jax.jit(detectors.detector_aware_pgd(score, threshold=0.5, eps=0.1, num_steps=50,
                                               detector_weight=10.0),
                  static_argnums=0)(f, x, y, jax.random.key(0)).x_adv
  assert float(jnp.max(jnp.abs(joint - x))) <= 0.1 + 1e-6
  r = detectors.defended_success(f, score, 0.5, x, y, joint)
  assert r['misclassified_and_undetected'] == 1.0


def test_defended_rejects_exactly_when_the_detector_fires():
  W = jax.random.normal(jax.random.key(0), (4, 3))
  f = lambda x: 1e6 * (x @ W)                    # large logits: rounding would hide s - t
  t = 0.25
  tiny = float(np.nextafter(np.float32(t), np.float32(1)))   # the smallest s > t
  s_vals = jnp.array([0.0, t, tiny, 0.3, 2.0, -1.0, t, tiny])
  score = lambda x: s_vals[:x.shape[0]] + 0.0 * x[:, 0]
  x = jax.random.normal(jax.random.key(1), (8, 4))
  z = jax.jit(detectors.defended(f, score, t))(x)
  assert z.shape == (8, 4)
  np.testing.assert_array_equal(z[:, :3], f(x))
  np.testing.assert_array_equal(jnp.argmax(z, -1) == 3, s_vals > t)
  # A binary single-logit model gets classes [0, z] and the reject class 2.
  zb = detectors.defended(lambda a: a[:, :1], score, t)(x)
  np.testing.assert_array_equal(jnp.argmax(zb, -1) == 2, s_vals > t)
  with pytest.raises(ValueError, match='scale'):
    detectors.defended(f, score, t, scale=0.0)
  with pytest.raises(ValueError, match='shape'):
    detectors.defended(f, lambda a: a[:, :2], t)(x)


def test_defended_gradient_is_classifier_max_plus_scaled_score():
  W = jnp.array([[1.0, -1.0], [0.5, 2.0]])
  f = lambda x: x @ W
  score = lambda x: jnp.sum(x ** 2, -1)
  x = jnp.array([[0.3, -0.2]])
  g = jax.grad(lambda a: detectors.defended(f, score, 0.1, scale=3.0)(a)[0, 2])(x)
  k = int(jnp.argmax(f(x)[0]))
  np.testing.assert_allclose(g[0], W[:, k] + 3.0 * 2 * x[0], rtol=1e-6)


def test_pgd_on_the_defended_model_evades_classifier_and_detector():
  # The toy of the test above: class 1 iff x1 + x2 > 1, the detector flags x2 > 0.5.
  f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), 10 * (x[:, 0] + x[:, 1] - 1.0)], 1)
  score = lambda x: x[:, 1]
  g = detectors.defended(f, score, 0.5, scale=10.0)
  x = jnp.full((4, 2), 0.45)
  y = jnp.zeros(4, jnp.int32)
  # Untargeted PGD counts the reject class as a wrong class: it "succeeds" into rejection.
  out = pgd(eps=0.1, num_steps=20)(g, x, y, jax.random.key(0))
  assert bool(jnp.all(out.info['success']))
  assert not bool(jnp.any(detectors.evasion_success(g(out.x_adv), y)))
  # Targeted at the class that is neither y nor reject, the same PGD evades both.
  x_adv = pgd(eps=0.1, num_steps=50, targeted=True)(g, x, jnp.ones(4, jnp.int32),
                                                     jax.random.key(0)).x_adv
  assert bool(jnp.all(detectors.evasion_success(g(x_adv), y)))
  r = detectors.defended_success(f, score, 0.5, x, y, x_adv)
  assert r['misclassified_and_undetected'] == 1.0


def test_learned_detector_training_set_and_score():
  f, x, y = _binary_setup()
  xd, ld = detectors.detector_training_set(fgsm(eps=0.3), f, x, y, jax.random.key(0),
                                           batch_size=32)
  assert xd.shape == (128, 16) and ld.sum() == 64 and (ld[:64] == 0).all()
  # a detector on the feature |x - 0.5| (off-grid values) separates them once trained
  det_apply = lambda p, z: (jnp.abs(z - 0.5) @ p['w'] + p['b'])
  p0 = {'w': jnp.zeros((16, 1)), 'b': jnp.zeros(1)}
  p = train.fit(det_apply, p0, xd, ld, optimizer=optax.adam(0.1), key=jax.random.key(0),
                batch_size=128, num_steps=100).params
  s = detectors.learned_score(det_apply, p)(jnp.asarray(xd))
  rep = detectors.detection_report(s[:64], s[64:])
  assert rep['auc'] > 0.99


def test_dae_trains_and_composes_with_bpda():
  x = jax.random.bernoulli(jax.random.key(1), 0.5, (64, 4, 4, 1)).astype(jnp.float32)
  p0 = dae.init(jax.random.key(0), (4, 4, 1), hidden=(32,))
  out = dae.apply(p0, x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  obj = dae.denoising_objective(noise_std=0.2)
  before = float(jnp.mean(obj(dae.apply, p0, x, None, jax.random.key(3))))
  p = train.fit(dae.apply, p0, x, jnp.zeros(64, jnp.int32), optimizer=optax.adam(1e-2),
                key=jax.random.key(2), batch_size=64, num_steps=150, objective=obj).params
  after = float(jnp.mean(obj(dae.apply, p, x, None, jax.random.key(3))))
  assert after < 0.3 * before
  clf = lambda z: z.reshape(z.shape[0], -1)[:, :3]
  defended = preprocessors.preprocessed(clf, lambda z: dae.apply(p, z))
  g = jax.grad(lambda z: jnp.sum(defended(z)))(x)
  g_bpda = jax.grad(lambda z: jnp.sum(clf(bpda(lambda u: dae.apply(p, u))(z))))(x)
  assert np.all(np.isfinite(g)) and float(jnp.abs(g_bpda).sum()) > 0
  with pytest.raises(ValueError, match='hidden'):
    dae.init(jax.random.key(0), (4,), hidden=(0,))
