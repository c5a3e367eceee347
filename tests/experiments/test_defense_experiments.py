"""Smoke runs of the defense experiments and the adversarial-training speed benchmark."""
import json
import os

import jax
import numpy as np

from experiments import defense_adv_training, defense_distillation, defense_regularizers
from experiments.configs import defense_regularizers as defense_regularizers_config
from experiments.configs import defense_distillation as defense_distillation_config
from experiments.configs import defense_adv_training as defense_adv_training_config
from experiments.benchmarks import adv_training_speed
from experiments.configs.benchmarks import adv_training_speed as adv_training_speed_config
from jaxsec import models
from tests.conftest import requires_fashion_mnist


def _load(tmp_path, name):
  with open(os.path.join(tmp_path, f'{name}.json')) as fh:
    return json.load(fh)


def test_cnn_layers_compose_to_the_model():
  kw = {'features': (4, 8), 'dense': 16}
  model = models.get('cnn', **kw)
  p = models.init(model, jax.random.key(0), (1, 28, 28, 1))
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  h = x
  for layer in defense_regularizers.cnn_layers(kw):
    h = layer(p, h)
  np.testing.assert_allclose(h, model.apply(p, x), rtol=1e-5, atol=1e-6)


@requires_fashion_mnist
def test_adv_training_smoke(tmp_path):
  cfg = defense_adv_training_config.get_config('smoke')
  defense_adv_training.run(cfg, str(tmp_path))
  r = _load(tmp_path, 'defense_adv_training')
  assert r['variant'] == 'smoke' and set(r['methods']) == set(cfg.methods)
  for m in r['methods'].values():
    assert 0 <= m['clean_accuracy'] <= 1 and m['pgd']['max_linf'] <= cfg.eps + 1e-5
    assert m['train']['seconds_per_epoch'] > 0
  aa = r['methods']['pgd_at']['autoattack']
  assert 0 <= aa['robust_accuracy'] <= 1
  assert 'PGD-AT' in defense_adv_training.render_markdown(r)
  # resume: a second run reads the stage cache (orbax, one folder per stage) and gives the
  # same numbers
  assert os.path.isdir(tmp_path / '.scratch' / 'stages' / 'defense_adv_training' / 'pgd_at')
  again = defense_adv_training.run(cfg, str(tmp_path))
  assert again['methods']['pgd_at']['pgd'] == r['methods']['pgd_at']['pgd']


@requires_fashion_mnist
def test_distillation_smoke(tmp_path):
  cfg = defense_distillation_config.get_config('smoke')
  defense_distillation.run(cfg, str(tmp_path))
  r = _load(tmp_path, 'defense_distillation')
  for name in ('undistilled', 'distilled'):
    e = r['models'][name]
    for k in ('jsma', 'jsma_logits', 'cw_l2'):
      assert 0 <= e[k]['success_rate'] <= 1
    for k in ('jsma', 'jsma_logits'):
      # 'stop' can only lose the examples that met an empty map.
      assert e[k]['success_rate_stop_rule'] <= e[k]['success_rate']
      assert (e[k]['success_rate'] - e[k]['success_rate_stop_rule']
              <= e[k]['frac_meeting_empty_map'] + 1e-9)
    assert e['softmax_grad_l1'] >= 0
  assert 'distilled' in defense_distillation.render_markdown(r)


@requires_fashion_mnist
def test_regularizers_smoke(tmp_path):
  cfg = defense_regularizers_config.get_config('smoke')
  defense_regularizers.run(cfg, str(tmp_path))
  r = _load(tmp_path, 'defense_regularizers')
  assert set(r['trained']) == set(cfg.trained)
  inf = r['inference']
  assert set(inf) == {'dae', 'feature_squeezing', 'learned_detector', 'random_noise'}
  for key in ('feature_squeezing', 'learned_detector'):
    d = inf[key]['detector']
    assert 0 <= d['detection_of_pgd']['auc'] <= 1
    # the joint attack is at least as successful against the system as plain PGD
    assert (d['joint_attack_vs_system']['misclassified_and_undetected']
            >= d['pgd_vs_system']['misclassified_and_undetected'] - 0.1)
  assert 'Detectors' in defense_regularizers.render_markdown(r)


def test_speed_benchmark_smoke(tmp_path):
  cfg = adv_training_speed_config.get_config('smoke')
  adv_training_speed.run(cfg, str(tmp_path))
  r = _load(tmp_path, 'adv_training_speed')
  assert r['methods']['clean']['relative_to_clean'] == 1.0
  assert all(m['seconds_per_step'] > 0 for m in r['methods'].values())
  assert 'pgd_at_2' in adv_training_speed.render_markdown(r)
