"""LiRA: the score is the Gaussian log likelihood ratio, monotone in it, and reduces to the
global threshold attack with one global Gaussian pair of fixed variance."""
import numpy as np
import pytest
from scipy import stats as sps

from jaxsec import metrics
from jaxsec.attacks import privacy as priv


def _synthetic(num_models=16, n=200, seed=0):
  rng = np.random.default_rng(seed)
  in_mask = np.zeros((num_models, n), bool)
  for i in range(n):
    in_mask[rng.permutation(num_models)[:num_models // 2], i] = True
  base = rng.normal(0, 2, n)             # per-example difficulty
  gap = rng.uniform(0.5, 3, n)           # per-example memorisation
  phi = base[None] + gap[None] * in_mask + rng.normal(0, 0.5, (num_models, n))
  return phi, in_mask, base, gap, rng


def test_online_score_is_log_likelihood_ratio():
  phi, in_mask, *_ = _synthetic()
  st = priv.lira_fit(phi, in_mask, location='mean')
  t = np.linspace(-5, 5, 200)
  s = priv.lira_online_scores(t, st)
  mu_in = np.array([phi[in_mask[:, i], i].mean() for i in range(200)])
  sd_in = np.array([phi[in_mask[:, i], i].std() for i in range(200)])
  mu_out = np.array([phi[~in_mask[:, i], i].mean() for i in range(200)])
  sd_out = np.array([phi[~in_mask[:, i], i].std() for i in range(200)])
  want = sps.norm.logpdf(t, mu_in, sd_in) - sps.norm.logpdf(t, mu_out, sd_out)
  np.testing.assert_allclose(s, want, rtol=1e-9, atol=1e-9)
  st_med = priv.lira_fit(phi, in_mask)
  np.testing.assert_allclose(st_med.mean_in[:, 0],
                             [np.median(phi[in_mask[:, i], i]) for i in range(200)])


def test_score_monotone_in_likelihood_ratio():
  phi, in_mask, *_ = _synthetic()
  st = priv.lira_fit(phi, in_mask)
  # For one example, sweep its observed confidence: score order == LR order.
  i = 3
  grid = np.linspace(-8, 8, 400)
  scores = [priv.lira_online_scores(np.full(200, g), st)[i] for g in grid]
  lr = sps.norm.pdf(grid, st.mean_in[i, 0], st.std_in[i, 0]) / sps.norm.pdf(
      grid, st.mean_out[i, 0], st.std_out[i, 0])
  np.testing.assert_array_equal(np.argsort(scores, kind='stable'),
                                np.argsort(np.log(lr), kind='stable'))
  # Offline one-sided: increasing in phi for every example.
  lo = priv.lira_offline_scores(np.full(200, -1.0), priv.lira_fit(phi, in_mask, online=False))
  hi = priv.lira_offline_scores(np.full(200, 1.0), priv.lira_fit(phi, in_mask, online=False))
  assert np.all(hi > lo)


def test_reduces_to_global_threshold_with_fixed_global_variance():
  phi, in_mask, _, _, rng = _synthetic(seed=1)
  target_in = rng.random(200) < 0.5
  target_phi = phi[0] + rng.normal(0, 0.1, 200)
  global_roc = metrics.roc_curve(target_phi, target_in)   # threshold on phi == on loss
  s = priv.lira_scores(phi, in_mask, target_phi, per_example=False, fix_variance=True)
  c = metrics.roc_curve(s, target_in)
  np.testing.assert_allclose(c.fpr, global_roc.fpr)
  np.testing.assert_allclose(c.tpr, global_roc.tpr)
  # One shadow model (all examples OUT), fixed variance, one global Gaussian: offline LiRA
  # is the global threshold too.
  s1 = priv.lira_scores(phi[:1], np.zeros((1, 200), bool), target_phi, online=False,
                        per_example=False, fix_variance=True)
  c1 = metrics.roc_curve(s1, target_in)
  np.testing.assert_allclose(c1.tpr, global_roc.tpr)
  # ... and with a given fixed variance and a constant shadow output (one Gaussian).
  s3 = priv.lira_scores(np.full((1, 200), 0.7), np.zeros((1, 200), bool), target_phi,
                        online=False, fixed_std=1.5)
  np.testing.assert_allclose(metrics.roc_curve(s3, target_in).tpr, global_roc.tpr)
  # Per example, one shadow model of fixed variance: ranks phi - phi_shadow (calibration).
  s2 = priv.lira_scores(phi[:1], np.zeros((1, 200), bool), target_phi, online=False,
                        fixed_std=1.0)
  np.testing.assert_array_equal(np.argsort(s2), np.argsort(target_phi - phi[0]))


def test_lira_beats_global_threshold_on_heterogeneous_examples():
  phi, in_mask, base, gap, rng = _synthetic(num_models=32, n=2000, seed=2)
  target_in = rng.random(2000) < 0.5
  target_phi = base + gap * target_in + rng.normal(0, 0.5, 2000)
  s = priv.lira_scores(phi, in_mask, target_phi)
  assert metrics.auc(s, target_in) > metrics.auc(target_phi, target_in) + 0.1
  assert metrics.tpr_at_fpr(s, target_in, 0.01) > 3 * metrics.tpr_at_fpr(
      target_phi, target_in, 0.01)
  # Two-sided offline (official code) and augmentation axis shapes work.
  s_off = priv.lira_scores(phi, in_mask, target_phi, online=False, offline_test='two_sided')
  assert s_off.shape == (2000,)
  s_aug = priv.lira_scores(np.stack([phi, phi], -1), in_mask,
                           np.stack([target_phi, target_phi], -1))
  np.testing.assert_allclose(s_aug, s)


def test_fit_errors():
  phi = np.zeros((4, 3))
  with pytest.raises(ValueError, match='IN for no shadow'):
    priv.lira_fit(phi + np.arange(4)[:, None], np.zeros((4, 3), bool))
  with pytest.raises(ValueError, match='in_mask'):
    priv.lira_fit(phi, np.zeros((4, 2), bool))
  with pytest.raises(ValueError, match='non-finite'):
    priv.lira_fit(np.full((2, 2), np.inf), np.eye(2, dtype=bool))
