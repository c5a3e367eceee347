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


def test_all_experiment_modules_import_together():
  mods = _experiment_modules()
  assert len(mods) >= 15, mods
  for m in mods:
    module = importlib.import_module(m)
    assert hasattr(module, 'main') or m.endswith('common'), f'{m} has no main()'
