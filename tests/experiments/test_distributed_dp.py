"""Smoke run of experiments/distributed_dp.py on a small synthetic stand-in."""
import math

import pytest

from experiments import distributed_dp
from experiments.configs import distributed_dp as distributed_dp_config
from jaxsec import data
from tests.experiments import fake_fashion_mnist, paint_bands, run_smoke


@pytest.mark.slow
def test_distributed_dp_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'load', fake_fashion_mnist(data.load, sizes=(600, 200), scale=0.2,
                                                       paint=paint_bands))
  cfg, _, saved = run_smoke(distributed_dp, distributed_dp_config, tmp_path)
  assert saved['variant'] == 'smoke' and saved['num_params'] == 7 * 7 * 10 + 10
  arms = {(r['arm'], r['epsilon']): r for r in saved['rows']}
  assert set(arms) == {('none', None), ('central', 8.0), ('distributed', 8.0)}
  for arm in ('central', 'distributed'):
    row = arms[(arm, 8.0)]
    # calibrated to the target, not far below it
    assert 7.9 < row['epsilon_accounted'] <= 8.0
    assert 0.0 <= row['accuracy'] <= 1.0
  dist = arms[('distributed', 8.0)]
  # the integer-domain noise amounts to about the central z (rounding inflates Delta_2)
  assert math.isclose(dist['central_z_equivalent'], arms[('central', 8.0)]['noise_multiplier'],
                      rel_tol=0.1)
  assert dist['nonprivate_wrapped_coordinates'] == 0
  assert 'Distributed DP' in distributed_dp.render_markdown(saved)
  # resume with more repeats: the finished runs are kept as they are, only the new ones run
  more = distributed_dp.run(distributed_dp_config.get_config('smoke,repeats=2'), str(tmp_path))
  got = {(r['arm'], r['epsilon'], r['repeat']): r for r in more['rows']}
  assert sorted(got, key=str) == sorted(
      [('none', None, 0)] + [(a, 8.0, i) for a in ('central', 'distributed') for i in (0, 1)],
      key=str)
  for r in saved['rows']:
    assert got[(r['arm'], r['epsilon'], r['repeat'])] == r
  assert {s['repeats'] for s in more['summary'] if s['arm'] != 'none'} == {2}
  # a changed config (here the clip) keeps nothing
  path = str(tmp_path / 'distributed_dp.json')
  runs = list(got)
  assert len(distributed_dp._finished_rows(
      path, distributed_dp_config.get_config('smoke,repeats=2'), runs)) == 5
  assert distributed_dp._finished_rows(
      path, distributed_dp_config.get_config('smoke,repeats=2,l2_norm_clip=0.5'), runs) == []
