"""AutoAttack parity: versions ('standard', 'plus', 'rand', 'jaxsec-fast') and the official
checks (autoattack/checks.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion import autoattack as aa_lib
from jaxsec.attacks.evasion import autopgd as apgd_lib
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)
W = jax.random.normal(jax.random.key(1), (6, 10))


def _linear(x):
  return x @ W


def test_fast_is_renamed_with_a_clear_error():
  for fn in (lambda: attacks.auto_attack(eps=0.1, version='fast'),
             lambda: attacks.run_auto_attack(_linear, jnp.zeros((1, 6)), jnp.zeros(1, jnp.int32),
                                             KEY, eps=0.1, version='fast')):
    with pytest.raises(ValueError, match="renamed 'jaxsec-fast'"):
      fn()
  assert attacks.auto_attack_stage_names(num_classes=10, version='jaxsec-fast') == [
      'apgd-ce', 'apgd-t']


def test_plus_and_rand_stages_follow_the_official_set_version():
  plus = lambda c: attacks.auto_attack_stage_names(num_classes=c, version='plus')
  assert plus(10) == ['apgd-ce', 'apgd-dlr', 'fab', 'square', 'apgd-t', 'fab-t']
  assert plus(3) == ['apgd-ce', 'apgd-dlr', 'fab', 'square', 'fab-t']
  split = [n for n, _ in aa_lib.stages(eps=0.1, norm='linf', version='plus', bounds=(0, 1),
                                       num_classes=10, split_targets=True)]
  assert split.count('apgd-t') == 9 and split.count('fab-t') == 9
  assert attacks.auto_attack_stage_names(num_classes=10, version='rand') == [
      'apgd-ce', 'apgd-dlr']


def test_plus_runs_five_restarts_of_apgd_and_fab():
  x = jax.random.uniform(jax.random.key(2), (2, 6))
  y = common.predict(_linear(x))
  st = dict(aa_lib.stages(eps=0.05, norm='linf', version='plus', bounds=(0.0, 1.0),
                          num_classes=10))
  for name, per_point in (('apgd-ce', 5 * 101), ('apgd-dlr', 5 * 101), ('fab', 5 * 100 * 9)):
    out = jax.jit(st[name], static_argnums=0)(_linear, x, y, KEY)
    np.testing.assert_array_equal(out.info['gradients'], per_point)


def test_eot_gradient_is_the_mean_of_per_draw_loss_gradients():
  # A dropout-like randomised linear model: the EOT gradient is the mean of the per-draw
  # gradients of the loss (not the gradient of the loss of the mean output).
  w = jax.random.normal(jax.random.key(3), (6, 4))
  f = lambda x, k: x @ (w * jax.random.bernoulli(k, 0.5, w.shape) * 2.0)
  x = jax.random.uniform(jax.random.key(4), (3, 6))
  y = jnp.array([0, 1, 2])
  key = jax.random.key(5)
  obj = common.objective('ce', False)
  _, _, g = apgd_lib._eot_value_and_grad(f, obj, 7)(x, y, key)
  per = [jax.grad(lambda z, k=k: jnp.sum(obj(f(z, k), y)))(x) for k in jax.random.split(key, 7)]
  np.testing.assert_allclose(g, np.mean(per, axis=0), rtol=1e-5, atol=1e-6)
  mean_out = jax.grad(lambda z: jnp.sum(obj(
      jnp.mean(jnp.stack([f(z, k) for k in jax.random.split(key, 7)]), 0), y)))(x)
  assert float(jnp.abs(g - mean_out).max()) > 1e-3


def test_rand_version_attacks_a_randomised_model_with_eot():
  # Logit noise on a linear model: 'rand' takes logits_fn(x, key), spends 20 x 101
  # gradients per point and stage, and lowers the accuracy measured on single draws.
  f = lambda x, k: x @ W + 0.05 * jax.random.normal(k, (x.shape[0], 10))
  x = jax.random.uniform(jax.random.key(6), (8, 6))
  y = common.predict(_linear(x))
  aa = attacks.auto_attack(eps=0.5, version='rand')
  out = jax.jit(aa, static_argnums=0)(f, x, y, KEY)
  assert float(jnp.abs(out.x_adv - x).max()) <= 0.5 + 1e-6
  rob = np.asarray(out.info['robust_per_stage']).mean(1)
  assert rob[-1] < np.asarray(out.info['clean_correct']).mean()
  st = dict(aa_lib.stages(eps=0.3, norm='linf', version='rand', bounds=(0.0, 1.0),
                          num_classes=10))
  g = jax.jit(st['apgd-ce'], static_argnums=0)(f, x, y, KEY).info['gradients']
  np.testing.assert_array_equal(g, 20 * 101)


def test_run_auto_attack_rand_runs_the_rand_stages_and_reports():
  # The host driver with version='rand': a dropout-like randomised model (x, key) ->
  # logits, the official 'rand' stage list, accuracies on single draws, the randomness
  # check not run (official: only for versions other than 'rand').
  w = jax.random.normal(jax.random.key(7), (6, 10))
  f = lambda x, k: x @ (w * jax.random.bernoulli(k, 0.8, w.shape) / 0.8)
  x = jax.random.uniform(jax.random.key(8), (16, 6))
  y = common.predict(x @ w)
  res = attacks.run_auto_attack(f, x, y, KEY, eps=0.3, version='rand', batch_size=16)
  assert [st['name'] for st in res['stages']] == ['apgd-ce', 'apgd-dlr']
  accs = [st['robust_accuracy'] for st in res['stages']]
  assert accs[1] <= accs[0] <= res['clean_accuracy']
  assert accs[1] < res['clean_accuracy']
  assert res['checks']['randomized'] is None
  # The final figure is the official one: the cumulative single-draw flags of the stages;
  # x_adv re-evaluated on a fresh draw is reported apart.
  assert res['robust_accuracy'] == accs[-1] == pytest.approx(1.0 - np.mean(res['success']))
  assert res['robust_accuracy_reevaluated'] == pytest.approx(
      1.0 - np.mean(res['success_reevaluated']))
  assert float(np.abs(np.asarray(res['x_adv']) - np.asarray(x)).max()) <= 0.3 + 1e-6
  # 20 EOT draws x 101 gradients per attacked point and stage.
  assert res['stages'][0]['gradients'] == 20 * 101 * res['stages'][0]['attacked']


def test_check_randomized_flags_a_random_model_only():
  x = jax.random.uniform(jax.random.key(7), (4, 6))
  y = common.predict(_linear(x))
  rng = np.random.default_rng(0)
  noisy = lambda z: _linear(z) + 1e-2 * rng.normal(size=(z.shape[0], 10))
  assert aa_lib.check_randomized(_linear, x, y) is None
  assert 'version=' in aa_lib.check_randomized(noisy, x, y)


def test_check_range_output_flags_probabilities():
  x = jax.random.uniform(jax.random.key(8), (4, 6))
  assert aa_lib.check_range_output(_linear, x) is None
  assert 'probability' in aa_lib.check_range_output(lambda z: jax.nn.softmax(_linear(z)), x)


def test_zero_gradients_are_counted_and_reported():
  x = jax.random.uniform(jax.random.key(9), (5, 6))
  y = common.predict(_linear(x))
  masked = lambda z: _linear(jax.lax.stop_gradient(z))
  half = lambda z: jnp.where(jnp.arange(z.shape[0])[:, None] < 2, masked(z), _linear(z))
  assert aa_lib.count_zero_gradients(_linear, x, y) == 0
  assert aa_lib.count_zero_gradients(masked, x, y) == 5
  assert aa_lib.count_zero_gradients(half, x, y) == 2
  with pytest.warns(UserWarning, match='5 points with zero gradient'):
    res = attacks.run_auto_attack(masked, x, y, KEY, eps=0.05, version='jaxsec-fast')
  assert res['checks']['zero_gradients'] == 5 and not res['checks']['randomized']


def test_square_only_robustness_flag_follows_check_square_sr():
  base = {'clean': 0.9, 'apgd-ce': 0.5, 'apgd-t': 0.45, 'fab-t': 0.45}
  assert aa_lib.check_square_sr({**base, 'square': 0.449}) is None      # within 0.2%
  msg = aa_lib.check_square_sr({**base, 'square': 0.40})
  assert msg is not None and '5.00%' in msg
  assert aa_lib.check_square_sr({'clean': 0.9, 'square': 0.1}) is None   # needs > 2 entries
