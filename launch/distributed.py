"""Multi-host JAX: ``jax.distributed.initialize`` from flags or the cluster's environment.

The same command runs on one machine, on a TPU pod slice or on a multi-GPU SLURM job:

    python -m experiments.run --config=... --workdir=...            # one process: nothing
    srun -n 8 python -m experiments.run --config=... --workdir=...   # SLURM: detected
    python -m experiments.run ... --coordinator_address=10.0.0.1:1234 \
        --num_processes=2 --process_id=0                             # explicit

``initialize_from_flags_or_env`` calls ``jax.distributed.initialize`` (a) with the given
arguments when any is set, (b) with none when JAX's own cluster detection (SLURM, Open MPI,
Cloud TPU / GKE, Kubernetes) or ``JAX_COORDINATOR_ADDRESS`` finds more than one process, and
(c) not at all on a single process. On the CPU backend cross-process collectives go through
gloo (``jax_cpu_collectives_implementation``, JAX's default since 0.4.3x; set explicitly
here so an older default 'none' cannot silently make every process compute alone).
"""
from __future__ import annotations

import os

from absl import flags
from absl import logging

COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0 for jax.distributed (multi-host); None: from the environment.')
NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of JAX processes (multi-host); None: from the environment.')
PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This JAX process index in [0, num_processes); None: from the '
    'environment.')


def detect_environment() -> str | None:
  """The name of a multi-process environment JAX can bootstrap from, or None.

  ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` where JAX
  reads them) counts as one; otherwise JAX's cluster classes are asked (SLURM, Open MPI,
  TPU VMs, Kubernetes; mpi4py is opt-in there and so here) and an environment with a single
  process does not count.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  from jax._src import clusters  # pylint: disable=g-import-not-at-top  (no public list)
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if env.opt_in_only_method:
      continue
    try:
      if env.is_env_present() and env.get_process_count() > 1:
        return env.__name__
    except Exception:  # pylint: disable=broad-except  (a half-set environment: not ours)
      logging.debug('cluster detection %s failed', env.__name__, exc_info=True)
  return None


def initialize_from_flags_or_env(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Initialises ``jax.distributed`` when there is more than one process; returns whether.

  Arguments default to the ``--coordinator_address`` / ``--num_processes`` /
  ``--process_id`` flags when those have been parsed. Must run before any JAX computation.
  Calling it again after a successful initialisation is a no-op.
  """
  if flags.FLAGS.is_parsed():
    coordinator_address = coordinator_address or COORDINATOR_ADDRESS.value
    num_processes = num_processes if num_processes is not None else NUM_PROCESSES.value
    process_id = process_id if process_id is not None else PROCESS_ID.value
  if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
    raise ValueError(f'num_processes={num_processes!r}; expected a positive int.')
  if process_id is not None and (not isinstance(process_id, int) or process_id < 0 or (
      num_processes is not None and process_id >= num_processes)):
    raise ValueError(f'process_id={process_id!r}; expected an int in [0, num_processes='
                     f'{num_processes}).')
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return True
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  if explicit and num_processes == 1:
    return False
  env = None if explicit else detect_environment()
  if not explicit and env is None:
    return False
  if jax.config.values['jax_cpu_collectives_implementation'] in (None, 'none'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  logging.info('jax.distributed.initialize(coordinator_address=%s, num_processes=%s, '
               'process_id=%s)%s', coordinator_address, num_processes, process_id,
               f' from {env}' if env else '')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('JAX process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
