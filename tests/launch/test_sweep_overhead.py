"""experiments/benchmarks/sweep_overhead.py: the smoke variant runs, renders, agrees."""
import json
import os

import pytest

from experiments import run as entry
from experiments.benchmarks import sweep_overhead
from launch import points

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'experiments', 'configs', 'benchmarks', 'sweep_overhead.py')


@pytest.mark.slow  # starts a local Ray and compiles PGD three ways
def test_smoke_run_writes_renders_and_the_eps_axis_agrees(tmp_path):
  cfg = points.load_module(CONFIG).get_config('smoke')
  r = entry.run_config(cfg, str(tmp_path))
  written = json.load(open(tmp_path / 'sweep_overhead.json'))
  assert written['launcher'] == r['launcher'] and written['eps_axis'] == r['eps_axis']
  la, ea = r['launcher'], r['eps_axis']
  assert la['num_points'] == 4 and la['per_point_warm_s'] > 0 and la['direct_s'] > 0
  # The three ways compute the same adversarial examples (float32 reduction order aside).
  assert ea['max_abs_diff_traced'] < 1e-5 and ea['max_abs_diff_separate'] < 1e-5
  assert len(ea['robust_accuracy']) == 4 and ea['robust_accuracy'][-1] <= ea['clean_accuracy']
  md = sweep_overhead.render_markdown(r)
  assert 'one vmapped program over eps' in md and 'per point, warm launch' in md
  assert len(sweep_overhead.headline(r)) == 2
