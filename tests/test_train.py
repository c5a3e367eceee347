import inspect
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import data
from jaxsec import losses
from jaxsec import models
from jaxsec import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_mlp():
  x, y = data.load('digits', 'train')
  m = models.get('mlp', num_classes=10, hidden=(64,))
  return x, y, m, models.init(m, jax.random.key(0), (1, 64))


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(u - v))) for u, v in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_fit_reaches_stated_accuracy_on_digits():
  x, y, m, p = _digits_mlp()
  xt, yt = data.load('digits', 'test')
  r = train.fit(m.apply, p, x, y, optimizer=optax.adam(1e-3), key=jax.random.key(1),
                batch_size=32, num_epochs=15, eval_data=(xt, yt))
  acc = train.evaluate(m.apply, r.params, xt, yt)
  assert acc >= 0.95, acc  # a 64-unit MLP reaches ~97% on sklearn digits
  assert r.history['loss'].shape == (15,) and r.history['loss'][-1] < r.history['loss'][0]
  assert r.history['eval_accuracy'][-1] == pytest.approx(acc)


def test_fit_is_deterministic_and_keeps_input_params():
  x, y, m, p = _digits_mlp()
  kw = dict(optimizer=optax.sgd(0.1), batch_size=50, num_steps=30)
  a = train.fit(m.apply, p, x, y, key=jax.random.key(7), **kw)
  b = train.fit(m.apply, p, x, y, key=jax.random.key(7), **kw)
  c = train.fit(m.apply, p, x, y, key=jax.random.key(8), **kw)
  assert _max_diff(a.params, b.params) == 0.0
  assert _max_diff(a.params, c.params) > 0.0
  assert _max_diff(p, models.init(m, jax.random.key(0), (1, 64))) == 0.0  # not donated


def test_fit_many_equals_separate_fits():
  x, y, m, _ = _digits_mlp()
  M = 3
  keys = jax.random.split(jax.random.key(5), M)
  ps = train.init_many(lambda k: models.init(m, k, (1, 64)), keys)
  idx = data.partition(jax.random.key(3), x.shape[0], [400] * M)
  masks = data.masks_from_indices(idx, x.shape[0])
  kw = dict(optimizer=optax.adam(1e-3), batch_size=40, num_epochs=2)
  many = train.fit_many(m.apply, ps, x, y, masks=masks, keys=keys, **kw)
  assert many.history['loss'].shape == (2, M)
  for i in range(M):
    one = train.fit(m.apply, jax.tree.map(lambda a, i=i: a[i], ps), x, y, indices=idx[i],
                    key=keys[i], **kw)
    chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], many.params), one.params,
                                atol=1e-5, rtol=0)
  logits = train.predict_logits_many(m.apply, many.params, x[:10])
  assert logits.shape == (M, 10, 10)


def test_objective_and_train_apply_fn():
  x, y, _, _ = _digits_mlp()
  m = models.get('mlp', num_classes=10, hidden=(32,), dropout=0.3)
  p = models.init(m, jax.random.key(0), (1, 64))
  calls = []

  def objective(apply_fn, params, xb, yb, key):
    calls.append(1)
    assert key is not None
    return losses.cross_entropy(apply_fn(params, xb), yb)

  tr = lambda params, xb, k: m.apply(params, xb, train=True, rngs={'dropout': k})
  r = train.fit(m.apply, p, x, y, optimizer=optax.adam(1e-3), key=jax.random.key(1),
                batch_size=64, num_epochs=3, objective=objective, train_apply_fn=tr)
  assert calls and r.history['loss'][-1] < r.history['loss'][0]
  with pytest.raises(ValueError, match='not both'):
    train.fit(m.apply, p, x, y, optimizer=optax.sgd(0.1), key=jax.random.key(1),
              num_steps=1, loss='hinge', objective=objective)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
  x, y, m, p = _digits_mlp()
  kw = dict(optimizer=optax.adam(1e-3), batch_size=64, key=jax.random.key(3))
  full = train.fit(m.apply, p, x, y, num_epochs=4, **kw)
  ckpt = str(tmp_path / 'ckpt')
  train.fit(m.apply, p, x, y, num_epochs=4, checkpoint_dir=ckpt, **kw)
  # Simulate a crash after epoch 2: keep only the epoch-2 checkpoint.
  import shutil
  for d in os.listdir(ckpt):
    if d.isdigit() and int(d) > 2:
      shutil.rmtree(os.path.join(ckpt, d))
  resumed = train.fit(m.apply, p, x, y, num_epochs=4, checkpoint_dir=ckpt, **kw)
  chex.assert_trees_all_equal(full.params, resumed.params)
  np.testing.assert_allclose(full.history['loss'], resumed.history['loss'], rtol=1e-6)


