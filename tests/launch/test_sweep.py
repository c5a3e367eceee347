"""launch.sweep: get_hyper points as Ray tasks / submitit jobs, retries, resume, the table."""
import csv
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from launch import backends
from launch import hyper
from launch import points

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, 'tests', 'launch', 'toy_config.py')


@pytest.fixture(scope='module')
def ray_2cpus():
  """One local Ray (2 CPUs) for every Ray test of this module: Ray starts in ~6 s."""
  engine = backends.RayBackend(num_cpus=2)
  yield engine
  engine.close()


def _rows(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['point']: r for r in csv.DictReader(f)}


def test_hyper_product_zip_and_point_names():
  h = hyper.Hyper()
  pts = h.product([h.sweep('config.seed', [0, 1]), h.sweep('config.attack.eps', [0.1, 0.2])])
  assert len(pts) == 4 and len({points.point_name(p) for p in pts}) == 4
  assert h.zip([h.sweep('config.a', [1, 2]), h.sweep('config.b', [3, 4])]) == [
      {'config.a': 1, 'config.b': 3}, {'config.a': 2, 'config.b': 4}]
  with pytest.raises(ValueError, match='different lengths'):
    h.zip([h.sweep('a', [1, 2]), h.sweep('b', [1, 2, 3])])
  with pytest.raises(ValueError, match=r"\['config.a'\] are set twice"):
    h.product([h.sweep('config.a', [1]), h.fixed('config.a', 2)])
  # Stable (dict order does not matter), readable, distinct.
  a = points.point_name({'config.seed': 1, 'config.model': 'mlp'})
  assert a == points.point_name({'config.model': 'mlp', 'config.seed': 1})
  assert a.startswith('model_mlp-seed1-') and len(a.rsplit('-', 1)[1]) == 10
  assert a != points.point_name({'config.seed': 1, 'config.model': 'cnn'})


