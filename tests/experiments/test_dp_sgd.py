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
