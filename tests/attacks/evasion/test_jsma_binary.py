"""Add-only binary JSMA (Grosse et al., ESORICS 2017): never removes a feature, respects the
change limit and the allowed mask, and equals a per-example transcription of the paper's
selection rule (Algorithm 1) on a tiny network."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion import jsma_binary

N = 12
_RNG = np.random.default_rng(0)
_W1 = jnp.asarray(_RNG.normal(size=(N, 16)), jnp.float32)
_B1 = jnp.asarray(_RNG.normal(size=16) * 0.1, jnp.float32)
_W2 = jnp.asarray(_RNG.normal(size=(16, 2)), jnp.float32)


def _net(x):
  """A tiny detector: class 1 = malware, 0 = benign."""
  return jnp.tanh(x.reshape((x.shape[0], -1)) @ _W1 + _B1) @ _W2


def _batch(b=10, seed=1):
  x = (np.random.default_rng(seed).uniform(size=(b, N)) < 0.3).astype(np.float32)
  return jnp.asarray(x)


def _reference(x, t, k, allowed, jacobian='probs'):
  """Algorithm 1, one example at a time, in Python: while F(x*) != t and ||x* - x||_0 < k:
  i = argmax over {x*_i = 0, i in I} of dF_t/dx_i; fail if that derivative <= 0; x*_i = 1."""
  out = []
  for xi, ti in zip(np.asarray(x), np.asarray(t), strict=True):
    xs = xi.copy()
    def ft(v, ti=ti):
      z = _net(v[None])[0]
      o = jax.nn.softmax(z) if jacobian == 'probs' else z
      return o[ti]
    while int(np.argmax(np.asarray(_net(xs[None])[0]))) != ti and np.sum(xs != xi) < k:
      g = np.asarray(jax.grad(ft)(jnp.asarray(xs)))
      cand = np.where((xs == 0) & allowed, g, -np.inf)
      i = int(np.argmax(cand))
      if not cand[i] > 0:
        break
      xs[i] = 1.0
    out.append(xs)
  return np.stack(out)


@pytest.mark.parametrize('k, jacobian, masked', [(20, 'probs', False), (2, 'probs', False),
                                                  (5, 'logits', True)])
def test_matches_the_papers_selection_rule(k, jacobian, masked):
  x = _batch()
  t = jnp.zeros(x.shape[0], jnp.int32)                  # target: benign
  allowed = np.arange(N) % 3 != 0 if masked else np.ones(N, bool)
  atk = jsma_binary.jsma_add_only(max_changes=k, jacobian=jacobian,
                                  allowed=allowed if masked else None)
  out = jax.jit(atk, static_argnums=0)(_net, x, t)
  want = _reference(x, t, k, allowed, jacobian)
  np.testing.assert_array_equal(np.asarray(out.x_adv), want)
  xa, x0 = np.asarray(out.x_adv), np.asarray(x)
  assert np.all(xa >= x0) and set(np.unique(xa)) <= {0.0, 1.0}     # add-only, binary
  changed = np.sum(xa != x0, axis=1)
  assert np.all(changed <= k)
  np.testing.assert_array_equal(out.info['features_changed'], changed)
  np.testing.assert_array_equal(out.info['steps'], changed)
  if masked:
    assert not np.any((xa != x0)[:, ~allowed])
  succ = np.asarray(out.info['success'])
  np.testing.assert_array_equal(succ, np.argmax(np.asarray(_net(out.x_adv)), -1) == 0)
  attacked = np.argmax(np.asarray(_net(x)), -1) != 0
  assert np.any(succ & attacked)                    # some malware made benign
  if k == 2:
    assert np.any(~succ & (changed == 2))           # the limit binds for some example


def test_untargeted_goes_to_the_other_class_and_stalls_without_a_positive_derivative():
  x = _batch(8, seed=2)
  y = jnp.argmax(_net(x), -1)
  out = jsma_binary.jsma_add_only(targeted=False)(_net, x, y)
  np.testing.assert_array_equal(out.info['target'], 1 - np.asarray(y))
  # Model whose target output only falls when a feature is added: nothing to select.
  w = -jnp.ones((N, 1))
  f = lambda v: jnp.concatenate([v.reshape(v.shape[0], -1) @ w - 1, jnp.zeros((v.shape[0], 1))],
                                1)
  xs = jnp.zeros((2, N))
  out = jsma_binary.jsma_add_only()(f, xs, jnp.zeros(2, jnp.int32))
  assert np.all(np.asarray(out.info['stalled'])) and np.all(np.asarray(out.x_adv) == 0)


@pytest.mark.parametrize('kw, match', [
    (dict(max_changes=0), r'max_changes=0 must be >= 1'),
    (dict(max_changes=2.5), r'max_changes=2.5 must be an integer'),
    (dict(targeted='no'), r"targeted='no' must be a bool"),
    (dict(jacobian='softmax'), r"jacobian='softmax' is not one of"),
    (dict(allowed=[1, 0, 1]), r'allowed has dtype int64; expected a boolean mask'),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  with pytest.raises(ValueError, match=match):
    jsma_binary.jsma_add_only(**kw)


def test_bad_input_raises():
  atk = jsma_binary.jsma_add_only()
  x = _batch(2)
  y = jnp.zeros(2, jnp.int32)
  with pytest.raises(ValueError, match=r'x has values \[0.5\]; the add-only JSMA takes'):
    atk(_net, x.at[0, 1].set(0.5), y)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    atk(_net, x.at[0, 1].set(jnp.nan), y)
  with pytest.raises(ValueError, match=r'y contains label 3'):
    atk(_net, x, y.at[1].set(3))
  with pytest.raises(ValueError, match=r'allowed has shape \(3,\); expected one example'):
    jsma_binary.jsma_add_only(allowed=np.ones(3, bool))(_net, x, y)
