"""Config file of tests/launch/toy_study.py: 2 seeds x 2 values of x (arg 'crashy': the
seed-1 points fail on their first try; arg 'two': 2 points; arg 'vectorized': x as a vectorised axis)."""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.study = 'tests.launch.toy_study'
  c.variant = arg or 'default'
  c.seed = 0
  c.model = 'mlp'
  c.x = 1.0
  c.xs = ()               # the vectorised x axis (h.vectorized('config.xs', ...))
  c.crash_first = arg == 'crashy'
  c.sleep_s = 0.0
  c.resources = ml_collections.ConfigDict({'cpus': 1.0, 'gpus': 0.0})
  c.sweep_metrics = ('loss', 'nested.score')
  return c


def get_hyper(h, arg=None):
  if arg == 'vectorized':  # the same table as the default sweep, x as one point per seed
    return h.product([h.sweep('config.seed', [0, 1]), h.vectorized('config.xs', [0.5, 2.0])])
  if arg == 'two':
    return h.product([h.sweep('config.seed', [0, 1]), h.fixed('config.model', 'cnn')])
  return h.product([h.sweep('config.seed', [0, 1]), h.sweep('config.x', [0.5, 2.0])])
