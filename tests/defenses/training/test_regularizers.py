"""Regularisers: closed forms on small models, strength 0 is the plain loss, jit / grad."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import losses, train
from jaxsec.defenses.training import regularizers as reg

PLAIN = train.supervised(losses.cross_entropy)


def _mlp_apply(p, x):
  return jnp.tanh(x @ p['w1'] + p['b1']) @ p['w2'] + p['b2']


def _setup():
  k = jax.random.split(jax.random.key(0), 4)
  p = {'w1': jax.random.normal(k[0], (5, 4)), 'b1': 0.1 * jnp.ones(4),
       'w2': jax.random.normal(k[1], (4, 3)), 'b2': jnp.zeros(3)}
  x = jax.random.uniform(k[2], (6, 5))
  y = jax.random.randint(k[3], (6,), 0, 3)
  return p, x, y


def test_zero_strength_is_plain_and_all_jit_grad():
  p, x, y = _setup()
  key = jax.random.key(1)
  layers = [lambda q, h: jnp.tanh(h @ q['w1'] + q['b1']), lambda q, h: h @ q['w2'] + q['b2']]
  zero = [reg.weight_penalty(l1=0.0, l2=0.0), reg.contractive(strength=0.0),
          reg.deep_contractive(layers=layers, strength=0.0),
          reg.input_gradient_regularization(strength=0.0)]
  want = PLAIN(_mlp_apply, p, x, y, key)
  for obj in zero:
    np.testing.assert_allclose(jax.jit(lambda q, o=obj: o(_mlp_apply, q, x, y, key))(p), want,
                               rtol=1e-6)
  strong = [reg.weight_penalty(l1=0.1, l2=0.1), reg.contractive(strength=0.1),
            reg.contractive(strength=0.1, num_projections=2, output='probs'),
            reg.deep_contractive(layers=layers, strength=(0.1, 0.2), num_projections=3),
            reg.input_gradient_regularization(strength=1.0)]
  for obj in strong:
    v, g = jax.jit(jax.value_and_grad(
        lambda q, o=obj: jnp.mean(o(_mlp_apply, q, x, y, key))))(p)
    assert float(v) > float(jnp.mean(want))
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(g))


def test_weight_penalty_values_skip_biases():
  p, x, y = _setup()
  obj = reg.weight_penalty(l1=0.3, l2=0.2)
  got = obj(_mlp_apply, p, x, y, None) - PLAIN(_mlp_apply, p, x, y, None)
  w = [p['w1'], p['w2']]
  want = 0.3 * sum(jnp.abs(a).sum() for a in w) + 0.2 * 0.5 * sum((a * a).sum() for a in w)
  np.testing.assert_allclose(got, jnp.full(6, want), rtol=1e-5)
  np.testing.assert_allclose(reg.l2_penalty(p, None), 0.5 * sum(
      (a * a).sum() for a in jax.tree.leaves(p)), rtol=1e-6)


def test_decoupled_weight_decay_after_adam_is_adamw():
  p, x, y = _setup()
  loss = lambda q: jnp.mean(PLAIN(_mlp_apply, q, x, y, None))
  opts = [optax.chain(optax.adam(0.1), reg.decoupled_weight_decay(0.05, learning_rate=0.1)),
          optax.adamw(0.1, weight_decay=0.05)]
  outs = []
  for opt in opts:
    q, s = p, opt.init(p)
    for _ in range(3):
      u, s = opt.update(jax.grad(loss)(q), s, q)
      q = optax.apply_updates(q, u)
    outs.append(q)
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_jacobian_frobenius_exact_and_projected_on_linear_map():
  W = jax.random.normal(jax.random.key(0), (7, 4))
  x = jax.random.normal(jax.random.key(1), (3, 7))
  f = lambda z: z @ W
  exact = reg.jacobian_frobenius_sq(f, x)
  np.testing.assert_allclose(exact, jnp.full(3, jnp.sum(W * W)), rtol=1e-5)
  est = reg.jacobian_frobenius_sq(f, x, jax.random.key(2), num_projections=4000)
  np.testing.assert_allclose(est, exact, rtol=0.1)


def test_deep_contractive_matches_rifai_closed_form():
  """For h = tanh(x W + b): ||dh/dx||_F^2 = sum_j (1 - h_j^2)^2 ||W[:, j]||^2."""
  p, x, y = _setup()
  layer = lambda q, h: jnp.tanh(h @ q['w1'] + q['b1'])
  obj = reg.deep_contractive(layers=[layer], strength=1.0)
  got = obj(_mlp_apply, p, x, y, jax.random.key(0)) - PLAIN(_mlp_apply, p, x, y, None)
  h = jnp.tanh(x @ p['w1'] + p['b1'])
  want = jnp.sum((1 - h ** 2) ** 2 * jnp.sum(p['w1'] ** 2, 0)[None], axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_input_gradient_penalty_on_logistic_regression():
  """d BCE / dx = (sigmoid(f) - y) w, so the penalty is (sigmoid(f) - y)^2 ||w||^2."""
  w = jnp.array([[0.5], [-1.0], [2.0]])
  apply_fn = lambda q, z: z @ q
  x = jnp.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]])
  y = jnp.array([1, 0])
  got = reg.input_gradient_regularization(strength=2.0)(apply_fn, w, x, y, None)
  f = (x @ w)[:, 0]
  plain = optax.sigmoid_binary_cross_entropy(f, y.astype(jnp.float32))
  np.testing.assert_allclose(got, plain + 2.0 * (jax.nn.sigmoid(f) - y) ** 2 * 5.25, rtol=1e-5)


def test_contractive_on_linear_model_is_frobenius_of_w():
  W = jax.random.normal(jax.random.key(0), (4, 3))
  apply_fn = lambda q, z: z @ q
  x = jax.random.uniform(jax.random.key(1), (5, 4))
  y = jnp.zeros(5, jnp.int32)
  got = reg.contractive(strength=0.5)(apply_fn, W, x, y, jax.random.key(0)) - PLAIN(
      apply_fn, W, x, y, None)
  np.testing.assert_allclose(got, jnp.full(5, 0.5 * jnp.sum(W * W)), rtol=1e-5)


def test_bad_arguments():
  with pytest.raises(ValueError, match='strength'):
    reg.contractive(strength=-1.0)
  with pytest.raises(ValueError, match='layers'):
    reg.deep_contractive(layers=[], strength=0.1)
  with pytest.raises(ValueError, match='strength has 1 values for 2 layers'):
    reg.deep_contractive(layers=[lambda p, h: h, lambda p, h: h], strength=[0.1])
  with pytest.raises(ValueError, match='l2'):
    reg.weight_penalty(l2=-0.1)
