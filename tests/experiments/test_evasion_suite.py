"""Smoke run of experiments/evasion_suite.py on real FMNIST (tiny model, few images)."""
import json
import math
import os

import numpy as np

from experiments import evasion_suite
from experiments.configs import evasion_suite as evasion_suite_config
from tests.conftest import requires_fashion_mnist


def test_fgsm_line_search_finds_minimal_eps_on_linear():
  import jax
  import jax.numpy as jnp
  w = jax.random.normal(jax.random.key(0), (5,))
  f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), x @ w - 0.1], 1)
  x = 0.5 + 0.05 * jax.random.normal(jax.random.key(1), (4, 5))
  y = jnp.argmax(f(x), 1)
  eps, r = evasion_suite.fgsm_line_search(f, x, y, bounds=(0.0, 1.0), grid=30, bisect=20)
  # Along sign(w) the logit moves by eps * ||w||_1: the flip is at |f(x)| / ||w||_1.
  exact = jnp.abs(x @ w - 0.1) / jnp.sum(jnp.abs(w))
  np.testing.assert_allclose(eps, exact, rtol=1e-3)
  np.testing.assert_allclose(jnp.max(jnp.abs(r), 1), eps, rtol=1e-5)


@requires_fashion_mnist
def test_smoke_run_writes_json(tmp_path):
  cfg = evasion_suite_config.get_config('smoke')
  res = evasion_suite.run(cfg, str(tmp_path))
  path = os.path.join(tmp_path, 'evasion_suite.json')
  with open(path) as fh:
    saved = json.load(fh)
  assert saved['name'] == 'evasion_suite' and saved['variant'] == 'smoke'
  err = saved['fgsm']['error']
  assert len(err) == len(cfg.fgsm_eps) and all(0.0 <= e <= 1.0 for e in err)
  assert err[-1] >= err[0]                       # FGSM at eps 0.3 beats eps 0
  d = saved['deepfool_vs_fgsm']
  assert 0 < d['deepfool_success_rate'] <= 1
  assert d['rho_deepfool'] > 0 and d['rho_fgsm'] > 0
  se = d['single_eps']
  assert se['fool_rate'] >= cfg.fgsm_fool_rate or not math.isfinite(se['eps'])
  assert 0 <= saved['jsma']['success_rate'] <= 1
  assert 0 <= saved['cw_l2']['success_rate'] <= 1
  sq = saved['square']
  assert sq['n'] == cfg.square.examples
  assert sq['robust_accuracy_apgd_ce'] <= sq['clean_accuracy']
  assert sq['robust_accuracy_square'] <= sq['clean_accuracy']
  assert sq['square_max_linf'] <= cfg.square.eps + 1e-6
  md = evasion_suite.render_markdown(saved)
  assert 'DeepFool rho_adv' in md and 'JSMA' in md and 'C&W' in md and 'Square' in md
  assert res['clean_accuracy'] == saved['clean_accuracy']
  for v in ('full', 'mnist', 'cifar10'):
    assert evasion_suite_config.get_config(v).variant == v


def test_fgsm_single_eps_is_the_quantile_of_per_example_flips_on_a_linear_model():
  # Binary linear model, logits [0, w.x]: FGSM moves every coordinate by eps against the
  # predicted side, so example i flips exactly when eps * ||w||_1 > |w.x_i|. The smallest
  # single eps fooling 90% of n = 50 is the 45th smallest |w.x_i| / ||w||_1.
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(50, 6)), jnp.float32)
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), v @ w], axis=-1)
  y = jnp.argmax(logits_fn(x), axis=-1)
  e, rate, r = evasion_suite.fgsm_single_eps(logits_fn, x, y, bounds=(-100.0, 100.0),
                                             fool_rate=0.9, batch=16, bisect=40)
  flips = np.sort(np.abs(np.asarray(x @ w)) / float(jnp.sum(jnp.abs(w))))
  assert rate >= 0.9
  np.testing.assert_allclose(e, flips[44], rtol=1e-4)
  np.testing.assert_allclose(np.abs(r), e, rtol=1e-4)     # every coordinate moved by eps
