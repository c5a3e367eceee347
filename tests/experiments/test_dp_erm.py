"""Smoke run of experiments/dp_erm.py (breast cancer, two epsilons, three draws)."""

from experiments import dp_erm
from experiments.configs import dp_erm as dp_erm_config
from tests.experiments import run_smoke


def test_smoke_run_writes_json(tmp_path):
  cfg, res, saved = run_smoke(dp_erm, dp_erm_config, tmp_path)
  d = saved['datasets']['breast_cancer']
  assert d['nonprivate_accuracy'] > 0.9
  assert len(d['rows']) == len(cfg.methods) * len(cfg.epsilons)
  by = {(x['method'], x['epsilon']): x['mean_accuracy'] for x in d['rows']}
  # at eps = 10 objective perturbation is close to the non-private optimum
  assert by[('objective', 10.0)] > d['nonprivate_accuracy'] - 0.08
  assert all(len(x['accuracies']) == 3 for x in d['rows'])
  assert 'objective perturbation' in dp_erm.render_markdown(res)
