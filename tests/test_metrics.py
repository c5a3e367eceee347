"""Metrics on constructed score distributions with known TPR / FPR, and PSNR / SSIM."""
import numpy as np
import pytest
from scipy import stats as sps

from jaxsec import metrics


def _brute_roc(scores, labels):
  """Every threshold t in (+inf, distinct scores desc): counts of score >= t."""
  ts = np.r_[np.inf, np.unique(scores)[::-1]]
  tpr = np.array([np.mean(scores[labels] >= t) for t in ts])
  fpr = np.array([np.mean(scores[~labels] >= t) for t in ts])
  return fpr, tpr, ts


def _hand_case():
  # Non-members score 0..999; members: 10 at 5000, 20 at 999.5, 970 at -1 (below all).
  non = np.arange(1000, dtype=float)
  mem = np.r_[np.full(10, 5000.0), np.full(20, 999.5), np.full(970, -1.0)]
  scores = np.r_[mem, non]
  labels = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
  return scores, labels


def test_roc_matches_brute_force_with_ties():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 7, 60).astype(float)   # many ties
  labels = rng.random(60) < 0.4
  c = metrics.roc_curve(scores, labels)
  fpr, tpr, ts = _brute_roc(scores, labels)
  np.testing.assert_allclose(c.fpr, fpr)
  np.testing.assert_allclose(c.tpr, tpr)
  np.testing.assert_array_equal(c.thresholds, ts)


def test_auc_is_mann_whitney_with_half_ties():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 5, 80).astype(float)
  labels = rng.random(80) < 0.5
  pos, neg = scores[labels], scores[~labels]
  mw = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
  assert metrics.auc(scores, labels) == pytest.approx(mw, abs=1e-12)


def test_hand_computed_tpr_at_fpr_conventions():
  scores, labels = _hand_case()
  # FPR 0 -> TPR 30/1000 (threshold 999.5); FPR 0.001 (threshold 999) still 0.03;
  # FPR 0.002 (threshold 998) still 0.03 since the remaining members are at -1.
  assert metrics.tpr_at_fpr(scores, labels, 0.0) == pytest.approx(0.03)
  assert metrics.tpr_at_fpr(scores, labels, 0.001) == pytest.approx(0.03)
  # LiRA code: fpr < 0.001 strictly -> FPR 0 point.
  assert metrics.tpr_at_fpr(scores, labels, 0.001, convention='lt') == pytest.approx(0.03)
  assert metrics.tpr_at_fpr(scores, labels, 0.0, convention='lt') == 0.0
  # Balanced accuracy: best is threshold 999.5: (0.03 + 1) / 2; at threshold -1 all -> 0.5.
  assert metrics.balanced_accuracy(scores, labels) == pytest.approx(0.515)
  assert metrics.membership_advantage(scores, labels) == pytest.approx(0.03)


def test_le_vs_lt_vs_interpolate_differ_where_they_should():
  # non-members 0..9 ; members: one at 9.5, one at 8.5, rest below everything.
  non = np.arange(10, dtype=float)
  mem = np.r_[9.5, 8.5, np.full(8, -5.0)]
  scores, labels = np.r_[mem, non], np.r_[np.ones(10, bool), np.zeros(10, bool)]
  # ROC: (0,0) (0,.1)@9.5 (.1,.1)@9 (.1,.2)@8.5 (.2,.2)@8 ...
  assert metrics.tpr_at_fpr(scores, labels, 0.1) == pytest.approx(0.2)
  assert metrics.tpr_at_fpr(scores, labels, 0.1, convention='lt') == pytest.approx(0.1)
  assert metrics.tpr_at_fpr(scores, labels, 0.05) == pytest.approx(0.1)
  # interpolation between (0.1, 0.2) and (0.2, 0.2) at 0.15 -> 0.2; between (0, .1) and
  # (0.1, .1) at .05 -> .1; 'interpolate' >= 'le' always.
  assert metrics.tpr_at_fpr(scores, labels, 0.15, convention='interpolate') == \
      pytest.approx(0.2)
  for f in np.linspace(0, 1, 23):
    assert (metrics.tpr_at_fpr(scores, labels, f, convention='interpolate') >=
            metrics.tpr_at_fpr(scores, labels, f) - 1e-12)


def test_gaussian_scores_known_tpr_fpr_auc():
  # Deterministic quantile "samples": members N(1, 1), non-members N(0, 1).
  n = 200_000
  q = sps.norm.ppf((np.arange(n) + 0.5) / n)
  scores = np.r_[q + 1.0, q]
  labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
  rep = metrics.membership_report(scores, labels, fprs=(0.001, 0.01, 0.1))
  for a in (0.001, 0.01, 0.1):
    want = 1 - sps.norm.cdf(sps.norm.ppf(1 - a) - 1.0)
    assert rep[f'tpr_at_{a:g}_fpr'] == pytest.approx(want, abs=2e-4)
  assert rep['auc'] == pytest.approx(sps.norm.cdf(1 / np.sqrt(2)), abs=1e-4)
  assert rep['balanced_accuracy'] == pytest.approx(sps.norm.cdf(0.5), abs=1e-4)
  assert rep['advantage'] == pytest.approx(2 * sps.norm.cdf(0.5) - 1, abs=2e-4)


