"""Smoke run of the sanitiser-breaking study (experiments/ksl_poisoning.py): the paper's
attacks keep all their poison inside the defender's bounds, stay below the certified
bound, and the markdown renders."""
from experiments import ksl_poisoning
from experiments.configs import ksl_poisoning as ksl_config
from tests.experiments import run_smoke


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
