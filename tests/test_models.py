import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import losses
from jaxsec import models


@pytest.mark.parametrize('name,shape', [('logreg', (3, 28, 28, 1)), ('svm', (3, 30)),
                                        ('mlp', (3, 64)), ('cnn', (3, 28, 28, 1)),
                                        ('resnet', (3, 32, 32, 3))])
def test_shapes_and_purity(name, shape):
  m = models.get(name, num_classes=10)
  p = models.init(m, jax.random.key(0), (1,) + shape[1:])
  x = jax.random.uniform(jax.random.key(1), shape)
  out = jax.jit(m.apply)(p, x)
  assert out.shape == (3, 10)
  np.testing.assert_allclose(out, m.apply(p, x), rtol=1e-5, atol=1e-5)
  # logits_fn is a pure closure x -> logits (the white-box attack contract)
  f = models.logits_fn(m, p)
  np.testing.assert_allclose(f(x), out, rtol=1e-5, atol=1e-5)


def test_linear_models_are_affine():
  m = models.get('svm', num_classes=1)
  p = models.init(m, jax.random.key(0), (1, 5))
  x1, x2 = jnp.ones((1, 5)), 3 * jnp.ones((1, 5))
  mid = m.apply(p, 2 * jnp.ones((1, 5)))
  np.testing.assert_allclose(mid, (m.apply(p, x1) + m.apply(p, x2)) / 2, rtol=1e-5)


def test_dropout_only_in_training():
  m = models.get('mlp', num_classes=3, hidden=(16,), dropout=0.5)
  p = models.init(m, jax.random.key(0), (1, 8))
  x = jnp.ones((4, 8))
  a = m.apply(p, x)
  np.testing.assert_allclose(a, m.apply(p, x), rtol=1e-6)
  b = m.apply(p, x, train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(a, b)


def test_unknown_and_bad_args():
  with pytest.raises(ValueError, match="name='vgg'"):
    models.get('vgg')
  with pytest.raises(ValueError, match='num_classes=0'):
    models.get('mlp', num_classes=0)
  with pytest.raises(ValueError, match='dropout=1.5'):
    models.get('cnn', dropout=1.5)


def test_losses_closed_forms():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  y = jnp.array([0])
  ce = np.log(np.exp(2) + 1 + np.exp(-1)) - 2
  np.testing.assert_allclose(losses.cross_entropy(logits, y), [ce], rtol=1e-6)
  # multiclass hinge: max(0, 1 + max_{j!=y} f_j - f_y) = max(0, 1 + 0 - 2) = 0
  np.testing.assert_allclose(losses.hinge(logits, y), [0.0])
  np.testing.assert_allclose(losses.hinge(logits, jnp.array([2])), [1 + 2 + 1])
  # binary hinge with one score
  f = jnp.array([[0.5], [-2.0]])
  np.testing.assert_allclose(losses.hinge(f, jnp.array([1, 1])), [0.5, 3.0])
  assert losses.predict(f).tolist() == [1, 0]
  with pytest.raises(ValueError, match="name='l2'"):
    losses.get('l2')


def test_max_pool_matches_flax():
  import flax.linen as nn
  for shape in [(2, 28, 28, 3), (1, 7, 9, 2)]:
    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_allclose(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_tempered_cnn_architecture_of_papernot_2021():
  m = models.get('tempered_cnn', num_classes=10)
  p = models.init(m, jax.random.key(0), (1, 28, 28, 1))
  # Papernot et al. 2021, Table 1: 26,010 parameters on 28x28x1 inputs.
  assert sum(np.size(l) for l in jax.tree.leaves(p)) == 26010
  shapes = jax.tree.map(np.shape, p)['params']
  assert shapes['conv0']['kernel'] == (8, 8, 1, 16)
  assert shapes['conv1']['kernel'] == (4, 4, 16, 32)
  assert shapes['dense']['kernel'] == (512, 32)    # 4 x 4 x 32 after conv / pool
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  out = m.apply(p, x)
  assert out.shape == (3, 10)
  relu = models.TemperedCNN(activation='relu')
  assert not np.allclose(relu.apply(p, x), out)    # same parameters, other activation
  # conv0 under tanh: the first hidden activations lie in (-1, 1).
  _, inter = m.apply(p, x, capture_intermediates=lambda mdl, _: mdl.name == 'conv0')
  h = np.tanh(np.asarray(inter['intermediates']['conv0']['__call__'][0]))
  assert h.shape == (3, 14, 14, 16) and np.all(np.abs(h) < 1)


def test_tempered_cnn_bad_activation():
  with pytest.raises(ValueError, match="activation='gelu'"):
    models.get('tempered_cnn', activation='gelu')
  with pytest.raises(ValueError, match="activation='gelu'"):
    m = models.TemperedCNN(activation='gelu')
    models.init(m, jax.random.key(0), (1, 28, 28, 1))


@pytest.mark.parametrize('name,kwargs', [('mlp', {'hidden': (7,)}),
                                         ('cnn', {'features': (2,), 'dense': 5}),
                                         ('tempered_cnn', {})])
def test_penultimate_features_feed_the_head(name, kwargs):
  model = models.get(name, num_classes=3, **kwargs)
  params = models.init(model, jax.random.key(0), (1, 28, 28, 1))
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  h = models.feature_fn(model, params)(x)
  head = params['params']['head']
  np.testing.assert_allclose(h @ head['kernel'] + head['bias'], model.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='hidden layer'):
    models.feature_fn(models.get('logreg'), None)
