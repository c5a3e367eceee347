"""experiments.common.Stages: orbax-checkpointed stage results (resume, config, atomicity)."""
import math
import os

import numpy as np

from experiments import common


def test_stages_round_trip_resume_and_config(tmp_path):
  d = str(tmp_path / 'st')
  st = common.Stages(d, {'seed': 0, 'eps': (0.1, 0.2)})
  assert st.get('fgsm') is None
  calls = []
  v = st.cached('fgsm', lambda: calls.append(1) or {'error': [0.5, math.inf], 'n': 3})
  arr = {'logits': np.arange(6.0, dtype=np.float32).reshape(2, 3), 'in': np.array([1, 0], bool)}
  st.put('target', arr, arrays=True)
  # A fresh process (new object) under the same config restores both stages.
  st2 = common.Stages(d, {'seed': 0, 'eps': (0.1, 0.2)})
  assert st2.cached('fgsm', lambda: calls.append(2)) == v and calls == [1]
  got = st2.get('target', arrays=True)
  np.testing.assert_array_equal(got['logits'], arr['logits'])
  np.testing.assert_array_equal(got['in'], arr['in'])
  # A stage saved under another config is not used.
  assert common.Stages(d, {'seed': 1, 'eps': (0.1, 0.2)}).get('fgsm') is None
  # Without a directory: memory only.
  mem = common.Stages(None, {})
  mem.put('a', {'x': 1})
  assert mem.get('a') == {'x': 1}


def test_stages_half_written_checkpoint_is_ignored(tmp_path):
  d = str(tmp_path / 'st')
  st = common.Stages(d, {'seed': 0})
  st.put('rho', {'ratio': 1.5})
  # A crash in the middle of the next save leaves only orbax's temporary directory.
  os.makedirs(os.path.join(d, 'rho', '2.orbax-checkpoint-tmp-1234', 'value'))
  with open(os.path.join(d, 'rho', '2.orbax-checkpoint-tmp-1234', 'value', 'metadata'),
            'w') as f:
    f.write('{"ratio": ')          # truncated
  assert common.Stages(d, {'seed': 0}).get('rho') == {'ratio': 1.5}


def test_defense_cache_is_orbax_stages_keyed_by_config(tmp_path):
  from experiments import defense_common as dc  # pylint: disable=g-import-not-at-top
  cfg = ({'seed': 0, 'eps': (0.1, 0.2)}, 'pgd')
  cache = dc.Cache(str(tmp_path), 'exp')
  assert cache.get('pgd_at', cfg) is None
  cache.put('pgd_at', cfg, {'acc': np.float32(0.5), 'eps': (0.1,), 'aa': None})
  # A fresh object (a resumed run) restores it from orbax, not from a JSON cache file.
  assert dc.Cache(str(tmp_path), 'exp').get('pgd_at', cfg) == {
      'acc': 0.5, 'eps': [0.1], 'aa': None}
  assert os.path.isdir(tmp_path / 'stages' / 'exp' / 'pgd_at')
  assert not os.path.exists(tmp_path / 'cache')
  # A changed config recomputes: nothing is returned for it; its result replaces the old.
  other = ({'seed': 1, 'eps': (0.1, 0.2)}, 'pgd')
  assert dc.Cache(str(tmp_path), 'exp').get('pgd_at', other) is None
  cache.put('pgd_at', other, {'acc': 0.7})
  assert dc.Cache(str(tmp_path), 'exp').get('pgd_at', other) == {'acc': 0.7}
  assert dc.Cache(str(tmp_path), 'exp').get('pgd_at', cfg) is None
