"""Smoke run of the Witches' Brew study (experiments/witches_brew.py)."""
import numpy as np

from experiments import witches_brew
from experiments.configs import witches_brew as witches_brew_config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_witches_brew_smoke(tmp_path):
  cfg, _, r = run_smoke(witches_brew, witches_brew_config, tmp_path)
  assert r['name'] == 'witches_brew' and r['variant'] == 'smoke'
  assert r['setup']['n_poison'] == round(cfg.fraction * cfg.n_train)
  assert len(r['targets']) == cfg.num_targets
  for t in r['targets']:
    assert t['adversarial_label'] != t['true_label']
    assert (len(t['success']) == len(t['victim_accuracy'])
            == len(t['clean_control_adversarial_probability']) == cfg.num_seeds)
    assert t['max_linf'] <= cfg.eps + 1e-6
    assert t['passenger_loss'] == min(t['restart_losses'])
    assert 0.0 <= t['descent_probe']['poisons'] <= 1.0 and 0.0 <= t['crafting_probability'] <= 1.0
    assert all(0.0 <= p <= 1.0 for p in t['adversarial_probability'])
    # success is read off the same victims' predictions
    assert all((p > 0.5) <= s for p, s in zip(t['adversarial_probability'], t['success'],
                                             strict=True))
  s = r['summary']
  assert np.isclose(s['poison_success'], np.mean([t['success'] for t in r['targets']]))
  assert 0.0 <= s['victim_accuracy_clean'] <= 1.0
  md = witches_brew.render_markdown(r)
  assert "Witches' Brew" in md and md.count('| ') > cfg.num_targets
  assert witches_brew.headline(r) == [] and len(witches_brew.headline({**r, 'variant': 'full'})) == 1


def test_a_named_variant_writes_its_own_json(tmp_path, monkeypatch):
  """witches_brew_runner_up.json is what `:runner_up --workdir=docs/results` writes."""
  import json
  from experiments import defense_common as dc
  monkeypatch.setattr(dc, 'load_fmnist', lambda *a: (None,) * 4)
  for variant, stem in (('runner_up', 'witches_brew_runner_up'), ('smoke', 'witches_brew')):
    cfg = witches_brew_config.get_config(variant)
    *_, results, save = dc.start_study(cfg, str(tmp_path), 'witches_brew', 'targets',
                                       variant_file=True)
    save()
    with open(tmp_path / f'{stem}.json') as f:
      assert json.load(f)['variant'] == variant
  assert not (tmp_path / 'witches_brew_full.json').exists()


def _tiny_study(scenario, **overrides):
  """A smoke config with ``scenario``, an MLP crafting model and two targets' poisons on 40
  random images."""
  import jax
  from jaxsec import models
  cfg = witches_brew_config.get_config('smoke')
  cfg.scenario = scenario
  for k, v in overrides.items():
    cfg[k] = v
  model = models.get(cfg.model, **cfg.model_kwargs.to_dict())
  params = models.init(model, jax.random.key(0), (1, 28, 28, 1))
  rng = np.random.default_rng(0)
  x = rng.random((40, 28, 28, 1), np.float32)
  y = (np.arange(40) % 10).astype(np.int32)
  poisons = [{'base_index': np.array(b), 'delta': 0.01 * rng.standard_normal((2, 28, 28, 1)),
              'passenger_loss': np.asarray(0.5)} for b in ([3, 13], [5, 25])]
  return cfg, model, params, x, y, poisons


def test_layout_masks_swap_each_targets_bases_for_its_poisons():
  cfg, _, _, x, y, poisons = _tiny_study('from-scratch', num_seeds=2)
  xs, ys, masks = witches_brew._layout(x, y, poisons, 2)
  assert xs.shape[0] == 44 and masks.shape == (6, 44)
  assert (masks.sum(1) == 40).all()                      # every victim trains on n rows
  np.testing.assert_allclose(xs[40:42], x[[3, 13]] + poisons[0]['delta'], atol=1e-7)
  np.testing.assert_array_equal(ys[40:], y[[3, 13, 5, 25]])
  assert not masks[0, [3, 13]].any() and masks[0, 40:42].all() and not masks[0, 42:].any()
  assert not masks[2, [5, 25]].any() and masks[2, 42:].all() and masks[2, [3, 13]].all()
  assert masks[4, :40].all() and not masks[4, 40:].any()   # the clean victims


