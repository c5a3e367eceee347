"""Smoke run of experiments/evasion_min_norm.py on real FMNIST (tiny model, few images)."""
import math

import numpy as np

from experiments import evasion_min_norm
from experiments.configs import evasion_min_norm as config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


def test_summarise_counts_failures_as_infinite():
  succ = np.array([True, True, False])
  d = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
  res = evasion_min_norm.summarise('x', 'fmn', 'l2', succ, d, np.array([5, 5, 5]), 1.0)
  assert res['median_l2'] == 5.0 and res['median_l2_successful'] == 3.0    # [5, 1, inf]
  assert res['median_l0'] == 2.0 and res['median_l1_successful'] == 4.0
  assert math.isclose(res['success_rate'], 2 / 3)
  none = evasion_min_norm.summarise('x', 'fmn', 'l1', np.zeros(3, bool), d, np.zeros(3), 1.0)
  assert none['median_l1'] == math.inf and none['median_l1_successful'] is None


@requires_fashion_mnist
def test_smoke_run_writes_json_and_renders(tmp_path):
  cfg, res, saved = run_smoke(evasion_min_norm, config, tmp_path)
  assert saved['name'] == 'evasion_min_norm' and saved['variant'] == 'smoke'
  labels = [a['label'] for a in saved['attacks']]
  assert labels == [a[0] for a in cfg.attacks]
  assert {'DDN', 'FMN-L2', 'FMN-L0', 'EAD (L1 rule)'} <= set(labels)
  for a in saved['attacks']:
    assert a['n'] == cfg.examples and 0.0 <= a['success_rate'] <= 1.0
  md = evasion_min_norm.render_markdown(saved)
  assert 'FMN-Linf' in md and 'EAD (EN rule)' in md and 'DeepFool' in md
  assert res['clean_accuracy'] == saved['clean_accuracy']
  assert config.get_config('full').variant == 'full'
