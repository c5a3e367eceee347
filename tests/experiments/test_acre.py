"""Smoke run of the ACRE study (experiments/acre.py): every instance is evaded within the
proven factors of the closed-form MAC and under the query bound; the markdown renders."""
import numpy as np

from experiments import acre
from experiments.configs import acre as acre_config
from tests.experiments import run_smoke


def test_acre_smoke(tmp_path):
  cfg, res, r = run_smoke(acre, acre_config, tmp_path)
  assert r['name'] == 'acre' and r['variant'] == 'smoke'
  assert sorted(r['dims'], key=int) == [str(n) for n in cfg.dims]
  for e in r['dims'].values():
    rows = e['instances']
    assert e['n_attacked'] == len(rows) == cfg.n_instances
    for row in rows:
      assert row['boolean_mac'] <= row['boolean_cost'] <= 2 * row['boolean_mac']
      assert row['boolean_queries'] <= row['boolean_bound']
      assert (row['continuous_mac'] <= row['continuous_cost'] + 1e-12
              <= (1 + cfg.eps) * row['continuous_mac'] + 1e-9)
    assert e['boolean_within_bound']
    assert e['boolean_queries_max'] == max(row['boolean_queries'] for row in rows)
    assert e['continuous_queries_median'] == np.median([row['continuous_queries']
                                                        for row in rows])
  assert np.isfinite(r['boolean_slope']) and res['dims'].keys() == r['dims'].keys()
  md = acre.render_markdown(r)
  assert 'ACRE learning against a linear SVM' in md
  assert md.index('| 10 |') < md.index('| 30 |')                 # rows by dimension
  assert acre.headline(r) == []                      # the README row is for 'full' only
