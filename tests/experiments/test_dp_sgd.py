"""Smoke run of experiments/dp_sgd.py on real FMNIST (tiny subset, two epochs)."""
import json
import os

from experiments import dp_sgd
from experiments.configs import dp_sgd as dp_sgd_config
from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg = dp_sgd_config.get_config('smoke')
  res = dp_sgd.run(cfg, str(tmp_path), str(tmp_path / 'ckpt'))
  with open(os.path.join(tmp_path, 'dp_sgd.json')) as fh:
    saved = json.load(fh)
  assert saved['variant'] == 'smoke' and len(saved['runs']) == 1
  r = saved['runs'][0]
  # the accountant's epsilon meets the target, and not by a wide margin (calibrated)
  assert r['epsilon'] <= r['target_epsilon'] and r['epsilon'] > 0.95 * r['target_epsilon']
  assert r['noise_multiplier'] > 0 and 0.0 <= r['test_accuracy'] <= 1.0
  assert r['test_accuracy'] > 0.2          # better than chance (10 classes)
  assert 'DP-SGD' in dp_sgd.render_markdown(res)
  # the clipped fraction is published only under its non-private label; delta reported
  assert 'mean_clipped_fraction' not in r and 0 <= r[dp_sgd.NONPRIVATE_KEY] <= 1
  assert r['reported_delta'] == r['delta'] + r['overflow_delta'] and r['overflow_delta'] > 0
  # a second run resumes from the JSON without retraining
  again = dp_sgd.run(cfg, str(tmp_path), str(tmp_path / 'ckpt'))
  assert again['runs'][0]['train_seconds'] == r['train_seconds']
  # Changing only the non-private reference keeps the DP run; changing the clip redoes it.
  cfg2 = dp_sgd_config.get_config('smoke')
  cfg2.nonprivate_epochs = 2
  third = dp_sgd.run(cfg2, str(tmp_path), str(tmp_path / 'ckpt'))
  assert third['runs'][0]['train_seconds'] == r['train_seconds']
  assert third['nonprivate']['epochs'] == 2
  cfg3 = dp_sgd_config.get_config('smoke')
  cfg3.l2_norm_clip = 0.5
  fourth = dp_sgd.run(cfg3, str(tmp_path), str(tmp_path / 'ckpt'))
  assert fourth['runs'][0]['train_seconds'] != r['train_seconds']
  assert fourth['nonprivate']['epochs'] == 1
  # The clipping method does not change the mechanism: the run is kept across it ...
  cfg3.method = 'vmap' if cfg3.method != 'vmap' else 'ghost'
  fifth = dp_sgd.run(cfg3, str(tmp_path), str(tmp_path / 'ckpt'))
  assert fifth['runs'][0]['train_seconds'] == fourth['runs'][0]['train_seconds']
  # ... but a recorded run whose overflow term exceeds what the sampler accepts (1% of
  # delta) is trained again, never republished.
  path = os.path.join(tmp_path, 'dp_sgd.json')
  with open(path) as fh:
    saved = json.load(fh)
  saved['runs'][0]['overflow_delta'] = 0.02 * saved['runs'][0]['delta']
  with open(path, 'w') as fh:
    json.dump(saved, fh)
  sixth = dp_sgd.run(cfg3, str(tmp_path), None)
  assert sixth['runs'][0]['train_seconds'] != fourth['runs'][0]['train_seconds']
  assert sixth['runs'][0]['overflow_delta'] <= 0.01 * sixth['runs'][0]['delta']


def _results(run_extra):
  run = {'target_epsilon': 3.0, 'epsilon': 2.99, 'delta': 1e-5, 'accountant': 'pld',
         'noise_multiplier': 1.1, 'epochs': 2, 'steps': 10, 'test_accuracy': 0.5,
         'train_seconds': 1.0, **run_extra}
  return {'dataset': 'fashion_mnist', 'model': 'cnn', 'activation': 'tanh',
          'num_params': 10, 'num_train': 1000, 'num_test': 10, 'runs': [run]}


def test_render_labels_clipped_fraction_as_nonprivate():
  # committed results (old key) and new results (labelled key) both render it as a
  # non-private diagnostic, apart from the table of private quantities
  for key in ('mean_clipped_fraction', dp_sgd.NONPRIVATE_KEY):
    md = dp_sgd.render_markdown(_results({key: 0.4195}))
    line = [l for l in md.splitlines() if '0.42' in l]
    assert len(line) == 1 and line[0].startswith('Non-private diagnostic')
    assert 'not covered by (epsilon, delta)' in line[0]
  assert dp_sgd.NONPRIVATE_KEY.startswith('nonprivate_diagnostic')
  md = dp_sgd.render_markdown(_results({'overflow_delta': 3e-12}))
  assert 'overflow term' in md and '1e-05 + 3e-12' in md and 'refused now' not in md
  # results written before the term was recorded: recomputed from max_batch_size
  md = dp_sgd.render_markdown(_results({'steps': 50, 'sampling_probability': 0.1,
                                        'max_batch_size': 115, 'epsilon': 5.148}))
  assert '1e-05 + 1.7e+02' in md and 'refused now' in md
