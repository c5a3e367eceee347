"""The one entry point (experiments/run.py) and the config files (experiments/configs/)."""
import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments import run as run_lib
from experiments.configs import base
from experiments.configs import main as main_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'experiments', 'configs',
                                                             '**', '*.py'), recursive=True)
    if os.path.basename(p) not in ('__init__.py', 'base.py'))


def _lists(x):
  """Tuples as lists (the JSON form)."""
  if isinstance(x, dict):
    return {k: _lists(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_lists(v) for v in x]
  return x


def test_parse_arg():
  assert base.parse_arg(None, variants=('full', 'smoke')) == ('full', {})
  assert base.parse_arg('smoke,seed=3,eps=(0.1, 0.2),name=x', variants=('full', 'smoke')) == (
      'smoke', {'seed': 3, 'eps': (0.1, 0.2), 'name': 'x'})
  with pytest.raises(ValueError, match="Unknown variant 'big'"):
    base.parse_arg('big', variants=('full', 'smoke'))
  with pytest.raises(ValueError, match='two variants'):
    base.parse_arg('smoke,full', variants=('full', 'smoke'))


def test_arg_override_of_unknown_key_names_the_field():
  c = main_config.get_config('smoke,table.eps=0.2,seed=3')
  assert (c.table.eps, c.seed, c.variant) == (0.2, 3, 'smoke')
  with pytest.raises(ValueError, match=r"'table\.epss' is not in the 'main' config"):
    main_config.get_config('smoke,table.epss=0.2')
  with pytest.raises(ValueError, match="'nosuch' is not in the 'main' config"):
    main_config.get_config('nosuch=1')


def test_override_helpers_find_the_field_and_take_its_type():
  # base.coerce is what --config overrides and sweep points (launch.points) both apply
  assert base.coerce((0,), [1, 2]) == (1, 2) and isinstance(base.coerce((0,), [1]), tuple)
  assert isinstance(base.coerce(0.5, 1), float) and base.coerce(0.5, True) is True
  assert base.coerce(None, [1]) == [1] and base.coerce(3, 4) == 4
  c = ml_collections.ConfigDict({'a': 1, 'b': {'d': 2}})
  assert base.field_parent(c, ['b', 'd'], KeyError) is c.b
  for parts, missing in ((['z'], (0, ['a', 'b'])), (['b', 'c'], (1, ['d'])),
                         (['a', 'c'], (1, []))):          # the index and the fields there
    with pytest.raises(LookupError) as e:
      base.field_parent(c, parts, lambda i, known: LookupError(i, known))
    assert e.value.args == missing


def test_main_full_config_is_the_committed_one():
  # docs/results/main/results.json records the config that produced it (the old
  # experiments.main get_config('full')): README command (a) must run exactly that.
  with open(os.path.join(ROOT, 'docs', 'results', 'main', 'results.json')) as f:
    committed = json.load(f)['config']
  assert (committed.pop('study'), committed.pop('resources'), committed.pop('seeds')) == (
      'main', {'cpus': 1.0, 'gpus': 0.0}, [])
  new = main_config.get_config().to_dict()
  assert (new.pop('study'), new.pop('resources')) == ('main', {'cpus': 1.0, 'gpus': 0.0})
  assert new.pop('seeds') == ()  # no vectorised seed axis: config.seed alone, as committed
  assert _lists(new) == committed


def test_main_variants_and_hyper():
  assert main_config.get_config('mnist').dataset == 'mnist'
  assert main_config.get_config('cifar10').model == 'resnet'
  assert main_config.get_config('gpu').resources.gpus == 1.0
  with pytest.raises(ValueError, match="Unknown variant 'big'"):
    main_config.get_config('big')

  class H:  # the launch.hyper.Hyper protocol, enough for this config
    sweep = staticmethod(lambda name, values: [{name: v} for v in values])
    vectorized = staticmethod(lambda name, values: [{name: tuple(values)}])

    @staticmethod
    def product(axes):
      out = [{}]
      for a in axes:
        out = [{**o, **p} for o in out for p in a]
      return out

    @staticmethod
    def zip(axes):
      return [dict(kv for part in parts for kv in part.items()) for parts in zip(*axes, strict=True)]

  points = main_config.get_hyper(H())
  assert len(points) == 2  # one per model; 3 seeds (fit_many) x 3 eps (vmap) inside each
  assert {(p['config.seeds'], p['config.eps'], p['config.model']) for p in points} == {
      ((0, 1, 2), (0.0, 0.1, 0.3), m) for m in ('cnn', 'mlp')}
  for p in points:  # each point is a valid override of the smoke config
    c = main_config.get_config('smoke')
    base.apply_overrides(c, {k[len('config.'):]: v for k, v in p.items()})
    assert c.model_kwargs.to_dict() == dict(main_config.MODEL_KWARGS['smoke'][c.model])


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_every_config_file_has_a_smoke_variant_that_names_its_study(path):
  c = run_lib.load_config_file(f'{path}:smoke')
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.variant == 'smoke'
  assert isinstance(c.seed, int)
  assert set(c.resources.keys()) == {'cpus', 'gpus'}
  mod = run_lib.load_study(c.study)
  assert callable(mod.run)
  assert not hasattr(mod, 'FLAGS') and not hasattr(mod, '_define_flags'), mod.__name__


def test_unknown_study_is_a_clear_error(tmp_path):
  c = main_config.get_config('smoke')
  c.study = 'no_such_study'
  with pytest.raises(ValueError, match=r"Unknown study config.study='no_such_study'"):
    run_lib.run_config(c, str(tmp_path))


def test_command_line_typo_names_the_field(tmp_path):
  cmd = [sys.executable, '-m', 'experiments.run',
         '--config=experiments/configs/main.py:smoke', f'--workdir={tmp_path}',
         '--config.table.epss=0.2']
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert p.returncode != 0
  assert "--config.table.epss: field 'table.epss' is not in the 'main' config" in p.stderr
  assert 'Traceback' not in p.stderr


def test_scalars_flatten():
  r = {'config': {'seed': 1}, 'a': 0.5, 'b': {'c': 2}, 'loss': [3.0, 2.0], 'ok': True,
       'rows': [{'value': 0.25, 'name': 'x'}], 'nan': float('nan')}
  assert sorted(run_lib._scalars('', r)) == [
      ('a', 0, 0.5), ('b/c', 0, 2.0), ('loss', 0, 3.0), ('loss', 1, 2.0),
      ('rows/0/value', 0, 0.25)]
