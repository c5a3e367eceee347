"""BUILD declares every library module and test with the deps its imports give.

Regenerate with tools/gen_build.py.
"""
import os
import re

from tools import gen_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_text():
  with open(os.path.join(ROOT, 'BUILD')) as f:
    return f.read()


def _declared_deps():
  """Maps each target's src file to the src files of its deps, as BUILD declares them."""
  build = _build_text()
  target_src = dict(re.findall(r'name = "([^"]+)",\n    srcs = \["([^"]+)"\]', build))
  out = {}
  for block in build.split('\n\n'):
    m = re.search(r'srcs = \["([^"]+)"\]', block)
    if m:
      out[m.group(1)] = sorted(target_src[d] for d in re.findall(r'"?:([^"]+)",', block))
  return out


def test_build_is_up_to_date():
  assert gen_build.main(['--check']) == 0, 'BUILD is stale: run python tools/gen_build.py'


def test_every_module_and_test_declared():
  build = _build_text()
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


def test_deps_are_the_imports():
  declared = _declared_deps()
  # Spot checks, independent of the generator: absolute, `from pkg import module`, relative.
  assert 'jaxsec/_checks.py' in declared['jaxsec/attacks/evasion/pgd.py']
  assert 'jaxsec/attacks/evasion/common.py' in declared['jaxsec/attacks/evasion/pgd.py']
  assert declared['tests/test_build.py'] == ['tools/gen_build.py']
  graph = gen_build.dependency_graph()
  assert sum(map(len, graph.values())) > 300, 'the dependency graph is nearly empty'
  for src, deps in graph.items():
    assert declared[src] == deps, f'{src}: BUILD deps {declared[src]} != imports {deps}'


def test_dependency_graph_has_no_cycles():
  assert gen_build.find_cycle({'a': ['b'], 'b': ['c'], 'c': ['a']}) == ['a', 'b', 'c', 'a']
  assert gen_build.find_cycle({'a': ['b', 'c'], 'b': ['c'], 'c': []}) is None
  cycle = gen_build.find_cycle(gen_build.dependency_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)
