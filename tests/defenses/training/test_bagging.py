"""Bagging's certified poisoning size (Jia, Cao & Gong 2021) against the authors' code.

``_authors_check`` / ``_authors_radius`` transcribe ``Check_condition`` and
``CertifyRadiusBS`` of the authors' ``certify.py`` (scalar, binary search up to 1500);
``_authors_bounds`` transcribes ``multi_ci`` + the clamp in its main loop (statsmodels'
``proportion_confint(method='beta')`` is scipy's beta quantiles).
"""
import math

import jax
import numpy as np
import optax
import pytest
from scipy import stats

from jaxsec import models
from jaxsec import train as train_lib
from jaxsec.defenses.training import bagging


def _cmp(r, nprime, k, n, pl, ps):
  return (nprime / n) ** k - 2 * ((nprime - r) / n) ** k + 1 - pl + ps


def _authors_check(r, k, n, pl, ps):
  t = r / (1.0 - np.power(0.5, 1.0 / (k - 1.0)))
  if t <= n:
    v = _cmp(r, int(n), k, n, pl, ps)
  elif t >= n + r:
    v = _cmp(r, int(n + r), k, n, pl, ps)
  else:
    v = max(_cmp(r, np.ceil(t), k, n, pl, ps), _cmp(r, np.floor(t), k, n, pl, ps))
  return v < 0


def _authors_radius(pl, ps, k, n):
  if pl <= ps:
    return -1
  low, high = 0, 1500
  while low <= high:
    radius = math.ceil((low + high) / 2.0)
    if _authors_check(radius, k, n, pl, ps):
      low = radius + 0.1
    else:
      high = radius - 1
  radius = math.floor(low)
  assert _authors_check(radius, k, n, pl, ps)
  return radius


def _authors_bounds(freq, alpha):
  m, l = freq.sum(), len(freq)
  ci = []
  for c in freq:
    c = min(max(c, 1e-10), m - 1e-10)
    a = alpha * 2.0 / l       # proportion_confint(alpha=a, method='beta'): two-sided a
    ci.append((stats.beta.ppf(a / 2, c, m - c + 1), stats.beta.ppf(1 - a / 2, c + 1, m - c)))
  ci = np.array(ci)
  ls = int(np.argmax(freq))
  pa = ci[ls][0]
  pb = np.clip(ci[:, 1], -1, 1 - pa)
  pb[ls] = -1
  return ls, pa, pb.max()


def test_radius_equals_the_authors_search():
  rng = np.random.default_rng(0)
  pa = rng.uniform(0.3, 1.0, 300)
  pb = np.minimum(rng.uniform(0.0, 0.7, 300), 1 - pa)
  for n, k in ((60000, 30), (60000, 100), (5000, 50)):
    ours = bagging.certified_radius(pa, pb, n=n, subsample_size=k)
    ref = np.array([_authors_radius(a, b, k, n) for a, b in zip(pa, pb, strict=True)])
    ref_capped = np.where(ours > 1500, ours, ref)       # the authors stop searching at 1500
    np.testing.assert_array_equal(ours, ref_capped)
    assert (ours == -1).sum() == (pa <= pb).sum() > 0


def test_radius_closed_form_at_n_prime_equal_n():
  # k = 1: n* = inf, so the worst n' is n + r: (n+r)/n - 2n/n + 1 - pA + pB < 0
  # <=> r < n (pA - pB) = 700.5 and 103.7 here: the largest integers are 700 and 103.
  pa, pb, n = np.array([0.8005, 0.5537]), np.array([0.1, 0.45]), 1000
  np.testing.assert_array_equal(bagging.certified_radius(pa, pb, n=n, subsample_size=1),
                                [700, 103])


def test_bounds_equal_the_authors_and_certify_runs_end_to_end():
  rng = np.random.default_rng(1)
  counts = rng.multinomial(1000, [0.7, 0.2, 0.05, 0.05], size=20).astype(np.int64)
  counts[0] = [1000, 0, 0, 0]
  pred, pa, pb = bagging.probability_bounds(counts, alpha=0.001)
  for i, row in enumerate(counts):
    ls, a, b = _authors_bounds(row, 0.001)
    assert pred[i] == ls
    np.testing.assert_allclose([pa[i], pb[i]], [a, b], rtol=1e-12)
  cert = bagging.certify(counts, n=60000, subsample_size=30, alpha=0.001)
  np.testing.assert_array_equal(cert.radius, bagging.certified_radius(pa, pb, n=60000,
                                                                      subsample_size=30))
  assert cert.radius[0] >= cert.radius[1:].max()        # a unanimous vote certifies the most


def test_bad_input_is_named():
  with pytest.raises(ValueError, match='counts'):
    bagging.probability_bounds(np.ones((3, 4)), alpha=0.01)      # float counts
  with pytest.raises(ValueError, match='alpha'):
    bagging.probability_bounds(np.ones((3, 4), np.int32), alpha=1.5)


def test_train_gives_model_m_exactly_its_bag(monkeypatch):
  x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
  y = (np.arange(40) % 2).astype(np.int32)
  seen = {}
  real = train_lib.fit_many

  def spy(apply_fn, params, xs, ys, *, masks, **kw):
    seen.update(xs=np.asarray(xs), ys=np.asarray(ys), masks=masks)
    return real(apply_fn, params, xs, ys, masks=masks, **kw)
  monkeypatch.setattr(train_lib, 'fit_many', spy)
  model = models.get('mlp', hidden=(4,), num_classes=2)
  ens = bagging.train(model.apply, lambda k: models.init(model, k, (1, 3)), x, y,
                      num_models=3, subsample_size=8, optimizer=optax.sgd(0.1),
                      key=jax.random.key(0), num_epochs=2, num_classes=2)
  assert ens.bags.shape == (3, 8) and len(np.unique(ens.bags)) < 24   # drawn with repeats
  for m in range(3):
    np.testing.assert_array_equal(seen['xs'][seen['masks'][m]], x[ens.bags[m]])
    np.testing.assert_array_equal(seen['ys'][seen['masks'][m]], y[ens.bags[m]])
  assert all(l.shape[0] == 3 for l in jax.tree_util.tree_leaves(ens.params))
