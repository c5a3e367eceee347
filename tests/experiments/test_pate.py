"""Smoke run of experiments/pate.py on real FMNIST (10 tiny teachers)."""

from experiments import pate
from experiments.configs import pate as pate_config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(pate, pate_config, tmp_path)
  assert saved['num_teachers'] == 10 and saved['examples_per_teacher'] == 100
  rows = saved['settings']
  assert len(rows) == len(cfg.settings)
  for r in rows:
    assert 0 <= r['num_answered'] <= r['num_queries']
    # data-dependent analysis never exceeds the data-independent guarantee
    assert 0 < r['epsilon_data_dependent'] <= r['epsilon'] + 1e-9
    if r['mechanism'] == 'lnmax':   # no smooth-sensitivity analysis for LNMax
      assert r['epsilon_sanitised'] is None and r['smooth_sensitivity'] is None
    else:   # releasing the data-dependent figure never lowers it
      assert r['epsilon_sanitised'] >= r['smooth_sensitivity']['epsilon_before_release']
      assert r['smooth_sensitivity']['epsilon_before_release'] >= (
          r['epsilon_data_dependent'] - 1e-9)
      assert r['epsilon_sanitised_std'] >= 0
      assert r['epsilon_sanitised_released'] is not None
  gn = rows[0]
  assert gn['num_answered'] == gn['num_queries'] == 50
  md = pate.render_markdown(res)
  assert 'PATE' in md and 'sanitised' in md and 'n/a' in md
