import jax
import ml_collections
import numpy as np
import optax
import pytest

from experiments import common
from jaxsec import models
from jaxsec import train
from tests.conftest import requires_fashion_mnist


def test_overrides_are_checked():
  cfg = ml_collections.ConfigDict({'a': 1.0, 'b': (1, 2), 'sub': {'c': 'x'}})
  new = common.apply_overrides(cfg, ['a=2', 'b=[3, 4]', 'sub.c=y'])
  assert new.a == 2.0 and isinstance(new.a, float) and new.b == (3, 4) and new.sub.c == 'y'
  assert cfg.a == 1.0
  with pytest.raises(ValueError, match="'zz'"):
    common.apply_overrides(cfg, ['zz=1'])


def test_load_splits_and_train_classifier_follow_their_contract():
  xf, yf, xt_full, _ = common.load_splits('digits')
  x, y, xt, yt = common.load_splits('digits', train_subset=100, test_subset=7)
  np.testing.assert_array_equal(x, xf[:100])
  assert y.shape == (100,) and xt.shape == (7, 64) and yt.shape == (7,)
  assert xt_full.shape[0] > 7
  with pytest.raises(ValueError, match=r'train_subset=-1 must be a non-negative int'):
    common.load_splits('digits', train_subset=-1)
  with pytest.raises(ValueError, match=r"test_subset=2.5 must be"):
    common.load_splits('digits', test_subset=2.5)
  with pytest.raises(ValueError, match=r"train_subset=5000 exceeds the 1347 examples of "
                                       r"'digits''s train split"):
    common.load_splits('digits', train_subset=5000)
  # Adam on a cosine decay to 0 over epochs * (n // batch) steps, nothing else.
  k1, k2 = jax.random.split(jax.random.key(0))
  kw = ml_collections.ConfigDict({'hidden': (8,)})
  model, params, res, secs = common.train_classifier(
      'mlp', kw, x, y, num_classes=10, input_shape=(64,), init_key=k1, train_key=k2,
      learning_rate=0.01, batch_size=32, num_epochs=2, label='t', progress=False)
  assert secs >= 0 and len(res.history['loss']) > 0
  ref_model = models.get('mlp', num_classes=10, hidden=(8,))
  p0 = models.init(ref_model, k1, (1, 64))
  sched = optax.cosine_decay_schedule(0.01, (100 // 32) * 2)
  want = train.fit(ref_model.apply, p0, x, y, optimizer=optax.adam(sched), key=k2,
                   batch_size=32, num_epochs=2, num_classes=10).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, want)
  # A different schedule length would change the result: the check above can fail.
  other = train.fit(ref_model.apply, p0, x, y, optimizer=optax.adam(
      optax.cosine_decay_schedule(0.01, 100)), key=k2, batch_size=32, num_epochs=2,
      num_classes=10).params
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                       jax.tree_util.tree_leaves(other), strict=True))


@requires_fashion_mnist
def test_portable_data_serves_exactly_what_tfds_loads(tmp_path, monkeypatch):
  from jaxsec import data
  from jaxsec.data import loaders
  from launch import portable_data
  path = str(tmp_path / 'fmnist.npz')
  shapes = portable_data.export(path, ['fashion_mnist'])
  assert shapes['fashion_mnist/train/x'] == (60000, 28, 28, 1)
  ref_tr, ref_te = data.load('fashion_mnist', 'train'), data.load('fashion_mnist', 'test')
  monkeypatch.setattr(loaders, '_load_image', loaders._load_image)  # restored afterwards
  def no_tfds(*a, **k):
    raise AssertionError('TFDS was consulted for a data set in the file')
  assert portable_data.install(path) == ('fashion_mnist',)
  loaders._load_image.cache_clear()   # the installed loader keeps the lru_cache interface
  monkeypatch.setattr(loaders, '_builder', no_tfds)
  for ref, split in ((ref_tr, 'train'), (ref_te, 'test')):
    x, y = data.load('fashion_mnist', split)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, ref[0])
    np.testing.assert_array_equal(y, ref[1])
  with pytest.raises(ValueError, match="name='digits' is not an image set"):
    portable_data.export(str(tmp_path / 'd.npz'), ['digits'])
  assert portable_data.main(['bogus']) == 2
