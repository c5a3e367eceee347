"""Smoke run of the DPA training benchmark (experiments/benchmarks/dpa_speed.py).

The benchmark runs each mode in its own subprocess (for its peak memory); to keep the test
suite fast the modes run in-process here (``_spawn`` replaced), which exercises ``run``,
``child``, ``render_markdown`` and ``headline``; the CLI path is the same ``child`` call.
"""
import json
import os


def test_smoke(tmp_path, monkeypatch):
  from experiments.benchmarks import dpa_speed as bench
  from experiments.configs.benchmarks import dpa_speed as bench_config
  monkeypatch.setattr(bench, '_spawn', bench.child)
  cfg = bench_config.get_config('smoke')
  r = bench.run(cfg, str(tmp_path))
  with open(os.path.join(tmp_path, 'dpa_speed.json')) as f:
    saved = json.load(f)
  assert saved['num_partitions'] == 3 and saved['speedup'] > 0
  assert saved['capacity'] == 160                                  # ceil(2.0 * 240 / 3)
  for mode in ('fit_many', 'sequential_fit', 'baseline'):
    assert saved[mode]['peak_rss_mib'] > 0 and saved[mode]['seconds'] >= 0
  # The same k models either way: train_part(m) is train(...).params[m].
  assert len(saved['fit_many']['checksums']) == 3
  assert saved['max_relative_checksum_difference'] < 1e-5
  assert abs(saved['fit_many']['final_loss'] - saved['sequential_fit']['final_loss']) < 1e-5
  md = bench.render_markdown(r)
  assert 'fit_many' in md and '3 x `train_part`' in md
  (what, figure), = bench.headline(saved)
  assert what.startswith('3 DPA base models') and float(figure.split('x')[0]) > 0
