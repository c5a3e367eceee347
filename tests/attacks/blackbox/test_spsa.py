"""SPSA (Uesato et al., ICML 2018): the estimator against closed-form gradients, the threat
model, exact query counts, success against PGD on a linear model, bad hyperparameters."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks import blackbox
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common
from tests.attacks.blackbox.linear_model import KEY, assert_factory_refuses
from tests.attacks.blackbox.linear_model import assert_refuses_bad_input, quadratic_loss
from tests.attacks.blackbox.linear_model import W as _W
from tests.attacks.blackbox.linear_model import binary as _binary
from tests.attacks.blackbox.linear_model import clean_batch as _clean_batch

# The package re-exports the factory under the module's name: fetch the module itself.
spsa_lib = importlib.import_module('jaxsec.attacks.blackbox.spsa')


def _best_linf_margin(x, y, eps):
  """The exact minimum over the ball ∩ [0, 1] of the true-class margin of the linear model
  (separable: each coordinate moves to its clipped end against the margin)."""
  s = jnp.where(y[:, None] == 1, -jnp.sign(_W), jnp.sign(_W))   # direction lowering z_y
  x_best = jnp.clip(x + eps * s, 0.0, 1.0)
  return common.margin(_binary(x_best), y)


# --------------------------------------------------------------------------- estimator


def test_spsa_estimate_matches_the_analytic_gradient_of_a_quadratic():
  # Through the attack's own plumbing: the model [q(x), 0] with y = 0 has the untargeted
  # margin loss q(x). For a quadratic the antithetic quotient is exact, so
  # g_k = grad_k + sum_{j != k} v_k v_j grad_j: unbiased with variance sum_{j != k} grad_j^2.
  f, q, grad_q, a = quadratic_loss(np.random.default_rng(0))
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 6)), jnp.float32)
  n = 20000
  g, mean_loss = jax.jit(lambda z: estimators.spsa_gradient(f, z, KEY, delta=0.05,
                                                            num_samples=n))(x)
  true = np.asarray(grad_q(x))
  sd = np.sqrt((np.sum(true ** 2, axis=1, keepdims=True) - true ** 2) / n)
  np.testing.assert_array_less(np.abs(np.asarray(g) - true), 5 * sd + 1e-4)
  assert np.all(np.abs(np.asarray(g) - true) > 0)          # a Monte Carlo estimate
  # The mean loss of the sample points: q(x) + delta^2 / 2 v'Av, whose mean is tr(A).
  np.testing.assert_allclose(mean_loss, q(x) + 0.5 * 0.05 ** 2 * np.trace(a), atol=1e-4)


def test_spsa_estimate_of_a_one_feature_linear_loss_is_exact():
  # A linear loss L = c.x: each pair gives (c.v) v, whose coordinate k has mean c_k; with
  # one feature (d = 1, v^2 = 1) every pair gives exactly c.
  c = jnp.asarray([[2.5], [-1.0]])
  f = lambda pts: jnp.sum(pts * c[:, None, :], axis=-1)
  g, _ = estimators.spsa_gradient(f, jnp.zeros((2, 1)), KEY, delta=0.3, num_samples=3)
  np.testing.assert_allclose(g, c, rtol=1e-6)


# --------------------------------------------------------------------------- the attack


@pytest.fixture(scope='module')
def linf_run():
  x, y = _clean_batch()
  atk = blackbox.spsa(eps=0.1, num_steps=30, num_samples=8)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  # 40 steps: a loop (short loops are unrolled on CPU, a longer compilation).
  pgd = jax.jit(attacks.pgd(eps=0.1, num_steps=40, loss='cw'), static_argnums=0)(
      _binary, x, y, KEY)
  return x, y, out, pgd


def test_linf_spsa_stays_in_ball_and_box_and_matches_pgd(linf_run):
  x, y, out, pgd = linf_run
  assert out.budget == 'fixed' and out.x_adv.shape == x.shape
  assert float(jnp.max(jnp.abs(out.x_adv - x))) <= 0.1 + 1e-6
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  succ = np.asarray(out.info['success'])
  np.testing.assert_array_equal(succ, np.asarray(common.predict(_binary(out.x_adv)) != y))
  reachable = np.asarray(_best_linf_margin(x, y, 0.1) < 0)
  pgd_succ = np.asarray(pgd.info['success'])
  assert not np.any(succ & ~reachable)
  np.testing.assert_array_equal(pgd_succ, reachable)        # PGD is exact on this model
  assert 0 < pgd_succ.sum() < len(y)                        # a non-trivial batch
  assert succ.sum() >= pgd_succ.sum() - 1                   # comparable to PGD


def test_queries_are_counted_exactly_with_early_stop(linf_run):
  x, y, out, _ = linf_run
  q = np.asarray(out.info['queries'])
  per_step = 2 * 8 + 1
  # 1 clean query, then (2 * num_samples + 1) per step until success or the budget.
  assert np.all((q - 1) % per_step == 0)
  clean_succ = np.asarray(common.predict(_binary(x)) != y)
  np.testing.assert_array_equal(q[clean_succ], 1)
  fail = ~np.asarray(out.info['success'])
  np.testing.assert_array_equal(q[fail], 1 + 30 * per_step)
  assert np.all(q <= 1 + 30 * per_step)


def test_l2_without_early_stop_counts_and_projects():
  x, y = _clean_batch(b=6, seed=3)
  atk = blackbox.spsa(eps=0.3, norm='l2', num_steps=4, num_samples=3, spsa_iters=2,
                      early_stop=False, learning_rate=0.05)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  assert np.all(np.asarray(common.norm(out.x_adv - x, 'l2')) <= 0.3 + 1e-5)
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  # clean + 4 steps of 2 estimates of 2 * 3 queries + the final query.
  np.testing.assert_array_equal(out.info['queries'], 2 + 4 * 2 * 2 * 3)
  np.testing.assert_array_equal(out.info['success'],
                                common.predict(_binary(out.x_adv)) != y)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize('kw, match', [
    (dict(eps=-0.1), r'eps=-0.1 must be >= 0'),
    (dict(eps=0.1, num_steps=0), r'num_steps=0 must be >= 1'),
    (dict(eps=0.1, num_samples=2.5), r'num_samples=2.5 must be an integer'),
    (dict(eps=0.1, spsa_iters=0), r'spsa_iters=0 must be >= 1'),
    (dict(eps=0.1, delta=0.0), r'delta=0.0 must be > 0'),
    (dict(eps=0.1, learning_rate=-1.0), r'learning_rate=-1.0 must be > 0'),
    (dict(eps=0.1, norm='l1'), r"norm='l1' is not one of"),
    (dict(eps=0.1, loss='dlr'), r"loss='dlr' is not one of"),
    (dict(eps=0.1, early_stop=1), r'early_stop=1 must be a bool'),
    (dict(eps=0.1, bounds=(1.0, 0.0)), r'bounds=\(1.0, 0.0\) must satisfy'),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  assert_factory_refuses(blackbox.spsa, kw, match)


def test_bad_input_raises_before_querying():
  assert_refuses_bad_input(blackbox.spsa(eps=0.1, num_steps=1, num_samples=1))
  assert spsa_lib.NORMS == ('linf', 'l2')
