"""The black-box speed benchmark's pieces (the run itself is a benchmark, not a test).

The batch loop that stands in for Cohen et al.'s ``core.Smooth.certify`` must compute the
same certificate as ``smoothing.certify`` where the counts are deterministic (a model whose
noisy prediction does not depend on the noise), and the renderer must take the JSON the
run writes.
"""
import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import blackbox_speed as bench
from experiments.configs.benchmarks import blackbox_speed as bench_config
from jaxsec.defenses.inference import smoothing


def _const_logits(z):
  # Class 3 wins unless the mean pixel of the image is above 10 (never, at sigma 0.25),
  # so every noisy draw votes for class 3.
  m = jnp.mean(z.reshape(z.shape[0], -1), -1)
  return jax.nn.one_hot(jnp.where(m > 10.0, 1, 3), 10)


def test_certify_loop_matches_vectorised_certify_on_deterministic_counts():
  x = jnp.zeros((3, 4, 4, 1)) + jnp.arange(3.0)[:, None, None, None] * 0.1
  key = jax.random.key(0)
  kw = dict(sigma=0.25, n0=10, n=250, alpha=0.001)
  ours, info = smoothing.certify(_const_logits, x, key, batch_size=64, **kw)

  def predict_fn(xi, k, b):
    noise = jax.random.normal(k, (b,) + xi.shape) * kw['sigma']
    return jnp.argmax(_const_logits(xi[None] + noise), -1)
  loop, loop_info = bench._certify_loop(predict_fn, x, key, batch=64, **kw)
  np.testing.assert_array_equal(np.asarray(loop.prediction), [3, 3, 3])
  np.testing.assert_array_equal(np.asarray(loop.prediction), np.asarray(ours.prediction))
  np.testing.assert_allclose(np.asarray(loop.radius), np.asarray(ours.radius), rtol=1e-6)
  # n = 250 is not a multiple of the batch: the loop must still count exactly n draws.
  np.testing.assert_array_equal(np.asarray(loop_info['count_a']), [250, 250, 250])


def test_render_takes_the_written_json():
  cfg = bench_config.get_config('smoke').to_dict()
  row = {'seconds': 1.0, 'queries': 100, 'queries_per_second': 100.0,
         'limit_images_per_second': 400.0, 'ratio_to_limit': 0.25, 'success_rate': 0.5}
  peer = {'seconds': 2.0, 'success_rate': 1.0, 'median_l2': 1.5}
  r = {'variant': 'smoke', 'config': cfg, 'clean_accuracy_batch': 0.9,
       'machine': {'jax_backend': 'cpu', 'loaded': False},
       'score_based': {'spsa': row},
       'certify': {'n': 50, 'n0': 10, 'batch': 20, 'images': 2,
                   'jaxsec_seconds_per_image': 0.1, 'loop_seconds_per_image': 0.3,
                   'speedup': 3.0},
       'peers': {'jaxsec': {'boundary': dict(peer, seconds=0.5)},
                 'foolbox': {'version': '3.3.4', 'boundary': peer}},
       'art': 'not run'}
  md = bench.render_markdown(r)
  assert '| spsa | 100 | 1.00 | 100 | 400 | 0.25 | 0.50 |' in md
  assert '**3.00x**' in md and '| 4.00x |' in md
