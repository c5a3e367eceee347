"""Smoke run of the decision-based attack study (experiments/decision_based.py)."""
import os

import numpy as np

from experiments import decision_based
from experiments.configs import decision_based as decision_based_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_decision_based_smoke(tmp_path):
  cfg, _, r = run_smoke(decision_based, decision_based_config, tmp_path)
  assert r['name'] == 'decision_based' and r['variant'] == 'smoke'
  assert set(r['attacks']) == {'boundary', 'rays', 'cw_l2', 'pgd_linf'}
  n = r['n_images']
  assert 0 < n <= cfg.n_images
  cps = [str(c) for c in cfg.query_checkpoints]
  for name in ('boundary', 'rays'):
    e = r['attacks'][name]
    assert set(e['median_at']) == set(cps) and e['adversarial_at_x_adv']
    assert e['queries_max'] <= cfg.query_checkpoints[-1]
    # One run: per image, the best distance never grows with the budget; the last
    # checkpoint is the returned distance.
    at = np.array([[np.inf if v is None else v for v in e['per_image_at'][c]] for c in cps])
    assert at.shape == (len(cps), n) and np.all(np.diff(at, axis=0) <= 1e-6)
    final = np.array([np.inf if v is None else v for v in e['per_image']])
    np.testing.assert_allclose(at[-1], final, rtol=1e-6)
  assert len(r['attacks']['pgd_linf']['per_image']) == n
  md = decision_based.render_markdown(r)
  assert 'median distance vs queries' in md and '| RayS | L_inf |' in md
  # resume: the stage cache gives the same numbers without rerunning the attacks
  decision_based.run(cfg, str(tmp_path))
  assert jio.read_json(os.path.join(tmp_path, 'decision_based.json'))['attacks'] == r['attacks']
