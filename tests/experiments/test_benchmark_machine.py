"""The idle-machine guard every benchmark runs before it times anything."""
import numpy as np
import pytest

from experiments.benchmarks import dp_speed
from experiments.configs.benchmarks import dp_speed as dp_speed_config
from experiments.benchmarks import machine
from jaxsec import io as jio


def _fake_load(monkeypatch, values):
  it = iter(values)
  monkeypatch.setattr(machine, '_load', lambda: [next(it), 0.0, 0.0])
  monkeypatch.setattr(machine.os, 'cpu_count', lambda: 2)


def test_loaded_machine_is_refused_naming_the_load(monkeypatch):
  _fake_load(monkeypatch, [9.38] * 10)
  with pytest.raises(RuntimeError, match=r'load average 9\.38 exceeds 0\.50'):
    machine.require_idle(0.25, wait_s=0.0, poll_s=0.0, name='dp_speed')


def test_waits_until_the_load_drops(monkeypatch):
  _fake_load(monkeypatch, [3.0, 2.0, 0.3, 0.3])
  info = machine.require_idle(0.25, wait_s=60.0, poll_s=0.0)
  assert info['load_average'][0] == 0.3 and info['max_load'] == 0.5


def test_unchecked_run_is_recorded_and_flagged(monkeypatch):
  _fake_load(monkeypatch, [4.0, 4.0])
  info = machine.finish(machine.require_idle(None))
  assert info['loaded'] is True
  assert 'LOADED machine: load 4.0 on 2 CPUs' in machine.loaded_note(info)
  assert machine.loaded_note({'load_average': [0.2], 'cpu_count': 2, 'max_load': 0.5}) == ''
  assert machine.loaded_note({}) == ' (load at start not recorded)'
  # Old attack_speed JSON: only the load at the end (its own threads included).
  assert machine.loaded_note({'load_average': [2.4], 'cpu_count': 2}) == (
      ' (load at start not recorded)')


def test_bad_threshold_is_an_error():
  with pytest.raises(ValueError, match='max_load_per_cpu=-1'):
    machine.threshold(-1)


def test_the_committed_loaded_dp_speed_figure_is_flagged_in_its_headline():
  # The JSON the old README headline (4.62x) came from was recorded at load 9.4 on 2 CPUs.
  r = {'machine': {'load_average': [9.38, 11.0, 13.6], 'load_average_after': [8.6, 10.2, 12.8],
                   'cpu_count': 2, 'jax_backend': 'cpu'},
       'jaxsec_ghost_speedup_vs_opacus_ghost': 4.62, 'jaxsec': {'vmap_s': 9.15},
       'torch': {'opacus_hooks_s': 5.74}}
  rows = dp_speed.headline(r)
  assert 'not a valid figure' in rows[0][1]
  assert rows[1][1].startswith('jaxsec 1.59x slower')
  assert dp_speed_config.get_config('full').max_load_per_cpu == machine.DEFAULT_MAX_LOAD_PER_CPU
  assert dp_speed_config.get_config('smoke').max_load_per_cpu is None


def test_results_of_a_lent_device_variant_go_to_their_own_file(tmp_path):
  for variant, name in (('full', 'b.json'), ('smoke', 'b.json'), ('device', 'b_device.json')):
    assert machine.save_results(str(tmp_path), 'b', variant, {'v': variant}) == {'v': variant}
    assert (tmp_path / name).exists()
  assert jio.read_json(str(tmp_path / 'b.json')) == {'v': 'smoke'}


def test_mode_results_ratio_and_memory_above_the_baseline():
  r = machine.mode_results({'seconds': 1.0, 'peak_rss_mib': 100.0},
                           {'seconds': 2.0, 'peak_rss_mib': 130.0},
                           {'seconds': 5.0, 'peak_rss_mib': 110.0})
  assert r['speedup'] == 2.5
  assert (r['fit_many_extra_rss_mib'], r['sequential_extra_rss_mib']) == (30.0, 10.0)


def test_synthetic_train_images_are_seeded_noise_of_fmnist_shape():
  x, y = machine.train_images('synthetic', 5, 3)
  x2, _ = machine.train_images('synthetic', 5, 3)
  assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
  assert np.array_equal(x, x2) and 0.0 <= x.min() and x.max() < 1.0 and set(y) <= set(range(10))
