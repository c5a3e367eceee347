"""Renders docs/RESULTS.md from the committed JSON results under docs/results/.

    python tools/render_docs.py

Each ``docs/results/<name>.json`` carries ``"name"``; the experiment module that wrote it
(``experiments.<name>`` or ``experiments.benchmarks.<name>``, or the module named in the
JSON's ``"module"`` field) renders its section with ``render_markdown(results)``. The main
job's report lives in its workdir; its committed copy is ``docs/results/main/results.json``.
No number in the docs is typed by hand.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import common  # noqa: E402
from jaxsec import io as jio  # noqa: E402


def _module_for(path: str, results: dict):
  candidates = []
  if isinstance(results, dict) and results.get('module'):
    candidates.append(results['module'])
  stem = os.path.splitext(os.path.basename(path))[0]
  if stem == 'results':  # a workdir-style results.json: use its folder's name
    stem = os.path.basename(os.path.dirname(path))
  name = results.get('name', stem) if isinstance(results, dict) else stem
  for n in dict.fromkeys([name, stem]):
    candidates += [f'experiments.{n}', f'experiments.benchmarks.{n}']
  for c in candidates:
    try:
      mod = importlib.import_module(c)
    except ImportError:
      continue
    if hasattr(mod, 'render_markdown'):
      return mod
  return None


def render(results_dir: str) -> str:
  parts = ['# jaxsec results', '',
           'Rendered by `python tools/render_docs.py` from the JSON files under '
           '`docs/results/`; each section names the command that wrote its file.', '']
  files = sorted(glob.glob(os.path.join(results_dir, '**', '*.json'), recursive=True))
  missing = []
  failed = []
  for path in files:
    with open(path) as f:
      results = json.load(f)
    mod = _module_for(path, results)
    rel = os.path.relpath(path, ROOT)
    if mod is None:
      missing.append(rel)
      continue
    parts.append(f'<!-- from {rel} via {mod.__name__}.render_markdown -->')
    try:
      section = mod.render_markdown(results).rstrip()
    except Exception as e:  # pylint: disable=broad-except
      # A result file older than its renderer: say so in the docs, never hide it.
      failed.append(f'{rel}: {type(e).__name__}: {e} (rerun the experiment)')
      continue
    # Figures sit beside their JSON; the rendered page lives in docs/: re-root the links.
    fig_dir = os.path.relpath(os.path.dirname(path), os.path.join(ROOT, 'docs'))
    section = re.sub(r'(!\[[^\]]*\]\()(?![a-z]+://|/)([^)]+)\)',
                     lambda m, fig_dir=fig_dir: f'{m.group(1)}{fig_dir}/{m.group(2)})', section)
    if not section.lstrip().startswith('#'):
      section = f'## {mod.__name__} (`{rel}`)\n\n' + section
    parts += [section, '']
  if failed:
    parts += ['## Results that failed to render', ''] + [f'- `{m}`' for m in failed] + ['']
  if missing:
    parts += ['## Results without a renderer', ''] + [f'- `{m}`' for m in missing] + ['']
  return '\n'.join(parts)


BEGIN, END = '<!-- headline:begin -->', '<!-- headline:end -->'


def headline(results_dir: str) -> str:
  """The README's headline table: rows from each experiment's ``headline(results)``
  (a list of ``(what, figure)``), each with the command that wrote the file."""
  rows = []
  paths = sorted(glob.glob(os.path.join(results_dir, '**', '*.json'), recursive=True),
                 key=lambda p: (os.path.basename(os.path.dirname(p)) != 'main', p))
  for path in paths:
    with open(path) as f:
      results = json.load(f)
    mod = _module_for(path, results)
    if mod is None or not hasattr(mod, 'headline'):
      continue
    study = mod.__name__[len('experiments.'):]
    cmd = common.command(study, results.get('variant', 'full'),
                         'workdir/main' if study == 'main' else 'docs/results')
    try:
      for what, figure in mod.headline(results):
        rows.append(f'| {what} | {figure} | `{cmd}` |')
    except Exception as e:  # pylint: disable=broad-except
      rows.append(f'| {os.path.relpath(path, ROOT)} | failed to render: {type(e).__name__} '
                  f'| `{cmd}` |')
  return '\n'.join(['| what | measured | command |', '|---|---|---|'] + rows)


def update_readme(readme_path: str, table: str) -> bool:
  with open(readme_path) as f:
    text = f.read()
  if BEGIN not in text or END not in text:
    raise ValueError(f'{readme_path} has no {BEGIN} ... {END} block.')
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  new = head + BEGIN + '\n' + table + '\n' + END + tail
  if new != text:
    jio.write_text_atomic(readme_path, new)
  return new != text


def main() -> int:
  results_dir = os.path.join(ROOT, 'docs', 'results')
  text = render(results_dir)
  jio.write_text_atomic(os.path.join(ROOT, 'docs', 'RESULTS.md'), text)
  print(f'wrote docs/RESULTS.md ({len(text.splitlines())} lines)')
  changed = update_readme(os.path.join(ROOT, 'README.md'), headline(results_dir))
  print('README.md headline ' + ('updated' if changed else 'unchanged'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
