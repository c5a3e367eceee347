"""Shared helpers of the experiment smoke tests."""
import os
from typing import Any, Callable

import numpy as np

from jaxsec import io as jio


def run_smoke(study: Any, config: Any, tmp_path: Any, *, name: str | None = None
              ) -> tuple[Any, dict, dict]:
  """Runs ``study.run`` on ``config``'s smoke variant in ``tmp_path``.

  Returns ``(cfg, returned result, the saved <name>.json)``; ``name`` defaults to the study
  module's last dotted part.
  """
  cfg = config.get_config('smoke')
  res = study.run(cfg, str(tmp_path))
  name = name or study.__name__.rsplit('.', 1)[-1]
  return cfg, res, jio.read_json(os.path.join(tmp_path, f'{name}.json'))


def fake_fashion_mnist(real_load: Callable, *, sizes: tuple[int, int], scale: float,
                       paint: Callable[[np.ndarray, np.ndarray], None]) -> Callable:
  """A ``data.load`` that serves a small synthetic 28x28 stand-in for Fashion-MNIST (skips
  TF's 10 s load) and defers every other dataset to ``real_load``.

  ``sizes`` = (train, test) examples; labels cycle 0..9; images are ``scale * uniform``
  noise that ``paint(x, y)`` marks in place with a class signal, then clipped to [0, 1].
  """
  def load(name, split='train', **kw):
    if name != 'fashion_mnist':
      return real_load(name, split, **kw)
    rng = np.random.RandomState(0 if split == 'train' else 1)
    n = sizes[0] if split == 'train' else sizes[1]
    y = (np.arange(n) % 10).astype(np.int32)
    x = scale * rng.rand(n, 28, 28, 1)
    paint(x, y)
    return np.clip(x, 0, 1).astype(np.float32), y
  return load
