import json

from jaxsec import io as jio
from tools import render_docs


def test_render_uses_experiment_renderers(tmp_path):
  from experiments.benchmarks import train_speed
  r = {'name': 'train_speed', 'variant': 'smoke', 'config': {'num_models': 4},
       'backend': 'cpu', 'cpu_count': 2, 'cnn_jax_images_per_s': 100.0,
       'cnn_torch_images_per_s': 50.0, 'cnn_torch_info': 'torch',
       'cnn_ratio_jax_over_torch': 2.0,
       'fit_many': {'seconds': 1.0, 'peak_rss_mb': 10.0, 'data_mb': 0.3},
       'sequential_fit': {'seconds': 2.0, 'peak_rss_mb': 9.0, 'data_mb': 0.3},
       'fit_many_speedup': 2.0}
  jio.write_json_atomic(str(tmp_path / 'train_speed.json'), r)
  jio.write_json_atomic(str(tmp_path / 'unknown_thing.json'), {'name': 'unknown_thing'})
  text = render_docs.render(str(tmp_path))
  assert train_speed.render_markdown(r).strip() in text
  assert 'unknown_thing.json' in text.split('Results without a renderer')[1]
  assert json.load(open(tmp_path / 'train_speed.json'))['fit_many_speedup'] == 2.0
