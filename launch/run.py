r"""Runs a sweep locally, or across many machines that share a results folder.

    # all jobs on this machine, 2 at a time
    python -m launch.run --sweep=launch/sweeps/main_seeds.py --root=workdir/sweeps/seeds \
        --parallel=2
    # on each of N machines (shared filesystem), the same command: jobs are claimed with
    # an atomic lock file, so every job runs exactly once and a crashed job is retried
    python -m launch.run --sweep=... --root=/shared/sweeps/seeds --runner=distributed

Every job writes into ``<root>/<job_name>/``; a job whose ``DONE`` marker exists is
skipped, so re-running a sweep resumes it. Each job's stdout/stderr go to ``log.txt``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent import futures

from absl import app
from absl import flags

from jaxsec import io as jio
from launch import sweep as sweep_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('sweep', None, 'Path of a sweep file defining get_hyper(h).')
flags.DEFINE_string('root', 'workdir/sweeps', 'Folder for all jobs of the sweep.')
flags.DEFINE_enum('runner', 'local', ['local', 'distributed'], 'How jobs are scheduled.')
flags.DEFINE_integer('parallel', 1, 'Jobs run at once on this machine.')
flags.DEFINE_float('stale_after_s', 6 * 3600, 'distributed: a claim older than this, with no '
                   'DONE marker, is considered crashed and may be taken over.')
flags.DEFINE_bool('dry_run', False, 'Print the commands only.')


def _claim(jobdir: str, stale_after_s: float) -> bool:
  """Atomically claims ``jobdir`` (O_CREAT|O_EXCL lock file, safe on shared filesystems)."""
  os.makedirs(jobdir, exist_ok=True)
  lock = os.path.join(jobdir, 'CLAIM')
  try:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    if time.time() - os.path.getmtime(lock) < stale_after_s:
      return False
    os.remove(lock)  # stale claim of a crashed worker
    return _claim(jobdir, stale_after_s)
  with os.fdopen(fd, 'w') as f:
    f.write(f'{socket.gethostname()} {os.getpid()} {time.time()}\n')
  return True


def run_job(job: dict, root: str, *, distributed: bool, stale_after_s: float) -> str:
  name = sweep_lib.job_name(job)
  jobdir = os.path.join(root, name)
  if os.path.exists(os.path.join(jobdir, 'DONE')):
    return f'{name}: done already'
  if distributed and not _claim(jobdir, stale_after_s):
    return f'{name}: claimed by another worker'
  os.makedirs(jobdir, exist_ok=True)
  jio.write_json_atomic(os.path.join(jobdir, 'job.json'), job)
  cmd = sweep_lib.command(job, jobdir, python=sys.executable)
  t = time.time()
  with open(os.path.join(jobdir, 'log.txt'), 'w') as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
  if rc == 0:
    jio.write_text_atomic(os.path.join(jobdir, 'DONE'), f'{time.time() - t:.1f}s\n')
  if distributed and os.path.exists(os.path.join(jobdir, 'CLAIM')):
    os.remove(os.path.join(jobdir, 'CLAIM'))
  return f'{name}: exit {rc} after {time.time() - t:.0f}s'


def main(argv):
  del argv
  if not FLAGS.sweep:
    raise app.UsageError('--sweep is required.')
  if FLAGS.parallel < 1:
    raise app.UsageError(f'--parallel={FLAGS.parallel} must be >= 1.')
  jobs = sweep_lib.load_sweep(FLAGS.sweep)
  print(f'{len(jobs)} jobs in {FLAGS.sweep}', flush=True)
  if FLAGS.dry_run:
    for j in jobs:
      print(' '.join(sweep_lib.command(j, os.path.join(FLAGS.root, sweep_lib.job_name(j)))))
    return
  failed = 0
  with futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
    fs = [pool.submit(run_job, j, FLAGS.root, distributed=FLAGS.runner == 'distributed',
                      stale_after_s=FLAGS.stale_after_s) for j in jobs]
    for i, f in enumerate(futures.as_completed(fs)):
      msg = f.result()
      failed += ' exit ' in msg and ' exit 0 ' not in msg
      print(f'[{i + 1}/{len(jobs)}] {msg}', flush=True)
  summary = {'jobs': len(jobs), 'failed': failed}
  print(json.dumps(summary))
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
