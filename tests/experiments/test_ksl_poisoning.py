"""Smoke run of the sanitiser-breaking study (experiments/ksl_poisoning.py): the paper's
attacks keep all their poison inside the defender's bounds, stay below the certified
bound, and the markdown renders; the Fashion-MNIST variant's data path and its own JSON."""
import os

import numpy as np
import pytest

from experiments import ksl_poisoning
from experiments.configs import ksl_poisoning as ksl_config
from jaxsec import data
from jaxsec import io as jio
from tests.experiments import fake_fashion_mnist, paint_bands, run_smoke


def test_ksl_poisoning_smoke(tmp_path):
  cfg, res, r = run_smoke(ksl_poisoning, ksl_config, tmp_path)
  assert r['name'] == 'ksl_poisoning' and r['variant'] == 'smoke'
  (budget,) = r['budgets'].values()
  (split,) = budget['splits']
  assert split['n_train'] == cfg.n_train and split['n_poison'] == 3
  assert set(split['attacks']) == set(cfg.attacks)
  for name in ('influence', 'kkt', 'minmax'):
    e = split['attacks'][name]
    assert e['poison_in_bounds'] == 1.0
    assert e['sphere+slab']['poison_removed'] == 0.0
    assert e['sphere+slab']['objective'] <= split['bound'] + 1e-4
  for name in split['attacks']:
    for d in ksl_poisoning.DEFENSES:
      assert 0.0 <= split['attacks'][name][d]['test_error'] <= 1.0
  assert all(e['below_bound'] for k, e in budget['summary'].items() if k != 'clean')
  md = ksl_poisoning.render_markdown(r)
  assert 'Attacks that break sanitisers' in md and 'improved min-max (KSL)' in md
  assert ksl_poisoning.headline(r) == []
  assert res['budgets'].keys() == r['budgets'].keys() == {'0.05'}


# a tiny Fashion-MNIST run of the 'fmnist' variant on a synthetic stand-in (labels cycle
# 0..9, so T-shirt/top vs Trouser has 120 train / 40 test images), a few seconds
_FMNIST_TINY = ('fmnist,n_train=60,n_test=0,fractions=(0.05,),'
                'attacks=("flipped_copies",),'
                'bound_steps=3')


@pytest.mark.slow
def test_ksl_poisoning_fmnist_data_path(tmp_path, monkeypatch):
  fake = fake_fashion_mnist(data.load, sizes=(600, 200), scale=0.2, paint=paint_bands)
  monkeypatch.setattr(data, 'load', fake)
  cfg = ksl_config.get_config(_FMNIST_TINY)
  assert cfg.dataset == 'fmnist' and tuple(cfg.pair) == (0, 1)
  x, y, xt, yt = ksl_poisoning._load(cfg)
  x_all, y_all = fake('fashion_mnist', 'train')
  assert xt is not None and yt is not None
  m = (y_all == 0) | (y_all == 1)
  assert x.shape == (120, 784) and xt.shape == (40, 784) and x.dtype == np.float32
  np.testing.assert_array_equal(y, (y_all[m] == 1).astype(np.int32))   # label 1 = pair[1]
  np.testing.assert_array_equal(x, x_all[m].reshape(120, 784))
  assert sorted(np.bincount(yt).tolist()) == [20, 20]

  res = ksl_poisoning.run(cfg, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['ksl_poisoning_fmnist.json']  # the digits file stays
  r = jio.read_json(os.path.join(tmp_path, 'ksl_poisoning_fmnist.json'))
  assert r['variant'] == 'fmnist' and r['budgets'].keys() == res['budgets'].keys() == {'0.05'}
  (split,) = r['budgets']['0.05']['splits']
  assert (split['n_train'], split['n_test'], split['n_poison']) == (60, 40, 3)
  assert split['attacks']['flipped_copies']['none']['poison_removed'] == 0.0
  assert 'Fashion-MNIST T-shirt/top vs Trouser' in ksl_poisoning.render_markdown(r)
  ((what, figure),) = ksl_poisoning.headline(r)
  assert 'Fashion-MNIST T-shirt/top vs Trouser, 5% poison' in what
  assert figure.startswith('test error: label flip ') and 'KKT' not in figure  # those run


def test_ksl_poisoning_bad_data_config_raises(tmp_path):
  cfg = ksl_config.get_config('smoke,dataset=mnist')
  with pytest.raises(ValueError, match="dataset='mnist'"):
    ksl_poisoning.run(cfg, str(tmp_path))
  cfg = ksl_config.get_config('smoke,pair=(1, 1)')
  with pytest.raises(ValueError, match=r'pair=\(1, 1\)'):
    ksl_poisoning.run(cfg, str(tmp_path))
