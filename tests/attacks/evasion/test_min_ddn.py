"""DDN (Rony et al. 2019): closed-form minimal L2 on a linear model, the authors' norm
schedule, box, targeted, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from tests.attacks.evasion import linear_multiclass as lm

KEY = jax.random.key(0)


def _run(**kw):
  kw.setdefault('bounds', lm.FAR)
  return jax.jit(attacks.ddn(**kw), static_argnums=0)


def test_linear_model_closed_form():
  x, y = lm.batch()
  out = _run(num_steps=200, init_epsilon=0.5)(lm.linear, x, y, KEY)
  assert out.budget == 'minimal'
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(lm.linear(out.x_adv), 1) != y)
  lm.assert_near_minimal(out.x_adv, x, y, 'l2', 1.1)
  np.testing.assert_allclose(out.info['l2'], lm.dist(out.x_adv - x, 'l2'), rtol=1e-5)


def test_norm_follows_the_gamma_rule_while_not_adversarial():
  # Far from the boundary (a huge margin), every step is non-adversarial: eps_k =
  # eps_0 (1 + gamma)^k, and the perturbation sits on that sphere (the authors' update).
  f = lambda v: jnp.stack([1e3 + v[:, 0], -v[:, 0]], 1)
  x = jnp.zeros((2, 3))
  y = jnp.zeros(2, jnp.int32)
  out = _run(num_steps=5, init_epsilon=0.1, gamma=0.2)(f, x, y, None)
  np.testing.assert_allclose(out.info['eps'], 0.1 * 1.2 ** 5, rtol=1e-5)
  assert not bool(jnp.any(out.info['success']))
  np.testing.assert_array_equal(out.x_adv, x)


def test_box_respected_and_success_on_x_adv():
  f, x, y = lm.mlp_batch()
  out = _run(num_steps=30, bounds=(0.0, 1.0))(f, x, y, KEY)
  lm.assert_box_and_success(out, f, x, y, failures_return_x=False)


def test_targeted_reaches_the_target():
  x, y = lm.batch()
  t = (y + 2) % lm.C
  out = _run(num_steps=200, init_epsilon=0.5, targeted=True)(lm.linear, x, t, KEY)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(jnp.argmax(lm.linear(out.x_adv), 1), t)
  lm.assert_near_minimal(out.x_adv, x, y, 'l2', None, target=t)


def test_zero_gradient_draws_a_direction_from_the_key():
  # Piecewise-constant logits (zero gradient everywhere): class 1 wins once ||x' - x||_1
  # >= 0.25. With a key, the authors' Gaussian direction moves the iterate onto the eps
  # sphere and finds it; without one, nothing moves.
  f = lambda v: jnp.stack([jnp.full(v.shape[0], 0.5),
                           jnp.round(2.0 * jnp.sum(jnp.abs(v - 0.5), 1))], 1)
  x = jnp.full((2, 4), 0.5)
  y = jnp.zeros(2, jnp.int32)
  with_key = _run(num_steps=3, bounds=(0.0, 1.0))(f, x, y, KEY)
  without = _run(num_steps=3, bounds=(0.0, 1.0))(f, x, y, None)
  assert bool(jnp.all(with_key.info['success']))
  assert not bool(jnp.any(without.info['success']))
  np.testing.assert_array_equal(without.x_adv, x)


@pytest.mark.slow
def test_eager_host_loop_equals_the_jitted_program():
  x, y = lm.batch(4)
  atk = attacks.ddn(num_steps=13, bounds=lm.FAR)
  eager = atk(lm.linear, x, y, KEY)
  jitted = jax.jit(atk, static_argnums=0)(lm.linear, x, y, KEY)
  np.testing.assert_allclose(eager.x_adv, jitted.x_adv, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kw,match', [
    ({'num_steps': 0}, 'num_steps=0'), ({'init_epsilon': 0.0}, 'init_epsilon=0.0'),
    ({'gamma': 1.0}, 'gamma=1.0'), ({'alpha_init': -1.0}, 'alpha_init=-1.0'),
    ({'targeted': 'yes'}, "targeted='yes'"), ({'bounds': (0.0, 0.0)}, 'bounds')])
def test_bad_hyperparameters(kw, match):
  with pytest.raises(ValueError, match=match):
    attacks.ddn(**kw)
