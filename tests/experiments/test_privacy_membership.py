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
  # Every stage is checkpointed (orbax) for resuming ...
  names = sorted(os.listdir(os.path.join(tmp_path, '.cache', 'privacy_membership')))
  assert names == ['lira_shadows', 'shokri_shadows', 'sweep', 'target']
  # ... and a second run restores all four and reproduces the results.
  calls = []
  orig = exp.exp_common.Stages.put
  exp.exp_common.Stages.put = lambda self, name, *a, **k: (calls.append(name),
                                                             orig(self, name, *a, **k))
  try:
    r2 = exp.run(exp_config.get_config('smoke'), str(tmp_path))
  finally:
    exp.exp_common.Stages.put = orig
  assert calls == []
  for name, a in saved['attacks'].items():
    assert r2['attacks'][name]['auc'] == a['auc'], name
