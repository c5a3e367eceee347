"""Smoke run of experiments/blackbox.py on real FMNIST (tiny models, few images)."""

import numpy as np

from experiments import blackbox
from experiments.configs import blackbox as blackbox_config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(blackbox, blackbox_config, tmp_path)
  assert saved['name'] == 'blackbox' and saved['variant'] == 'smoke'
  sub = saved['substitutes'][0]
  r = cfg.substitute.num_aug_epochs
  # Exact query count: |S_0| 2^(rho_max - 1) labels, nothing else.
  assert sub['queries'] == cfg.seed_size * 2 ** (r - 1)
  assert sub['history']['size'] == [cfg.seed_size * 2 ** i for i in range(r)]
  assert len(sub['history']['eval_accuracy']) == r
  assert [row['eps'] for row in sub['fgsm']] == list(cfg.fgsm_eps)
  for row in sub['fgsm']:
    assert 0.0 <= row['misclassification_rate'] <= 1.0
  h = saved['hsja']
  assert [row['budget'] for row in h['rows']] == list(cfg.hsja_budgets)
  for row in h['rows']:
    assert row['max_queries_used'] <= row['budget']
    assert row['adversarial_rate'] >= row['success_rate'] - 1e-9   # success => adversarial
  # The same key and a larger budget: the longer run continues the shorter one.
  d = [np.asarray(row['per_example_l2']) for row in h['rows']]
  ok = (d[0] > 0) & (d[1] > 0)
  assert (d[1][ok] <= d[0][ok] + 1e-6).all()
  md = blackbox.render_markdown(saved)
  assert 'HSJA L2' in md and 'transfer FGSM' in md and 'DeepFool' in md
  assert res['oracle']['clean_accuracy'] == saved['oracle']['clean_accuracy']
  assert blackbox_config.get_config('full').variant == 'full'
