r"""Runs an experiment on a machine without TensorFlow / TFDS, from exported arrays.

Accelerator machines often have JAX but not TensorFlow, which ``jaxsec.data.load`` needs
to prepare the image sets. Export the arrays where TFDS works, carry the file, and run
the experiment unchanged there:

    # where TFDS works (this repo's dev machine): uint8 pixels, exactly TFDS's order
    python -m launch.portable_data export --out=.data/fmnist.npz fashion_mnist
    # on the accelerator machine
    python -m launch.portable_data run --arrays=.data/fmnist.npz -- \
        experiments.dp_sgd --variant=full --workdir=/tmp/out

``run`` replaces the image loader with one that serves the exported arrays (the same
float32 values ``load`` returns: ``uint8 / 255``, same order), then runs the module as
``__main__`` with the given arguments. Data sets not in the file still go through TFDS
(and fail there with the usual message). The file stores, per data set and split,
``<name>/<split>/x`` (uint8) and ``<name>/<split>/y`` (int32).
"""
from __future__ import annotations

import functools
import os
import runpy
import sys
from typing import Any

import numpy as np

from jaxsec.data import loaders

_USAGE = ('usage: python -m launch.portable_data export --out=FILE.npz NAME [NAME...]\n'
          '       python -m launch.portable_data run --arrays=FILE.npz -- MODULE [ARGS...]')


def export(path: str, names) -> dict:
  """Writes the train and test splits of the image sets ``names`` to ``path`` (npz)."""
  arrays: dict[str, Any] = {}   # Any: savez_compressed's keyword values are typed loosely
  for name in names:
    if name not in loaders.IMAGE_SETS:
      raise ValueError(f'name={name!r} is not an image set; expected one of '
                       f'{loaders.IMAGE_SETS} (tabular sets load without TFDS already).')
    for split in loaders.SPLITS:
      x, y = loaders.load(name, split)
      u8 = np.rint(np.asarray(x) * 255.0).astype(np.uint8)
      if not np.array_equal(u8.astype(np.float32) / np.float32(255.0), x):
        raise ValueError(f'{name}/{split} pixels are not multiples of 1/255; cannot store '
                         'them as uint8 without loss.')
      arrays[f'{name}/{split}/x'] = u8
      arrays[f'{name}/{split}/y'] = np.asarray(y, np.int32)
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)
  return {k: v.shape for k, v in arrays.items()}


def install(path: str) -> tuple[str, ...]:
  """Makes ``jaxsec.data.load`` serve the image sets stored in ``path``; returns them."""
  with np.load(path) as f:
    stored = {k: f[k] for k in f.files}
  names = tuple(sorted({k.split('/')[0] for k in stored}))
  original = loaders._load_image  # pylint: disable=protected-access

  # Cached like the loader it replaces (callers rely on its cache_clear()).
  @functools.lru_cache(maxsize=8)
  def load_image(name, split, data_dir):
    if f'{name}/{split}/x' in stored:
      x = stored[f'{name}/{split}/x'].astype(np.float32) / np.float32(255.0)
      return x, stored[f'{name}/{split}/y'].astype(np.int32)
    return original(name, split, data_dir)

  loaders._load_image = load_image  # pylint: disable=protected-access
  return names


def main(argv) -> int:
  if len(argv) >= 2 and argv[0] == 'export' and argv[1].startswith('--out='):
    shapes = export(argv[1][len('--out='):], argv[2:])
    for k, v in shapes.items():
      print(k, v)
    return 0
  if (len(argv) >= 4 and argv[0] == 'run' and argv[1].startswith('--arrays=')
      and argv[2] == '--'):
    names = install(argv[1][len('--arrays='):])
    print(f'[portable_data] serving {names} from {argv[1][len("--arrays="):]}', flush=True)
    module, args = argv[3], argv[4:]
    sys.argv = [module] + list(args)
    runpy.run_module(module, run_name='__main__', alter_sys=True)
    return 0
  print(_USAGE, file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
