"""Progress of long host loops (epochs, attack batches, shadow models) as log lines.

One ``absl.logging`` INFO line per step with the rate and an ETA, e.g.
``[main/table APGD-CE] batch 3/8, 0.41 batch/s, 7.3s elapsed, ETA 12.2s``. Host-side only:
it reads the wall clock and never synchronises with the device (callers update it where
they already hold a host value, e.g. after ``np.asarray`` of a batch's output).
"""
from __future__ import annotations

import time
from typing import Callable, Union

from absl import logging


class Progress:
  """Counts ``done`` of ``total`` units and logs rate and ETA at each :meth:`update`.

  >>> bar = Progress('main/table APGD-CE', total=4, unit='batch')
  >>> bar.update()
  '[main/table APGD-CE] batch 1/4, ... batch/s, ...s elapsed, ETA ...s'

  ``start`` counts units already done before this run (a resumed loop): they are shown in
  ``done`` but not in the rate.
  """

  def __init__(self, label: str, total: int, unit: str = 'step', start: int = 0):
    self.label, self.total, self.unit = label, int(total), unit
    self.start = self.done = int(start)
    self.t0 = time.time()

  def update(self, n: int = 1, extra: str = '') -> str:
    """Adds ``n`` finished units, logs and returns the line."""
    self.done += n
    el = max(time.time() - self.t0, 1e-9)
    rate = (self.done - self.start) / el
    eta = (self.total - self.done) / rate if rate > 0 else float('inf')
    line = (f'[{self.label}] {self.unit} {self.done}/{self.total}, {rate:.3g} {self.unit}/s, '
            f'{el:.1f}s elapsed, ETA {eta:.1f}s' + (f' {extra}' if extra else ''))
    logging.info('%s', line)
    return line


ProgressArg = Union[None, str, Progress, Callable[[int, int], None]]


def make(progress: ProgressArg, total: int, unit: str) -> Callable[..., object] | None:
  """Normalises a ``progress=`` argument into ``update(extra)`` (or None: silent).

  ``progress`` is None (silent), a label (a :class:`Progress` of ``total`` ``unit`` s is
  made), a :class:`Progress`, or a callable ``progress(done, total)`` called after each unit.
  """
  if progress is None or progress is False:
    return None
  if isinstance(progress, str):
    progress = Progress(progress, total, unit)
  if isinstance(progress, Progress):
    return lambda extra='': progress.update(1, extra)
  if callable(progress):
    count = [0]

    def call(extra=''):
      del extra
      count[0] += 1
      progress(count[0], total)
    return call
  raise ValueError(f'progress={progress!r}; expected None, a label str, a Progress or a '
                   'callable (done, total).')
