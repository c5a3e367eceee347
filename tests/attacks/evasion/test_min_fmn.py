"""FMN (Pintor et al. 2021): closed-form minimal distances on a linear model, the authors'
eps update and projections, box, targeted, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion.fmn import cosine, eps_update, project_ball, project_l0
from tests.attacks.evasion import linear_multiclass as lm


def _run(norm, **kw):
  kw.setdefault('bounds', lm.FAR)
  return jax.jit(attacks.fmn(norm=norm, **kw), static_argnums=0)


@pytest.mark.parametrize('norm,factor', [('l2', 1.01), ('linf', 1.01), ('l1', 1.01)])
def test_linear_model_closed_form(norm, factor):
  x, y = lm.batch()
  out = _run(norm, num_steps=100)(lm.linear, x, y, None)
  assert out.budget == 'minimal'
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(lm.linear(out.x_adv), 1) != y)
  lm.assert_near_minimal(out.x_adv, x, y, norm, factor)
  np.testing.assert_allclose(out.info['norm'], lm.dist(out.x_adv - x, norm), rtol=1e-5)


def test_l0_one_coordinate_suffices_far_from_the_box():
  # With the box far away, moving one coordinate far enough flips a linear model: L0 = 1.
  x, y = lm.batch()
  out = _run('l0', num_steps=50)(lm.linear, x, y, None)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(lm.dist(out.x_adv - x, 'l0'), 1.0)
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(lm.linear(out.x_adv), 1) != y)


@pytest.mark.parametrize('norm', ['l0', 'l1', 'l2', 'linf'])
def test_box_respected_and_success_on_x_adv(norm):
  # In the box [0, 1], near the centre: an MLP; success must match argmax on x_adv.
  f, x, y = lm.mlp_batch()
  out = _run(norm, num_steps=30, bounds=(0.0, 1.0))(f, x, y, None)
  assert out.x_adv.shape == x.shape
  lm.assert_box_and_success(out, f, x, y, failures_return_x=True)


@pytest.mark.parametrize('norm', ['l2', 'linf'])
def test_targeted_reaches_the_target_and_respects_the_pair_bound(norm):
  x, y = lm.batch()
  t = (y + 1) % lm.C
  out = _run(norm, num_steps=100, targeted=True)(lm.linear, x, t, None)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(jnp.argmax(lm.linear(out.x_adv), 1), t)
  lm.assert_near_minimal(out.x_adv, x, y, norm, None, target=t)


def test_misclassified_input_returns_x_with_distance_zero():
  x, y = lm.batch(4)
  wrong = (y + 1) % lm.C
  out = _run('l2', num_steps=5)(lm.linear, x, wrong, None)
  np.testing.assert_array_equal(out.x_adv, x)
  assert bool(jnp.all(out.info['success'])) and float(jnp.max(out.info['norm'])) == 0.0


def test_eps_update_matches_the_authors_rule():
  # The reference (pralab / adversarial-library ``fmn``), transcribed for one step, L2:
  # eps = where(adv, min(eps (1 - g), best), where(found, eps (1 + g), norm + |L| / ||g||)),
  # then min(eps, worst); the first linearised radius carries this port's (1 + g) factor.
  eps = jnp.array([2.0, 2.0, 2.0, jnp.inf])
  is_adv = jnp.array([True, True, False, False])
  found = jnp.array([True, True, True, False])
  best = jnp.array([1.5, 3.0, 1.0, jnp.inf])
  got = eps_update(eps, is_adv=is_adv, adv_found=found, best=best,
                           delta_norm=jnp.array([0.0, 0.0, 0.0, 0.5]),
                           loss=jnp.array([0.0, 0.0, 0.0, -2.0]),
                           grad_dual_norm=jnp.array([1.0, 1.0, 1.0, 4.0]), gamma=0.1,
                           worst=jnp.array([9.0, 9.0, 2.1, 9.0]), p='l2')
  np.testing.assert_allclose(got, [1.5, 1.8, 2.1, (0.5 + 0.5) * 1.1], rtol=1e-6)
  got0 = eps_update(jnp.array([10.0, 10.0, 0.0]), is_adv=jnp.array([True, False, True]),
                            adv_found=jnp.array([True, True, True]),
                            best=jnp.array([20.0, 20.0, 20.0]), delta_norm=None, loss=None,
                            grad_dual_norm=None, gamma=0.05,
                            worst=jnp.array([99.0, 99.0, 99.0]), p='l0')
  np.testing.assert_allclose(got0, [9.0, 11.0, 0.0])


def test_projections_and_cosine_schedule():
  d = jnp.array([[0.5, -3.0, 2.0, 0.1]])
  np.testing.assert_allclose(project_l0(d, jnp.array([2.0])), [[0, -3.0, 2.0, 0]])
  np.testing.assert_allclose(project_l0(d, jnp.array([0.0])), [[0, -3.0, 0, 0]])
  np.testing.assert_allclose(project_ball(d, jnp.array([1.0]), 'linf'),
                             [[0.5, -1.0, 1.0, 0.1]])
  np.testing.assert_allclose(jnp.sum(jnp.abs(project_ball(d, jnp.array([1.0]), 'l1'))),
                             1.0, rtol=1e-6)
  np.testing.assert_allclose([cosine(k, 10, 1.0, 0.01) for k in (0, 5, 10)],
                             [1.0, 0.505, 0.01], rtol=1e-6)


@pytest.mark.slow
def test_eager_host_loop_equals_the_jitted_program():
  x, y = lm.batch(4)
  atk = attacks.fmn(norm='l2', num_steps=13, bounds=lm.FAR)
  eager = atk(lm.linear, x, y, None)
  jitted = jax.jit(atk, static_argnums=0)(lm.linear, x, y, None)
  np.testing.assert_allclose(eager.x_adv, jitted.x_adv, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(eager.info['success'], jitted.info['success'])


@pytest.mark.parametrize('kw,match', [
    ({'norm': 'l3'}, "norm='l3'"), ({'num_steps': 0}, 'num_steps=0'),
    ({'alpha_init': 0.0}, 'alpha_init=0.0'), ({'gamma_init': 1.5}, 'gamma_init=1.5'),
    ({'gamma_final': -0.1}, 'gamma_final=-0.1'), ({'targeted': 1}, 'targeted=1'),
    ({'bounds': (1.0, 0.0)}, 'bounds')])
def test_bad_hyperparameters(kw, match):
  with pytest.raises(ValueError, match=match):
    attacks.fmn(**kw)
