"""jaxsec.evaluate: metrics by hand, eps sweeps under vmap, the Carlini et al. 2019 checks."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import evaluate
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)


def _model():
  k1, k2 = jax.random.split(jax.random.key(1))
  W1 = jax.random.normal(k1, (10, 16)) / np.sqrt(10)
  W2 = jax.random.normal(k2, (16, 4))
  return lambda x: jnp.tanh(x.reshape((x.shape[0], -1)) @ W1 * 2.0) @ W2


def test_perturbation_stats_by_hand():
  x = np.zeros((3, 4), np.float32)
  xa = np.array([[0.5, 0, 0, 0], [0.3, -0.4, 0, 0], [1, 1, 1, 1]], np.float32)
  s = evaluate.perturbation_stats(x, xa, np.array([True, True, False]))
  assert s['count'] == 2
  assert s['l0']['mean'] == pytest.approx(1.5) and s['l0']['median'] == pytest.approx(1.5)
  assert s['l2']['mean'] == pytest.approx(0.5) and s['l2']['median'] == pytest.approx(0.5)
  assert s['linf']['mean'] == pytest.approx(0.45)
  empty = evaluate.perturbation_stats(x, xa, np.zeros(3, bool))
  assert np.isnan(empty['l2']['mean']) and empty['count'] == 0


def test_attack_metrics_success_among_clean_correct():
  f = lambda x: jnp.concatenate([x, -x], axis=1)    # class 0 iff x > 0
  x = jnp.array([[1.0], [1.0], [-1.0], [1.0]])
  y = jnp.array([0, 0, 0, 1])                        # the last two are clean errors
  x_adv = jnp.array([[-1.0], [0.5], [-1.0], [1.0]])
  m, fooled = evaluate.attack_metrics(f, x, y, x_adv, {'gradients': np.array([3, 3, 3, 3])})
  assert m['robust_accuracy'] == pytest.approx(0.25)
  assert m['success_rate'] == pytest.approx(0.5)
  np.testing.assert_array_equal(fooled, [True, False, False, False])
  assert m['perturbation']['l2']['mean'] == pytest.approx(2.0)
  assert m['gradients'] == 3


def test_robustness_report_runs_checks_and_is_json():
  f = _model()
  x = jax.random.uniform(jax.random.key(2), (128, 10))
  y = common.predict(f(x))
  rep = evaluate.robustness_report(f, x, y, KEY, eps=[0.0, 0.05, 0.2, 0.5], norm='linf',
                                   num_steps=10, restarts=2)
  json.dumps(rep)
  assert rep['vmapped'] is True
  assert rep['clean_accuracy'] == 1.0
  assert rep['success_rate'][0] == 0.0 and rep['robust_accuracy'][0] == 1.0
  assert rep['success_rate'][-1] > rep['success_rate'][1]
  np.testing.assert_allclose(np.asarray(rep['robust_accuracy']),
                             1.0 - np.asarray(rep['success_rate']), atol=1e-7)
  assert rep['gradients'] == [10.0] * 4
  # Successful examples at eps use at most eps in L_inf.
  for e, p in zip(rep['eps'], rep['perturbation']):
    if p['count']:
      assert p['linf']['mean'] <= e + 1e-6
  assert set(rep['checks']) == {'success_monotone_in_eps', 'unbounded_eps_success',
                                'iterative_at_least_single_step', 'restarts_never_hurt'}
  assert rep['all_checks_pass'], rep['checks']


def test_checks_flag_a_broken_attack():
  f = _model()
  x = jax.random.uniform(jax.random.key(2), (16, 10))
  y = common.predict(f(x))
  dud = lambda e: (lambda logits_fn, x, y, key: x)     # a "defence" that masks the attack
  rep = evaluate.robustness_report(f, x, y, KEY, eps=[0.1, 0.3], make_attack=dud,
                                   checks=('success_monotone_in_eps',
                                           'unbounded_eps_success'))
  assert set(rep['checks']) == {'success_monotone_in_eps', 'unbounded_eps_success'}
  assert rep['checks']['success_monotone_in_eps']['pass']
  assert rep['success_rate'] == [0.0, 0.0]
  assert not rep['checks']['unbounded_eps_success']['pass']
  assert not rep['all_checks_pass']


@pytest.mark.parametrize('kw,name', [
    (dict(eps=[0.2, 0.1]), 'eps'), (dict(eps=[-0.1]), 'eps'), (dict(eps=[]), 'eps'),
    (dict(eps=[0.1], norm='l7'), 'norm'), (dict(eps=[0.1], restarts=0), 'restarts'),
    (dict(eps=[0.1], checks=('gradient_masking',)), 'checks'),
])
def test_bad_arguments(kw, name):
  f = _model()
  with pytest.raises(ValueError, match=name):
    evaluate.robustness_report(f, jnp.zeros((2, 10)), jnp.zeros(2, jnp.int32), KEY, **kw)
