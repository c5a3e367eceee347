"""Vectorised sweep axes of the main job: the eps grid as one vmapped attack program and
the seed axis as one ``fit_many`` training program equal their point-by-point runs."""
import jax
import numpy as np
import pytest

from experiments import common
from experiments import main as main_exp
from experiments.configs import main as main_config
from jaxsec import models
from tests.conftest import requires_fashion_mnist


def _tiny(**overrides):
  cfg = main_config.get_config('smoke')
  cfg.update({'model': 'mlp', 'train_subset': 256, 'eval_subset': 64, 'attack_subset': 32,
              'attack_batch': 16, 'batch_size': 64, **overrides})
  cfg.model_kwargs = main_config.MODEL_KWARGS['smoke']['mlp']
  cfg.table.enabled = False
  return cfg


@requires_fashion_mnist
def test_vectorized_eps_grid_equals_one_run_per_eps():
  cfg = _tiny()
  x, y, xt, yt = common.load_splits('fashion_mnist', train_subset=256, test_subset=32)
  model, params, _, _ = common.train_classifier(
      'mlp', cfg.model_kwargs, x, y, num_classes=10, input_shape=(28, 28, 1),
      init_key=jax.random.key(0), train_key=jax.random.key(1), learning_rate=1e-2,
      batch_size=64, num_epochs=1, label='t', progress=False)
  logits_fn = models.logits_fn(model, params)
  grid = (0.0, 0.1, 0.3)
  for attack in ('fgsm', 'pgd'):
    key = jax.random.key(7)
    acc, adv = main_exp.robust_accuracy(logits_fn, xt, yt, grid, attack, cfg, key)
    assert acc[0] > acc[-1]  # the attack does something at eps=0.3
    for i, e in enumerate(grid[1:], start=1):
      acc1, adv1 = main_exp.robust_accuracy(logits_fn, xt, yt, (e,), attack, cfg, key)
      assert acc1[0] == acc[i], (attack, e)
      np.testing.assert_allclose(adv1[0], adv[i], atol=1e-6)


@requires_fashion_mnist
def test_fit_many_seed_axis_equals_separate_fits():
  x, y, _, _ = common.load_splits('fashion_mnist', train_subset=256)
  kw = dict(num_classes=10, input_shape=(28, 28, 1), learning_rate=1e-2, batch_size=64,
            num_epochs=2, label='t', progress=False)
  init = [jax.random.key(s) for s in (3, 4)]
  trn = [jax.random.key(s) for s in (5, 6)]
  mlp = {'hidden': (16,)}
  _, stacked, res, _ = common.train_classifiers(
      'mlp', mlp, x, y, init_keys=jax.numpy.stack(init), train_keys=jax.numpy.stack(trn), **kw)
  for m in range(2):
    _, p, r, _ = common.train_classifier('mlp', mlp, x, y, init_key=init[m],
                                         train_key=trn[m], **kw)
    jax.tree.map(lambda a, b, m=m: np.testing.assert_allclose(a[m], b, rtol=1e-4, atol=1e-5),
                 stacked, p)
    np.testing.assert_allclose(np.asarray(res.history['loss'])[:, m],
                               np.asarray(r.history['loss']), rtol=1e-5)


@pytest.mark.slow  # three runs of the main job (one of them 2 seeds)
@requires_fashion_mnist
def test_main_seeds_axis_rows_equal_single_seed_runs(tmp_path):
  many = main_exp.run(_tiny(seeds=(0, 1)), str(tmp_path / 'many'))
  assert [r['seed'] for r in many['per_seed']] == [0, 1]
  rows = many['vectorized']['rows']
  assert many['vectorized']['axes'] == ['seed', 'eps'] and len(rows) == 2 * 3
  for s in (0, 1):
    one = main_exp.run(_tiny(seed=s), str(tmp_path / f'one{s}'))
    assert 'per_seed' not in one
    assert [(r['seed'], r['eps']) for r in one['vectorized']['rows']] == [
        (s, e) for e in (0.0, 0.1, 0.3)]
    for a, b in zip([r for r in rows if r['seed'] == s], one['vectorized']['rows'],
                    strict=True):
      assert a['eps'] == b['eps']
      for k in ('clean_accuracy', 'fgsm_accuracy', 'pgd_accuracy'):  # one flip at most
        assert abs(a[k] - b[k]) <= 1 / 32 + 1e-9, (s, k, a, b)
      assert a['final_train_loss'] == pytest.approx(b['final_train_loss'], rel=1e-4)
  # The report is the first seed's (the same as a run with seed=0).
  assert many['clean_accuracy'] == pytest.approx(rows[0]['clean_accuracy'])


def test_bad_seeds_are_an_error(tmp_path):
  with pytest.raises(ValueError, match=r'config.seeds=\(1, 1\); expected distinct ints'):
    main_exp.run(_tiny(seeds=(1, 1)), str(tmp_path))
