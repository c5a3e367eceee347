"""TFDS builder for Fashion-MNIST that prepares from Debian's IDX files when present.

It is TFDS's own ``fashion_mnist`` builder (same name, version, feature spec:
``image: Image(shape=(28, 28, 1))``, ``label: ClassLabel(10 names)``), with one change:
when the four IDX files of Debian's ``dataset-fashion-mnist`` package are on the machine
(``/usr/share/datasets/fashion-mnist`` or ``$JAXSEC_FASHION_MNIST_DIR``), the
split generators read them instead of downloading. Otherwise it downloads as usual.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as _tfds_mnist

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
FILES = {
    'train_data': 'train-images-idx3-ubyte.gz',
    'train_labels': 'train-labels-idx1-ubyte.gz',
    'test_data': 't10k-images-idx3-ubyte.gz',
    'test_labels': 't10k-labels-idx1-ubyte.gz',
}
NUM_EXAMPLES = {'train': 60_000, 'test': 10_000}


def local_dir() -> str | None:
  """The folder holding the four IDX files, or None when they are not all there."""
  folder = os.environ.get('JAXSEC_FASHION_MNIST_DIR', DEBIAN_DIR)
  if all(os.path.exists(os.path.join(folder, f)) for f in FILES.values()):
    return folder
  return None


class FashionMnist(_tfds_mnist.FashionMNIST, skip_registration=True):
  """``fashion_mnist`` prepared from local IDX files when available."""

  name = 'fashion_mnist'

  def _split_generators(self, dl_manager):
    folder = local_dir()
    if folder is None:
      return super()._split_generators(dl_manager)
    files = dl_manager.extract({k: os.path.join(folder, v) for k, v in FILES.items()})
    return [
        tfds.core.SplitGenerator(
            name=tfds.Split('train'),
            gen_kwargs=dict(num_examples=NUM_EXAMPLES['train'],
                            data_path=files['train_data'],
                            label_path=files['train_labels'])),
        tfds.core.SplitGenerator(
            name=tfds.Split('test'),
            gen_kwargs=dict(num_examples=NUM_EXAMPLES['test'],
                            data_path=files['test_data'],
                            label_path=files['test_labels'])),
    ]
