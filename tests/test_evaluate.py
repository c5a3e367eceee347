"""jaxsec.evaluate: metrics by hand, eps sweeps under vmap, the Carlini et al. 2019 checks."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import evaluate
from jaxsec.attacks.base import AttackOutput
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
  for e, p in zip(rep['eps'], rep['perturbation'], strict=True):
    if p['count']:
      assert p['linf']['mean'] <= e + 1e-6
  assert set(rep['checks']) == {'success_monotone_in_eps', 'unbounded_eps_success',
                                'iterative_at_least_single_step', 'restarts_never_hurt'}
  assert rep['all_checks_pass'], rep['checks']


def test_checks_flag_a_broken_attack():
  f = _model()
  x = jax.random.uniform(jax.random.key(2), (16, 10))
  y = common.predict(f(x))
  dud = lambda e: (lambda logits_fn, x, y, key: AttackOutput(   # a masked attack
      x, {'success': jnp.zeros(x.shape[:1], bool)}, 'fixed'))
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


# ------------------------------------------------------------------ batched attack runner


def _xy(n, seed=2):
  x = jax.random.uniform(jax.random.key(seed), (n, 10))
  return x, jnp.argmax(_model()(x), -1)


def _pgd():
  from jaxsec.attacks import evasion as ev
  return ev.pgd(eps=0.1, step_size=0.05, num_steps=3, random_start=True)


def test_run_attack_batched_equals_unbatched_calls_with_the_key_schedule():
  f = _model()
  x, y = _xy(12)
  atk = _pgd()
  xa, info = evaluate.run_attack(atk, f, x, y, KEY, batch_size=4)
  # The documented schedule: batch at example i gets fold_in(key, i).
  ref = [atk(f, x[i:i + 4], y[i:i + 4], jax.random.fold_in(KEY, i)) for i in (0, 4, 8)]
  np.testing.assert_allclose(xa, np.concatenate([np.asarray(r.x_adv) for r in ref]),
                             atol=1e-6)
  assert set(info) == set(ref[0].info)
  # A deterministic attack does not depend on the batching at all.
  fgm = evaluate.evasion.fgm(eps=0.1, norm='linf')
  xb, _ = evaluate.run_attack(fgm, f, x, y, KEY, batch_size=5)
  np.testing.assert_allclose(xb, np.asarray(fgm(f, x, y, KEY).x_adv), atol=1e-6)
  # fold_key=False: the same key for every batch.
  xs, _ = evaluate.run_attack(atk, f, x, y, KEY, batch_size=4, fold_key=False)
  np.testing.assert_allclose(xs[4:8], np.asarray(atk(f, x[4:8], y[4:8], KEY).x_adv),
                             atol=1e-6)


def test_run_attack_remainder_batch_padded_once_compiled_and_dropped():
  f = _model()
  x, y = _xy(10)
  shapes = []

  def fgm(logits_fn, xb, yb, key):
    shapes.append(xb.shape)          # runs at trace time only: one entry per compilation
    return evaluate.evasion.fgm(eps=0.1, norm='linf')(logits_fn, xb, yb, key)
  xa, info = evaluate.run_attack(fgm, f, x, y, KEY, batch_size=4)
  assert xa.shape == (10, 10) and set(info) == {'success', 'loss', 'gradients'}
  assert info['success'].shape == (10,)       # the padded rows dropped
  assert shapes == [(4, 10)]         # 4 + 4 + (2 padded to 4): one shape
  np.testing.assert_allclose(xa, np.asarray(fgm(f, x, y, KEY).x_adv), atol=1e-6)
  shapes.clear()
  xu, _ = evaluate.run_attack(fgm, f, x, y, KEY, batch_size=4, pad=False)
  assert shapes == [(4, 10), (2, 10)]
  np.testing.assert_allclose(xu, xa, atol=1e-6)


def test_run_attack_keeps_per_example_info_only():
  # A universal perturbation's info also has per-batch entries (the perturbation, the
  # fooling rate): left out, since they do not concatenate over batches.
  f = _model()
  x, y = _xy(10)
  uap = evaluate.evasion.universal_perturbation_sgd(xi=0.1, num_steps=2, batch_size=4)
  xa, info = evaluate.run_attack(uap.attack, f, x, y, KEY, batch_size=4)
  assert xa.shape == x.shape and set(info) == {'success', 'fooled'}
  assert info['success'].shape == (10,)


def test_run_attack_progress_called_and_logged(caplog):
  f = _model()
  x, y = _xy(10)
  calls = []
  evaluate.run_attack(evaluate.evasion.fgm(eps=0.1), f, x, y, KEY, batch_size=4,
                      progress=lambda done, total: calls.append((done, total)))
  assert calls == [(1, 3), (2, 3), (3, 3)]
  with caplog.at_level('INFO'):
    evaluate.run_attack(evaluate.evasion.fgm(eps=0.1), f, x, y, KEY, batch_size=4,
                        progress='t/fgm')
  lines = [r.getMessage() for r in caplog.records if '[t/fgm]' in r.getMessage()]
  assert len(lines) == 3 and 'batch 3/3' in lines[-1] and 'ETA' in lines[-1]
  assert 'batch/s' in lines[0]


def test_map_batches_scalar_leaves_per_batch_and_bad_input():
  f = lambda a: (a * 2, jnp.sum(a))
  out = evaluate.map_batches(f, (np.arange(5.0),), batch_size=2, pad=False)
  np.testing.assert_array_equal(out[0], np.arange(5.0) * 2)
  np.testing.assert_array_equal(out[1], [1.0, 5.0, 4.0])
  with pytest.raises(ValueError, match='padded'):   # the padding would count in the sum
    evaluate.map_batches(f, (np.arange(5.0),), batch_size=2)
  with pytest.raises(ValueError, match='batch_size'):
    evaluate.map_batches(lambda a: a, (np.ones(3),), batch_size=0)
  with pytest.raises(ValueError, match='leading sizes'):
    evaluate.map_batches(lambda a, b: a, (np.ones(3), np.ones(4)), batch_size=2)
  with pytest.raises(ValueError, match='leading batch axis'):
    evaluate.map_batches(lambda a: a.reshape(1, -1), (np.ones(4),), batch_size=2)
  with pytest.raises(ValueError, match='progress'):
    evaluate.map_batches(lambda a: a, (np.ones(3),), batch_size=2, progress=3)
