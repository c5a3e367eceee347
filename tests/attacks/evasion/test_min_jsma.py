"""JSMA: the saliency map over pairs against a brute force, budget, variants, bounds."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion.jsma import jsma

W = np.asarray(jax.random.normal(jax.random.key(3), (10, 3)))


def linear(x):
  return x.reshape(x.shape[0], -1) @ jnp.asarray(W)


def _brute_first_pair(t, increase, dom):
  a = W[:, t]
  b = W.sum(1) - a
  best, arg = -np.inf, None
  for p, q in itertools.combinations(range(10), 2):
    if not (dom[p] and dom[q]):
      continue
    al, be = a[p] + a[q], b[p] + b[q]
    ok = (al > 0 and be < 0) if increase else (al < 0 and be > 0)
    if ok and -al * be > best:
      best, arg = -al * be, {p, q}
  return arg


@pytest.mark.parametrize('theta', [1.0, -1.0])
def test_first_pair_matches_brute_force_saliency_map(theta):
  x = jax.random.uniform(jax.random.key(1), (4, 10), minval=0.2, maxval=0.8)
  x = x.at[:, 0].set(1.0 if theta > 0 else 0.0)      # saturated: outside the search domain
  t = jnp.array([0, 1, 2, 1])
  # gamma * n = 2: exactly one pair may change.
  out = jsma(theta=theta, gamma=0.2)(linear, x, t, None)
  for i in range(4):
    dom = np.ones(10, bool)
    dom[0] = False
    want = _brute_first_pair(int(t[i]), theta > 0, dom)
    pred0 = int(jnp.argmax(linear(x[i:i + 1])))
    changed = set(np.nonzero(np.asarray(out.x_adv[i] != x[i]))[0].tolist())
    if pred0 == int(t[i]):
      assert changed == set()
    else:
      assert changed == want
      moved = np.asarray(out.x_adv[i])[sorted(want)]
      np.testing.assert_array_equal(moved, 1.0 if theta > 0 else 0.0)   # theta=+-1 saturates


@pytest.mark.parametrize('bounds', [(0.0, 1.0), (-1.0, 2.0)])
def test_reaches_target_with_few_features_within_budget(bounds):
  lo, hi = bounds
  # A 20-feature linear model where target features exist: JSMA should need few of them.
  Wb = np.asarray(jax.random.normal(jax.random.key(7), (20, 4)))
  f = lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(Wb)
  x = lo + (hi - lo) * jax.random.uniform(jax.random.key(2), (6, 4, 5), minval=0.3,
                                          maxval=0.5)
  t = (jnp.argmax(f(x), 1) + 1) % 4
  gamma = 0.5
  out = jax.jit(jsma(gamma=gamma, bounds=bounds), static_argnums=0)(
      f, x, t, None)
  changed = jnp.sum((out.x_adv != x).reshape(6, -1), 1)
  np.testing.assert_array_equal(changed, out.info['features_changed'])
  assert bool(jnp.all(changed <= int(gamma * 20)))
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(out.x_adv), 1) == t)
  assert float(jnp.mean(out.info['success'])) >= 0.8
  assert float(jnp.mean(out.info['features_changed_frac'][out.info['success']])) <= 0.3
  assert bool(jnp.all(out.x_adv >= x))                 # increasing variant only increases
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi
  np.testing.assert_array_equal(out.info['gradients'], 2 * out.info['steps'])


def test_small_theta_moves_gradually_and_decrease_variant():
  x = jax.random.uniform(jax.random.key(4), (3, 10), minval=0.4, maxval=0.6)
  t = (jnp.argmax(linear(x), 1) + 2) % 3
  out = jsma(theta=-0.25, gamma=1.0)(linear, x, t, None)
  d = out.x_adv - x
  assert bool(jnp.all(d <= 0))
  # each move is 0.25 (or a clip to the lower bound 0).
  moved = np.asarray(out.x_adv)[np.asarray(d) < 0]
  steps = np.asarray(-d)[np.asarray(d) < 0] / 0.25
  ok = np.isclose(steps, np.round(steps), atol=1e-5) | np.isclose(moved, 0.0)
  assert ok.all()


def test_untargeted_variants():
  x = jax.random.uniform(jax.random.key(5), (5, 10), minval=0.2, maxval=0.5)
  y = jnp.argmax(linear(x), 1)
  for mode in ('second', 'random'):
    out = jsma(targeted=False, untargeted_target=mode, gamma=0.6)(
        linear, x, y, jax.random.key(0))
    assert bool(jnp.all(out.info['target'] != y))
    np.testing.assert_array_equal(out.info['success'], jnp.argmax(linear(out.x_adv), 1) != y)
  z = linear(x)
  second = jnp.argsort(z, 1)[:, -2]
  out = jsma(targeted=False)(linear, x, y, None)
  np.testing.assert_array_equal(out.info['target'], second)


@pytest.mark.parametrize('kw', [dict(theta=0.0), dict(theta=1.5), dict(gamma=0.0),
                                dict(gamma=1.2), dict(jacobian='softmax'),
                                dict(untargeted_target='all'), dict(bounds=(2.0, 1.0)),
                                dict(pair_batch=0), dict(targeted=None),
                                dict(empty_map='skip')])
def test_bad_hyperparameters(kw):
  with pytest.raises(ValueError):
    jsma(**kw)
