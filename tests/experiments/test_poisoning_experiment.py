"""Smoke run of experiments/poisoning.py: every sub-study, JSON, markdown and plot."""
import os

import numpy as np

from experiments import poisoning
from experiments.configs import poisoning as poisoning_config
from tests.experiments import fake_fashion_mnist, run_smoke


def _top_half(x, y):
  x[:, :14] += 0.5 * (y % 2 == 0)[:, None, None, None]     # even classes: bright top half


def _fake_fashion_mnist(real_load):
  return fake_fashion_mnist(real_load, sizes=(1000, 1200), scale=0.3, paint=_top_half)


def test_pool_is_a_block_mean():
  x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
  p = poisoning._pool(x, 2)
  assert p.shape == (2, 4)
  np.testing.assert_allclose(p[0], [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4,
                                    (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4])
  np.testing.assert_allclose(poisoning._pool(x, 1), x.reshape(2, 16))


def test_poisoning_smoke(tmp_path, monkeypatch):
  monkeypatch.setattr(poisoning.data, 'load', _fake_fashion_mnist(poisoning.data.load))
  cfg, res, saved = run_smoke(poisoning, poisoning_config, tmp_path)
  assert saved['variant'] == 'smoke'
  s = saved['studies']
  assert set(s) == set(poisoning.STUDIES)
  lf = s['label_flip']['datasets']['breast_cancer']
  assert [r['fraction'] for r in lf['curve']] == [0.0, 0.2]
  for r in lf['curve']:
    assert 0.0 <= r['alfa_accuracy'] <= 1.0 and 0.0 <= r['random_accuracy'] <= 1.0
    assert 1 <= r['alfa_iterations'] <= cfg.alfa_iters
  zero = lf['curve'][0]                                                        # 0 flips
  assert (zero['alfa_accuracy'] == zero['random_accuracy'] == zero['farthest_first_accuracy']
          == zero['nearest_first_accuracy'])
  assert lf['curve'][1]['num_flipped'] == 13                                   # 20% of 64
  assert lf['curve'][1]['kearns_li_error_bound'] == 0.25                       # 0.2 / 0.8
  for d in lf['sanitize']['defenses'].values():
    assert 0.0 <= d['restored_accuracy'] <= 1.0
  big = s['biggio']['pairs']
  assert [(b['dataset'], b['n_features'], b['C']) for b in big] == [
      ('digits', 64, 10.0), ('fashion_mnist_7x7', 49, 16.0)]
  assert np.asarray(big[0]['test_error_runs']).shape == (cfg.biggio_runs, cfg.biggio_points + 1)
  np.testing.assert_allclose(big[0]['test_error'], np.mean(big[0]['test_error_runs'], 0))
  assert big[1]['n_test'] == cfg.biggio_fmnist_test and big[1]['n_val'] == cfg.biggio_fmnist_val
  assert s['bilevel']['learners']['mlp']['rows'][0]['num_poison'] == 3          # 5% of 60
  bd = s['backdoor']['sanitize']['defenses']
  assert set(bd) == {'sphere', 'slab', 'knn', 'spectral_signatures', 'robust_pca'}
  for d in bd.values():
    assert 0.0 <= d['recall'] <= 1.0 and d['num_poison'] == 30               # 10% of 300
  for rule in ('average', 'random', 'nearest', 'infinite'):
    assert rule in s['centroid']['rules']
  avg = s['centroid']['rules']['average']
  for _, v, b in zip(avg['points'], avg['displacement_radii'], avg['bound_i_over_n'], strict=True):
    assert abs(v - b) < 1e-2   # average-out: displacement i/n radii exactly
  sig = s['signature']['rows']
  assert sig[0]['keeps_true_invariants'] and sig[0]['variant_detection_rate'] == 1.0
  assert not sig[-1]['keeps_true_invariants'] and sig[-1]['variant_detection_rate'] == 0.0
  md = poisoning.render_markdown(res)
  assert 'ALFA' in md and 'Biggio' in md and 'BadNets' in md and 'infinite horizon' in md
  assert os.path.exists(os.path.join(tmp_path, 'poisoning.png'))
  # a second run resumes: every study is skipped and the numbers are unchanged
  again = poisoning.run(cfg, str(tmp_path))
  assert again['studies'] == saved['studies']
