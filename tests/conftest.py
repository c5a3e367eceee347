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


def pytest_collection_modifyitems(config, items):
  """The experiment smoke runs (tests/experiments/) are the slow tier.

  `python -m pytest -m "not slow" tests` is the fast edit-test loop; the full suite (README
  command (b), CI) runs everything. Individual slow library tests carry `@pytest.mark.slow`.
  """
  del config
  for item in items:
    if f'{os.sep}tests{os.sep}experiments{os.sep}' in str(item.fspath):
      item.add_marker(pytest.mark.slow)
