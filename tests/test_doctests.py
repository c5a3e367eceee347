"""Runs the ``>>>`` examples in jaxsec's docstrings (every module that has one).

Examples run on CPU (tests/conftest.py sets JAX_PLATFORMS=cpu) with tiny shapes; outputs are
compared with doctest's ELLIPSIS and NORMALIZE_WHITESPACE flags.
"""
import doctest
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules_with_examples():
  out = []
  for dirpath, dirnames, files in os.walk(os.path.join(ROOT, 'jaxsec')):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(('.', '__')))
    for f in sorted(files):
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        with open(path) as fh:
          if '>>>' in fh.read():
            rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
            out.append(rel[:-len('.__init__')] if rel.endswith('.__init__') else rel)
  return out


MODULES = _modules_with_examples()


def test_examples_found():
  assert len(MODULES) >= 17, MODULES


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                        report=True, verbose=False)
  assert res.attempted > 0, f'{name}: no example ran (a `>>>` outside a docstring?)'
  assert res.failed == 0, f'{name}: {res.failed} of {res.attempted} examples failed (see stdout)'
