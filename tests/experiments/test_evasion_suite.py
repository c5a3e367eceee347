"""Smoke run of experiments/evasion_suite.py on real FMNIST (tiny model, few images)."""
import json
import os

import numpy as np

from experiments import evasion_suite
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
  cfg = evasion_suite.get_config('smoke')
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
    assert evasion_suite.get_config(v).variant == v
