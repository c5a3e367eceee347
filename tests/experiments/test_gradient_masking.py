"""Smoke run of the gradient-masking study (experiments/gradient_masking.py)."""
import os

from experiments import gradient_masking
from experiments.configs import gradient_masking as gm_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_gradient_masking_smoke(tmp_path):
  cfg, _, r = run_smoke(gradient_masking, gm_config, tmp_path)
  assert r['name'] == 'gradient_masking' and r['n_attack'] == cfg.n_attack
  assert set(r['models']) == {'undefended', 'distillation', 'feature_squeezing'}
  for name, m in r['models'].items():
    rows = {'clean', 'pgd_ce', 'pgd_margin', 'spsa'} | (
        {'pgd_bpda'} if name == 'feature_squeezing' else set())
    assert set(m) == rows
    # accuracies on n_attack images: multiples of 1 / n_attack (an attack may end above the
    # clean accuracy: a random start can fix a misclassified image where the gradient is 0)
    for v in m.values():
      assert 0 <= v <= 1 and abs(v * cfg.n_attack - round(v * cfg.n_attack)) < 1e-9
  md = gradient_masking.render_markdown(r)
  assert '| attack | undefended | distillation | feature squeezing |' in md
  bpda = next(l for l in md.splitlines() if 'BPDA' in l).split('|')[2:5]
  assert [c.strip() == '-' for c in bpda] == [True, True, False]
  assert gradient_masking.headline(r) == []                    # smoke: no README row
  (what, cells), = gradient_masking.headline({**r, 'variant': 'full'})
  assert 'PGD-CE / SPSA' in what and cells.count('%') == 3
  gradient_masking.run(cfg, str(tmp_path))   # resume from the stage cache: same numbers
  assert jio.read_json(os.path.join(tmp_path, 'gradient_masking.json'))['models'] == r['models']
