"""Smoke run of experiments/evasion_proxy.py (digits28 proxy, tiny model) and its pieces."""

import jax.numpy as jnp
import numpy as np

from experiments import evasion_proxy
from experiments.configs import evasion_proxy as evasion_proxy_config
from jaxsec.attacks.evasion.jsma import jsma
from tests.experiments import run_smoke


def test_digits28_is_an_mnist_like_frame():
  (xtr, ytr), (xte, yte) = evasion_proxy.load_digits28(seed=0)
  assert xtr.shape[1:] == (28, 28, 1) and xte.shape[1:] == (28, 28, 1)
  assert xtr.dtype == np.float32 and ytr.dtype == np.int32
  assert xtr.shape[0] + xte.shape[0] == 1797
  assert abs(xte.shape[0] - 0.25 * 1797) <= 1
  assert xtr.min() >= 0.0 and xtr.max() <= 1.0
  # 4-pixel empty frame around the 20x20 digit, as in MNIST
  frame = np.ones((28, 28), bool)
  frame[4:24, 4:24] = False
  assert np.all(xtr[:, frame, 0] == 0.0)
  assert set(np.unique(yte)) == set(range(10))
  # the same seed gives the same split, another seed another one
  (x2, _), _ = evasion_proxy.load_digits28(seed=0)
  (x3, _), _ = evasion_proxy.load_digits28(seed=1)
  np.testing.assert_array_equal(xtr, x2)
  assert not np.array_equal(xtr, x3)


def test_digits28_contrast_gives_mnist_like_pixel_statistics():
  (xtr, _), (xte, _) = evasion_proxy.load_digits28(seed=0, contrast=(0.80, 0.92))
  assert xtr.min() >= 0.0 and xtr.max() <= 1.0 and xtr.dtype == np.float32
  # the training split's 80% / 92% pixel quantiles map to 0 / 1
  assert abs(np.mean(xtr > 0) - 0.20) < 0.01
  assert abs(np.mean(xtr >= 1) - 0.08) < 0.01
  assert abs(np.mean(xte > 0) - 0.20) < 0.03
  (plain, _), _ = evasion_proxy.load_digits28(seed=0)
  assert np.mean(plain >= 1) < 0.01            # the plain proxy has few saturated pixels


def test_stop_reasons_budget_and_empty_map():
  # Linear 3-class model on 10 features. Class 2's weights are all negative, so for
  # target 2 the increasing variant's saliency map is empty at once; for target 1 (positive
  # weights, the others' sum negative) every pair qualifies and a budget of 2 features runs
  # out before the target is reached.
  w = np.zeros((10, 3), np.float32)
  w[:, 0] = 0.5
  w[:, 1] = 0.01
  w[:, 2] = -1.0
  f = lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(w)
  x = jnp.full((2, 10), 0.5)
  t = jnp.array([2, 1])
  gamma = 0.25                                        # floor(0.25 * 10) = 2 features
  kw = dict(theta=1.0, gamma=gamma, bounds=(0.0, 1.0))
  for rule in ('stop', 'continue'):
    out = jsma(empty_map=rule, **kw)(f, x, t, None)
    r = evasion_proxy.jsma_stop_reasons(x, out.x_adv, out.info['success'],
                                        out.info['features_changed'],
                                        out.info['empty_map_iterations'], empty_map=rule,
                                        **kw)
    np.testing.assert_array_equal(r['success'], [False, False])
    np.testing.assert_array_equal(r['met_empty_map'], [True, False])
    np.testing.assert_array_equal(r['domain'], [False, False])
    if rule == 'stop':
      np.testing.assert_array_equal(r['empty_map'], [True, False])
      np.testing.assert_array_equal(r['budget'], [False, True])
      np.testing.assert_array_equal(out.info['features_changed'], [0, 2])
    else:   # the first pair of the domain moves instead, and the budget runs out
      np.testing.assert_array_equal(r['empty_map'], [False, False])
      np.testing.assert_array_equal(r['budget'], [True, True])
      np.testing.assert_array_equal(out.info['features_changed'], [2, 2])
      np.testing.assert_array_equal(np.asarray(out.x_adv[0, :2]), [1.0, 1.0])


def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(evasion_proxy, evasion_proxy_config, tmp_path)
  assert saved['name'] == 'evasion_proxy' and saved['dataset'] == 'digits28'
  run = saved['runs']['cnn']
  assert run['clean_accuracy'] > 0.3                  # 3 epochs of a tiny CNN learn something
  assert set(run['jsma']) == {v[0] for v in cfg.jsma_variants}
  for j in run['jsma'].values():
    assert j['n'] == cfg.jsma_examples
    st = j['stop_rule']
    for v in (j, st):
      assert v['failures'] == v['failures_budget'] + v['failures_empty_map'] + v['failures_domain']
      assert v['failures'] == round((1 - v['success_rate']) * j['n'])
    assert j['failures_empty_map'] == 0                  # 'continue' never stops there
    assert st['success_rate'] <= j['success_rate']
    assert st['failures_empty_map'] <= j['examples_meeting_empty_map']
  for d in run['deepfool_vs_fgsm'].values():
    assert d['rho_deepfool'] > 0 and d['rho_fgsm'] > 0
    assert np.isclose(d['ratio'], d['rho_fgsm'] / d['rho_deepfool'])
  assert run['deepfool_vs_fgsm']['no_box']['bounds'] == [-1.0, 2.0]
  md = evasion_proxy.render_markdown(saved)
  assert 'JSMA variant' in md and 'rho DeepFool' in md
  assert res['runs']['cnn']['clean_accuracy'] == run['clean_accuracy']
  for v in ('full', 'sharp', 'fmnist'):
    assert evasion_proxy_config.get_config(v).variant == v
