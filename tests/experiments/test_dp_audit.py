"""Smoke run of experiments/dp_audit.py: sound for correct DP-SGD, catches the no-clip bug."""
import json
import os

from experiments import dp_audit
from experiments.configs import dp_audit as dp_audit_config


def test_smoke_run_writes_json_and_catches_missing_clipping(tmp_path):
  cfg = dp_audit_config.get_config('smoke')
  res = dp_audit.run(cfg, str(tmp_path))
  with open(os.path.join(tmp_path, 'dp_audit.json')) as fh:
    saved = json.load(fh)
  rows = {r['buggy_no_clip']: r for r in saved['rows']}
  good, bad = rows[False], rows[True]
  assert good['claimed_epsilon'] <= good['target_epsilon']
  # sound: the lower bounds of the correct implementation stay below the accountant's
  assert good['multi_run_lower_bound'] <= good['claimed_epsilon']
  assert good['one_run_lower_bound'] <= good['claimed_epsilon']
  # the canary gradient is 10 C: without clipping the audit proves a violation
  assert bad['multi_run_lower_bound'] > bad['claimed_epsilon']
  assert 'bug caught' in dp_audit.render_markdown(res)
