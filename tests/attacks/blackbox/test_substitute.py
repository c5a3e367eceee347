"""Papernot et al. (AsiaCCS 2017) substitute training and transfer to the oracle."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import models
from jaxsec.attacks import blackbox
from jaxsec.attacks.evasion import fgsm

D = 8
W = np.asarray(jax.random.normal(jax.random.key(1), (D,)), np.float32)
BIAS = -0.5 * float(W.sum())          # the hyperplane goes through the centre of the cube


class NumpyOracle:
  """A remote linear binary classifier: NumPy in, labels out, every row counted."""

  def __init__(self):
    self.rows = 0

  def __call__(self, x):
    x = np.asarray(x).reshape((x.shape[0], -1))
    self.rows += x.shape[0]
    return (x @ W + BIAS > 0).astype(np.int32)


def _mlp(seed=0):
  m = models.get('mlp', num_classes=3, hidden=(7,))
  return m, models.init(m, jax.random.key(seed), (1, D))


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize('jacobian', ['probs', 'logits'])
def test_augmentation_matches_the_formula(jacobian):
  m, p = _mlp()
  x = jax.random.uniform(jax.random.key(2), (5, D), minval=0.2, maxval=0.8)
  y = jnp.array([0, 2, 1, 1, 0])

  def out_y(xi, yi):                      # F(x)_y for one example, written independently
    z = m.apply(p, xi[None])[0]
    return (jax.nn.softmax(z) if jacobian == 'probs' else z)[yi]

  g = jax.jit(jax.vmap(jax.grad(out_y)))(x, y)     # one example at a time, no sum trick
  assert (np.asarray(g) != 0).all()
  aug = jax.jit(blackbox.jacobian_augmentation, static_argnums=0,
                static_argnames=('jacobian', 'bounds'))
  for lam in (0.1, -0.05):
    got = aug(m.apply, p, x, y, lam, jacobian=jacobian, bounds=None)
    np.testing.assert_allclose(got, x + lam * np.sign(g), atol=1e-6)
  # Clipped to the box.
  big = aug(m.apply, p, x, y, 0.5, jacobian=jacobian, bounds=(0.0, 1.0))
  np.testing.assert_allclose(big, np.clip(x + 0.5 * np.sign(g), 0.0, 1.0), atol=1e-6)
  # The probability and logit Jacobians give different points for this model.
  other = 'logits' if jacobian == 'probs' else 'probs'
  alt = aug(m.apply, p, x, y, 0.1, jacobian=other, bounds=None)
  assert (np.asarray(alt) != np.asarray(aug(m.apply, p, x, y, 0.1, jacobian=jacobian,
                                            bounds=None))).any()


def test_training_rounds_query_exactly_and_augment_with_the_oracle_labels():
  # A learning rate of 0 freezes the substitute at its initialisation, so each round's new
  # points must be exactly x + lam_rho sign(J_F(x)[O(x)]) for the frozen F.
  m, p0 = _mlp(3)
  oracle = NumpyOracle()
  run = blackbox.substitute_training(
      substitute_apply=m.apply, substitute_init=lambda k: p0, num_aug_epochs=3, lam=0.1,
      lam_period=1, train_epochs=1, batch_size=4, optimizer=optax.sgd(0.0),
      query_batch_size=7)
  x0 = jax.random.uniform(jax.random.key(4), (6, D))
  out = run(oracle, x0, jax.random.key(0))
  assert out.queries == oracle.rows == 6 * 2 ** 2 == out.x.shape[0]
  assert out.history['size'] == [6, 12, 24] and out.history['queries'] == [6, 12, 24]
  assert out.history['lam'] == [0.1, -0.1, None]          # lambda (-1)^floor(rho / tau)
  np.testing.assert_array_equal(out.y, NumpyOracle()(out.x))   # the oracle's labels
  np.testing.assert_array_equal(out.x[:6], np.asarray(x0))
  # The substitute's own labels differ from the oracle's somewhere: using them instead of
  # the oracle's would change the new points.
  assert (np.argmax(m.apply(p0, out.x[:12]), -1) != out.y[:12]).any()
  aug = jax.jit(lambda x, y, lam: blackbox.jacobian_augmentation(m.apply, p0, x, y, lam))
  s1 = jnp.asarray(out.x[:12])                  # S_1 = S_0 U aug(S_0, +lam), S_0 first
  np.testing.assert_allclose(out.x[6:12], aug(s1, out.y[:12], 0.1)[:6], atol=1e-6)
  np.testing.assert_allclose(out.x[12:], aug(s1, out.y[:12], -0.1), atol=1e-6)
  assert (out.x[6:12] != out.x[:6]).any()


def test_substitute_learns_a_linear_oracle_and_augmentation_helps():
  m = models.get('logreg', num_classes=2)
  seeds = jax.random.uniform(jax.random.key(2), (16, D))
  x_test = np.asarray(jax.random.uniform(jax.random.key(3), (4000, D)))
  truth = NumpyOracle()(x_test)
  oracle = NumpyOracle()
  run = blackbox.substitute_training(
      substitute_apply=m.apply, substitute_init=lambda k: models.init(m, k, (1, D)),
      num_aug_epochs=4, lam=0.1, lam_period=1, train_epochs=50, batch_size=16,
      learning_rate=3e-2, jacobian='logits')
  out = run(oracle, seeds, jax.random.key(0), eval_data=(x_test, truth))
  agree = out.history['eval_accuracy']        # agreement with the oracle after each round
  assert out.queries == oracle.rows == 16 * 2 ** 3        # evaluation costs no query
  np.testing.assert_allclose(
      agree[-1], np.mean(np.argmax(m.apply(out.params, x_test), -1) == truth), atol=1e-6)
  assert agree[-1] > 0.85, agree                          # most of the input space
  assert agree[-1] > agree[0] + 0.05, agree               # the synthetic points matter


def test_transfer_attack_scores_the_oracle():
  # A substitute equal to the oracle: FGSM with a large eps flips every label.
  apply = lambda p, x: jnp.stack([jnp.zeros(x.shape[0]), x @ p['w'] + p['b']], axis=1)
  params = {'w': jnp.asarray(W), 'b': jnp.float32(BIAS)}
  oracle = NumpyOracle()
  x = np.asarray(jax.random.uniform(jax.random.key(5), (11, D)))
  y = oracle(x)
  y[0] = 1 - y[0]                                          # a clean error of the oracle
  oracle.rows = 0
  res = blackbox.transfer_attack(fgsm(eps=0.6), apply, params, oracle, x, y, batch_size=4)
  want = fgsm(eps=0.6)(lambda z: apply(params, z), jnp.asarray(x), jnp.asarray(y), None).x_adv
  np.testing.assert_allclose(res.x_adv, want, atol=1e-6)
  assert res.queries == oracle.rows == 22
  np.testing.assert_array_equal(res.oracle_labels, NumpyOracle()(want))
  hit = res.oracle_labels != y
  assert res.misclassification_rate == pytest.approx(hit.mean())
  assert res.success_rate == pytest.approx(hit[1:].mean())       # row 0 excluded
  assert res.substitute_success_rate == pytest.approx(hit.mean())   # same model
  assert hit[1:].mean() > 0.8


@pytest.mark.parametrize('kwargs,message', [
    ({'num_aug_epochs': 0}, 'num_aug_epochs=0'),
    ({'lam': 0.0}, 'lam=0.0'),
    ({'lam_period': 0}, 'lam_period=0'),
    ({'train_epochs': 0}, 'train_epochs=0'),
    ({'batch_size': 0}, 'batch_size=0'),
    ({'jacobian': 'hessian'}, "jacobian='hessian'"),
    ({'learning_rate': -1.0}, 'learning_rate=-1.0'),
    ({'bounds': (1.0, 1.0)}, r'bounds=\(1.0, 1.0\)'),
    ({'reinit': 'yes'}, "reinit='yes'"),
    ({'substitute_apply': 3}, 'substitute_apply=3'),
])
def test_bad_hyperparameters_raise(kwargs, message):
  m, p = _mlp()
  base = {'substitute_apply': m.apply, 'substitute_init': lambda k: p}
  with pytest.raises(ValueError, match=message):
    blackbox.substitute_training(**{**base, **kwargs})


def test_bad_seed_set_raises():
  m, p = _mlp()
  run = blackbox.substitute_training(substitute_apply=m.apply, substitute_init=lambda k: p)
  with pytest.raises(ValueError, match='x_seed'):
    run(NumpyOracle(), np.zeros((0, D), np.float32), jax.random.key(0))
  with pytest.raises(ValueError, match='outside bounds'):
    run(NumpyOracle(), np.full((3, D), 2.0, np.float32), jax.random.key(0))
