"""Smoke run of experiments/poisoning.py: every sub-study, JSON, markdown and plot."""
import os

from experiments import poisoning
from jaxsec import io as jio


def test_poisoning_smoke(tmp_path):
  cfg = poisoning.get_config('smoke')
  res = poisoning.run(cfg, str(tmp_path))
  saved = jio.read_json(os.path.join(tmp_path, 'poisoning.json'))
  assert saved['variant'] == 'smoke'
  s = saved['studies']
  assert set(s) == set(poisoning.STUDIES)
  lf = s['label_flip']['datasets']['breast_cancer']
  assert [r['fraction'] for r in lf['curve']] == [0.0, 0.2]
  for r in lf['curve']:
    assert 0.0 <= r['alfa_accuracy'] <= 1.0 and 0.0 <= r['random_accuracy'] <= 1.0
  assert lf['curve'][0]['alfa_accuracy'] == lf['curve'][0]['random_accuracy']  # 0 flips
  assert lf['curve'][1]['kearns_li_error_bound'] == 0.25                       # 0.2 / 0.8
  for d in lf['sanitize']['defenses'].values():
    assert 0.0 <= d['restored_accuracy'] <= 1.0
  big = s['biggio']['pairs'][0]
  assert len(big['test_error']) == cfg.biggio_points + 1
  assert s['bilevel']['learners']['mlp']['rows'][0]['num_poison'] == 3          # 5% of 60
  bd = s['backdoor']['sanitize']['defenses']
  assert set(bd) == {'sphere', 'slab', 'knn', 'spectral_signatures', 'robust_pca'}
  for d in bd.values():
    assert 0.0 <= d['recall'] <= 1.0 and d['num_poison'] == 30               # 10% of 300
  for rule in ('average', 'random', 'nearest'):
    assert rule in s['centroid']['rules']
  avg = s['centroid']['rules']['average']
  for i, v, b in zip(avg['points'], avg['displacement_radii'], avg['bound_i_over_n']):
    assert abs(v - b) < 1e-2   # average-out: displacement i/n radii exactly
  sig = s['signature']['rows']
  assert sig[0]['keeps_true_invariants'] and sig[0]['variant_detection_rate'] == 1.0
  assert not sig[-1]['keeps_true_invariants'] and sig[-1]['variant_detection_rate'] == 0.0
  md = poisoning.render_markdown(res)
  assert 'ALFA' in md and 'Biggio' in md and 'BadNets' in md
  assert os.path.exists(os.path.join(tmp_path, 'poisoning.png'))
  # a second run resumes: every study is skipped and the numbers are unchanged
  again = poisoning.run(cfg, str(tmp_path))
  assert again['studies'] == saved['studies']
