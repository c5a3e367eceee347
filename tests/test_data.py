import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxsec import data
from jaxsec.data import fashion_mnist
from tests.conftest import requires_fashion_mnist


@requires_fashion_mnist
def test_fashion_mnist_real_files():
  x, y = data.load('fashion_mnist', 'train')
  assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32
  assert y.shape == (60000,) and y.dtype == np.int32
  assert x.min() == 0.0 and x.max() == 1.0
  assert np.bincount(y).tolist() == [6000] * 10  # FMNIST is balanced
  xt, yt = data.load('fashion_mnist', 'test')
  assert xt.shape == (10000, 28, 28, 1) and np.bincount(yt).tolist() == [1000] * 10
  # The same pixels as the raw IDX file (as a multiset: TFDS shuffles the order).
  import gzip
  with gzip.open(os.path.join(fashion_mnist.local_dir(), fashion_mnist.FILES['test_data'])) as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28, 1)
  np.testing.assert_allclose(np.sort(xt.sum((1, 2, 3))), np.sort(raw.sum((1, 2, 3)) / 255.0),
                             rtol=1e-5)
  assert not x.flags.writeable  # shared cached arrays cannot be modified by accident


def test_fashion_mnist_builder_has_tfds_feature_spec():
  b = fashion_mnist.FashionMnist(data_dir='/tmp/unused_jaxsec_tfds')
  ref = tfds.builder('fashion_mnist', data_dir='/tmp/unused_jaxsec_tfds')
  assert b.name == ref.name == 'fashion_mnist'
  assert str(b.version) == str(ref.version)
  assert repr(b.info.features) == repr(ref.info.features)


@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_tfds_download_sets_load_path(name, shape, tmp_path):
  with tfds.testing.mock_data(num_examples=7):
    x, y = data.load(name, 'test', data_dir=str(tmp_path))
  assert x.shape == (7,) + shape and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 10
  data.loaders._load_image.cache_clear()  # do not leak mocked data into other tests


def test_unavailable_dataset_names_what_to_install(tmp_path, monkeypatch):
  # No network here: preparing MNIST must fail with a message naming the remedy.
  def boom(*a, **k):
    raise OSError('network unreachable')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', boom)
  with pytest.raises(data.DataUnavailableError, match='network access'):
    data.load('mnist', 'train', data_dir=str(tmp_path))
  monkeypatch.setenv('JAXSEC_FASHION_MNIST_DIR', str(tmp_path / 'none'))
  data.loaders._load_image.cache_clear()
  with pytest.raises(data.DataUnavailableError, match='apt-get install dataset-fashion-mnist'):
    data.load('fashion_mnist', 'test', data_dir=str(tmp_path))
  data.loaders._load_image.cache_clear()


@pytest.mark.parametrize('name,dim,classes', [('digits', 64, 10), ('breast_cancer', 30, 2)])
def test_tabular(name, dim, classes):
  x, y = data.load(name, 'train')
  xt, yt = data.load(name, 'test')
  assert x.shape[1] == dim == xt.shape[1] and x.dtype == np.float32
  assert set(np.unique(y)) == set(range(classes))
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
  std = x.std(0)
  assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))
  assert data.info(name).input_shape == (dim,)


def test_bad_names():
  with pytest.raises(ValueError, match="name='imagenet'"):
    data.load('imagenet')
  with pytest.raises(ValueError, match="split='validation'"):
    data.load('digits', 'validation')
  with pytest.raises(ValueError, match='imagenet'):
    data.info('imagenet')


def test_partition_disjoint_deterministic():
  key = jax.random.key(3)
  a = data.partition(key, 100, [10, 20, 30])
  b = data.partition(key, 100, [10, 20, 30])
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  allidx = np.concatenate(a)
  assert len(np.unique(allidx)) == 60 and [len(s) for s in a] == [10, 20, 30]
  c = data.partition(jax.random.key(4), 100, [10, 20, 30])
  assert any(not np.array_equal(u, v) for u, v in zip(a, c, strict=True))
  with pytest.raises(ValueError, match='add up to 110'):
    data.partition(key, 100, [50, 60])


def test_shards_and_masks():
  s = data.shards(jax.random.key(0), 103, 10)
  assert all(len(x) == 10 for x in s) and len(np.unique(np.concatenate(s))) == 100
  s2 = data.shards(jax.random.key(0), 103, 10, drop_remainder=False)
  assert sum(len(x) for x in s2) == 103
  m = data.masks_from_indices(s, 103)
  assert m.shape == (10, 103) and m.sum() == 100 and m.sum(0).max() == 1
  with pytest.raises(ValueError, match='num_shards=200'):
    data.shards(jax.random.key(0), 103, 200)


def test_balanced_membership():
  m = data.balanced_membership(jax.random.key(0), 8, 50)
  assert m.shape == (8, 50) and np.all(m.sum(0) == 4)
  with pytest.raises(ValueError, match='num_models=7'):
    data.balanced_membership(jax.random.key(0), 7, 50)
