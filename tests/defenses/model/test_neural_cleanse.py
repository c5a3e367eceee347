"""Neural Cleanse (Wang et al. 2019): the MAD anomaly index by hand, trigger reversal on a
planted linear backdoor, and the BadNets target label of a digits model."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import models
from jaxsec.defenses.model import neural_cleanse as nc
from tests.defenses import backdoor_bed


def test_anomaly_index_by_hand():
  norms = np.array([10.0, 12.0, 11.0, 9.0, 3.0])
  # median 10, |norms - 10| = 0, 2, 1, 1, 7 -> median 1, MAD = 1.4826
  np.testing.assert_allclose(nc.anomaly_index(norms), np.array([0, -2, -1, 1, 7]) / 1.4826)
  assert nc.anomaly_index(norms)[4] > 2 and (nc.anomaly_index(norms)[:4] < 2).all()
  # a larger-than-median outlier is not infected (negative index)
  assert nc.anomaly_index(np.array([10.0, 10.5, 9.5, 30.0]))[3] < -2
  np.testing.assert_array_equal(nc.anomaly_index(np.array([5.0, 5.0, 5.0, 1.0])),
                                [0, 0, 0, np.inf])


def test_stamp():
  x = jnp.full((2, 3, 3, 2), 0.2)
  m = jnp.zeros((3, 3)).at[0, 0].set(1.0).at[1, 1].set(0.5)
  p = jnp.ones((3, 3, 2))
  out = np.asarray(nc.stamp(x, m, p))
  np.testing.assert_allclose(out[:, 0, 0], 1.0)
  np.testing.assert_allclose(out[:, 1, 1], 0.6)
  np.testing.assert_allclose(out[:, 2, 2], 0.2)


def _planted_model():
  """A linear 4-class model on 6x6 images whose class 3 fires on a bright top-left pixel."""
  w = np.zeros((36, 4), np.float32)
  w[:, :3] = np.random.RandomState(0).randn(36, 3) * 0.3
  w[0, 3] = 40.0
  b = np.array([0.0, 0.0, 0.0, -20.0], np.float32)
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def test_reverses_a_planted_one_pixel_trigger():
  x = jnp.asarray(np.random.RandomState(1).rand(64, 6, 6, 1) * 0.4, jnp.float32)
  r = nc.reverse_triggers(_planted_model(), x, num_classes=4, key=jax.random.key(0),
                          num_epochs=20, steps_per_epoch=5, batch_size=32, targets=[3, 0])
  assert r.mask.shape == (2, 6, 6) and r.pattern.shape == (2, 6, 6, 1)
  assert r.success[0] >= 0.99
  m = np.asarray(r.mask[0])
  np.testing.assert_allclose(r.l1, np.asarray(r.mask).sum(axis=(1, 2)), rtol=1e-5)
  assert m[0, 0] > 0.5 and m.sum() < 1.5 and m.sum() - m[0, 0] < 0.5, m
  assert float(r.pattern[0][0, 0, 0]) > 0.6
  assert r.l1[1] > r.l1[0]


def test_bad_input_is_refused():
  f = _planted_model()
  x = jnp.zeros((4, 6, 6, 1))
  with pytest.raises(ValueError, match='norms'):
    nc.anomaly_index(np.array([1.0, 2.0]))
  with pytest.raises(ValueError, match='norms'):
    nc.anomaly_index(np.array([1.0, np.nan, 2.0]))
  with pytest.raises(ValueError, match='num_epochs'):
    nc.reverse_triggers(f, x, num_classes=4, key=jax.random.key(0), num_epochs=0)
  with pytest.raises(ValueError, match='init_cost'):
    nc.reverse_triggers(f, x, num_classes=4, key=jax.random.key(0), init_cost=0.0)
  with pytest.raises(ValueError, match='targets'):
    nc.reverse_triggers(f, x, num_classes=4, key=jax.random.key(0), targets=[4])
  with pytest.raises(ValueError, match='x_clean'):
    nc.reverse_triggers(f, x[:, :, :, 0], num_classes=4, key=jax.random.key(0))
  with pytest.raises(ValueError, match='stamp_fraction'):
    nc.unlearn(lambda p, z: f(z), None, x, jnp.zeros(4, jnp.int32), jnp.zeros((6, 6)),
               jnp.zeros((6, 6, 1)), key=jax.random.key(0), optimizer=optax.sgd(0.1),
               stamp_fraction=2.0)


@pytest.mark.slow
def test_flags_the_badnets_target_and_unlearning_repairs():
  b = backdoor_bed.bed()
  f = models.logits_fn(b.model, b.params)
  xd, yd = b.x_test[:300], b.y_test[:300]          # the defender's clean data
  xe, ye = b.x_test[300:], b.y_test[300:]
  r = nc.detect(f, xd, num_classes=10, key=jax.random.key(0), num_epochs=40)
  t = backdoor_bed.TARGET
  assert r.infected == t and r.anomaly_index[t] > 2
  m = np.asarray(r.triggers.mask[t])
  h, s = m.shape[0], backdoor_bed.SIZE
  near = m[h - s - 1:, h - s - 1:].sum()            # the trigger's corner and one pixel around
  assert m.sum() < 2 * s * s and near > 0.6 * m.sum()
  asr0 = backdoor_bed.attack_success(b.model.apply, b.params, xe, ye)
  acc0 = backdoor_bed.accuracy(b.model.apply, b.params, xe, ye)
  p, info = nc.unlearn(b.model.apply, b.params, xd, yd, m, r.triggers.pattern[t],
                       key=jax.random.key(1), optimizer=optax.adam(1e-3), num_epochs=5,
                       batch_size=32)
  assert info['stamped'].sum() == 60
  assert backdoor_bed.attack_success(b.model.apply, p, xe, ye) < asr0 - 0.5
  assert backdoor_bed.accuracy(b.model.apply, p, xe, ye) > acc0 - 0.05
