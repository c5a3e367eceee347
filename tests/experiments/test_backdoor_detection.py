"""Smoke run of the backdoor detection / repair study (experiments/backdoor_detection.py):
BadNets and the clean-label backdoor; the clean-label attacker's adversarially trained CNN
(variant turner_at)."""
import os

import jax
import numpy as np
import pytest

from experiments import backdoor_detection
from experiments import defense_common as dc
from experiments.configs import backdoor_detection as backdoor_detection_config
from jaxsec import io as jio
from jaxsec import models
from tests.conftest import requires_fashion_mnist
from tests.experiments import run_smoke


@requires_fashion_mnist
def test_backdoor_detection_smoke(tmp_path):
  cfg, _, r = run_smoke(backdoor_detection, backdoor_detection_config, tmp_path)
  assert r['name'] == 'backdoor_detection' and r['variant'] == 'smoke'
  assert list(r['attacks']) == ['badnets', 'clean_label']
  bad, cl = r['attacks']['badnets']['poison'], r['attacks']['clean_label']['poison']
  assert bad['n_poison'] == round(cfg.poison_fraction * cfg.n_train)
  assert bad['labels_changed'] == bad['n_poison']            # BadNets relabels
  assert cl['n_poison'] == round(cfg.cl_poison_fraction * cfg.n_train)
  assert cl['labels_changed'] == 0                            # clean-label keeps every label
  assert cl['hardening_linf'] <= cfg.cl_eps + 1e-6 and 0.0 <= cl['hardening_success'] <= 1.0
  assert cl['surrogate'] == 'standard' and 'standard_surrogate_robustness' not in cl
  rob = cl['surrogate_robustness']
  assert rob['n'] == min(cfg.cl_at_eval_n, cfg.n_test - cfg.n_defense)
  assert 0.0 <= rob['pgd_accuracy'] <= rob['clean_accuracy'] <= 1.0
  for a in r['attacks'].values():
    d = a['detection']
    for det in ('activation_clustering', 'spectral_signatures', 'strip'):
      assert 0.0 <= d[det]['auc'] <= 1.0
    assert 0.0 <= d['strip']['tpr'] <= 1.0 and 0.0 <= d['strip']['fpr'] <= 1.0
    ncr = d['neural_cleanse']
    assert len(ncr['l1']) == len(ncr['anomaly_index']) == 10
    l1 = np.array(ncr['l1'])
    med = np.median(l1)
    np.testing.assert_allclose(ncr['anomaly_index'],
                               (med - l1) / (1.4826 * np.median(np.abs(l1 - med))))
    assert np.array(ncr['mask']).shape == (28, 28)
    for m in [a['before']] + [a['repair'][k] for k in ('pruning', 'fine_pruning',
                                                        'nc_unlearning')]:
      assert 0.0 <= m['clean_accuracy'] <= 1.0 and 0.0 <= m['attack_success'] <= 1.0
  md = backdoor_detection.render_markdown(r)
  assert 'Backdoor detection and repair' in md and md.count('| STRIP') == 2
  assert 'Clean-label backdoor' in md and '0 labels changed' in md
  assert "The attacker's (standard) CNN: clean accuracy" in md
  assert backdoor_detection.headline(r) == []          # the smoke variant has no README row
  # the turner_at variant's JSON (clean-label only, adversarial surrogate) renders too
  p_at = {**cl, 'surrogate': 'adversarial', 'standard_surrogate_robustness': rob}
  r_at = {**r, 'variant': 'turner_at',
          'config': {**r['config'], 'attacks': ['clean_label'], 'cl_surrogate': 'adversarial'},
          'attacks': {'clean_label': {**r['attacks']['clean_label'], 'poison': p_at}}}
  md_at = backdoor_detection.render_markdown(r_at)
  assert 'backdoor_detection.py:turner_at' in md_at and md_at.count('| STRIP') == 1
  assert 'adversarially trained attacker CNN' in md_at and '(the standard CNN: clean' in md_at
  assert len(backdoor_detection.headline({**r, 'variant': 'full'})) == 2
  # resume: the stage cache gives the same numbers without recomputing
  backdoor_detection.run(cfg, str(tmp_path))
  again = jio.read_json(os.path.join(tmp_path, 'backdoor_detection.json'))
  for k, a in r['attacks'].items():
    assert again['attacks'][k]['detection'] == a['detection']
    assert again['attacks'][k]['repair'] == a['repair']


