import json

from jaxsec import io as jio
from tools import render_docs


def _train_speed_result():
  """A train_speed smoke result (the fields its renderer and headline read)."""
  return {'name': 'train_speed', 'variant': 'smoke', 'config': {'num_models': 4},
          'backend': 'cpu', 'cpu_count': 2, 'cnn_jax_images_per_s': 100.0,
          'cnn_torch_images_per_s': 50.0, 'cnn_torch_info': 'torch',
          'cnn_ratio_jax_over_torch': 2.0,
          'fit_many': {'seconds': 1.0, 'peak_rss_mb': 10.0, 'data_mb': 0.3},
          'sequential_fit': {'seconds': 2.0, 'peak_rss_mb': 9.0, 'data_mb': 0.3},
          'fit_many_speedup': 2.0}


def test_render_uses_experiment_renderers(tmp_path):
  from experiments.benchmarks import train_speed
  r = _train_speed_result()
  jio.write_json_atomic(str(tmp_path / 'train_speed.json'), r)
  jio.write_json_atomic(str(tmp_path / 'unknown_thing.json'), {'name': 'unknown_thing'})
  text = render_docs.render(str(tmp_path))
  assert train_speed.render_markdown(r).strip() in text
  assert 'unknown_thing.json' in text.split('Results without a renderer')[1]
  assert json.load(open(tmp_path / 'train_speed.json'))['fit_many_speedup'] == 2.0


def test_headline_block_replaced_and_missing_block_named(tmp_path):
  from experiments.benchmarks import train_speed  # noqa: F401  (its headline renders)
  r = _train_speed_result()
  jio.write_json_atomic(str(tmp_path / 'results' / 'train_speed.json'), r)
  table = render_docs.headline(str(tmp_path / 'results'))
  assert '2.00x (100 vs 50 img/s)' in table
  assert ('`python -m experiments.run --config=experiments/configs/benchmarks/train_speed.py'
          ':smoke --workdir=docs/results`') in table
  readme = tmp_path / 'README.md'
  readme.write_text(f'intro\n{render_docs.BEGIN}\nold\n{render_docs.END}\nrest\n')
  assert render_docs.update_readme(str(readme), table)
  text = readme.read_text()
  assert 'old' not in text and table in text and text.endswith('rest\n')
  assert not render_docs.update_readme(str(readme), table)  # idempotent
  readme.write_text('no block here')
  try:
    render_docs.update_readme(str(readme), table)
  except ValueError as e:
    assert 'headline:begin' in str(e)
  else:
    raise AssertionError('a README without the block must be an error')


def test_committed_readme_headline_is_up_to_date():
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  table = render_docs.headline(os.path.join(root, 'docs', 'results'))
  assert 'failed to render' not in table, table
  with open(os.path.join(root, 'README.md')) as f:
    assert table in f.read(), 'README headline is stale: run python tools/render_docs.py'


def test_figure_links_are_rerooted_to_docs(tmp_path, monkeypatch):
  import types
  stub = types.SimpleNamespace(
      __name__='stub', render_markdown=lambda r: '# T\n![a](fig.png)\n![b](https://x/y.png)\n')
  monkeypatch.setattr(render_docs, '_module_for', lambda path, results: stub)
  monkeypatch.setattr(render_docs, 'ROOT', str(tmp_path))
  jio.write_json_atomic(str(tmp_path / 'docs' / 'results' / 'main' / 'results.json'), {'name': 'x'})
  text = render_docs.render(str(tmp_path / 'docs' / 'results'))
  assert '![a](results/main/fig.png)' in text
  assert '![b](https://x/y.png)' in text
