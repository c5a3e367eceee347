"""Smoke run of the Deep Partition Aggregation experiment (experiments/dpa.py)."""
import json
import os

import numpy as np

from experiments import dpa
from experiments.configs import dpa as dpa_config
from tests.conftest import requires_fashion_mnist


def _load(tmp_path):
  with open(os.path.join(tmp_path, 'dpa.json')) as fh:
    return json.load(fh)


@requires_fashion_mnist
def test_dpa_smoke(tmp_path):
  cfg = dpa_config.get_config('smoke')
  dpa.run(cfg, str(tmp_path))
  r = _load(tmp_path)
  assert r['name'] == 'dpa' and r['variant'] == 'smoke'
  assert set(r['partitions']) == {str(k) for k in cfg.num_partitions}
  for k, e in r['partitions'].items():
    k = int(k)
    assert e['budgets'] == list(range(k // 2 + 1))
    acc = np.array(e['certified_accuracy'])
    assert np.all(np.diff(acc) <= 0) and 0 <= acc[-1] <= acc[0] <= 1   # non-increasing in b
    assert np.isclose(acc[0], e['ensemble_accuracy'])
    assert e['part_sizes']['max'] <= e['capacity']
    assert round(e['part_sizes']['mean'] * k) == cfg.n_train
  for k, e in r['bagging'].items():
    assert int(k) in cfg.bagging_subsample_sizes and e['num_models'] == cfg.bagging_num_models
    acc = np.array(e['certified_accuracy'])
    assert np.all(np.diff(acc) <= 0) and acc[0] == e['certified_accuracy_at_0']
    assert acc[0] <= e['ensemble_accuracy'] and 0 <= e['abstain_rate'] <= 1
  assert os.path.exists(os.path.join(tmp_path, 'dpa.png'))
  md = dpa.render_markdown(r)
  assert 'certified accuracy' in md and '| 4 |' in md and '| 8 |' in md and 'Bagging' in md
  # resume: the stage cache gives the same numbers without retraining
  dpa.run(cfg, str(tmp_path))
  assert _load(tmp_path)['partitions'] == r['partitions']
  assert _load(tmp_path)['bagging'] == r['bagging']
