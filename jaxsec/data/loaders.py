"""``load(name, split)``: every data set jaxsec uses, as NumPy arrays.

Images come back as float32 in [0, 1], NHWC; labels as int32. Tabular sets (scikit-learn's
bundled ``digits`` and ``breast_cancer``) come back as float32 [N, D], standardised with the
training split's mean and standard deviation, with a fixed, stratified 75/25 split.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np

IMAGE_SETS = ('fashion_mnist', 'mnist', 'cifar10')
TABULAR_SETS = ('digits', 'breast_cancer')
SPLITS = ('train', 'test')

_INSTALL_HINT = {
    'fashion_mnist': ("install Debian's package with `apt-get install dataset-fashion-mnist` "
                      '(IDX files under /usr/share/datasets/fashion-mnist), or give the '
                      'machine network access so TFDS can download it'),
    'mnist': ('TFDS downloads MNIST on first use: run once on a machine with network access '
              'and point JAXSEC_DATA_DIR (or data_dir=) at its prepared tensorflow_datasets '
              'folder'),
    'cifar10': ('TFDS downloads CIFAR-10 on first use: run once on a machine with network '
                'access and point JAXSEC_DATA_DIR (or data_dir=) at its prepared '
                'tensorflow_datasets folder'),
}


class DatasetInfo(NamedTuple):
  name: str
  num_classes: int
  input_shape: tuple[int, ...]
  class_names: tuple[str, ...]


class DataUnavailableError(RuntimeError):
  """A data set cannot be prepared on this machine; the message says what to install."""


def names() -> tuple[str, ...]:
  return IMAGE_SETS + TABULAR_SETS


def default_data_dir() -> str:
  return os.environ.get('JAXSEC_DATA_DIR',
                        os.path.join(os.path.expanduser('~'), 'tensorflow_datasets'))


def _check(name: str, split: str):
  if name not in names():
    raise ValueError(f'Unknown data set name={name!r}; expected one of {names()}.')
  if split not in SPLITS:
    raise ValueError(f'Unknown split={split!r}; expected one of {SPLITS}.')


def _builder(name: str, data_dir: str):
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataUnavailableError(
        f'Loading {name!r} needs tensorflow-datasets with tensorflow-cpu and pillow: '
        f'`pip install tensorflow-datasets tensorflow-cpu pillow` ({e}).') from e
  # Keep TensorFlow off the accelerators: JAX owns them.
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass
  if name == 'fashion_mnist':
    from jaxsec.data import fashion_mnist  # pylint: disable=g-import-not-at-top
    return fashion_mnist.FashionMnist(data_dir=data_dir)
  return tfds.builder(name, data_dir=data_dir)


@functools.lru_cache(maxsize=8)
def _load_image(name: str, split: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _builder(name, data_dir)
  try:
    builder.download_and_prepare()
  except ImportError as e:
    raise DataUnavailableError(
        f'Preparing {name!r} needs a missing package ({e}); `pip install -e .` installs '
        'everything jaxsec needs.') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DataUnavailableError(
        f'Data set {name!r} is not prepared under {data_dir!r} and could not be prepared '
        f'here ({type(e).__name__}: {str(e)[:300]}). To get it: {_INSTALL_HINT[name]}.'
    ) from e
  # Read in batches and concatenate (batch_size=-1 aborts TF on datasets of unknown
  # cardinality, e.g. under tfds.testing.mock_data).
  ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
  images, labels = [], []
  for xb, yb in tfds.as_numpy(ds.batch(8192)):
    images.append(xb)
    labels.append(yb)
  images, labels = np.concatenate(images), np.concatenate(labels)
  x = np.asarray(images, np.float32) / np.float32(255.0)
  y = np.asarray(labels, np.int32)
  return x, y


@functools.lru_cache(maxsize=8)
def _load_tabular(name: str, split: str):
  try:
    from sklearn import datasets as skd  # pylint: disable=g-import-not-at-top
    from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataUnavailableError(
        f'{name!r} comes from scikit-learn: `pip install scikit-learn` ({e}).') from e
  loader = {'digits': skd.load_digits, 'breast_cancer': skd.load_breast_cancer}[name]
  data, target = loader(return_X_y=True)
  x = np.asarray(data, np.float64)
  y = np.asarray(target, np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0,
                                            stratify=y)
  mean = x_tr.mean(0)
  std = x_tr.std(0)
  std = np.where(std > 0, std, 1.0)  # constant features (digits' border pixels) stay 0
  x_tr = ((x_tr - mean) / std).astype(np.float32)
  x_te = ((x_te - mean) / std).astype(np.float32)
  return (x_tr, y_tr) if split == 'train' else (x_te, y_te)


def load(name: str, split: str = 'train', *, data_dir: str | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
  """Loads ``split`` of data set ``name``.

  Args:
    name: one of :func:`names`.
    split: 'train' or 'test'.
    data_dir: TFDS data folder (default ``$JAXSEC_DATA_DIR`` or ~/tensorflow_datasets).

  Returns:
    ``(x, y)``: images float32 [N, H, W, C] in [0, 1] (tabular: float32 [N, D],
    standardised), labels int32 [N]. Arrays are read-only views shared between calls:
    copy before modifying.

  Raises:
    ValueError: unknown name or split.
    DataUnavailableError: the data set is not on this machine and cannot be fetched; the
      message names what to install.
  """
  _check(name, split)
  if name in TABULAR_SETS:
    x, y = _load_tabular(name, split)
  else:
    x, y = _load_image(name, split, data_dir or default_data_dir())
  x.flags.writeable = False
  y.flags.writeable = False
  return x, y


_INFO = {
    'fashion_mnist': DatasetInfo('fashion_mnist', 10, (28, 28, 1), (
        'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
        'Sneaker', 'Bag', 'Ankle boot')),
    'mnist': DatasetInfo('mnist', 10, (28, 28, 1), tuple(str(i) for i in range(10))),
    'cifar10': DatasetInfo('cifar10', 10, (32, 32, 3), (
        'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
        'truck')),
    'digits': DatasetInfo('digits', 10, (64,), tuple(str(i) for i in range(10))),
    'breast_cancer': DatasetInfo('breast_cancer', 2, (30,), ('malignant', 'benign')),
}


def info(name: str) -> DatasetInfo:
  if name not in _INFO:
    raise ValueError(f'Unknown data set name={name!r}; expected one of {names()}.')
  return _INFO[name]
