"""Smoke run of the interval-bound-propagation experiment (experiments/ibp.py)."""
import os

from experiments import ibp
from experiments.configs import ibp as ibp_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_ibp_smoke(tmp_path):
  cfg, _, r = run_smoke(ibp, ibp_config, tmp_path)
  assert r['name'] == 'ibp' and r['variant'] == 'smoke'
  assert set(r['models']) == {'normal', 'ibp'}
  for e in r['models'].values():
    assert e['n_images'] == cfg.n_test and e['verified_but_attacked'] == 0
    # verified (lower bound) <= PGD (upper bound), <= clean; elision never loses
    assert 0 <= e['verified_accuracy'] <= min(e['pgd_accuracy'], e['clean_accuracy'])
    assert max(e['pgd_accuracy'], e['clean_accuracy']) <= 1
    assert e['verified_accuracy_naive'] <= e['verified_accuracy']
  assert r['models']['ibp']['train']['eps_train'] == cfg.eps_scale * cfg.eps_test
  md = ibp.render_markdown(r)
  assert 'verified vs PGD accuracy' in md and '| ibp |' in md
  assert 'experiments/configs/ibp.py:smoke' in md
  # resume: the stage cache gives the same numbers without retraining
  ibp.run(cfg, str(tmp_path))
  assert jio.read_json(os.path.join(tmp_path, 'ibp.json'))['models'] == r['models']
