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


def paint_bands(x: np.ndarray, y: np.ndarray) -> None:
  """A ``paint`` for :func:`fake_fashion_mnist`: class ``k`` gets a bright band at rows
  ``2k..2k+3``."""
  for k in range(10):
    x[y == k, 2 * k:2 * k + 4] += 0.8


def federated_cells(saved: dict, cfg: Any) -> list[dict]:
  """The cells of a federated grid study's saved results, after checking that the grid is
  complete (every partition x aggregator x attack of ``cfg``) and that each cell holds an
  accuracy in [0, 1], a curve point per evaluated round and a finite honest loss."""
  cells = []
  for p in cfg.partitions:
    rows = saved['partitions'][p]['results']
    assert set(rows) == set(cfg.aggregators)
    for row in rows.values():
      assert set(row) == set(cfg.attacks)
      cells += row.values()
  for cell in cells:
    assert 0.0 <= cell['accuracy'] <= 1.0
    assert len(cell['curve']) == len(saved['eval_rounds'])
    assert np.isfinite(cell['final_honest_loss'])
  return cells
