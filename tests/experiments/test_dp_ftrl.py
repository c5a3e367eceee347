"""Smoke run of experiments/dp_ftrl.py on real FMNIST (tiny subset, two epochs, three methods)."""
import numpy as np
import pytest

from experiments import dp_ftrl
from experiments.configs import dp_ftrl as dp_ftrl_config
from jaxsec.privacy import dpftrl
from jaxsec.privacy import sampling
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_smoke_run_writes_json_and_resumes(tmp_path):
  cfg, res, saved = run_smoke(dp_ftrl, dp_ftrl_config, tmp_path)
  runs = {r['method']: r for r in saved['runs']}
  assert [r['seed'] for r in saved['runs']] == [0, 0, 0] and saved['seeds'] == [0]
  assert set(runs) == {'dp_sgd', 'dp_ftrl', 'banded_mf'}
  for r in runs.values():
    # calibrated: each accountant's epsilon meets the target, not by a wide margin
    assert 0.95 * cfg.epsilon < r['epsilon'] <= cfg.epsilon
    assert r['test_accuracy'] > 0.2              # better than chance (10 classes)
  f = runs['dp_ftrl']
  assert f['steps_per_epoch'] == 512 // 64 and f['tree_depth'] == 4
  assert f['epsilon'] == dpftrl.epsilon(f['noise_multiplier'], cfg.delta,
                                        steps_per_epoch=8, epochs=2)
  s = runs['dp_sgd']
  assert s['noise_multiplier'] == s['noise_multiplier_rdp']   # smoke trains with RDP's
  m = runs['banded_mf']       # the chosen b is the smallest RMSE; its event is the sampler's
  best = min(m['band_selection'], key=lambda ch: ch['rmse'])
  assert (m['bands'], m['noise_multiplier']) == (best['bands'], best['noise_multiplier'])
  assert m['participations'] == -(-m['steps'] // m['bands'])
  assert m['epsilon'] == sampling.CyclicPoissonSampler(
      dataset_size=512, num_steps=m['steps'], cycle_length=m['bands'],
      expected_batch_size=64).epsilon(m['noise_multiplier'], cfg.delta, accountant='rdp')
  assert 'DP-FTRL vs DP-SGD' in dp_ftrl.render_markdown(res)
  again = dp_ftrl.run(cfg, str(tmp_path))        # finished runs are kept
  assert [r['train_seconds'] for r in again['runs']] == [
      r['train_seconds'] for r in saved['runs']]


def test_seeds_summary_render_and_bad_seed(tmp_path):
  runs = [{'method': m, 'seed': s, 'test_accuracy': a}
          for m, s, a in (('dp_sgd', 0, 0.80), ('dp_sgd', 1, 0.84), ('dp_sgd', 2, 0.86),
                          ('dp_ftrl', 0, 0.70))]
  summ = dp_ftrl._summary(runs)
  assert summ['dp_sgd']['seeds'] == 3 and summ['dp_ftrl']['std'] is None
  np.testing.assert_allclose([summ['dp_sgd'][k] for k in ('mean', 'std', 'min', 'max')],
                             [2.5 / 3, np.std([0.80, 0.84, 0.86], ddof=1), 0.80, 0.86])
  head = dp_ftrl.headline({'variant': 'full', 'target_epsilon': 3.0, 'delta': 1e-5,
                           'epochs': 5, 'runs': runs, 'summary': summ})
  assert '1 seed,' in head[0][0] and 'DP-SGD 83.3%' in head[0][1]
  cfg = dp_ftrl_config.get_config('smoke,seed=3')
  with pytest.raises(ValueError, match=r"seed=3: .*seeds='\(3,\)'"):
    dp_ftrl.run(cfg, str(tmp_path))
  with pytest.raises(ValueError, match='distinct'):
    dp_ftrl.run(dp_ftrl_config.get_config('smoke,seeds=(1, 1)'), str(tmp_path))
