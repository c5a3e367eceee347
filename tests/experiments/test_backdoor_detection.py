"""Smoke run of the backdoor detection / repair study (experiments/backdoor_detection.py)."""
import os

import numpy as np

from experiments import backdoor_detection
from experiments.configs import backdoor_detection as backdoor_detection_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_backdoor_detection_smoke(tmp_path):
  cfg, _, r = run_smoke(backdoor_detection, backdoor_detection_config, tmp_path)
  assert r['name'] == 'backdoor_detection' and r['variant'] == 'smoke'
  assert r['poison']['n_poison'] == round(cfg.poison_fraction * cfg.n_train)
  d = r['detection']
  for det in ('activation_clustering', 'spectral_signatures', 'strip'):
    assert 0.0 <= d[det]['auc'] <= 1.0
  assert 0.0 <= d['strip']['tpr'] <= 1.0 and 0.0 <= d['strip']['fpr'] <= 1.0
  ncr = d['neural_cleanse']
  assert len(ncr['l1']) == len(ncr['anomaly_index']) == 10
  l1 = np.array(ncr['l1'])
  med = np.median(l1)
  np.testing.assert_allclose(ncr['anomaly_index'],
                             (med - l1) / (1.4826 * np.median(np.abs(l1 - med))))
  assert np.array(ncr['mask']).shape == (28, 28)
  for m in [r['before']] + [r['repair'][k] for k in ('pruning', 'fine_pruning',
                                                      'nc_unlearning')]:
    assert 0.0 <= m['clean_accuracy'] <= 1.0 and 0.0 <= m['attack_success'] <= 1.0
  md = backdoor_detection.render_markdown(r)
  assert 'Backdoor detection and repair' in md and '| STRIP' in md
  assert backdoor_detection.headline(r) == []          # the smoke variant has no README row
  # resume: the stage cache gives the same numbers without recomputing
  backdoor_detection.run(cfg, str(tmp_path))
  again = jio.read_json(os.path.join(tmp_path, 'backdoor_detection.json'))
  assert again['detection'] == r['detection'] and again['repair'] == r['repair']
