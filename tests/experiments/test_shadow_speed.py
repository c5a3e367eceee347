"""Smoke run of the shadow-model training benchmark.

The benchmark runs each mode in its own subprocess (for its peak memory); to keep the test
suite fast the modes run in-process here (``_spawn`` replaced), which exercises ``run``,
``child`` and ``render_markdown``; the CLI path is the same ``child`` call.
"""
import json
import os

from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke(tmp_path, monkeypatch):
  from experiments.benchmarks import shadow_speed as bench
  from experiments.configs.benchmarks import shadow_speed as bench_config
  monkeypatch.setattr(bench, '_spawn', bench.child)
  r = bench.run(bench_config.get_config('smoke'), str(tmp_path))
  with open(os.path.join(tmp_path, 'shadow_speed.json')) as f:
    saved = json.load(f)
  assert saved['num_models'] == 2 and saved['speedup'] > 0
  for mode in ('fit_many', 'sequential_fit', 'baseline'):
    assert saved[mode]['peak_rss_mib'] > 0 and saved[mode]['seconds'] >= 0
  # Same models either way (equal-size training sets: fit_many == fit per model).
  assert abs(saved['fit_many']['final_loss'] - saved['sequential_fit']['final_loss']) < 1e-5
  assert 'fit_many' in bench.render_markdown(r)
