"""Smoke run of experiments/federated.py: the whole grid on a small synthetic stand-in."""

import numpy as np
import pytest

from experiments import federated
from experiments.configs import federated as federated_config
from jaxsec import data
from tests.experiments import fake_fashion_mnist, run_smoke


def _bands(x, y):
  for k in range(10):                       # class k: a bright band at rows 2k..2k+3
    x[y == k, 2 * k:2 * k + 4] += 0.8


def _fake_fashion_mnist(real_load):
  return fake_fashion_mnist(real_load, sizes=(2200, 500), scale=0.2, paint=_bands)


def test_federated_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(data, 'load', _fake_fashion_mnist(data.load))
  cfg, res, saved = run_smoke(federated, federated_config, tmp_path)
  assert saved['variant'] == 'smoke'
  assert saved['num_byzantine'] == 2 and len(saved['byzantine_clients']) == 2
  assert set(saved['partitions']) == set(cfg.partitions)
  iid, dirichlet = saved['partitions']['iid'], saved['partitions']['dirichlet']
  assert dirichlet['label_skew'] > iid['label_skew']
  assert sum(iid['client_sizes']) == sum(dirichlet['client_sizes']) == 2200
  for p in cfg.partitions:
    res_p = saved['partitions'][p]['results']
    assert set(res_p) == set(cfg.aggregators)
    for row in res_p.values():
      assert set(row) == set(cfg.attacks)
      for cell in row.values():
        assert 0.0 <= cell['accuracy'] <= 1.0
        assert len(cell['curve']) == len(saved['eval_rounds'])
        assert np.isfinite(cell['final_honest_loss'])
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
