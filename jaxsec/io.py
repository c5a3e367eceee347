"""Crash-safe result files: write to a temporary file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


def _default(o: Any):
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray) or hasattr(o, '__array__'):
    return np.asarray(o).tolist()
  raise TypeError(f'Cannot serialise {type(o).__name__} to JSON.')


def write_bytes_atomic(path: str, data: bytes) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=os.path.basename(path))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON; a crash never leaves a half-written ``path``."""
  data = json.dumps(obj, indent=2, sort_keys=True, default=_default).encode() + b'\n'
  write_bytes_atomic(path, data)


def save_results(workdir: str, name: str, results: Any) -> Any:
  """Writes a study's ``results`` to ``workdir/<name>.json`` (:func:`write_json_atomic`)
  and returns them, the last step of every experiment's ``run``."""
  write_json_atomic(os.path.join(workdir, f'{name}.json'), results)
  return results


def write_text_atomic(path: str, text: str) -> None:
  write_bytes_atomic(path, text.encode())


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def json_roundtrip(obj: Any) -> Any:
  """``obj`` as it reads back from a results file (tuples become lists, NumPy scalars
  Python numbers): what a resume compares a saved config with."""
  return json.loads(json.dumps(obj, default=_default))
