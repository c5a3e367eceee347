r"""Runs a config file's sweep (``get_hyper``) as Ray tasks or submitit jobs.

    # local: starts an embedded Ray with this machine's CPUs (and GPUs)
    python -m launch.sweep --config=experiments/configs/main.py:smoke --workdir=workdir/sweep
    # join a running Ray cluster (`ray start --head` on one node, `ray start --address=...`
    # on the others; every node needs this checkout installed: pip install -e '.[launch]')
    python -m launch.sweep --config=experiments/configs/main.py:smoke --workdir=/shared/sweep \
        --ray_address=auto
    # SLURM through submitit (one job per point)
    python -m launch.sweep --config=... --workdir=/shared/sweep --backend=submitit

``--config`` is the same flag as ``experiments.run``'s (``--config.seed=3`` overrides a
field of every point); ``get_hyper(h)`` of the same file gives the points. Each point runs
``experiments.run.run_config`` in ``<workdir>/<point name>/`` with the CPUs / GPUs of its
``config.resources``; failed points are retried (``--max_retries``); a re-launch skips the
points whose ``sweep_point.json`` exists; ``<workdir>/results.csv``, ``results.json`` and
``plot_<axis>.png`` gather all points.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import backends

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file with get_config(arg) and get_hyper(h): path.py[:arg].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep folder (one sub-folder per point).')
_BACKEND = flags.DEFINE_enum('backend', 'ray', ['ray', 'submitit'], 'Where points run.')
_RAY_ADDRESS = flags.DEFINE_string(
    'ray_address', None, "Ray cluster to join ('auto' or host:port); default: start a local "
    'Ray in this process.')
_NUM_CPUS = flags.DEFINE_integer('num_cpus', None, 'CPUs of the local Ray (default: all).')
_MAX_RETRIES = flags.DEFINE_integer('max_retries', 2, 'Retries of a failed point.')
_MAX_PARALLEL = flags.DEFINE_integer(
    'max_parallel', 0, 'submitit: jobs in flight (0: unlimited on SLURM, CPU count locally).')
_SUBMITIT_CLUSTER = flags.DEFINE_enum(
    'submitit_cluster', None, ['slurm', 'local', 'debug'],
    'submitit executor (default: SLURM when sbatch exists, else local).')
_TIMEOUT_MIN = flags.DEFINE_integer('timeout_min', 24 * 60, 'submitit: time limit of a job.')
_SLURM_PARTITION = flags.DEFINE_string('slurm_partition', None, 'submitit: SLURM partition.')
_PROGRESS_EVERY_S = flags.DEFINE_float('progress_every_s', 30.0,
                                       'Seconds between progress lines.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List the points to run; run nothing.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}.')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  logging.set_verbosity(logging.INFO)
  spec = config_flags.get_config_filename(flags.FLAGS['config'])
  summary = backends.run_sweep(
      spec, _WORKDIR.value, config=_CONFIG.value, backend=_BACKEND.value,
      ray_address=_RAY_ADDRESS.value, num_cpus=_NUM_CPUS.value,
      max_retries=_MAX_RETRIES.value, max_parallel=_MAX_PARALLEL.value,
      submitit_cluster=_SUBMITIT_CLUSTER.value, timeout_min=_TIMEOUT_MIN.value,
      slurm_partition=_SLURM_PARTITION.value, progress_every_s=_PROGRESS_EVERY_S.value,
      dry_run=_DRY_RUN.value)
  print(f"{summary['points']} points: {summary['ran']} ran, {summary['skipped']} finished "
        f"before, {len(summary['failed'])} failed" + (
            f"; table {summary['table']}" if 'table' in summary else ''), flush=True)
  if summary['failed']:
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
