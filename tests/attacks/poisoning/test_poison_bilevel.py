"""Bilevel poisoning through implicit and unrolled learners."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import losses
from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import learners


def _data(n=40, d=3, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = rng.randn(n, d).astype(np.float32) + (2 * y[:, None] - 1)
  return jnp.asarray(x), jnp.asarray(y)


def _val_loss(train_fn, x, y, xv, yv):
  p = train_fn(x, y, jax.random.key(7))
  margin = (2.0 * yv - 1) * learners.linear_apply(p, xv)[:, 0]
  return float(jnp.mean(jax.nn.softplus(-margin)))   # binary cross-entropy


def test_implicit_logreg_poisoning_beats_its_random_start():
  x, y = _data()
  xv, yv = _data(60, seed=1)
  tf = learners.logreg_train_fn(num_classes=2, l2=0.05)
  atk = poisoning.bilevel_poisoning(train_fn=tf, apply_fn=learners.linear_apply,
                                    fraction=0.1, num_steps=10, step_size=0.5)
  out = atk(x, y, jax.random.key(0), x_val=xv, y_val=yv)
  assert out.x.shape == (44, 3) and out.y.shape == (44,)
  np.testing.assert_array_equal(np.asarray(out.x[:40]), np.asarray(x))
  assert int(np.asarray(out.info['poison_mask']).sum()) == 4
  base = poisoning.flipped_copies(fraction=0.1)(x, y, jax.random.split(jax.random.key(0))[0])
  np.testing.assert_array_equal(np.asarray(base[1]), np.asarray(out.y))  # same labels
  hist = np.asarray(out.info['objective'])
  assert hist.shape == (11,) and hist.max() > hist[0] + 0.05
  assert _val_loss(tf, out.x, out.y, xv, yv) > _val_loss(tf, base.x, base.y, xv, yv) + 0.05
  again = atk(x, y, jax.random.key(0), x_val=xv, y_val=yv)
  np.testing.assert_array_equal(np.asarray(again.x), np.asarray(out.x))


def test_unrolled_mlp_poisoning_runs_in_bounds():
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.rand(30, 4).astype(np.float32))
  y = jnp.asarray((np.arange(30) % 3).astype(np.int32))

  def apply_fn(p, xx):
    return jnp.tanh(xx @ p['w1']) @ p['w2']

  def init_fn(k):
    k1, k2 = jax.random.split(k)
    return {'w1': 0.5 * jax.random.normal(k1, (4, 8)), 'w2': 0.5 * jax.random.normal(k2, (8, 3))}

  tf = learners.unrolled_gd(apply_fn, init_fn, num_steps=15, learning_rate=0.5)
  atk = poisoning.bilevel_poisoning(train_fn=tf, apply_fn=apply_fn, fraction=0.1,
                                    num_classes=3, num_steps=4, step_size=0.2,
                                    bounds=(0.0, 1.0))
  out = atk(x, y, jax.random.key(1))
  assert out.x.shape == (33, 4)
  assert float(out.x.min()) >= 0 and float(out.x.max()) <= 1
  hist = np.asarray(out.info['objective'])
  # hist[0] is the validation (= training) loss of the unpoisoned start, the flipped copies
  k_init, k_train = jax.random.split(jax.random.key(1))
  x0, y0, _ = poisoning.flipped_copies(fraction=0.1, num_classes=3)(x, y, k_init)

  def val_loss(xx, yy):
    return float(jnp.mean(losses.cross_entropy(apply_fn(tf(xx, yy, k_train), x), y)))
  start = val_loss(jnp.clip(x0, 0.0, 1.0), y0)
  assert hist[0] == pytest.approx(start, rel=1e-5)
  # ascent: every step raises the loss, and the returned set, retrained, beats the start
  # by a margin (about 0.02 here; a descent step would lower it by as much)
  assert np.all(np.diff(hist) > 0), hist
  assert val_loss(out.x, out.y) > start + 0.01


def test_bilevel_errors():
  tf = learners.logreg_train_fn(num_classes=2)
  with pytest.raises(ValueError, match='fraction'):
    poisoning.bilevel_poisoning(train_fn=tf, apply_fn=learners.linear_apply, fraction=2.0)
  with pytest.raises(ValueError, match='callables'):
    poisoning.bilevel_poisoning(train_fn=None, apply_fn=learners.linear_apply, fraction=0.1)
  atk = poisoning.bilevel_poisoning(train_fn=tf, apply_fn=learners.linear_apply, fraction=0.1)
  x, y = _data()
  with pytest.raises(ValueError, match='both'):
    atk(x, y, jax.random.key(0), x_val=x)
