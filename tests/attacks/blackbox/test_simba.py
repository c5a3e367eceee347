"""SimBA (Guo et al., ICML 2019), pixel basis: on a linear model one L_inf pass reaches the
exact optimum of the ball; threat model, query counts, monotone loss, bad hyperparameters."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import blackbox
from jaxsec.attacks.evasion import common
from tests.attacks.blackbox.linear_model import D, KEY, assert_factory_refuses
from tests.attacks.blackbox.linear_model import assert_refuses_bad_input
from tests.attacks.blackbox.linear_model import W as _W
from tests.attacks.blackbox.linear_model import binary as _binary
from tests.attacks.blackbox.linear_model import clean_batch as _clean_batch

# The package re-exports the factory under the module's name: fetch the module itself.
simba_lib = importlib.import_module('jaxsec.attacks.blackbox.simba')


def test_one_linf_pass_reaches_the_exact_optimum_of_a_linear_model():
  # With step_size = eps each coordinate is tried at x_i -+ eps (clipped): the one that
  # lowers p_y is the vertex minimising the (separable) margin, so after one pass over the
  # D coordinates an unsuccessful example sits at the exact minimiser over ball ∩ box.
  x, y = _clean_batch()
  out = jax.jit(blackbox.simba(eps=0.1, norm='linf', num_steps=D, step_size=0.1),
                static_argnums=0)(_binary, x, y, KEY)
  s = jnp.where(y[:, None] == 1, -jnp.sign(_W), jnp.sign(_W))
  x_opt = jnp.clip(x + 0.1 * s, 0.0, 1.0)
  reachable = np.asarray(common.margin(_binary(x_opt), y) < 0)
  succ = np.asarray(out.info['success'])
  assert 0 < reachable.sum() < len(y)
  np.testing.assert_array_equal(succ, reachable)
  np.testing.assert_array_equal(succ, np.asarray(common.predict(_binary(out.x_adv)) != y))
  np.testing.assert_allclose(out.x_adv[~succ], x_opt[~succ], atol=1e-6)
  assert float(jnp.max(jnp.abs(out.x_adv - x))) <= 0.1 + 1e-6
  q = np.asarray(out.info['queries'])
  clean = np.asarray(common.predict(_binary(x)) != y)
  np.testing.assert_array_equal(q[clean], 1)
  fail = ~succ
  assert np.all(q[fail] >= 1 + D) and np.all(q[fail] <= 1 + 2 * D)
  # Exactly one query for each coordinate whose first try (-) lowered p_y, two otherwise
  # (a coordinate at the box edge changes nothing and costs two).
  first_ok = np.asarray(jnp.clip(x - 0.1, 0.0, 1.0) != x) & np.asarray(s < 0)
  np.testing.assert_array_equal(q[fail], 1 + 2 * D - first_ok[fail].sum(axis=1))


def test_l2_ball_box_and_monotone_loss():
  x, y = _clean_batch(b=6, seed=3)
  atk = blackbox.simba(eps=0.25, num_steps=25, step_size=0.2)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  assert out.budget == 'fixed'
  assert np.all(np.asarray(common.norm(out.x_adv - x, 'l2')) <= 0.25 + 1e-5)
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  p_clean = jax.nn.softmax(_binary(x))[jnp.arange(6), y]
  p_adv = jax.nn.softmax(_binary(out.x_adv))[jnp.arange(6), y]
  assert np.all(np.asarray(p_adv) <= np.asarray(p_clean) + 1e-7)
  np.testing.assert_allclose(out.info['loss'], p_adv, rtol=1e-5)
  assert np.all(np.asarray(out.info['queries']) <= 1 + 2 * 25)


@pytest.mark.parametrize('kw, match', [
    (dict(eps=-0.5), r'eps=-0.5 must be >= 0'),
    (dict(eps=float('inf')), r'eps=inf must be finite'),
    (dict(eps=0.5, num_steps=0), r'num_steps=0 must be >= 1'),
    (dict(eps=0.5, step_size=0.0), r'step_size=0.0 must be > 0'),
    (dict(eps=0.5, norm='l1'), r"norm='l1' is not one of"),
    (dict(eps=0.5, targeted=None), r'targeted=None must be a bool'),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  assert_factory_refuses(blackbox.simba, kw, match)


def test_bad_input_raises_before_querying():
  assert_refuses_bad_input(blackbox.simba(eps=0.1, num_steps=1))
  assert simba_lib.NORMS == ('l2', 'linf')
