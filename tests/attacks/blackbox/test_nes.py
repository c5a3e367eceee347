"""NES (Ilyas et al., ICML 2018): the estimator against closed-form gradients, the threat
model, exact query counts, plateau annealing, success on a linear model, bad
hyperparameters."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import blackbox
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common
from tests.attacks.blackbox.linear_model import KEY, SCORE_BASED_BAD_HYPERPARAMETERS
from tests.attacks.blackbox.linear_model import assert_factory_refuses
from tests.attacks.blackbox.linear_model import assert_linf_fixed_budget_run
from tests.attacks.blackbox.linear_model import assert_refuses_bad_input, quadratic_loss
from tests.attacks.blackbox.linear_model import binary as _binary
from tests.attacks.blackbox.linear_model import clean_batch as _clean_batch

# The package re-exports the factory under the module's name: fetch the module itself.
nes_lib = importlib.import_module('jaxsec.attacks.blackbox.nes')


# --------------------------------------------------------------------------- estimator


def test_nes_estimate_matches_the_analytic_gradient_of_a_quadratic():
  # Loss q(x) = 0.5 x'Ax + c'x through the attack's plumbing (model [q(x), 0], y = 0,
  # untargeted margin = q). Antithetic Gaussian pairs: g = mean (u u') grad, unbiased with
  # coordinate variance ||grad||^2 + grad_k^2.
  rng = np.random.default_rng(0)
  f, _, grad_q, _ = quadratic_loss(rng)
  x = jnp.asarray(rng.uniform(size=(2, 6)), jnp.float32)
  n = 20000
  g, _ = jax.jit(lambda z: estimators.nes_gradient(f, z, KEY, sigma=0.01,
                                                   num_samples=n))(x)
  true = np.asarray(grad_q(x))
  sd = np.sqrt((np.sum(true ** 2, axis=1, keepdims=True) + true ** 2) / n)
  err = np.abs(np.asarray(g) - true)
  np.testing.assert_array_less(err, 5 * sd + 1e-4)
  assert np.all(err > 0)


def test_attack_loss_signs():
  z = jnp.array([[2.0, 0.5, -1.0]])
  y = jnp.array([0])
  assert float(estimators.attack_loss('margin', False)(z, y)[0]) == pytest.approx(1.5)
  assert float(estimators.attack_loss('margin', True)(z, jnp.array([2]))[0]) == \
      pytest.approx(3.0)
  ce = float(common.cross_entropy(z, y)[0])
  assert float(estimators.attack_loss('ce', False)(z, y)[0]) == pytest.approx(-ce)
  assert float(estimators.attack_loss('ce', True)(z, y)[0]) == pytest.approx(ce)


# --------------------------------------------------------------------------- the attack


def test_linf_nes_ball_box_queries_and_success():
  x, y = _clean_batch()
  atk = blackbox.nes(eps=0.1, num_steps=40, num_samples=8)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  # Success as PGD (up to one example); 1 clean query, then 2 * num_samples + 1 per step.
  assert_linf_fixed_budget_run(out, x, y, 0.1, num_steps=40, per_step=2 * 8 + 1)


def test_l2_nes_projects_and_counts():
  x, y = _clean_batch(b=6, seed=3)
  atk = blackbox.nes(eps=0.2, norm='l2', num_steps=3, num_samples=2, step_size=0.5,
                     min_step_size=0.5)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  assert np.all(np.asarray(common.norm(out.x_adv - x, 'l2')) <= 0.2 + 1e-5)
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  q = np.asarray(out.info['queries'])
  assert np.all((q - 1) % 5 == 0) and np.all(q <= 1 + 3 * 5)


def test_plateau_annealing_lets_the_sign_step_settle():
  # One feature, loss |x - 0.62| + 1 (never a success): sign steps of 0.1 from 0.3 reach
  # 0.6 and then oscillate between 0.6 and 0.7 for ever unless the step shrinks. With
  # plateau_drop = 2 each rise of the loss over the window halves it and the iterate
  # settles at the minimiser; plateau_drop = 1 (no annealing) keeps the oscillation.
  x = jnp.full((1, 1), 0.3)
  f = lambda z: jnp.concatenate([1.0 + jnp.abs(z - 0.62), jnp.zeros_like(z)], axis=1)

  @jax.jit
  def run(drop):
    return blackbox.nes(eps=0.5, num_steps=40, num_samples=1, step_size=0.1,
                        min_step_size=1e-3, momentum=0.0, plateau_length=2,
                        plateau_drop=drop, loss='margin')(f, x, jnp.zeros(1, jnp.int32), KEY)
  settled, oscillating = run(2.0), run(1.0)
  assert abs(float(settled.x_adv[0, 0]) - 0.62) < 0.01
  assert abs(float(oscillating.x_adv[0, 0]) - 0.62) > 0.015
  np.testing.assert_array_equal(settled.info['queries'], 1 + 40 * 3)
  assert not bool(settled.info['success'][0])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize('kw, match', SCORE_BASED_BAD_HYPERPARAMETERS + [
    (dict(eps=0.1, num_samples=0), r'num_samples=0 must be >= 1'),
    (dict(eps=0.1, sigma=0.0), r'sigma=0.0 must be > 0'),
    (dict(eps=0.1, step_size=-0.1), r'step_size=-0.1 must be > 0'),
    (dict(eps=0.1, step_size=1e-3, min_step_size=1e-2),
     r'min_step_size=0.01 must be <= step_size=0.001'),
    (dict(eps=0.1, momentum=1.0), r'momentum=1.0 must be < 1.0'),
    (dict(eps=0.1, plateau_length=0), r'plateau_length=0 must be >= 1'),
    (dict(eps=0.1, plateau_drop=0.5), r'plateau_drop=0.5 must be >= 1.0'),
    (dict(eps=0.1, targeted='yes'), r"targeted='yes' must be a bool"),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  assert_factory_refuses(blackbox.nes, kw, match)


def test_bad_input_raises_before_querying():
  assert_refuses_bad_input(blackbox.nes(eps=0.1, num_steps=1, num_samples=1))
  assert nes_lib.NORMS == ('linf', 'l2')
