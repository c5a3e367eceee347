"""Sweeps as lists of jobs, in the style of big_vision's ``get_hyper``.

A sweep file defines ``get_hyper(h)`` and returns ``h.product([...])`` / ``h.zip([...])`` of
``h.sweep(name, values)`` and ``h.fixed(name, value)``. Each resulting job is a dict:
``experiment`` (module under ``experiments.``), ``variant``, and ``config.<key>`` entries
passed to the experiment as ``--set <key>=<value>`` overrides.

>>> h = Hyper()
>>> jobs = h.product([h.fixed('experiment', 'main'), h.sweep('config.seed', [0, 1])])
>>> [j['config.seed'] for j in jobs]
[0, 1]
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from typing import Any, Sequence


class Hyper:
  """The ``h`` handed to ``get_hyper``."""

  @staticmethod
  def sweep(name: str, values: Sequence[Any]) -> list[dict]:
    if not values:
      raise ValueError(f'sweep {name!r} has no values.')
    return [{name: v} for v in values]

  @staticmethod
  def fixed(name: str, value: Any) -> list[dict]:
    return [{name: value}]

  @staticmethod
  def product(axes: Sequence[list[dict]]) -> list[dict]:
    out = []
    for combo in itertools.product(*axes):
      job: dict = {}
      for part in combo:
        overlap = set(job) & set(part)
        if overlap:
          raise ValueError(f'keys {sorted(overlap)} are set twice in one product.')
        job.update(part)
      out.append(job)
    return out

  @staticmethod
  def zip(axes: Sequence[list[dict]]) -> list[dict]:
    lengths = {len(a) for a in axes if len(a) != 1}
    if len(lengths) > 1:
      raise ValueError(f'zip of sweeps with different lengths {sorted(lengths)}.')
    n = lengths.pop() if lengths else 1
    out = []
    for i in range(n):
      job: dict = {}
      for a in axes:
        job.update(a[0] if len(a) == 1 else a[i])
      out.append(job)
    return out


def job_name(job: dict) -> str:
  """A stable, filesystem-safe name: experiment, then a short hash of the whole job."""
  digest = hashlib.sha1(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()
  return f"{job.get('experiment', 'job')}-{job.get('variant', 'full')}-{digest[:10]}"


def load_sweep(path: str) -> list[dict]:
  spec = importlib.util.spec_from_file_location('jaxsec_sweep', path)
  if spec is None or spec.loader is None:
    raise ValueError(f'sweep file {path!r} cannot be loaded.')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, 'get_hyper'):
    raise ValueError(f'sweep file {path!r} defines no get_hyper(h).')
  jobs = mod.get_hyper(Hyper())
  for j in jobs:
    if 'experiment' not in j:
      raise ValueError(f'job {j} names no experiment.')
  return jobs


def command(job: dict, workdir: str, python: str = 'python') -> list[str]:
  """The command line that runs ``job`` with its results under ``workdir``."""
  cmd = [python, '-m', f"experiments.{job['experiment']}",
         f"--variant={job.get('variant', 'full')}", f'--workdir={workdir}']
  for k, v in sorted(job.items()):
    if k.startswith('config.'):
      cmd.append(f'--set={k[len("config."):]}={v!r}' if isinstance(v, str)
                 else f'--set={k[len("config."):]}={v}')
    elif k not in ('experiment', 'variant'):
      raise ValueError(f'job key {k!r} is neither experiment, variant nor config.<key>.')
  return cmd
