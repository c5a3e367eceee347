"""Smoke run of experiments/physical.py on real FMNIST (tiny model, short patch fits)."""

import numpy as np
import pytest

from experiments import physical
from experiments.configs import physical as physical_config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(physical, physical_config, tmp_path)
  assert saved['name'] == 'physical' and saved['variant'] == 'smoke'
  assert saved['target'] == cfg.target and saved['num_eval'] == cfg.eval_examples
  rows = saved['rows']
  assert [r['size'] for r in rows] == list(cfg.sizes)
  areas = [r['area_fraction'] for r in rows]
  assert areas == sorted(areas) and all(abs(a - s) < 0.03 for a, s in zip(areas, cfg.sizes, strict=True))
  for r in rows:
    assert 0.0 <= r['targeted_success'] <= 1.0 and 0.0 <= r['random_patch_success'] <= 1.0
    p = np.asarray(r['patch'])
    assert p.shape == (r['patch_side'], r['patch_side'], 1)
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert len(r['train_objective']) == -(-cfg.patch.num_steps // cfg.history_every)
  md = physical.render_markdown(saved)
  assert 'random-noise patch' in md and 'Brown' in md
  assert res['rows'][0]['targeted_success'] == rows[0]['targeted_success']


def test_configs():
  assert physical_config.get_config('full').variant == 'full'
  with pytest.raises(ValueError, match='medium'):
    physical_config.get_config('medium')