def test_typo_unknown_study_and_impossible_resources_are_clear_errors(tmp_path):
  base = ml_collections.ConfigDict({'study': 'tests.launch.toy_study', 'seed': 0,
                                    'attack': {'eps': 0.1},
                                    'resources': {'cpus': 1.0, 'gpus': 0.0}})
  with pytest.raises(ValueError, match=r"'config.attack.epz': config.attack has no field "
                                       r"'epz' \(fields: eps\)"):
    points.point_config(base, {'config.attack.epz': 0.2})
  with pytest.raises(ValueError, match=r"'config.sed': config has no field 'sed'"):
    points.point_config(base, {'config.sed': 2})
  with pytest.raises(ValueError, match=r"'seed' must be \"config.<dotted.field>\""):
    points.point_config(base, {'seed': 2})
  c = points.point_config(base, {'config.attack.eps': 0.3})
  assert c.attack.eps == 0.3 and base.attack.eps == 0.1  # a copy
  with pytest.raises(AttributeError):
    c.new_field = 1  # locked
  # The same checks through a config file, before anything starts.
  bad = tmp_path / 'bad.py'
  bad.write_text(open(TOY).read().replace("'config.x'", "'config.xx'"))
  with pytest.raises(ValueError, match=r"sweep axis 'config.xx': config has no field 'xx'"):
    backends.run_sweep(str(bad), str(tmp_path / 'w'))
  unknown = tmp_path / 'unknown.py'
  unknown.write_text(open(TOY).read().replace("'tests.launch.toy_study'", "'no_such_study'"))
  with pytest.raises(ValueError, match=r"unknown study config.study='no_such_study': no "
                                       r"module 'experiments.no_such_study'"):
    backends.run_sweep(str(unknown), str(tmp_path / 'w'))
  with pytest.raises(ValueError, match='defines no get_hyper'):
    nohyper = tmp_path / 'nohyper.py'
    nohyper.write_text('def get_config(arg=None):\n  return None\n')
    backends.run_sweep(str(nohyper), str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.slow  # a local Ray (~6 s) and three launches of 4 points
def test_ray_sweep_retries_resumes_and_gathers(ray_2cpus, tmp_path):
  spec = f'{TOY}:crashy'  # seed-1 points fail their first try (one raises, one kills its worker)
  wd = str(tmp_path / 'sweep')
  # No retries: the two seed-1 points fail, the others finish; the table says so.
  s = backends.run_sweep(spec, wd, max_retries=0, progress_every_s=1)
  assert s['points'] == 4 and s['ran'] == 2 and len(s['failed']) == 2
  rows = _rows(wd)
  assert sorted(r['status'] for r in rows.values()) == ['done', 'done', 'failed', 'failed']
  assert {r['seed'] for r in rows.values() if r['status'] == 'failed'} == {'1'}
  errors = ''.join(open(os.path.join(wd, n, points.ERROR_FILE)).read() for n in s['failed'])
  assert 'planned failure of seed=1 x=0.5' in errors
  # Re-launch with retries: only the two unfinished points run (and now succeed).
  s = backends.run_sweep(spec, wd, max_retries=1, progress_every_s=1)
  assert (s['ran'], s['skipped'], s['failed']) == (2, 2, [])
  # Re-launch of a finished sweep: zero points run, no result file is rewritten.
  stamps = {n: os.path.getmtime(os.path.join(wd, n, points.POINT_FILE)) for n in rows}
  s = backends.run_sweep(spec, wd, progress_every_s=1)
  assert (s['ran'], s['skipped'], s['failed']) == (0, 4, [])
  assert stamps == {n: os.path.getmtime(os.path.join(wd, n, points.POINT_FILE)) for n in rows}
  # The table: every point, its overrides and the result's scalars; one plot per axis.
  rows = _rows(wd)
  for r in rows.values():
    x, seed = float(r['x']), int(r['seed'])
    assert r['status'] == 'done'
    assert float(r['result.loss']) == pytest.approx((x - 1) ** 2 + seed)
    assert float(r['result.nested.score']) == pytest.approx(2 * x)
  table = json.load(open(os.path.join(wd, 'results.json')))
  assert table['axes'] == ['config.seed', 'config.x']
  assert table['metrics'] == ['loss', 'nested.score']  # config.sweep_metrics
  assert sorted(s['plots']) == [os.path.join(wd, 'plot_seed.png'),
                                os.path.join(wd, 'plot_x.png')]
  assert all(os.path.getsize(p) > 1000 for p in s['plots'])


def test_vectorized_axis_is_one_point_with_one_table_row_per_value(ray_2cpus, tmp_path):
  h = hyper.Hyper()
  assert h.vectorized('config.xs', [0.5, 2.0]) == [{'config.xs': (0.5, 2.0)}]
  with pytest.raises(ValueError, match='repeats a value'):
    h.vectorized('config.xs', [0.5, 0.5])
  with pytest.raises(ValueError, match='no values'):
    h.vectorized('config.xs', [])
  base = points.load_module(TOY).get_config()
  with pytest.raises(ValueError, match=r"config.x is a float field; a tuple \(h.vectorized\)"):
    points.point_config(base, h.vectorized('config.x', [0.5, 2.0])[0])
  # 2 seeds x a vectorised x: 2 Ray tasks, 4 table rows equal to the point-by-point sweep's.
  wd = str(tmp_path / 'vec')
  s = backends.run_sweep(f'{TOY}:vectorized', wd, progress_every_s=1)
  assert (s['points'], s['ran'], s['failed']) == (2, 2, [])
  table = json.load(open(os.path.join(wd, 'results.json')))
  assert table['axes'] == ['config.seed', 'config.x']
  got = sorted((r['seed'], r['x'], r['result.loss'], r['result.nested.score'])
               for r in table['rows'])
  assert got == sorted((seed, x, (x - 1) ** 2 + seed, 2 * x)
                       for seed in (0, 1) for x in (0.5, 2.0))
  csv_rows = list(csv.DictReader(open(os.path.join(wd, 'results.csv'))))
  assert sorted((int(r['seed']), float(r['x'])) for r in csv_rows) == [
      (0, 0.5), (0, 2.0), (1, 0.5), (1, 2.0)]
  assert sorted(s['plots']) == [os.path.join(wd, 'plot_seed.png'),
                                os.path.join(wd, 'plot_x.png')]


@pytest.mark.slow
def test_ray_four_points_on_two_cpus_retry_in_one_launch(ray_2cpus, tmp_path):
  assert ray_2cpus.total['CPU'] == 2
  wd = str(tmp_path / 'sweep')
  s = backends.run_sweep(f'{TOY}:crashy', wd, max_retries=2, progress_every_s=1)
  assert (s['ran'], s['retries'], s['failed']) == (4, 2, [])
  recs = [json.load(open(os.path.join(wd, n, points.POINT_FILE))) for n in _rows(wd)]
  assert sorted(r['attempt'] for r in recs) == [0, 0, 1, 1]
  assert all(r['attempt'] == r['overrides']['config.seed'] for r in recs)
  # Too many CPUs for this Ray: refused instead of waiting forever.
  big = points.load_module(TOY).get_config()
  big.resources.cpus = 3.0
  with pytest.raises(ValueError, match='asks for 3 CPUs'):
    backends.run_sweep(TOY, str(tmp_path / 'big'), config=big)


@pytest.mark.slow  # two job subprocesses and the CLI's own start-up
def test_submitit_local_backend_through_the_cli(tmp_path):
  wd = str(tmp_path / 'sweep')
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  p = subprocess.run([sys.executable, '-m', 'launch.sweep', f'--config={TOY}:two',
                      f'--workdir={wd}', '--backend=submitit', '--submitit_cluster=local',
                      '--progress_every_s=1', '--config.x=3.0'],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert '2 points: 2 ran, 0 finished before, 0 failed' in p.stdout
  assert 'sweep: 2/2 done' in p.stderr
  rows = _rows(wd)
  assert sorted(r['seed'] for r in rows.values()) == ['0', '1']
  for r in rows.values():  # --config.x reaches every point; get_hyper's model too
    assert r['status'] == 'done' and r['result.label'] == f"cnn-{r['seed']}"
    assert float(r['result.nested.score']) == 6.0
  assert os.path.exists(os.path.join(wd, 'plot_seed.png'))
  pids = {json.load(open(os.path.join(wd, n, points.POINT_FILE)))['pid'] for n in rows}
  assert len(pids) == 2 and os.getpid() not in pids  # separate job processes
