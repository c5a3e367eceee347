"""BUILD declares every library module and test: regenerate with tools/gen_build.py."""
import os
import re

from tools import gen_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_is_up_to_date():
  assert gen_build.main(['--check']) == 0, 'BUILD is stale: run python tools/gen_build.py'


def test_every_module_and_test_declared():
  build = open(os.path.join(ROOT, 'BUILD')).read()
  srcs = set(re.findall(r'srcs = \["([^"]+)"\]', build))
  tests = set(re.findall(r'py_test\(\n    name = "[^"]+",\n    srcs = \["([^"]+)"\]', build))
  for top in ('jaxsec', 'experiments', 'launch', 'tests'):
    for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
      dirnames[:] = [d for d in dirnames if not d.startswith(('.', '__'))]
      for f in files:
        if f.endswith('.py'):
          rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
          assert rel in srcs, f'{rel} is missing from BUILD'
          if top == 'tests' and f.startswith('test_'):
            assert rel in tests, f'{rel} is not a py_test in BUILD'
