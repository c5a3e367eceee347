"""Shared test set-up: CPU only, quiet TensorFlow, real data where it is installed, one XLA
compilation cache per test session, and XLA's quick (-O0) CPU back end."""
import atexit
import contextlib
import faulthandler
import gc
import glob
import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# One persistent XLA compilation cache per session and per xdist worker, shared with the
# studies' subprocesses that worker starts: a program that several tests compile (the same
# model's step in several smoke runs, a vectorised run checked against its separate runs)
# compiles once. The cache returns the executable compiled from the same HLO, so results are
# unchanged. Fresh per session (a new directory, removed at exit). Not shared between
# workers: JAX writes an entry in place, and a worker that read another's half-written
# executable crashed with a segmentation fault (seen once in the full suite); JAX's file lock
# (a size bound) scans the directory on every write: the suite ran at half speed with it.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix='jaxsec-test-xla-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache_dir
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
if os.environ.get('PYTEST_XDIST_WORKER') and not os.environ.get('JAXSEC_TEST_WORKER_CACHE'):
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
      os.environ['JAX_COMPILATION_CACHE_DIR'], os.environ['PYTEST_XDIST_WORKER'])
  os.environ['JAXSEC_TEST_WORKER_CACHE'] = '1'
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# Tests compile far more than they compute: XLA:CPU's LLVM back end at -O0 compiles about 40%
# faster (measured on this repository's 2-core CPU: 70 s -> 44 s for an AutoAttack test plus a
# study's smoke run). It changes no floating-point semantics (no fast-math); the library, the
# studies and the benchmarks run at XLA's default level. Subprocess tests that set their own
# XLA_FLAGS keep them.
_xla_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_backend_optimization_level' not in _xla_flags:
  os.environ['XLA_FLAGS'] = f'{_xla_flags} --xla_backend_optimization_level=0'.strip()

import jax  # noqa: E402

