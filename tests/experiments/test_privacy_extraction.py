"""Smoke run of the model-extraction experiment."""
import json
import os

from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke(tmp_path):
  from experiments import privacy_extraction as exp
  from experiments.configs import privacy_extraction as exp_config
  r = exp.run(exp_config.get_config('smoke'), str(tmp_path))
  with open(os.path.join(tmp_path, 'privacy_extraction.json')) as f:
    saved = json.load(f)
  for e in saved['equation_solving']:
    # d + 1 queries; a linear model is recovered: every prediction agrees.
    assert e['queries'] == e['dim'] + 1 == e['oracle_queries']
    assert e['agreement_test'] == 1.0 and e['max_prob_diff_test'] < 1e-3
  assert [row['queries'] for row in saved['mlp_retraining']['curve']] == [65]
  curves = saved['learning_based']['curves']
  assert [q['queries'] for q in curves['knockoff, labels only (public pool)']] == [20]
  assert [q['queries'] for q in curves['Papernot Jacobian augmentation, labels only']] == \
      [10, 20]
  assert os.path.exists(os.path.join(tmp_path, 'privacy_extraction_fidelity.png'))
  assert '| digits |' in exp.render_markdown(r)