def test_eight_fake_devices_match_one(tmp_path):
  from tests import train_helper
  ref = train_helper.run(None)
  out = tmp_path / 'mesh.npz'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  subprocess.run([sys.executable, '-m', 'tests.train_helper', str(out), 'mesh'], check=True,
                 env=env, cwd=ROOT, timeout=600)
  got = np.load(out)
  assert int(got['num_devices']) == 8
  for k, v in ref.items():
    np.testing.assert_allclose(got[k], v, rtol=2e-4, atol=2e-5, err_msg=k)


def test_bad_input_is_named():
  x, y, m, p = _digits_mlp()
  kw = dict(optimizer=optax.sgd(0.1), key=jax.random.key(0), num_steps=1)
  bad = np.array(x)
  bad[3, 5] = np.nan
  with pytest.raises(ValueError, match='non-finite'):
    train.fit(m.apply, p, bad, y, **kw)
  with pytest.raises(ValueError, match='label 10'):
    train.fit(m.apply, p, x, np.where(np.arange(len(y)) == 0, 10, y).astype(np.int32),
              num_classes=10, **kw)
  with pytest.raises(ValueError, match='dtype'):
    train.fit(m.apply, p, x, y.astype(np.float32), **kw)
  with pytest.raises(ValueError, match='batch 1347'):
    train.fit(m.apply, p, x, y[:10], **kw)
  with pytest.raises(ValueError, match='batch_size=5000'):
    train.fit(m.apply, p, x, y, batch_size=5000, **kw)
  with pytest.raises(ValueError, match='exactly one'):
    train.fit(m.apply, p, x, y, optimizer=optax.sgd(0.1), key=jax.random.key(0))
  with pytest.raises(ValueError, match='masks has shape'):
    train.fit_many(m.apply, p, x, y, masks=np.ones((2, 5), bool), optimizer=optax.sgd(.1),
                   keys=jax.random.split(jax.random.key(0), 2), num_steps=1)


