"""Tramer 2016 equation solving is exact; learning-based extraction gets fidelity."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import metrics
from jaxsec.attacks import privacy as priv
from jaxsec.attacks.privacy import _nets


def test_binary_logistic_exact_with_d_plus_1_queries():
  rng = np.random.default_rng(0)
  d = 7
  w, b = rng.normal(size=d), 0.3

  def oracle(x):   # float64 oracle: recovery must be exact to rounding
    z = np.asarray(x, np.float64) @ w + b
    return 1 / (1 + np.exp(-z))
  counted = priv.Counter(oracle)
  w_hat, b_hat, q = priv.extract_logistic_binary(counted, d, jax.random.key(0))
  assert q == d + 1 and counted.queries == d + 1
  # Inputs were cast to float32 by the attack: the oracle saw exactly those points.
  np.testing.assert_allclose(w_hat, w, rtol=1e-8, atol=1e-8)
  assert b_hat == pytest.approx(b, abs=1e-8)

  # Two-column float32 oracle (log p1 - log p0 keeps precision).
  def oracle32(x):
    z = jnp.asarray(x) @ jnp.asarray(w, jnp.float32) + b
    return jnp.stack([jax.nn.sigmoid(-z), jax.nn.sigmoid(z)], -1)
  w_hat, b_hat, _ = priv.extract_logistic_binary(oracle32, d, jax.random.key(1))
  np.testing.assert_allclose(w_hat, w, atol=1e-4)
  xt = rng.normal(size=(500, d))
  assert metrics.agreement(priv.linear_logits(w_hat, b_hat, xt), (xt @ w + b > 0)) == 1.0


def test_softmax_regression_exact():
  rng = np.random.default_rng(1)
  d, c = 6, 4
  W, bias = rng.normal(size=(d, c)), rng.normal(size=c)

  def oracle(x):
    z = np.asarray(x, np.float64) @ W + bias
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
  W_hat, b_hat, q = priv.extract_softmax_regression(oracle, d, c, jax.random.key(0))
  assert q == d + 1
  np.testing.assert_allclose(W_hat, W - W[:, :1], atol=1e-8)
  np.testing.assert_allclose(b_hat, bias - bias[0], atol=1e-8)
  xt = rng.normal(size=(50, d))
  np.testing.assert_allclose(oracle(xt), _softmax(priv.linear_logits(W_hat, b_hat, xt)),
                             atol=1e-10)
  with pytest.raises(ValueError, match='shape'):
    priv.extract_softmax_regression(oracle, d, c + 1, jax.random.key(0))


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def test_learning_based_extraction_gains_fidelity():
  rng = np.random.default_rng(2)
  d = 4
  target = _nets.mlp_init(jax.random.key(5), (d, 16, 3))
  def probs(x):
    return jax.nn.softmax(_nets.mlp_apply(target, jnp.asarray(x)), -1)
  def labels(x):
    return jnp.argmax(_nets.mlp_apply(target, jnp.asarray(x)), -1)
  pool = rng.normal(size=(400, d)).astype(np.float32)
  test = rng.normal(size=(400, d)).astype(np.float32)
  init = _nets.mlp_init(jax.random.key(9), (d, 16, 3))
  res = priv.knockoff_extraction(probs, _nets.mlp_apply, init, pool, budgets=[30, 300],
                                 key=jax.random.key(0), num_epochs=20, batch_size=20,
                                 optimizer=optax.adam(1e-2))
  assert res.queries == 300 and [q for q, _ in res.history] == [30, 300]
  ref = labels(test)
  fid = [metrics.agreement(_nets.mlp_apply(p, test), ref) for _, p in res.history]
  assert fid[-1] > 0.85 and fid[-1] >= fid[0]
  # Label-only oracle + Jacobian augmentation within the budget.
  jac = priv.jacobian_extraction(labels, _nets.mlp_apply, init, pool[:20], budget=70,
                                 key=jax.random.key(1), rounds=3, lam=0.3, bounds=None,
                                 num_epochs=30, batch_size=10,
                                 optimizer=optax.adam(1e-2))
  assert jac.queries == 70   # 20 -> 40 -> 70 (last round truncated to the budget)
  assert [q for q, _ in jac.history] == [20, 40, 70]
  assert metrics.agreement(_nets.mlp_apply(jac.params, test), ref) > 0.6
