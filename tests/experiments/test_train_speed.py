import json

from experiments.benchmarks import train_speed
from experiments.configs.benchmarks import train_speed as train_speed_config
from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_train_speed_smoke(tmp_path):
  r = train_speed.run(train_speed_config.get_config('smoke'), str(tmp_path))
  saved = json.load(open(tmp_path / 'train_speed.json'))
  assert saved['cnn_jax_images_per_s'] > 0
  assert saved['fit_many']['seconds'] > 0 and saved['sequential_fit']['seconds'] > 0
  assert r['fit_many_speedup'] == saved['fit_many_speedup']
  assert 'MLPs on digits' in train_speed.render_markdown(saved)
