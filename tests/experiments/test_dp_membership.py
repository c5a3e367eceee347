import json

from experiments import dp_membership
from experiments.configs import dp_membership as dp_membership_config
from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_smoke_writes_rows_and_resumes(tmp_path):
  c = dp_membership_config.get_config('smoke')
  r = dp_membership.run(c, str(tmp_path))
  assert [x['target_epsilon'] for x in r['runs']] == list(c.epsilons)
  nonpriv, dp = r['runs']
  assert nonpriv['noise_multiplier'] == 0.0 and nonpriv['epsilon'] == float('inf')
  assert abs(dp['epsilon'] - 2.0) < 0.05 and dp['noise_multiplier'] > 0
  for x in r['runs']:
    for attack in ('loss_threshold', 'lira_online', 'lira_offline'):
      assert 0.0 <= x[attack]['auc'] <= 1.0
      assert x[attack]['tpr_at_0.001_fpr'] <= x[attack]['tpr_at_0.01_fpr'] + 1e-12
  # The epsilon-DP bound on TPR at 1% FPR: e^2 * 0.01 + delta.
  assert abs(dp['dp_bound_tpr_at_0.01_fpr'] - (2.718281828 ** dp['epsilon'] * 0.01 + 1e-5)) < 1e-6
  saved = json.load(open(tmp_path / 'dp_membership.json'))
  assert saved['runs'] == json.loads(json.dumps(r['runs']))
  # Resume: a second run with the same config trains nothing and returns the same rows.
  again = dp_membership.run(c, str(tmp_path))
  assert again['runs'] == saved['runs']
  assert '| eps (spent) |' in dp_membership.render_markdown(saved)
  assert all(r['device']['platform'] for r in saved['runs'])