# In case a plugin imported jax before this file set the environment.
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
jax.config.update('jax_persistent_cache_min_entry_size_bytes',
                  int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']))
import optax  # noqa: E402
import pytest  # noqa: E402

from jaxsec.data import fashion_mnist  # noqa: E402

requires_fashion_mnist = pytest.mark.skipif(
    fashion_mnist.local_dir() is None,
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install "
           'dataset-fashion-mnist)')


# Library tests over ~12 s in the full suite on this 2-core machine (measured with
# `python -m pytest -n 2 tests --durations=150`); the fast tier skips them too.
_SLOW_LIBRARY_TESTS = frozenset({
    'tests/attacks/evasion/test_apgd.py::test_run_auto_attack_runs_targets_only_on_points_still_robust',
    'tests/test_train.py::test_eight_fake_devices_match_one',
    'tests/attacks/evasion/test_fab.py::test_fab_t_eps_success_and_weak_attack',
    'tests/defenses/training/test_adversarial.py::test_strength_zero_is_plain_loss_and_jit_grad_work',
    'tests/attacks/evasion/test_cpu_unroll.py::test_pgd_same_with_and_without_unrolling',
    'tests/attacks/evasion/test_apgd_l1.py::test_run_auto_attack_l1_reports_and_respects_the_ball',
    'tests/test_models.py::test_shapes_and_purity[resnet-shape4]',
    'tests/attacks/privacy/test_extraction.py::test_learning_based_extraction_gains_fidelity',
    'tests/attacks/evasion/test_fab.py::test_restarts_bounds_shapes_and_batch_sizes',
    'tests/privacy/test_clipping.py::test_default_method_routes_eligible_models_to_ghost_and_stays_exact',
    'tests/privacy/test_accounting.py::test_calibration_inverts_accounting[pld]',
    'tests/attacks/evasion/test_gradient_attacks.py::test_pgd_targeted_reaches_target[dlr-l1]',
    'tests/attacks/evasion/test_apgd.py::test_apgd_replays_the_official_loop[23]',
    'tests/attacks/blackbox/test_square.py::test_run_auto_attack_square_catches_gradient_masking',
    'tests/test_launch.py::test_portable_data_serves_exactly_what_tfds_loads',
    'tests/attacks/evasion/test_gradient_attacks.py::test_jit_and_vmap_over_eps',
    'tests/attacks/evasion/test_apgd.py::test_reduction_resets_the_iterate_and_gradient_to_the_best_point',
    'tests/attacks/evasion/test_apgd.py::test_apgd_targeted_reaches_target_and_odd_bounds',
    'tests/attacks/evasion/test_apgd.py::test_run_auto_attack_host_driver',
    'tests/attacks/evasion/test_autoattack.py::test_zero_gradients_are_counted_and_reported',
    'tests/privacy/test_clipping.py::test_clipped_equals_loop_of_single_grads[vmap-None]',
    'tests/attacks/evasion/test_fab.py::test_affine_multiclass_one_step_is_exact[linf]',
    'tests/attacks/evasion/test_apgd_l1.py::test_apgd_l1_feasible_and_not_worse_than_pgd_l1',
    'tests/attacks/evasion/test_apgd.py::test_apgd_l2_vmap_over_eps',
})


# A worker that dies of a signal (segmentation fault) takes its traceback with it: xdist
# reports only "node down". Each worker writes Python's fault traceback to its own file, and
# the controller prints any non-empty one in the terminal summary (CI shows it).
if 'JAXSEC_TEST_FAULT_DIR' not in os.environ:
  os.environ['JAXSEC_TEST_FAULT_DIR'] = tempfile.mkdtemp(prefix='jaxsec-test-faults-')
  atexit.register(shutil.rmtree, os.environ['JAXSEC_TEST_FAULT_DIR'], ignore_errors=True)


def pytest_sessionstart(session):
  del session
  worker = os.environ.get('PYTEST_XDIST_WORKER')
  if worker:   # after pytest's own faulthandler set-up, which writes to the lost stderr
    path = os.path.join(os.environ['JAXSEC_TEST_FAULT_DIR'], f'{worker}-{os.getpid()}.log')
    faulthandler.enable(file=open(path, 'w'), all_threads=True)  # noqa: SIM115 (held open)


# Every live XLA:CPU executable holds about 8 memory mappings, and a process may hold at most
# vm.max_map_count (65,530 by default) of them. A worker that runs ~700 tests keeps thousands of
# executables in JAX's caches and reached the limit in the compile-heavy poisoning smoke test:
# mmap fails inside XLA, which then dies of a segmentation fault (reproduced by pre-filling a
# process's mappings: it crashes at 62,500, passes at 35,500). So after each test, when the
# process holds more than half the limit, JAX's in-memory caches are dropped (later tests
# recompile, mostly from the persistent cache).
def _max_map_count() -> int:
  try:
    with open('/proc/sys/vm/max_map_count') as f:
      return int(f.read())
  except (OSError, ValueError):
    return 0


_MAP_LIMIT = _max_map_count() // 2


def _mapped_regions() -> int:
  try:
    with open('/proc/self/maps') as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


@pytest.fixture(autouse=True)
def _bounded_memory_mappings():
  yield
  if _MAP_LIMIT and (n := _mapped_regions()) > _MAP_LIMIT:
    jax.clear_caches()
    gc.collect()
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
    with open(os.path.join(os.environ['JAXSEC_TEST_FAULT_DIR'], f'maps-{worker}.txt'), 'a') as f:
      f.write(f'{worker}: {n} memory mappings > {_MAP_LIMIT}: JAX caches cleared, '
              f'{_mapped_regions()} left\n')


def pytest_terminal_summary(terminalreporter):
  if os.environ.get('PYTEST_XDIST_WORKER'):
    return
  for path in sorted(glob.glob(os.path.join(os.environ['JAXSEC_TEST_FAULT_DIR'], '*.log'))):
    with open(path) as f:
      text = f.read()
    if text.strip():
      terminalreporter.write_sep('=', f'fault traceback of worker {os.path.basename(path)}')
      terminalreporter.write_line(text)
  for path in sorted(glob.glob(os.path.join(os.environ['JAXSEC_TEST_FAULT_DIR'], 'maps-*.txt'))):
    with open(path) as f:
      lines = f.read().splitlines()
    terminalreporter.write_line(f'{len(lines)} clearing(s) of JAX caches; last: {lines[-1]}')


def pytest_collection_modifyitems(config, items):
  """The experiment smoke runs (tests/experiments/) are the slow tier.

  `python -m pytest -m "not slow" tests` is the fast edit-test loop; the full suite (README
  command (b), CI) runs everything. Individual slow library tests carry `@pytest.mark.slow` or are listed below.
  """
  del config
  for item in items:
    if (f'{os.sep}tests{os.sep}experiments{os.sep}' in str(item.fspath)
        or item.nodeid in _SLOW_LIBRARY_TESTS):
      item.add_marker(pytest.mark.slow)


@pytest.fixture
def count_compiles():
  """``with count_compiles() as compiles:`` clears jax's caches, then appends one name to
  ``compiles`` per program jax had to compile inside the block (an XLA backend compilation,
  or a load from the session's persistent compilation cache, which replaces one): the tests
  that a loop of trainings reuses one compiled program count with it."""
  @contextlib.contextmanager
  def counting():
    jax.clear_caches()
    compiles = []

    def on_duration(name, *a, **k):
      if name == '/jax/core/compile/backend_compile_duration':
        compiles.append(name)

    def on_event(name, *a, **k):
      if name == '/jax/compilation_cache/cache_hits':
        compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
      yield compiles
    finally:
      jax.monitoring.unregister_event_duration_listener(on_duration)
      jax.monitoring.unregister_event_listener(on_event)
  return counting


@pytest.fixture(scope='session')
def adam_fit():
  """``adam_fit(loss, params, steps) -> params``: ``steps`` full-batch Adam steps
  (learning rate 1e-2) on ``loss(params)`` in one ``lax.scan``, how the attack tests fit
  their small models."""
  def fit(loss, params, steps):
    opt = optax.adam(1e-2)

    def step(c, _):
      p, s = c
      u, s = opt.update(jax.grad(loss)(p), s)
      return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params
  return fit
