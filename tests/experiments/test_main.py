import glob
import json
import os

from experiments import main as main_exp
from experiments import run as run_lib
from experiments.configs import main as main_config
from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_main_smoke(tmp_path):
  cfg = main_config.get_config('smoke')
  r = run_lib.run_config(cfg, str(tmp_path))
  for f in ('results.json', 'report.md', 'accuracy_vs_eps.png', 'adversarial_examples.png'):
    assert os.path.exists(tmp_path / f), f
  saved = json.load(open(tmp_path / 'results.json'))
  assert saved['eps'] == list(cfg.eps)
  fg, pg = saved['fgsm_accuracy'], saved['pgd_accuracy']
  assert fg[0] == pg[0]  # eps = 0: both attacks leave the input unchanged
  # PGD (iterative, random start) is never weaker than FGSM by more than noise, and
  # accuracy does not grow with eps.
  assert all(p <= f + 0.05 for p, f in zip(pg, fg, strict=True))
  assert pg[-1] <= pg[0]
  assert '| eps | FGSM | PGD |' in open(tmp_path / 'report.md').read()
  assert 0.0 <= r['clean_accuracy'] <= 1.0
  # Survey Table 1 rows, measured on the same model.
  table = {row['attack']: row for row in saved['table']}
  table.update({k.split(' (')[0]: v for k, v in list(table.items())})
  for name in ('APGD-CE', 'AutoAttack-style', 'DeepFool-L2', 'C&W-L2', 'JSMA',
               'UAP (Alg. 1, DeepFool inner steps)', 'UAP (SGD, Shafahi 2020)',
               'PGD-20 on an MLP surrogate', 'loss threshold', 'retraining on label queries'):
    assert name in table, (name, list(table))
  for row in saved['table']:
    assert row['value'] != row['value'] or 0.0 <= row['value'] <= 10.0, row  # NaN allowed
  # The ensemble is never weaker than its own first stage (APGD-CE with a different key
  # can differ by a few points on 16 images, so compare with slack).
  assert table['AutoAttack-style']['value'] <= table['APGD-CE']['value'] + 0.2
  assert '## Survey Table 1, measured on this model' in open(tmp_path / 'report.md').read()
  assert any('clean test accuracy' in w for w, _ in main_exp.headline(saved))
  # run_config also writes every scalar as TensorBoard events next to the JSON.
  assert saved['config']['study'] == 'main'
  events = glob.glob(str(tmp_path / 'tensorboard' / 'main_smoke' / 'events.out.tfevents.*'))
  assert events, os.listdir(tmp_path)
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(os.path.dirname(events[0]))
  acc.Reload()
  tags = set(acc.Tags()['tensors']) | set(acc.Tags()['scalars'])
  assert {'clean_accuracy', 'train_loss', 'fgsm_accuracy'} <= tags, tags
