"""Smoke run of the mimicry-evasion study (experiments/evasion_mimicry.py): the budget grid
is honoured, d_max = 0 changes nothing, evasion grows with the budget, lam > 0 raises the
density at x_adv, and the markdown renders."""
import numpy as np
import pytest

from experiments import evasion_mimicry
from experiments.configs import evasion_mimicry as config
from tests.experiments import run_smoke


@pytest.mark.slow
def test_evasion_mimicry_smoke(tmp_path):
  cfg, res, r = run_smoke(evasion_mimicry, config, tmp_path)
  assert r['name'] == 'evasion_mimicry' and r['n_attacked'] == cfg.max_attacked
  assert set(r['classifiers']) == {'linear_svm', 'rbf_svm_narrow', 'mlp'}
  for e in r['classifiers'].values():
    assert e['test_accuracy'] > 0.9
    for s in e['lams'].values():
      assert np.all(np.asarray(s['max_l1']) <= np.asarray(cfg.d_max) + 1e-4)
      assert s['evasion_rate'][0] == e['lams']['0.0']['evasion_rate'][0]   # d_max 0: no move
      assert s['evasion_rate'][-1] >= s['evasion_rate'][0]
  lin = r['classifiers']['linear_svm']['lams']
  assert lin['20.0']['mean_density'][-1] > lin['0.0']['mean_density'][-1]
  assert res['classifiers'].keys() == r['classifiers'].keys()
  md = evasion_mimicry.render_markdown(r)
  assert '**linear_svm**' in md and '| 20.0 | evasion rate |' in md