def test_finetuning_victims_start_from_the_crafting_model(tmp_path):
  import jax
  cfg, model, params, x, y, poisons = _tiny_study('finetuning', victim_learning_rate=0.0,
                                                  batch_size=8)
  logits_many, _ = witches_brew._victims(cfg, model, params, x, y, poisons,
                                         jax.random.key(1), str(tmp_path))
  got = logits_many(x[:7])
  want = np.asarray(model.apply(params, x[:7]))
  assert got.shape == (3, 7, 10)                          # (2 targets + clean) x 1 seed
  np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-5, atol=1e-5)


def test_transfer_crafts_on_the_head_and_victims_use_the_frozen_features(tmp_path):
  import jax
  cfg, model, params, x, y, poisons = _tiny_study('transfer', victim_learning_rate=0.0,
                                                  batch_size=8)
  apply_fn, cp = witches_brew._crafting_fn(cfg, model, params)
  np.testing.assert_allclose(apply_fn(cp, x[:5]), model.apply(params, x[:5]), rtol=1e-5,
                             atol=1e-5)                   # the same logits as the model
  g = jax.grad(lambda p: apply_fn(p, x[:5])[:, 3].sum())(cp)
  assert all(not np.any(np.asarray(a)) for a in jax.tree.leaves(g['body']))  # body frozen
  assert np.any(np.asarray(g['head']['kernel']))          # the head's gradient is matched
  logits_many, _ = witches_brew._victims(cfg, model, params, x, y, poisons,
                                         jax.random.key(1), str(tmp_path))
  feats = np.asarray(model.apply(params, x, penultimate=True))
  for lg in logits_many(x):      # untrained fresh heads: zero bias, a linear map of features
    w, *_ = np.linalg.lstsq(feats, lg, rcond=None)
    np.testing.assert_allclose(feats @ w, lg, atol=1e-4)
    assert not np.allclose(lg, model.apply(params, x), atol=1e-2)   # not the crafting head


def test_unknown_scenario_is_refused(tmp_path):
  cfg = witches_brew_config.get_config('smoke')
  cfg.scenario = 'from_scratch'
  import pytest
  with pytest.raises(ValueError, match="scenario='from_scratch'"):
    witches_brew.run(cfg, str(tmp_path))


def test_transfer_victims_fit_labels_the_crafting_head_separates(tmp_path):
  """Labels given by the crafting model itself are linearly separable on its features: a
  transfer victim (a fresh head on those frozen features) fits them."""
  import jax
  cfg, model, params, x, _, poisons = _tiny_study('transfer', victim_learning_rate=0.05,
                                                  victim_epochs=150, batch_size=8)
  y = np.asarray(model.apply(params, x)).argmax(1).astype(np.int32)
  logits_many, _ = witches_brew._victims(cfg, model, params, x, y, poisons,
                                         jax.random.key(1), str(tmp_path))
  clean = logits_many(x)[-1]                               # the clean victim: all 40 rows
  assert (clean.argmax(1) == y).mean() >= 0.95


def test_descent_probe_is_plain_gradient_descent_on_the_given_images():
  import jax
  import jax.numpy as jnp
  import ml_collections
  rng = np.random.default_rng(3)
  w = {'w': jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)}
  apply_fn = lambda p, x: x @ p['w']
  xs = jnp.asarray(rng.standard_normal((5, 6)), jnp.float32)
  ys = jnp.asarray([0, 1, 2, 1, 0], jnp.int32)
  xt = jnp.asarray(rng.standard_normal(6), jnp.float32)
  cfg = ml_collections.ConfigDict({'probe_steps': 0, 'probe_learning_rate': 0.3})
  p0 = float(jax.nn.softmax(apply_fn(w, xt[None]))[0, 2])
  assert abs(witches_brew._descent_probe(cfg, apply_fn, w, xs, ys, xt, 2) - p0) < 1e-6
  cfg.probe_steps = 2                        # two hand-written steps of softmax regression
  wk = np.asarray(w['w'], np.float64)
  for _ in range(2):
    z = np.asarray(xs, np.float64) @ wk
    pr = np.exp(z - z.max(1, keepdims=True))
    pr /= pr.sum(1, keepdims=True)
    wk = wk - 0.3 * np.asarray(xs, np.float64).T @ (pr - np.eye(3)[np.asarray(ys)]) / 5
  zt = np.asarray(xt, np.float64) @ wk
  want = np.exp(zt[2] - zt.max()) / np.exp(zt - zt.max()).sum()
  got = witches_brew._descent_probe(cfg, apply_fn, w, xs, ys, xt, 2)
  np.testing.assert_allclose(got, want, rtol=1e-4)
