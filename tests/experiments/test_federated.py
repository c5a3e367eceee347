"""Smoke run of experiments/federated.py: the whole grid on a small synthetic stand-in."""

import pytest

from experiments import federated
from experiments.configs import federated as federated_config
from jaxsec import data
from tests.experiments import fake_fashion_mnist, federated_cells, paint_bands, run_smoke


def test_federated_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'load', fake_fashion_mnist(data.load, sizes=(2200, 500),
                                                       scale=0.2, paint=paint_bands))
  cfg, res, saved = run_smoke(federated, federated_config, tmp_path)
  assert saved['variant'] == 'smoke'
  assert saved['num_byzantine'] == 2 and len(saved['byzantine_clients']) == 2
  assert set(saved['partitions']) == set(cfg.partitions)
  iid, dirichlet = saved['partitions']['iid'], saved['partitions']['dirichlet']
  assert dirichlet['label_skew'] > iid['label_skew']
  assert sum(iid['client_sizes']) == sum(dirichlet['client_sizes']) == 2200
  federated_cells(saved, cfg)
  # the attack lanes really differ: sign flipping x10 wrecks the plain mean
  mean = saved['partitions']['iid']['results']['mean']
  assert mean['none']['accuracy'] > 0.5
  assert mean['sign_flip']['accuracy'] < mean['none']['accuracy'] - 0.2
  assert set(saved['shape']['iid']['accuracy_drop']['mean']) == set(cfg.attacks) - {'none'}
  md = federated.render_markdown(res)
  assert '| aggregator |' in md and 'ALIE' in md and 'Dirichlet' in md


def test_bad_config_values_raise():
  cfg = federated_config.get_config('smoke')
  cfg.aggregators = ('mean', 'fltrust')
  with pytest.raises(ValueError, match='fltrust'):
    federated.run(cfg, '/nonexistent')
  with pytest.raises(ValueError, match="Unknown variant 'large'"):
    federated_config.get_config('large')
