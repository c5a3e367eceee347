"""EAD (Chen et al. 2018): closed-form minimal L1 / L2 on a linear model, the shrinkage
step and FISTA momentum of the authors' code, decision rules, box, targeted, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion.ead import shrinkage
from tests.attacks.evasion import linear_multiclass as lm


def _run(**kw):
  kw.setdefault('bounds', lm.FAR)
  kw.setdefault('num_steps', 100)
  kw.setdefault('num_binary_steps', 6)
  kw.setdefault('initial_const', 0.1)
  return jax.jit(attacks.ead(**kw), static_argnums=0)


def _check(out, x, y, f=lm.linear):
  assert out.budget == 'minimal'
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(out.x_adv), 1) != y)
  np.testing.assert_allclose(out.info['l1'], lm.dist(out.x_adv - x, 'l1'), rtol=1e-5)


def test_l1_rule_near_the_minimal_l1_distance():
  x, y = lm.batch()
  out = _run(beta=0.05, decision_rule='l1')(lm.linear, x, y, None)
  _check(out, x, y)
  assert bool(jnp.all(out.info['success']))
  lm.assert_near_minimal(out.x_adv, x, y, 'l1', 1.3)
  lm.assert_near_minimal(out.x_adv, x, y, 'l2', np.inf)


def test_en_rule_with_small_beta_is_near_the_minimal_l2_distance():
  # beta -> 0 leaves the C&W L2 objective: the EN rule's point is near the minimal L2 one,
  # and an L1-sparser point than it for larger beta.
  x, y = lm.batch()
  en = _run(beta=1e-3, decision_rule='en')(lm.linear, x, y, None)
  _check(en, x, y)
  assert bool(jnp.all(en.info['success']))
  lm.assert_near_minimal(en.x_adv, x, y, 'l2', 1.5)
  l1 = _run(beta=0.05, decision_rule='l1')(lm.linear, x, y, None)
  assert float(jnp.mean(l1.info['l1'])) < float(jnp.mean(en.info['l1']))


def test_shrinkage_is_the_projected_soft_threshold():
  # eq. (6): z - x > beta -> min(z - beta, hi); z - x < -beta -> max(z + beta, lo); else x.
  x = jnp.array([0.5, 0.5, 0.5, 0.5, 0.9])
  z = jnp.array([0.8, 0.55, 0.2, 0.45, 1.5])
  np.testing.assert_allclose(shrinkage(z, x, 0.1, 0.0, 1.0), [0.7, 0.5, 0.3, 0.5, 1.0],
                             rtol=1e-6)


def test_ista_and_fista_both_succeed_and_fista_is_not_worse_on_average():
  x, y = lm.batch()
  fista = _run(beta=0.05, decision_rule='l1', num_binary_steps=4, num_steps=60,
               initial_const=1.0)(lm.linear, x, y, None)
  ista = _run(beta=0.05, decision_rule='l1', num_binary_steps=4, num_steps=60,
              initial_const=1.0, fista=False)(lm.linear, x, y, None)
  assert bool(jnp.all(fista.info['success'])) and bool(jnp.all(ista.info['success']))
  assert float(jnp.mean(fista.info['l1'])) <= 1.05 * float(jnp.mean(ista.info['l1']))


def test_box_respected_and_success_on_x_adv():
  f, x, y = lm.mlp_batch()
  out = _run(num_steps=50, num_binary_steps=3, initial_const=1.0, bounds=(0.0, 1.0))(
      f, x, y, None)
  _check(out, x, y, f)
  lm.assert_box_and_success(out, f, x, y, failures_return_x=True)


def test_targeted_reaches_the_target():
  x, y = lm.batch()
  t = (y + 1) % lm.C
  out = _run(beta=0.05, decision_rule='l1', targeted=True)(lm.linear, x, t, None)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(jnp.argmax(lm.linear(out.x_adv), 1), t)
  lm.assert_near_minimal(out.x_adv, x, y, 'l1', None, target=t)


def test_confidence_is_honoured():
  x, y = lm.batch()
  out = _run(confidence=1.0)(lm.linear, x, y, None)
  z = lm.linear(out.x_adv)
  zy = jnp.take_along_axis(z, y[:, None], 1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(y, lm.C) > 0, -jnp.inf, z), 1)
  ok = out.info['success']
  assert bool(jnp.all(ok)) and bool(jnp.all(other - zy > 1.0 - 1e-5))


@pytest.mark.slow
def test_eager_host_loop_equals_the_jitted_program():
  x, y = lm.batch(4)
  atk = attacks.ead(num_steps=12, num_binary_steps=2, initial_const=1.0, bounds=lm.FAR)
  eager = atk(lm.linear, x, y, None)
  jitted = jax.jit(atk, static_argnums=0)(lm.linear, x, y, None)
  np.testing.assert_allclose(eager.x_adv, jitted.x_adv, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(eager.info['gradients'], jitted.info['gradients'])


@pytest.mark.parametrize('kw,match', [
    ({'beta': 0.0}, 'beta=0.0'), ({'decision_rule': 'l2'}, "decision_rule='l2'"),
    ({'confidence': -1.0}, 'confidence=-1.0'), ({'initial_const': 0.0}, 'initial_const=0.0'),
    ({'num_binary_steps': 0}, 'num_binary_steps=0'), ({'num_steps': 0}, 'num_steps=0'),
    ({'learning_rate': 0.0}, 'learning_rate=0.0'), ({'fista': 1}, 'fista=1'),
    ({'bounds': (1.0, 0.0)}, 'bounds')])
def test_bad_hyperparameters(kw, match):
  with pytest.raises(ValueError, match=match):
    attacks.ead(**kw)
