"""Smoke run of the randomized-smoothing experiment (experiments/smoothing.py)."""
import os

import numpy as np
from scipy import stats

from experiments import smoothing
from experiments.configs import smoothing as smoothing_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_smoothing_smoke(tmp_path):
  cfg, _, r = run_smoke(smoothing, smoothing_config, tmp_path)
  assert r['name'] == 'smoothing' and r['variant'] == 'smoke'
  assert set(r['sigmas']) == {f'{s:g}' for s in cfg.sigmas}
  for s, e in r['sigmas'].items():
    acc = [e['certified_accuracy'][f'{v:g}'] for v in cfg.radii]
    assert all(0 <= a <= 1 for a in acc)
    assert all(a >= b for a, b in zip(acc[:-1], acc[1:], strict=True))      # non-increasing in r
    pred, rad = np.array(e['prediction']), np.array(e['radius'])
    assert pred.shape == rad.shape == (cfg.n_test,)
    assert np.all(rad[pred == -1] == 0.0) and np.all(rad <= e['max_certifiable_radius'] + 1e-9)
    np.testing.assert_allclose(e['max_certifiable_radius'],
                               float(s) * stats.norm.ppf(cfg.alpha ** (1 / cfg.n)))
    assert np.isclose(e['abstain_rate'], np.mean(pred == -1))
  md = smoothing.render_markdown(r)
  assert 'certified L2 accuracy' in md and '| 0.25 |' in md
  # resume: the stage cache gives the same numbers without retraining
  smoothing.run(cfg, str(tmp_path))
  assert jio.read_json(os.path.join(tmp_path, 'smoothing.json'))['sigmas'] == r['sigmas']