def _robust_and_brittle(n, seed):
  """Images whose label is carried by a robust feature (a bright bar, +0.3 on 40 pixels, in
  uniform noise of width 0.6) and by a brittle one (a +-0.05 pattern per class on every
  pixel, which an L_inf perturbation of 0.1 overwrites): the standard model leans on the
  brittle one (Ilyas et al. 2019), adversarial training on the bar."""
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % 10).astype(np.int32)
  patterns = np.random.default_rng(99).choice([-1.0, 1.0], size=(10, 28, 28, 1))
  x = 0.5 + 0.6 * (rng.random((n, 28, 28, 1)) - 0.5) + 0.05 * patterns[y]
  for c in range(10):
    x[y == c, 2 * c + 4:2 * c + 6, 4:24] += 0.3
  return np.clip(x, 0, 1).astype(np.float32), y


def test_adversarial_surrogate_is_robust_and_hardens_the_poisons(tmp_path):
  """cl_surrogate='adversarial': the attacker's model is adversarially trained (its PGD
  accuracy at cl_at_eps far above the standard one's, trained from the same initialisation),
  PGD hardens the target-class poisons against it, and the summary reports both models."""
  cfg = backdoor_detection_config.get_config(
      'smoke,cl_surrogate=adversarial,epochs=2,learning_rate=0.01')
  x, y = _robust_and_brittle(1024, 0)
  xe, ye = _robust_and_brittle(200, 1)
  model = models.get('logreg')         # a linear model: seconds, and a clear contrast
  _, y_p, poison, p = backdoor_detection._poison(cfg, 'clean_label', model, x, y,
                                                 jax.random.key(0), str(tmp_path), (xe, ye))
  assert p['surrogate'] == 'adversarial' and np.array_equal(y_p, y)
  assert int(poison.sum()) == round(cfg.cl_poison_fraction * y.size)
  assert p['hardening_linf'] <= cfg.cl_eps + 1e-6
  at, std = p['surrogate_robustness'], p['standard_surrogate_robustness']
  assert at['eps'] == std['eps'] == cfg.cl_at_eps and at['n'] == std['n'] == 200
  assert std['clean_accuracy'] > 0.8 and at['clean_accuracy'] > 0.8
  assert std['pgd_accuracy'] < 0.3 and at['pgd_accuracy'] > std['pgd_accuracy'] + 0.5
  line = backdoor_detection._surrogate_line(cfg.to_dict(), p)
  assert 'fast adversarial training (FGSM from a random start, step 0.125' in line
  assert 'against an adversarially trained CNN' in \
      backdoor_detection._poison_line(cfg.to_dict(), p)


def test_turner_at_runs_the_clean_label_backdoor_into_its_own_json(tmp_path, monkeypatch):
  """`:turner_at --workdir=docs/results` writes backdoor_detection_turner_at.json (the
  committed backdoor_detection.json stays) and plants only the clean-label backdoor, with
  the adversarial surrogate; bad surrogate settings are refused before any work."""
  z = np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32)
  monkeypatch.setattr(dc, 'load_fmnist', lambda *a: z + z)
  seen = []

  def fake_backdoor(cfg, attack, model, data, key, scratch, cache, out, save):
    seen.append((attack, cfg.cl_surrogate))
    save()
  monkeypatch.setattr(backdoor_detection, '_backdoor', fake_backdoor)
  cfg = backdoor_detection_config.get_config('turner_at')
  r = backdoor_detection.run(cfg, str(tmp_path))
  assert seen == [('clean_label', 'adversarial')] and list(r['attacks']) == ['clean_label']
  assert jio.read_json(str(tmp_path / 'backdoor_detection_turner_at.json'))['variant'] == \
      'turner_at'
  assert not (tmp_path / 'backdoor_detection.json').exists()
  for arg, match in (('turner_at,cl_surrogate=robust', 'cl_surrogate'),
                     ('turner_at,cl_at_method=free', 'cl_at_method'),
                     ('turner_at,cl_hardening=interpolation', 'cl_hardening')):
    with pytest.raises(ValueError, match=match):
      backdoor_detection.run(backdoor_detection_config.get_config(arg), str(tmp_path))
