"""Smoke run of experiments/benchmarks/dp_speed.py (tiny CNN, one repeat)."""
import json
import os

from experiments.benchmarks import dp_speed
from experiments.configs.benchmarks import dp_speed as dp_speed_config


def test_smoke_run_writes_json(tmp_path):
  res = dp_speed.run(dp_speed_config.get_config('smoke'), str(tmp_path))
  assert res['variant'] == 'smoke'
  with open(os.path.join(tmp_path, 'dp_speed.json')) as fh:
    saved = json.load(fh)
  j = saved['jaxsec']
  for k in ('nonprivate_s', 'vmap_s', 'ghost_s', 'default_s'):
    assert j[k] > 0
  assert j['default_method'] == 'ghost'      # the CNN is ghost-eligible: the default
  assert j['ghost_ratio'] == j['ghost_s'] / j['nonprivate_s']
  t = saved['torch']
  # Opacus either ran (time recorded) or its failure was recorded, never silently skipped
  for mode in dp_speed_config.get_config('smoke').opacus_modes:
    assert f'opacus_{mode}_s' in t or f'opacus_{mode}_error' in t or 'opacus_error' in t \
        or 'error' in t
  assert 'jaxsec' in dp_speed.render_markdown(res)
  e = saved['epsilon']
  assert 0 < e['jaxsec_pld'] <= e['jaxsec_rdp']          # PLD is the tighter accountant
  if 'jax_privacy_pld' in e:       # installed with the bench extra: the same event, same number
    assert abs(e['jax_privacy_pld'] - e['jaxsec_pld']) <= 1e-3 * e['jaxsec_pld']
    assert abs(e['jax_privacy_rdp'] - e['jaxsec_rdp']) <= 1e-2 * e['jaxsec_rdp']
  jp = saved['jax_privacy']
  assert 'clipped_grad_s' in jp or 'error' in jp           # ran, or its failure is recorded
