"""The Python blocks of DESIGN.md (the contract by example) run as written.

The block that sets up the toy model ("the contract by example") runs first; the short
illustrations elsewhere on the page run in its namespace.
"""
import pathlib
import re

_DESIGN = pathlib.Path(__file__).resolve().parents[1] / 'DESIGN.md'
_BLOCKS = re.findall(r'```python\n(.*?)```', _DESIGN.read_text(), flags=re.S)


def test_design_examples_run():
  setup = [b for b in _BLOCKS if 'Fixed-budget attack' in b]
  assert len(setup) == 1 and len(_BLOCKS) >= 2, 'DESIGN.md lost its runnable examples'
  namespace = {}
  for i, block in sorted(enumerate(_BLOCKS), key=lambda ib: ib[1] is not setup[0]):
    exec(compile(block, f'DESIGN.md python block {i}', 'exec'), namespace)
