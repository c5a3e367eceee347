"""All experiment modules import together in one process (pytest runs them in one worker).

Regression test: modules that defined absl flags at import time clashed on shared names
('workdir', 'variant') with DuplicateFlagError as soon as two were imported together.
"""
import importlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _experiment_modules():
  mods = []
  for p in sorted((ROOT / 'experiments').rglob('*.py')):
    if p.name == '__init__.py':
      continue
    rel = p.relative_to(ROOT).with_suffix('')
    mods.append('.'.join(rel.parts))
  return mods


_HELPERS = {'experiments.common', 'experiments.defense_common', 'experiments.run',
            'experiments.benchmarks.machine', 'experiments.benchmarks.torch_port',
            'experiments.configs.base'}


def test_all_experiment_modules_import_together():
  """Studies expose run(config, workdir), config files get_config(arg); no module has a main."""
  mods = _experiment_modules()
  assert len(mods) >= 15, mods
  for m in mods:
    module = importlib.import_module(m)
    if m in _HELPERS:
      continue
    if m.startswith('experiments.configs.'):
      assert callable(getattr(module, 'get_config', None)), f'{m} has no get_config(arg)'
      study = 'experiments.' + m[len('experiments.configs.'):]
      assert study in mods, f'config {m} names no study module {study}'
    else:
      assert callable(getattr(module, 'run', None)), f'{m} has no run(config, workdir)'
      assert not hasattr(module, 'main'), f'{m} still defines an absl main()'
      assert 'experiments.configs.' + m[len('experiments.'):] in mods, f'{m} has no config file'
