"""Smoke run of experiments/federated.py: the whole grid on a small synthetic stand-in."""
import os

import numpy as np
import pytest

from experiments import federated
from experiments.configs import federated as federated_config
from jaxsec import io as jio


def _fake_fashion_mnist(real_load):
  """Small synthetic 28x28 stand-in for Fashion-MNIST (skips TF's 10 s load)."""
  def load(name, split='train', **kw):
    if name != 'fashion_mnist':
      return real_load(name, split, **kw)
    rng = np.random.RandomState(0 if split == 'train' else 1)
    n = 2200 if split == 'train' else 500
    y = (np.arange(n) % 10).astype(np.int32)
    x = 0.2 * rng.rand(n, 28, 28, 1)
    for k in range(10):                       # class k: a bright band at rows 2k..2k+3
      x[y == k, 2 * k:2 * k + 4] += 0.8
    return np.clip(x, 0, 1).astype(np.float32), y
  return load


def test_federated_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(federated.data, 'load', _fake_fashion_mnist(federated.data.load))
  cfg = federated_config.get_config('smoke')
  res = federated.run(cfg, str(tmp_path))
  saved = jio.read_json(os.path.join(tmp_path, 'federated.json'))
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
