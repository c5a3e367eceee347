"""Smoke run of the Witches' Brew study (experiments/witches_brew.py)."""
import numpy as np

from experiments import witches_brew
from experiments.configs import witches_brew as witches_brew_config
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_witches_brew_smoke(tmp_path):
  cfg, _, r = run_smoke(witches_brew, witches_brew_config, tmp_path)
  assert r['name'] == 'witches_brew' and r['variant'] == 'smoke'
  assert r['setup']['n_poison'] == round(cfg.fraction * cfg.n_train)
  assert len(r['targets']) == cfg.num_targets
  for t in r['targets']:
    assert t['adversarial_label'] != t['true_label']
    assert (len(t['success']) == len(t['victim_accuracy'])
            == len(t['clean_control_adversarial_probability']) == cfg.num_seeds)
    assert t['max_linf'] <= cfg.eps + 1e-6
    assert t['passenger_loss'] == min(t['restart_losses'])
    assert all(0.0 <= p <= 1.0 for p in t['adversarial_probability'])
    # success is read off the same victims' predictions
    assert all((p > 0.5) <= s for p, s in zip(t['adversarial_probability'], t['success'],
                                             strict=True))
  s = r['summary']
  assert np.isclose(s['poison_success'], np.mean([t['success'] for t in r['targets']]))
  assert 0.0 <= s['victim_accuracy_clean'] <= 1.0
  md = witches_brew.render_markdown(r)
  assert "Witches' Brew" in md and md.count('| ') > cfg.num_targets
  assert witches_brew.headline(r) == [] and len(witches_brew.headline({**r, 'variant': 'full'})) == 1


def test_a_named_variant_writes_its_own_json(tmp_path, monkeypatch):
  """witches_brew_runner_up.json is what `:runner_up --workdir=docs/results` writes."""
  import json
  from experiments import defense_common as dc
  monkeypatch.setattr(dc, 'load_fmnist', lambda *a: (None,) * 4)
  for variant, stem in (('runner_up', 'witches_brew_runner_up'), ('smoke', 'witches_brew')):
    cfg = witches_brew_config.get_config(variant)
    *_, results, save = dc.start_study(cfg, str(tmp_path), 'witches_brew', 'targets',
                                       variant_file=True)
    save()
    with open(tmp_path / f'{stem}.json') as f:
      assert json.load(f)['variant'] == variant
  assert not (tmp_path / 'witches_brew_full.json').exists()