@pytest.mark.parametrize('many', [False, True])
def test_scan_and_host_epochs_agree(many):
  """The two internal forms of an epoch (one ``lax.scan``; a host loop over jitted steps,
  used on CPU) run the same steps: same params and losses."""
  x, y, m, p = _digits_mlp()
  opt = optax.adam(1e-3)
  n = 256
  num = 2 if many else 1
  if many:
    p = train.init_many(lambda k: models.init(m, k, (1, 64)), jax.random.split(
        jax.random.key(0), num))
  static = dict(apply_fn=m.apply, objective=train.supervised(), optimizer=opt,
                train_apply_fn=None, steps_per_epoch=3, batch_size=64, many=many, mesh=None,
                model_axis=None)

  def args():
    params = jax.tree.map(jnp.array, p)
    state = jax.vmap(opt.init)(params) if many else opt.init(params)
    return (params, state, jax.random.split(jax.random.key(4), num),
            jnp.tile(jnp.arange(n, dtype=jnp.int32), (num, 1)),
            jnp.full((num,), n, jnp.int32), jnp.asarray(x), jnp.asarray(y))
  a = train._scan_epoch(*args(), **static)
  b = train._host_epoch(*args(), **static)
  chex.assert_trees_all_close(a[0], b[0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(a[2], b[2], rtol=1e-5)
  assert _max_diff(a[0], p) > 1e-3                    # the epoch did train


def test_fit_has_no_backend_knob_and_no_module_cache():
  """The loop form is picked inside ``fit`` (no ``loop=`` argument) and compiled epochs
  live in jax's jit cache, not in module-level state."""
  for f in (train.fit, train.fit_many):
    assert 'loop' not in inspect.signature(f).parameters
  assert not [k for k, v in vars(train).items() if isinstance(v, (dict, list, set))
              and not k.startswith('__')]
  x, y, m, p = _digits_mlp()
  with pytest.raises(TypeError, match='loop'):
    train.fit(m.apply, p, x, y, optimizer=optax.sgd(0.1), key=jax.random.key(0),
              num_steps=1, loop='scan')


def test_host_form_only_for_convolutions_on_cpu():
  """On CPU the host loop is used for a CNN (jax-ml/jax#12868) and one scan for an MLP."""
  assert jax.default_backend() == 'cpu'
  cnn = models.get('cnn', features=(2,), dense=4)
  pc = models.init(cnn, jax.random.key(0), (1, 8, 8, 1))
  x = np.zeros((3, 8, 8, 1), np.float32)
  assert train._host_loop_pays(cnn.apply, pc, x, False)
  pm = jax.tree.map(lambda a: a[None], pc)
  assert train._host_loop_pays(cnn.apply, pm, x, True)
  _, _, mlp, p = _digits_mlp()
  assert not train._host_loop_pays(mlp.apply, p, np.zeros((3, 64), np.float32), False)


def test_repeated_fits_reuse_one_compiled_program(count_compiles):
  """Sequential fits with the same model function, loss and optimizer compile once (a
  shadow-model loop used to recompile every call), and reusing the program does not leak
  state between calls: each result equals the one from a cold cache."""
  x, y = data.load('digits', 'train')
  m = models.get('mlp', num_classes=10, hidden=(16,))
  opt = optax.sgd(0.05)
  kw = dict(optimizer=opt, batch_size=32, num_epochs=2)
  p0 = models.init(m, jax.random.key(0), (1, 64))
  with count_compiles() as compiles:
    warm = []
    for i, idx in enumerate([np.arange(0, 600), np.arange(600, 1200)]):
      warm.append(train.fit(m.apply, p0, x, y, indices=idx, key=jax.random.key(i), **kw))
    n_after_two = len(compiles)
    assert n_after_two > 0, 'the listener saw no compilation at all'
    train.fit(m.apply, p0, x, y, indices=np.arange(100, 700), key=jax.random.key(5), **kw)
  assert len(compiles) == n_after_two, 'a third fit with the same shapes recompiled'
  jax.clear_caches()
  cold = train.fit(m.apply, p0, x, y, indices=np.arange(600, 1200), key=jax.random.key(1), **kw)
  for a, b in zip(jax.tree.leaves(warm[1].params), jax.tree.leaves(cold.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_progress_logs_rate_and_eta_per_epoch(caplog, tmp_path):
  x, y, m, p = _digits_mlp()
  kw = dict(optimizer=optax.adam(1e-3), batch_size=256, key=jax.random.key(3))
  with caplog.at_level('INFO'):
    train.fit(m.apply, p, x[:512], y[:512], num_epochs=3, progress=True, label='t/fit',
              checkpoint_dir=str(tmp_path / 'c'), **kw)
  lines = [r.getMessage() for r in caplog.records if '[t/fit]' in r.getMessage()]
  assert [l.split(',')[0] for l in lines] == [f'[t/fit] epoch {e}/3' for e in (1, 2, 3)]
  assert all('epoch/s' in l and 'ETA' in l and 'loss ' in l for l in lines)
  caplog.clear()
  with caplog.at_level('INFO'):   # a resumed run counts from where it stopped
    train.fit(m.apply, p, x[:512], y[:512], num_epochs=4, progress=True, label='t/fit',
              checkpoint_dir=str(tmp_path / 'c'), **kw)
  lines = [r.getMessage() for r in caplog.records if '[t/fit]' in r.getMessage()]
  assert 'resumed' in lines[0] and lines[-1].startswith('[t/fit] epoch 4/4')
  caplog.clear()
  with caplog.at_level('INFO'):
    train.fit(m.apply, p, x[:512], y[:512], num_epochs=1, label='t/quiet', **kw)
  assert not [r for r in caplog.records if '[t/quiet]' in r.getMessage()]


def test_shadow_models_report_progress(caplog):
  from jaxsec.attacks.privacy import shadow
  x, y, m, _ = _digits_mlp()
  masks = shadow.complementary_membership(jax.random.key(0), 2, 256)
  with caplog.at_level('INFO'):
    shadow.train_shadow_models(m.apply, lambda k: models.init(m, k, (1, 64)), x[:256],
                               y[:256], masks, key=jax.random.key(1),
                               optimizer=optax.adam(1e-3), batch_size=64, num_epochs=2)
  lines = [r.getMessage() for r in caplog.records if '[shadow models (2)]' in r.getMessage()]
  assert len(lines) == 2 and 'epoch 2/2' in lines[-1] and 'ETA' in lines[-1]
