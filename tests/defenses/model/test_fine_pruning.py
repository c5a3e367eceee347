"""Fine-pruning (Liu et al. 2018): the pruning order and mask by hand, pruned units stay
pruned through fine-tuning, and the BadNets backdoor of a digits model is weakened."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import models
from jaxsec.defenses.model import fine_pruning as fp
from tests.defenses import backdoor_bed

_PATH = ('params', 'head', 'kernel')


def test_order_and_dormant_units_by_hand():
  acts = jnp.array([[1.0, 0.0, 3.0, 0.5], [1.0, 0.2, 1.0, 0.5]])    # means 1, .1, 2, .5
  feature_fn = lambda x: acts[:x.shape[0]]
  np.testing.assert_array_equal(fp.activation_order(feature_fn, jnp.zeros((2, 1))),
                                [1, 3, 0, 2])
  np.testing.assert_array_equal(fp.dormant_units(feature_fn, jnp.zeros((2, 1)), fraction=0.5),
                                [False, True, False, True])
  # conv-style [B, H, W, d] activations are averaged over everything but the unit axis
  conv = lambda x: jnp.broadcast_to(jnp.array([2.0, 0.0, 1.0]), (x.shape[0], 2, 2, 3))
  np.testing.assert_array_equal(fp.activation_order(conv, jnp.zeros((3, 1))), [1, 2, 0])


def test_prune_zeroes_rows_only():
  params = {'params': {'head': {'kernel': jnp.ones((4, 3)), 'bias': jnp.ones(3)},
                       'dense': {'kernel': jnp.ones((2, 4))}}}
  out = fp.prune(params, _PATH, np.array([True, False, False, True]))
  np.testing.assert_array_equal(out['params']['head']['kernel'][:, 0], [0, 1, 1, 0])
  np.testing.assert_array_equal(out['params']['head']['bias'], 1.0)
  np.testing.assert_array_equal(out['params']['dense']['kernel'], 1.0)
  with pytest.raises(ValueError, match='path'):
    fp.prune(params, ('params', 'nohead', 'kernel'), np.zeros(4, bool))
  with pytest.raises(ValueError, match='rows'):
    fp.prune(params, _PATH, np.zeros(5, bool))


def _small():
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.rand(64, 4, 4, 1), jnp.float32)
  y = jnp.asarray(rng.randint(0, 3, 64), jnp.int32)
  model = models.get('mlp', num_classes=3, hidden=(8,))
  return model, models.init(model, jax.random.key(0), (1, 4, 4, 1)), x, y


def test_pruned_units_stay_pruned_through_fine_tuning():
  model, params, x, y = _small()
  feats = lambda p, z: model.apply(p, z, penultimate=True)
  p, info = fp.fine_prune(model.apply, params, x, y, feature_fn=feats, path=_PATH,
                          key=jax.random.key(1), optimizer=optax.adam(1e-2), fraction=0.5,
                          num_epochs=3, batch_size=16)
  assert info['num_pruned'] == 4 and info['pruned'].sum() == 4
  k = np.asarray(p['params']['head']['kernel'])
  np.testing.assert_array_equal(k[info['pruned']], 0.0)
  assert np.all(np.abs(k[~info['pruned']]) > 0)
  assert not np.allclose(k[~info['pruned']],
                         np.asarray(params['params']['head']['kernel'])[~info['pruned']])
  np.testing.assert_array_equal(info['pruned'][info['order'][:4]], True)


def test_bad_input_is_refused():
  model, params, x, y = _small()
  feats = lambda p, z: model.apply(p, z, penultimate=True)
  kw = dict(feature_fn=feats, path=_PATH, key=jax.random.key(1), optimizer=optax.sgd(0.1))
  with pytest.raises(ValueError, match='fraction'):
    fp.fine_prune(model.apply, params, x, y, fraction=1.5, **kw)
  with pytest.raises(ValueError, match='max_accuracy_drop'):
    fp.fine_prune(model.apply, params, x, y, max_accuracy_drop=-0.1, **kw)
  with pytest.raises(ValueError, match='x_val'):
    fp.fine_prune(model.apply, params, x, y, x_val=x, **kw)
  with pytest.raises(ValueError, match='num_epochs'):
    fp.fine_prune(model.apply, params, x, y, num_epochs=-1, **kw)


@pytest.mark.slow
def test_fine_pruning_lowers_attack_success_and_keeps_accuracy():
  b = backdoor_bed.bed()
  xd, yd = b.x_test[:300], b.y_test[:300]
  xe, ye = b.x_test[300:], b.y_test[300:]
  asr0 = backdoor_bed.attack_success(b.model.apply, b.params, xe, ye)
  acc0 = backdoor_bed.accuracy(b.model.apply, b.params, xe, ye)
  feats = lambda p, z: b.model.apply(p, z, penultimate=True)
  p, info = fp.fine_prune(b.model.apply, b.params, xd, yd, feature_fn=feats, path=_PATH,
                          key=jax.random.key(2), optimizer=optax.adam(1e-3), fraction=0.8,
                          num_epochs=5, batch_size=32)
  asr = backdoor_bed.attack_success(b.model.apply, p, xe, ye)
  acc = backdoor_bed.accuracy(b.model.apply, p, xe, ye)
  assert asr0 > 0.9 and asr < asr0 - 0.2
  assert acc > acc0 - 0.05
  assert info['accuracy_final'] > info['accuracy_pruned']      # fine-tuning recovers
