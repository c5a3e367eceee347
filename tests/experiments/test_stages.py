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
