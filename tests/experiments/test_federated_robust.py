"""Smoke run of experiments/federated_robust.py on a small synthetic stand-in."""
import pytest

from experiments import federated_robust
from experiments.configs import federated_robust as config
from jaxsec import data
from tests.experiments import fake_fashion_mnist, federated_cells, paint_bands, run_smoke


@pytest.mark.slow
def test_federated_robust_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'load', fake_fashion_mnist(data.load, sizes=(1100, 300),
                                                       scale=0.2, paint=paint_bands))
  cfg, res, saved = run_smoke(federated_robust, config, tmp_path)
  assert saved['variant'] == 'smoke' and saved['num_byzantine'] == 2
  for cell in federated_cells(saved, cfg):
    assert 0.0 <= cell['backdoor_success'] <= 1.0
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
