"""Smoke run of the gradient / model inversion and inference experiment."""
import json
import os

from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke(tmp_path):
  from experiments import privacy_inversion as exp
  from experiments.configs import privacy_inversion as exp_config
  r = exp.run(exp_config.get_config('smoke'), str(tmp_path))
  with open(os.path.join(tmp_path, 'privacy_inversion.json')) as f:
    saved = json.load(f)
  cells = {(d['model'], d['batch_size'], d['labels']) for d in saved['dlg']}
  assert cells == {('mlp', 1, 'joint'), ('mlp', 1, 'idlg'), ('cnn', 1, 'joint'),
                   ('cnn', 1, 'idlg')}
  for d in saved['dlg']:
    assert -1 <= d['ssim_mean'] <= 1 and d['psnr_mean'] > 0
    if d['labels'] == 'idlg':          # iDLG label recovery is exact
      assert d['label_accuracy'] == 1.0
  for m in saved['model_inversion'].values():
    assert len(m['confidence']) == 10
  a = saved['attribute_inference']
  assert 0 <= a['members']['attack_accuracy'] <= 1
  assert saved['property_inference']['num_test_models'] == 4
  for png in ('privacy_inversion_dlg.png', 'privacy_inversion_model_inversion.png'):
    assert os.path.exists(os.path.join(tmp_path, png))
  assert '| mlp | 1 |' in exp.render_markdown(r)
