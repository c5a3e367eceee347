"""launch.distributed: two JAX processes on localhost run one data-parallel step."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from launch import distributed
from tests.launch import dp_worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env():
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'OMPI_', 'JAX_COORDINATOR', 'XLA_FLAGS'))}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''))
  return env


@pytest.mark.slow  # two JAX start-ups: ~12 s on 2 loaded cores
def test_two_processes_equal_one_process_on_the_full_batch():
  addr = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen([sys.executable, '-m', 'tests.launch.dp_worker', str(i), addr, '2'],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  x, y, w = dp_worker.data()
  want = np.asarray(dp_worker.sgd_step(w, x, y))
  half = np.asarray(dp_worker.sgd_step(w, x[:4], y[:4]))
  assert not np.allclose(want, half, atol=1e-3)  # a process alone would be caught
  for o in outs:
    assert o['initialised'] and o['process_count'] == 2 and o['device_count'] == 2
    assert o['local_rows'] == 4  # each process held half of the global batch
    np.testing.assert_allclose(o['w'], want, rtol=1e-5, atol=1e-6)


def test_single_process_does_nothing_and_bad_ids_are_errors(monkeypatch):
  for k in list(os.environ):
    if k.startswith(('SLURM_', 'OMPI_', 'JAX_COORDINATOR')):
      monkeypatch.delenv(k)
  assert distributed.detect_environment() is None
  assert distributed.initialize_from_flags_or_env() is False
  assert distributed.initialize_from_flags_or_env(num_processes=1) is False
  # A one-task SLURM allocation is not multi-process.
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_STEP_NODELIST', 'n1')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  monkeypatch.setenv('SLURM_PROCID', '0')
  monkeypatch.setenv('SLURM_LOCALID', '0')
  assert distributed.detect_environment() is None
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.detect_environment() == 'SlurmCluster'
  with pytest.raises(ValueError, match='process_id=2'):
    distributed.initialize_from_flags_or_env('h:1', 2, 2)
  with pytest.raises(ValueError, match='num_processes=0'):
    distributed.initialize_from_flags_or_env('h:1', 0, 0)
