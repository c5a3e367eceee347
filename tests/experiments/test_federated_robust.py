"""Smoke run of experiments/federated_robust.py on a small synthetic stand-in."""
import numpy as np
import pytest

from experiments import federated_robust
from experiments.configs import federated_robust as config
from jaxsec import data
from tests.experiments import fake_fashion_mnist, run_smoke


def _bands(x, y):
  for k in range(10):                       # class k: a bright band at rows 2k..2k+3
    x[y == k, 2 * k:2 * k + 4] += 0.8


@pytest.mark.slow
def test_federated_robust_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'load', fake_fashion_mnist(data.load, sizes=(1100, 300),
                                                       scale=0.2, paint=_bands))
  cfg, res, saved = run_smoke(federated_robust, config, tmp_path)
  assert saved['variant'] == 'smoke' and saved['num_byzantine'] == 2
  for p in cfg.partitions:
    rows = saved['partitions'][p]['results']
    assert set(rows) == set(cfg.aggregators)
    for row in rows.values():
      assert set(row) == set(cfg.attacks)
      for cell in row.values():
        assert 0.0 <= cell['accuracy'] <= 1.0 and 0.0 <= cell['backdoor_success'] <= 1.0
        assert np.isfinite(cell['final_honest_loss'])
  # FLTrust gives both optimised attacks' identical Byzantine vectors weight 0 here, so
  # their lanes coincide; the plain mean is moved by them
  fl = saved['partitions']['iid']['results']['fltrust']
  assert fl['fang_krum']['accuracy'] == fl['min_max']['accuracy']
  assert set(saved['orderings']) == set(cfg.partitions)
  md = federated_robust.render_markdown(res)
  assert '| aggregator |' in md and 'FLTrust' in md and 'Dirichlet' in md


def test_bad_config_raises():
  cfg = config.get_config('smoke')
  cfg.aggregators = ('mean', 'bulyan')
  with pytest.raises(ValueError, match='bulyan'):
    federated_robust.run(cfg, '/nonexistent')
