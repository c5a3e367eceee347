"""Shared test set-up: CPU only, quiet TensorFlow, real data where it is installed."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

from jaxsec.data import fashion_mnist  # noqa: E402

requires_fashion_mnist = pytest.mark.skipif(
    fashion_mnist.local_dir() is None,
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install "
           'dataset-fashion-mnist)')
