"""Runs the ``>>>`` examples in jaxsec's docstrings (every module that has one).

Examples run on CPU (tests/conftest.py sets JAX_PLATFORMS=cpu) with tiny shapes; outputs are
compared with doctest's ELLIPSIS and NORMALIZE_WHITESPACE flags.
"""
import doctest
import importlib
import os
import subprocess
import sys

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
# TenSEAL cannot serialise in a process that has imported TensorFlow (jaxsec.crypto.ckks):
# when another test of this worker loaded a dataset, these modules' examples run in a fresh
# interpreter.
NEEDS_PROCESS_WITHOUT_TENSORFLOW = {'jaxsec.crypto.ckks'}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_examples_found():
  assert len(MODULES) >= 17, MODULES


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
  if name in NEEDS_PROCESS_WITHOUT_TENSORFLOW and 'tensorflow' in sys.modules:
    code = ('import doctest, importlib, sys\n'
            f'r = doctest.testmod(importlib.import_module({name!r}), optionflags={FLAGS})\n'
            'sys.exit(1 if r.failed or not r.attempted else 0)')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, f'{name}: examples failed\n{proc.stdout[-3000:]}'
    return
  module = importlib.import_module(name)
  res = doctest.testmod(module, optionflags=FLAGS, report=True, verbose=False)
  assert res.attempted > 0, f'{name}: no example ran (a `>>>` outside a docstring?)'
  assert res.failed == 0, f'{name}: {res.failed} of {res.attempted} examples failed (see stdout)'
