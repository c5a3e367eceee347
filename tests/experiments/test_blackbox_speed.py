"""The black-box speed benchmark's pieces (the run itself is a benchmark, not a test).

The batch loop that stands in for Cohen et al.'s ``core.Smooth.certify`` must compute the
same certificate as ``smoothing.certify`` where the counts are deterministic (a model whose
noisy prediction does not depend on the noise), and the renderer must take the JSON the
run writes. The ART peers (installed with the bench extra) run at tiny size on a CNN whose
output does not depend on its input: every certificate, success and query count is then known
in closed form, for ART and for jaxsec.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments.benchmarks import blackbox_speed as bench
from experiments.benchmarks import torch_port
from experiments.configs.benchmarks import blackbox_speed as bench_config
from jaxsec import models
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
  r: dict[str, Any] = {'variant': 'smoke', 'config': cfg, 'clean_accuracy_batch': 0.9,
       'machine': {'jax_backend': 'cpu', 'loaded': False},
       'score_based': {'spsa': row},
       'certify': {'n': 50, 'n0': 10, 'batch': 20, 'images': 2,
                   'jaxsec_seconds_per_image': 0.1, 'loop_seconds_per_image': 0.3,
                   'speedup': 3.0},
       'peers': {'jaxsec': {'boundary': dict(peer, seconds=0.5),
                            'ead_no_abort': dict(peer, gradients_per_example=3.0)},
                 'foolbox': {'version': '3.3.4', 'boundary': peer,
                             'ead_no_abort': dict(peer, seconds=4.0)}},
       'art': 'not run'}
  md = bench.render_markdown(r)
  assert '| spsa | 100 | 1.00 | 100 | 400 | 0.25 | 0.50 |' in md
  assert '**3.00x**' in md and '| 4.00x |' in md
  assert '| ead (no early abort) | foolbox 3.3.4 | 4.00 | 1.00 | 1.500 | 2.00x |' in md
  assert 'jaxsec counted 3 gradient steps per example' in md
  assert 'ART: not run.' in md                 # a JSON written before ART ran still renders
  rows = dict(bench.headline(r))
  assert rows['foolbox/ead_no_abort: peer time / jaxsec time (cpu, same JAX model; no early '
              'abort: the same gradient steps)'].startswith('2.00x')
  art_row = {'seconds': 3.0, 'queries': 30, 'queries_per_second': 10.0, 'success_rate': 0.0,
             'median_l2': float('nan'), 'time_ratio': 6.0}
  r['art'] = {'version': '1.20.1', 'torch_version': '2', 'torch_threads': 2,
              'max_logit_diff_vs_jax': 1e-6, 'spsa': bench.ART_NO_SPSA,
              'certify': {'seconds_per_image': 0.5, 'jaxsec_seconds_per_image': 0.1,
                          'time_ratio': 5.0, 'art_abstain_rate': 0.0,
                          'jaxsec_abstain_rate': 0.5, 'art_mean_radius': 0.2,
                          'jaxsec_mean_radius': 0.1, 'prediction_agreement': 0.5},
              'attacks': {'square': {'jaxsec': dict(art_row, seconds=0.5), 'art': art_row}}}
  md = bench.render_markdown(r)
  assert '**5.00x**' in md and 'abstain rate 0.00 (jaxsec 0.50)' in md
  assert '| square | art | 3.00 | 30 | 10 | 0.00 | - | 6.00x |' in md
  assert 'SPSA: ART has no SPSA' in md
  rows = dict(bench.headline(r))
  assert rows['ART square: time ART / jaxsec, same images and budget (cpu)'].startswith('6.00x')


def _cnn_params(key):
  model = models.get('cnn', num_classes=10, features=(4, 8), dense=16)
  return model, models.init(model, key, (1, 28, 28, 1))


def test_torch_port_gives_the_jax_logits():
  pytest.importorskip('torch')
  model, params = _cnn_params(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
  logits_fn = models.logits_fn(model, params)
  net = torch_port.cnn(params)
  assert torch_port.check_same_logits(net, logits_fn, x) < 1e-5
  # Another model's logits are refused.
  _, other = _cnn_params(jax.random.key(2))
  with pytest.raises(ValueError, match='weight port'):
    torch_port.check_same_logits(torch_port.cnn(other), logits_fn, x)


def test_art_peers_on_a_constant_model():
  """A CNN whose head has zero weights and bias 10 at class 3 predicts 3 whatever the input.

  certify: every noisy draw votes 3, so ART and jaxsec both return class 3 with radius
  sigma * Phi^-1(alpha^(1/n)) (the one-sided Clopper-Pearson bound at n successes out of n).
  Attacks on label 3 never succeed and never move: jaxsec's SimBA spends 1 + 2 steps
  queries per example, its Square the whole budget; ART's SimBA sends the batch once and 2
  rows per step per image, its Square 3 batches (check, current loss, new loss) per
  iteration, the stripes included."""
  pytest.importorskip('art')
  pytest.importorskip('statsmodels')   # ART's certify bound (not an ART dependency)
  cfg = bench_config.get_config('smoke')
  model, params = _cnn_params(jax.random.key(0))
  # Only the head is constant: with the dense kernel zero too, XLA:CPU (jax 0.10.2) returns
  # wrong logits (NaN at some batch sizes) from the jitted closure over these constants.
  head = params['params']['head']
  params['params']['head'] = {'kernel': jnp.zeros_like(head['kernel']),
                              'bias': jnp.zeros_like(head['bias']).at[3].set(10.0)}
  logits_fn = models.logits_fn(model, params)
  b = cfg.art_batch
  x = jax.random.uniform(jax.random.key(1), (b, 28, 28, 1))
  y = jnp.full((b,), 3, jnp.int32)
  key = jax.random.key(2)
  xc = x[:cfg.certify_images]
  cert, _ = smoothing.certify(logits_fn, xc, key, sigma=cfg.sigma, n0=cfg.n0, n=cfg.n,
                              alpha=cfg.alpha, batch_size=cfg.certify_batch)
  certify = dict(bench._cert_summary('jaxsec', cert.prediction, cert.radius), x=xc,
                 jaxsec_seconds_per_image=1.0)
  res = bench._art(cfg, params, logits_fn, x, y, key, certify)
  assert res['max_logit_diff_vs_jax'] == 0.0 and 'SPSA' in res['spsa']
  ce = res['certify']
  radius = cfg.sigma * stats.norm.ppf(cfg.alpha ** (1 / cfg.n))
  np.testing.assert_array_equal(ce['art_prediction'], [3] * cfg.certify_images)
  np.testing.assert_allclose(ce['art_radius'], radius, rtol=1e-6)
  np.testing.assert_allclose(certify['jaxsec_radius'], radius, rtol=1e-6)
  assert ce['prediction_agreement'] == 1.0 and ce['max_abs_radius_difference'] < 1e-6
  simba, square = res['attacks']['simba'], res['attacks']['square']
  assert simba['jaxsec']['queries'] == b * (1 + 2 * cfg.simba_steps)
  assert simba['art']['queries'] == b + 2 * cfg.simba_steps * b
  assert square['jaxsec']['queries'] == b * cfg.square_queries
  assert square['art']['queries'] == 3 * b * (1 + cfg.square_queries - 2)
  for e in (simba, square):
    for lib in ('jaxsec', 'art'):
      assert e[lib]['success_rate'] == 0.0 and e[lib]['seconds'] > 0
  md = bench.render_markdown({
      'variant': 'smoke', 'config': cfg.to_dict(), 'clean_accuracy_batch': 1.0,
      'machine': {'jax_backend': 'cpu', 'loaded': False}, 'score_based': {},
      'certify': {'n': cfg.n, 'n0': cfg.n0, 'batch': cfg.certify_batch, 'images': 2,
                  'jaxsec_seconds_per_image': 1.0, 'loop_seconds_per_image': 1.0,
                  'speedup': 1.0},
      'peers': {'jaxsec': {}, 'foolbox': {}}, 'art': res})
  assert '| simba | art |' in md and 'same prediction on 1.00 of the images' in md
