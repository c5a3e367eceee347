"""Smoke run of experiments/svm_poisoning.py (Biggio et al. 2012, linear vs RBF SVM): the
attack's validation loss at each path point is that of the exactly retrained SVM, the
two-Gaussian surface is scored, and JSON, markdown and plot are written; the image data
sets' loaders and the RBF 'scale' rule without training."""
import os

import numpy as np

from experiments import svm_poisoning
from experiments.configs import svm_poisoning as config
from tests.experiments import run_smoke


def test_digits_pairs_and_scale_gamma():
  cfg = config.get_config('full')
  pool, loader = svm_poisoning.load('digits', cfg)
  x, y, xt, yt = loader((7, 1))
  assert pool.shape == (1797, 64) and 0 <= pool.min() and pool.max() <= 1
  assert xt is None and yt is None and set(np.unique(y)) == {0, 1}
  assert len(y) == 179 + 182 and y.sum() == 179                 # 179 sevens (label 1), 182 ones
  assert svm_poisoning.rbf_gamma('scale', pool) == 1.0 / (64 * pool.var())
  assert svm_poisoning.rbf_gamma(0.5, pool) == 0.5
  draws = svm_poisoning._draws('digits', cfg, (7, 1), loader, svm_poisoning.jax.random.key(0))
  _, xtr, _, xv, _, xte, _ = draws[0]
  assert len(draws) == cfg.runs and (len(xtr), len(xv), len(xte)) == (100, 130, 131)


def test_svm_poisoning_smoke(tmp_path):
  cfg, res, r = run_smoke(svm_poisoning, config, tmp_path)
  assert r['variant'] == 'smoke'
  assert [(c['dataset'], c['kernel']) for c in r['curves']] == [('gaussian2d', 'rbf')]
  assert r['gammas']['gaussian2d'] == 0.5
  s = cfg.gaussian2d
  for c in r['curves']:
    assert c['iterations'] == [0, 2, 4, 6] and len(c['val_hinge']) == s.steps + 1
    assert np.asarray(c['runs']['test_error']).shape == (1, 4)
    assert (c['n_train'], c['n_val'], c['n_test']) == (20, 100, 100)
    # the attack's loss along its path = the loss of the SVM retrained there from scratch
    np.testing.assert_allclose(np.asarray(c['val_hinge'])[c['iterations']],
                               c['retrained_val_hinge'], rtol=1e-3, atol=1e-3)
    assert max(c['val_hinge']) > c['val_hinge'][0]
  sf = r['surfaces']['rbf']['gaussian2d']
  assert np.asarray(sf['val_hinge']).shape == (5, 5) and len(sf['path']) == 7
  assert abs(sf['grid_max_val_hinge'] - np.max(sf['val_hinge'])) < 1e-5
  md = svm_poisoning.render_markdown(res)
  assert '| gaussian2d | 0/1 | rbf | 1 |' in md and 'Figure 1' in md
  assert os.path.exists(os.path.join(tmp_path, 'svm_poisoning.png'))
