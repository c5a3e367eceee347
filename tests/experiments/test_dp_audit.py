"""Smoke run of experiments/dp_audit.py: sound for correct DP-SGD, catches the no-clip bug."""

from experiments import dp_audit
from experiments.configs import dp_audit as dp_audit_config
from tests.experiments import run_smoke


def test_smoke_run_writes_json_and_catches_missing_clipping(tmp_path):
  cfg, res, saved = run_smoke(dp_audit, dp_audit_config, tmp_path)
  rows = {r['buggy_no_clip']: r for r in saved['rows']}
  good, bad = rows[False], rows[True]
  assert good['claimed_epsilon'] <= good['target_epsilon']
  # sound: the lower bounds of the correct implementation stay below the accountant's
  assert good['multi_run_lower_bound'] <= good['claimed_epsilon']
  assert good['one_run_lower_bound'] <= good['claimed_epsilon']
  # the canary gradient is 10 C: without clipping the audit proves a violation
  assert bad['multi_run_lower_bound'] > bad['claimed_epsilon']
  assert 'bug caught' in dp_audit.render_markdown(res)
