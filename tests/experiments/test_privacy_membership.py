"""Smoke run of the membership-inference experiment."""
import json
import os

from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke(tmp_path):
  from experiments import privacy_membership as exp
  from experiments.configs import privacy_membership as exp_config
  r = exp.run(exp_config.get_config('smoke'), str(tmp_path))
  with open(os.path.join(tmp_path, 'privacy_membership.json')) as f:
    saved = json.load(f)
  assert saved['num_shadow'] == 4 and saved['pool_size'] == 256
  for name in ('loss threshold (Yeom)', 'Shokri shadow models', 'LiRA online',
               'LiRA offline', 'label-only: augmentation (Choquette-Choo)'):
    a = saved['attacks'][name]
    assert 0.0 <= a['auc'] <= 1.0 and 0.5 <= a['balanced_accuracy'] <= 1.0
    assert a['tpr_at_0.001_fpr'] <= a['tpr_at_0.01_fpr'] <= 1.0
  assert [s['train_size'] for s in saved['sweep']] == [64, 128]
  assert os.path.exists(os.path.join(tmp_path, 'privacy_membership_roc.png'))
  md = exp.render_markdown(r)
  assert 'LiRA online' in md and '| 128 |' in md
  # Every stage is cached for resuming.
  cached = os.listdir(os.path.join(tmp_path, '.cache', 'privacy_membership'))
  assert len(cached) == 1
  names = sorted(os.listdir(os.path.join(tmp_path, '.cache', 'privacy_membership', cached[0])))
  assert names == ['lira_shadows.npz', 'shokri_shadows.npz', 'sweep.npz', 'target.npz']
