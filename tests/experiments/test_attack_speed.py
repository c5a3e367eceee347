"""Smoke run of experiments/benchmarks/attack_speed.py (tiny CNN, 8 images, no peers)."""
import json
import os

from experiments.benchmarks import attack_speed
from experiments.configs.benchmarks import attack_speed as attack_speed_config
from tests.conftest import requires_fashion_mnist


def test_config_variants():
  assert attack_speed_config.get_config('full').batch == 256
  import pytest
  with pytest.raises(ValueError, match='variant'):
    attack_speed_config.get_config('huge')


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg = attack_speed_config.get_config('smoke')
  cfg.train_subset = 256
  res = attack_speed.run(cfg, str(tmp_path))
  with open(os.path.join(tmp_path, 'attack_speed.json')) as fh:
    saved = json.load(fh)
  assert saved['compute_limit']['ratio'] > 0
  assert saved['compute_limit']['pgd_steps'] == cfg.pgd_steps
  for name in ('fgsm', 'pgd'):
    r = saved['jaxsec'][name]
    assert r['seconds'] > 0 and 0.0 <= r['robust_accuracy'] <= 1.0
  # On the CPU, C&W is also timed as an eager call (its host loop): the same attack.
  cw = saved['jaxsec']['cw']
  assert cw['host_loop']['seconds'] > 0
  assert abs(cw['host_loop']['success_rate'] - cw['success_rate']) <= 1 / cfg.batch
  md = attack_speed.render_markdown(res)
  assert 'compute-limit ratio' in md and '| pgd | jaxsec |' in md
  assert '| cw (eager call: host loop over jitted blocks) | jaxsec |' in md