def test_matches_sklearn():
  skm = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(3)
  scores = np.round(rng.normal(size=300), 1)
  labels = rng.random(300) < 0.3
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  c = metrics.roc_curve(scores, labels)
  np.testing.assert_allclose(c.fpr, fpr)
  np.testing.assert_allclose(c.tpr, tpr)
  assert metrics.auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores))


def test_perfect_and_inverted_attacks():
  labels = np.r_[np.ones(50, bool), np.zeros(50, bool)]
  perfect = np.r_[np.ones(50), np.zeros(50)]
  assert metrics.auc(perfect, labels) == 1.0
  assert metrics.tpr_at_fpr(perfect, labels, 0.0) == 1.0
  assert metrics.auc(-perfect, labels) == 0.0
  assert metrics.membership_advantage(-perfect, labels) == 0.0
  assert metrics.auc(np.zeros(100), labels) == 0.5


def test_threshold_metrics():
  labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
  pred = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
  m = metrics.threshold_metrics(pred, labels)
  assert m['tpr'] == 0.75 and m['fpr'] == 0.25 and m['precision'] == 0.75
  assert m['balanced_accuracy'] == 0.75 and m['advantage'] == 0.5


def test_bad_inputs():
  with pytest.raises(ValueError, match='labels'):
    metrics.roc_curve(np.zeros(3), np.array([1, 2, 0]))
  with pytest.raises(ValueError, match='at least one'):
    metrics.roc_curve(np.zeros(3), np.ones(3, bool))
  with pytest.raises(ValueError, match='target_fpr'):
    metrics.tpr_at_fpr(np.zeros(2), np.array([0, 1]), 1.5)
  with pytest.raises(ValueError, match='convention'):
    metrics.tpr_at_fpr(np.zeros(2), np.array([0, 1]), 0.1, convention='x')


def test_agreement():
  a = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
  assert metrics.agreement(a, np.array([1, 0, 0])) == pytest.approx(2 / 3)
  assert metrics.agreement(np.array([[1.0], [-1.0]]), np.array([1, 0])) == 1.0


def test_psnr_known_value():
  x = np.zeros((2, 8, 8, 1), np.float32)
  y = x + 0.1
  np.testing.assert_allclose(metrics.psnr(x, y), [20.0, 20.0], rtol=1e-5)


def _ssim_brute(a, b, k1=0.01, k2=0.03, L=1.0):
  g = metrics.gaussian_window(11, 1.5).astype(np.float64)
  w = np.outer(g, g)
  h, wd = a.shape
  vals = []
  for i in range(h - 10):
    for j in range(wd - 10):
      pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
      ma, mb = (w * pa).sum(), (w * pb).sum()
      va = (w * (pa - ma) ** 2).sum()
      vb = (w * (pb - mb) ** 2).sum()
      cab = (w * (pa - ma) * (pb - mb)).sum()
      c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
      vals.append((2 * ma * mb + c1) * (2 * cab + c2) /
                  ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
  return np.mean(vals)


def test_ssim_window_and_brute_force():
  g = metrics.gaussian_window(11, 1.5)
  assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
  assert g[5] / g[4] == pytest.approx(np.exp(1 / (2 * 1.5 ** 2)), rel=1e-5)
  rng = np.random.default_rng(0)
  a = rng.random((14, 13))
  b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
  got = float(metrics.ssim(a[..., None].astype(np.float32), b[..., None].astype(np.float32)))
  assert got == pytest.approx(_ssim_brute(a, b), abs=2e-5)


def test_ssim_properties():
  rng = np.random.default_rng(1)
  x = rng.random((3, 16, 16, 2)).astype(np.float32)
  y = rng.random((3, 16, 16, 2)).astype(np.float32)
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-5)
  np.testing.assert_allclose(metrics.ssim(x, y), metrics.ssim(y, x), atol=1e-6)
  per_ch = [metrics.ssim(x[..., c:c + 1], y[..., c:c + 1]) for c in range(2)]
  np.testing.assert_allclose(metrics.ssim(x, y), np.mean(per_ch, 0), atol=1e-6)
  # Constant images a, b: only the luminance term remains.
  a, b = 0.3, 0.6
  c1 = 0.01 ** 2
  got = metrics.ssim(np.full((12, 12, 1), a, np.float32), np.full((12, 12, 1), b, np.float32))
  assert float(got) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)
  with pytest.raises(ValueError, match='window_size'):
    metrics.ssim(np.zeros((5, 5, 1)), np.zeros((5, 5, 1)))
