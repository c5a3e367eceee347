"""Smoke run of the EvadeML study (experiments/evademl.py): counts add up (one query and one
oracle call per evaluated variant plus the seed's check), the budget holds, and the markdown
renders."""
import numpy as np

from experiments import evademl
from experiments.configs import evademl as config
from tests.experiments import run_smoke


def test_evademl_smoke(tmp_path):
  cfg, res, r = run_smoke(evademl, config, tmp_path)
  assert r['name'] == 'evademl' and set(r['classifiers']) == {'logreg', 'mlp'}
  for e in r['classifiers'].values():
    assert e['test_accuracy'] > 0.8 and e['n_seeds'] == cfg.n_seeds
    g = np.asarray(e['per_seed']['generations'])
    q = np.asarray(e['per_seed']['queries'])
    np.testing.assert_array_equal(q, 1 + cfg.pop_size * g)
    assert np.all(g <= cfg.max_generations)
    assert e['oracle_calls_total'] == e['queries_total'] == q.sum()
    assert e['evasion_rate'] == np.mean(e['per_seed']['success'])
  assert sum(e['evasion_rate'] for e in r['classifiers'].values()) > 0
  assert res['classifiers'].keys() == r['classifiers'].keys()
  assert '| logreg |' in evademl.render_markdown(r)
