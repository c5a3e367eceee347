"""Smoke run of the transferability study (experiments/transferability.py)."""
import os

import pytest

from experiments import transferability
from experiments.configs import transferability as transferability_config
from jaxsec import io as jio
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@pytest.mark.slow
@requires_fashion_mnist
def test_transferability_smoke(tmp_path):
  cfg, _, r = run_smoke(transferability, transferability_config, tmp_path)
  assert r['name'] == 'transferability' and r['variant'] == 'smoke'
  names = ['logreg', 'mlp', 'cnn', 'cnn_seed2']
  assert set(r['models']) == set(r['sources']) == set(names)
  for src in names:
    assert set(r['sources'][src]) == set(cfg.attacks)
    for e in r['sources'][src].values():
      assert set(e['targets']) == set(names)
      for t in e['targets'].values():
        assert 0.0 <= t['success_rate'] <= 1.0 and t['max_linf'] <= cfg.eps + 1e-5
  assert os.path.getsize(os.path.join(tmp_path, 'transferability.png')) > 0
  md = transferability.render_markdown(r)
  assert md.count('| source \\ target |') == len(cfg.attacks) and '| cnn_seed2 |' in md
  # resume: the stage cache gives the same numbers without recrafting
  transferability.run(cfg, str(tmp_path))
  again = jio.read_json(os.path.join(tmp_path, 'transferability.json'))['sources']
  assert again == r['sources']
