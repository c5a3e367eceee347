"""Smoke run of the backdoor detection / repair study (experiments/backdoor_detection.py):
BadNets and the clean-label backdoor."""
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
  assert list(r['attacks']) == ['badnets', 'clean_label']
  bad, cl = r['attacks']['badnets']['poison'], r['attacks']['clean_label']['poison']
  assert bad['n_poison'] == round(cfg.poison_fraction * cfg.n_train)
  assert bad['labels_changed'] == bad['n_poison']            # BadNets relabels
  assert cl['n_poison'] == round(cfg.cl_poison_fraction * cfg.n_train)
  assert cl['labels_changed'] == 0                            # clean-label keeps every label
  assert cl['hardening_linf'] <= cfg.cl_eps + 1e-6 and 0.0 <= cl['hardening_success'] <= 1.0
  for a in r['attacks'].values():
    d = a['detection']
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
    for m in [a['before']] + [a['repair'][k] for k in ('pruning', 'fine_pruning',
                                                        'nc_unlearning')]:
      assert 0.0 <= m['clean_accuracy'] <= 1.0 and 0.0 <= m['attack_success'] <= 1.0
  md = backdoor_detection.render_markdown(r)
  assert 'Backdoor detection and repair' in md and md.count('| STRIP') == 2
  assert 'Clean-label backdoor' in md and '0 labels changed' in md
  assert backdoor_detection.headline(r) == []          # the smoke variant has no README row
  assert len(backdoor_detection.headline({**r, 'variant': 'full'})) == 2
  # resume: the stage cache gives the same numbers without recomputing
  backdoor_detection.run(cfg, str(tmp_path))
  again = jio.read_json(os.path.join(tmp_path, 'backdoor_detection.json'))
  for k, a in r['attacks'].items():
    assert again['attacks'][k]['detection'] == a['detection']
    assert again['attacks'][k]['repair'] == a['repair']
