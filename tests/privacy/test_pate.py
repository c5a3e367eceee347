"""PATE: aggregation on constructed vote histograms and its RDP bounds vs closed forms."""
from __future__ import annotations

import functools
import itertools
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from jaxsec.privacy import accounting, pate


def test_vote_histogram_counts():
  preds = jnp.array([[0, 1, 2], [0, 2, 2], [1, 2, 2]], jnp.int32)   # [T=3, Q=3]
  np.testing.assert_array_equal(pate.vote_histogram(preds, 3),
                                [[2, 1, 0], [0, 1, 2], [0, 0, 3]])


def test_aggregators_on_constructed_histograms():
  votes = jnp.array([[50., 0, 0], [0, 30, 20], [10, 10, 30]])
  np.testing.assert_array_equal(pate.gnmax(votes, jax.random.key(0), sigma=1e-3), [0, 1, 2])
  np.testing.assert_array_equal(pate.lnmax(votes, jax.random.key(0), gamma=1e3), [0, 1, 2])
  ans = pate.confident_gnmax(votes, jax.random.key(1), threshold=45., sigma1=1e-3,
                             sigma2=1e-3)
  np.testing.assert_array_equal(ans.answered, [True, False, False])
  np.testing.assert_array_equal(ans.labels, [0, -1, -1])


def test_lnmax_logq_is_exact_for_two_classes_and_matches_frequency():
  # K = 2: P[argmax != i*] = P[L1 - L0 > gap] = exp(-g gap) (1 + g gap / 2) / 2 exactly,
  # which is Papernot 2017 Lemma 4's bound.
  gamma, gap = 0.5, 3.0
  votes = np.array([[10 + gap, 10.]])
  q = math.exp(pate.lnmax_logq(votes, gamma)[0])
  assert q == pytest.approx(0.5 * math.exp(-gamma * gap) * (1 + gamma * gap / 2))
  n = 40000
  labels = pate.lnmax(jnp.tile(jnp.asarray(votes), (n, 1)), jax.random.key(2), gamma=gamma)
  freq = float(jnp.mean(labels != 0))
  assert abs(freq - q) < 4 * math.sqrt(q * (1 - q) / n)


def test_gnmax_logq_is_exact_for_two_classes():
  sigma, gap = 4.0, 5.0
  q = math.exp(pate.gnmax_logq(np.array([[gap, 0.]]), sigma)[0])
  assert q == pytest.approx(stats.norm.sf(gap / (math.sqrt(2) * sigma)))
  # capped at 1 - 1/K on ties
  assert math.exp(pate.gnmax_logq(np.array([[3., 3., 3.]]), sigma)[0]) == pytest.approx(2 / 3)


def _bernoulli_renyi(loga, loga2, lam):
  """D_lam(Bern(a) || Bern(a2)) from log a, log a2 (a = P[output != plurality])."""
  t1 = lam * np.log1p(-np.exp(loga)) + (1 - lam) * np.log1p(-np.exp(loga2))
  t2 = lam * loga + (1 - lam) * loga2
  return float(np.logaddexp(t1, t2)) / (lam - 1)


def test_data_dependent_gnmax_rdp_upper_bounds_true_divergence():
  # Two classes: the output is Bernoulli; neighbours move the gap by +-2 (one teacher
  # switches). Theorem 6 must upper-bound the exact Renyi divergence, and be far below
  # the data-independent lambda / sigma^2 for a strong consensus.
  sigma = 10.0
  orders = np.array([2., 5., 10., 20.])
  for gap in [30.0, 60.0, 100.0, 150.0]:
    logq = pate.gnmax_logq(np.array([[gap, 0.]]), sigma)[0]
    bound = pate.gnmax_rdp_data_dependent(logq, sigma, orders)
    la = stats.norm.logsf(gap / (math.sqrt(2) * sigma))
    assert la == pytest.approx(logq)
    for g2 in (gap - 2, gap + 2):
      la2 = stats.norm.logsf(g2 / (math.sqrt(2) * sigma))
      for lam, b in zip(orders, bound, strict=True):
        true = _bernoulli_renyi(la, la2, lam)
        assert 0 <= true <= b * (1 + 1e-9) + 1e-300
    assert np.all(bound <= orders / sigma ** 2)
  logq = pate.gnmax_logq(np.array([[150., 0.]]), sigma)[0]
  assert pate.gnmax_rdp_data_dependent(logq, sigma, orders)[0] < 1e-3 * 2 / sigma ** 2


def test_theorem6_is_no_better_than_data_independent_without_consensus():
  sigma = 10.0
  logq = pate.gnmax_logq(np.array([[5., 5.]]), sigma)[0]
  orders = np.array([2., 10.])
  np.testing.assert_allclose(pate.gnmax_rdp_data_dependent(logq, sigma, orders),
                             orders / sigma ** 2)


def test_analyze_gnmax_matches_dp_accounting_and_data_dependent_is_smaller():
  sigma, q = 40.0, 100
  votes = np.zeros((q, 10))
  votes[:, 0] = 240
  votes[:, 1] = 10
  acc = pate.analyze(votes, mechanism='gnmax', sigma=sigma, delta=1e-5)
  ev = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2)),
                                         q)
  assert acc.epsilon == pytest.approx(accounting.epsilon(ev, 1e-5, accountant='rdp'))
  # data-independent RDP of GNMax is lambda / sigma^2 per query (PATE 2018 Prop. 8)
  e_closed, _ = accounting.epsilon_from_rdp(pate.ORDERS, q * pate.ORDERS / sigma ** 2, 1e-5)
  assert acc.epsilon == pytest.approx(e_closed, rel=1e-3)
  assert acc.epsilon_data_dependent < 0.2 * acc.epsilon


def test_analyze_confident_gnmax_charges_every_check():
  votes = np.zeros((50, 10))
  votes[:, 0] = 200
  answered = np.arange(50) < 20
  a = pate.analyze(votes, mechanism='confident_gnmax', sigma=40., sigma1=150.,
                   answered=answered, delta=1e-5)
  b = pate.analyze(votes[:20], mechanism='gnmax', sigma=40., delta=1e-5)
  assert a.num_answered == 20 and a.num_queries == 50
  assert a.epsilon > b.epsilon
  with pytest.raises(ValueError, match='sigma1'):
    pate.analyze(votes, mechanism='confident_gnmax', sigma=40., delta=1e-5)


def test_analyze_lnmax_pure_dp_bound():
  gamma, q = 0.05, 10
  votes = np.zeros((q, 10))
  votes[:, 3] = 250
  acc = pate.analyze(votes, mechanism='lnmax', gamma=gamma, delta=1e-5)
  # never worse than basic composition of pure 2 gamma-DP
  assert acc.epsilon <= 2 * gamma * q + 1e-9
  assert acc.epsilon_data_dependent < acc.epsilon


def test_teacher_masks_disjoint():
  m = pate.teacher_masks(jax.random.key(0), 103, 10)
  assert m.shape == (10, 103) and m.sum(1).tolist() == [10] * 10
  assert m.sum(0).max() == 1


# ------------------------------------------------------------------ smooth sensitivity
# Brute force: all histograms of T votes over m classes; neighbours move one vote (one
# teacher changes its answer); distances by breadth-first search.

def _histograms(t, m):
  out = []
  for cut in itertools.combinations(range(t + m - 1), m - 1):
    b = (-1,) + cut + (t + m - 1,)
    out.append(tuple(b[i + 1] - b[i] - 1 for i in range(m)))
  return out


def _neighbours(h):
  for a in range(len(h)):
    for b in range(len(h)):
      if a != b and h[a] > 0:
        g = list(h)
        g[a] -= 1
        g[b] += 1
        yield tuple(g)


def _brute(t, m, sigma, order):
  """All histograms, neighbour lists, beta(q(n)), and the exact local sensitivity."""
  hs = _histograms(t, m)
  idx = {h: i for i, h in enumerate(hs)}
  logq = pate.gnmax_logq(np.array(hs, float), sigma)
  beta = pate.gnmax_rdp_at_order(logq, sigma, order)
  nb = [[idx[g] for g in _neighbours(h)] for h in hs]
  ls = np.array([max(abs(beta[j] - beta[i]) for j in nb[i]) for i in range(len(hs))])
  return hs, nb, logq, ls


def _distances(start, nb):
  dist = np.full(len(nb), -1)
  dist[start] = 0
  frontier, d = [start], 0
  while frontier:
    d += 1
    nxt = []
    for i in frontier:
      for j in nb[i]:
        if dist[j] < 0:
          dist[j] = d
          nxt.append(j)
    frontier = nxt
  return dist


def test_gnmax_rdp_at_order_is_the_accounted_function():
  logq = -np.geomspace(1e-4, 300, 400)
  for sigma in (1.0, 10.0, 40.0):
    for order in (1.5, 5.0, 20.0, 60.0):
      want = [pate.gnmax_rdp_data_dependent(l, sigma, np.array([order]))[0] for l in logq]
      np.testing.assert_allclose(pate.gnmax_rdp_at_order(logq, sigma, order), want,
                                 rtol=1e-12, atol=0)


@pytest.mark.parametrize('t,sigma,order', [(12, 1.0, 2.0), (11, 1.0, 2.0), (12, 2.0, 2.0)])
def test_local_sensitivity_at_distance_0_is_the_brute_force_max_for_two_classes(
    t, sigma, order):
  # Two classes: a neighbour moves the gap by exactly +-2, so Prop. 13's range
  # [B_L(q), B_U(q)] is attained and Alg. 3 is exact, except on [q1, q0] where it is
  # moved to its maximum (the plateau) on purpose.
  r = pate.gnmax_ss_regime(sigma=sigma, order=order, num_classes=2, num_teachers=t)
  assert r.conditions_hold and not r.always_data_independent
  hs, _, logq, ls = _brute(t, 2, sigma, order)
  ls0 = pate.gnmax_local_sensitivity_by_distance(np.array(hs, float), sigma=sigma,
                                                 order=order, num_teachers=t)[:, 0]
  band = (logq >= r.logq1) & (logq <= r.logq0)
  assert band.sum() < len(hs) - 4 and ls[~band].max() > 1e-3 * order / sigma ** 2
  np.testing.assert_allclose(ls0[~band], ls[~band], rtol=1e-9, atol=1e-15)
  assert np.all(ls0[band] >= ls[band]) and np.all(ls0[band] == r.plateau)
  # the per-histogram function is Alg. 3 itself
  np.testing.assert_allclose(pate.gnmax_local_sensitivity(
      logq, sigma=sigma, order=order, num_classes=2, num_teachers=t), ls0, rtol=1e-12)


@pytest.mark.parametrize('t,m,sigma,order', [
    (10, 3, 1.0, 2.0), (8, 4, 1.0, 2.0), (10, 3, 2.0, 2.0), (12, 2, 1.0, 2.0),
    # small sigma: Thm. 6 already beats lambda / sigma^2 at the official bracketing point
    # (its compute_logq0_gnmax returns that point as q0, and its bound then misses the
    # accounted RDP's jumps on 6 of these 66 histograms); q0 here is the true crossing
    (10, 3, 0.5, 1.5)])
def test_local_sensitivity_by_distance_bounds_brute_force_and_is_non_decreasing(
    t, m, sigma, order):
  hs, nb, _, ls = _brute(t, m, sigma, order)
  assert pate.gnmax_ss_regime(sigma=sigma, order=order, num_classes=m,
                              num_teachers=t).conditions_hold
  res = pate.gnmax_local_sensitivity_by_distance(np.array(hs, float), sigma=sigma,
                                                 order=order, num_teachers=t)
  assert res.shape == (len(hs), t)
  assert np.all(np.diff(res, axis=1) >= 0)
  for i in range(len(hs)):
    dist = _distances(i, nb)
    exact = np.array([ls[dist <= d].max() for d in range(t)])   # A(d) by definition
    assert np.all(res[i] >= exact * (1 - 1e-12))
    if m == 2:   # exact before the walk reaches the plateau (Alg. 3 is exact there)
      before = res[i] < res[i].max()
      np.testing.assert_allclose(res[i][before], exact[before], rtol=1e-9, atol=1e-15)


def test_smooth_sensitivity_is_the_discounted_max_over_distances_brute_force():
  # Tiny case, two classes: SS_beta = max_d exp(-beta d) A(d), A(d) the largest Alg. 3
  # bound over every histogram within d moves (brute force); and SS bounds the same
  # quantity with the exact local sensitivity.
  t, m, sigma, order = 12, 2, 1.0, 2.0
  hs, nb, logq, ls = _brute(t, m, sigma, order)
  alg3 = pate.gnmax_local_sensitivity(logq, sigma=sigma, order=order, num_classes=m,
                                      num_teachers=t)
  for beta in (0.05, 0.2, 0.49 / order):
    for i, h in enumerate(hs):
      dist = _distances(i, nb)
      a_alg3 = [alg3[dist <= d].max() for d in range(t)]
      a_exact = [ls[dist <= d].max() for d in range(t)]
      want = max(math.exp(-beta * d) * a for d, a in enumerate(a_alg3))
      exact = max(math.exp(-beta * d) * a for d, a in enumerate(a_exact))
      got = pate.smooth_sensitivity_gnmax(np.array([h], float), sigma=sigma, order=order,
                                          beta=beta, num_teachers=t)
      assert got == pytest.approx(want, rel=1e-12)
      assert got >= exact * (1 - 1e-12)
  # summed over queries: the discounted max of the summed distance profiles
  v = np.array([[12., 0], [10, 2], [7, 5]])
  per = pate.gnmax_local_sensitivity_by_distance(v, sigma=sigma, order=order)
  assert pate.smooth_sensitivity_gnmax(v, sigma=sigma, order=order, beta=0.1) == (
      pytest.approx(max(math.exp(-0.1 * d) * a for d, a in enumerate(per.sum(0)))))


# --- the official formulas (tensorflow/privacy research/pate_2018 core.py and
# smooth_sensitivity.py), transcribed with erfc / erfcinv as written there, to compare
# against; our implementation works in log space and vectorised.

def _off_logq(counts, sigma):
  counts = np.asarray(counts, float)
  i = np.argmax(counts)
  rest = np.delete(counts[i] - counts, i)
  logq = special.logsumexp(stats.norm.logsf(rest, scale=math.sqrt(2) * sigma))
  return min(logq, math.log(1 - 1 / len(counts)))


def _off_dep(sigma, logq, order):   # Thm. 6 with Prop. 10's mu1, mu2
  mu2 = sigma * math.sqrt(-logq)
  mu1 = mu2 + 1
  e1, e2 = mu1 / sigma ** 2, mu2 / sigma ** 2
  log1q = math.log1p(-math.exp(logq))
  log_a = (order - 1) * (log1q - math.log1p(-math.exp((logq + e2) * (1 - 1 / mu2))))
  log_b = (order - 1) * (e1 - logq / (mu1 - 1))
  return np.logaddexp(log1q + log_a, logq + log_b) / (order - 1)


def _off_logq0(sigma, order):
  f = lambda lq: _off_dep(sigma, lq, order) - order / sigma ** 2
  ub = min(-(1 + 1 / sigma) ** 2, -((order - .99) / sigma) ** 2, -1 / sigma ** 2)
  assert f(ub) >= 0   # (else the official code returns ub itself; not used here)
  lb = 2 * ub
  while f(lb) > 0:
    lb *= 1.5
  return optimize.brentq(f, lb, ub, xtol=1e-14)


def _off_bl(q, sigma, m):
  return (m - 1) / 2 * special.erfc(1 / sigma + special.erfcinv(2 * q / (m - 1)))


def _off_bu(q, sigma, m):
  return min(1, (m - 1) / 2 * special.erfc(-1 / sigma + special.erfcinv(2 * q / (m - 1))))


def _off_ls_by_distance(votes, t, sigma, order):   # Algorithms 3-5
  m = len(votes)
  l0 = _off_logq0(sigma, order)
  l1 = math.log(_off_bl(math.exp(l0), sigma, m))
  rdp = lambda lq: order / sigma ** 2 if lq >= l0 else _off_dep(sigma, lq, order)

  def ls3(lq):
    if l1 <= lq <= l0:
      lq = l1
    b = rdp(lq)
    return max(rdp(math.log(_off_bu(math.exp(lq), sigma, m))) - b,
               b - rdp(math.log(_off_bl(math.exp(lq), sigma, m))))

  lq = _off_logq(votes, sigma)
  res = np.full(t, ls3(l1))
  if l1 <= lq <= l0:
    return res
  v = sorted(votes, reverse=True)
  res[0], d, left = ls3(lq), 0, lq > l0
  while (left and lq > l0 and v[1] > 0) or (not left and lq < l1):
    d += 1
    if left:
      v[0] += 1
      v[1] -= 1
      v = sorted(v, reverse=True)
    else:
      v[0] -= 1
      v[1] += 1
    lq = _off_logq(v, sigma)
    res[d] = ls3(lq)
  return res


def _off_gnss(beta, sigma_ss, order):   # Thm. 23
  return (order * math.exp(2 * beta) / sigma_ss ** 2 +
          (-.5 * math.log(1 - 2 * order * beta) + beta * order) / (order - 1))


@pytest.mark.parametrize('votes,t,sigma,order', [
    ([1000, 500, 300, 200, 0], 2000, 250.0, 10.0),   # goes left (weak consensus)
    ([240, 5, 5, 0, 0, 0, 0, 0, 0, 0], 250, 40.0, 20.0),   # goes right
    ([120, 100, 30, 0, 0, 0, 0, 0, 0, 0], 250, 40.0, 20.0),
    ([200, 30, 20, 0, 0, 0, 0, 0, 0, 0], 250, 40.0, 8.0),
])
def test_local_sensitivity_matches_the_official_formulas(votes, t, sigma, order):
  r = pate.gnmax_ss_regime(sigma=sigma, order=order, num_classes=len(votes), num_teachers=t)
  assert r.logq0 == pytest.approx(_off_logq0(sigma, order), abs=1e-9)
  want = _off_ls_by_distance(list(map(float, votes)), t, sigma, order)
  got = pate.gnmax_local_sensitivity_by_distance(np.array(votes, float), sigma=sigma,
                                                 order=order, num_teachers=t)[0]
  assert want.max() > 0
  np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-300)


def test_sanitised_epsilon_matches_the_official_formulas():
  # Confident-GNMax, the paper's MNIST parameters; at a fixed order and beta, rebuild the
  # release from the transcribed formulas: SS = discounted max of the summed local
  # sensitivities of the *answered* queries, sigma_ss = (lambda e^{2 beta} / SS)^{1/3},
  # cost = Thm. 23, total RDP = data-dependent RDP + check + cost.
  rng = np.random.default_rng(0)
  t, q, order, beta, delta = 250, 12, 20.0, 0.45 / 20.0, 1e-5
  votes = np.zeros((q, 10))
  for i in range(q):
    top = rng.integers(120, 251)
    votes[i, 0] = top
    votes[i, 1:] = rng.multinomial(t - top, np.full(9, 1 / 9))
  answered = votes.max(1) >= 180
  assert 0 < answered.sum() < q
  acct = pate.analyze(votes, mechanism='confident_gnmax', sigma=40.0, sigma1=150.0,
                      answered=answered, delta=delta, smooth_sensitivity=True,
                      ss_order=order, ss_beta=beta)
  s = acct.sanitised
  ls = sum(_off_ls_by_distance(list(v), t, 40.0, order) for v in votes[answered])
  ss = max(ls * np.exp(-beta * np.arange(t)))
  sigma_ss = (order * math.exp(2 * beta) / ss) ** (1 / 3)
  cost = _off_gnss(beta, sigma_ss, order)
  dep = sum(min(order / 1600, _off_dep(40.0, _off_logq(v, 40.0), order))
            for v in votes[answered])
  check = q * order / (2 * 150.0 ** 2)   # Gaussian, sensitivity 1
  assert s.order == order and s.beta == beta
  assert s.smooth_sensitivity == pytest.approx(ss, rel=1e-8)
  assert s.sigma_ss == pytest.approx(sigma_ss, rel=1e-8)
  assert s.noise_std == pytest.approx(ss * sigma_ss, rel=1e-8)
  assert s.release_rdp == pytest.approx(cost, rel=1e-8)
  want, _ = accounting.epsilon_from_rdp([order], [dep + check + cost], delta)
  assert s.epsilon == pytest.approx(want, rel=1e-9)
  before, _ = accounting.epsilon_from_rdp([order], [dep + check], delta)
  assert s.epsilon_before_release == pytest.approx(before, rel=1e-9)
  # the unanswered queries carry no sensitivity: dropping them changes nothing
  only = pate.analyze(votes[answered], mechanism='gnmax', sigma=40.0, delta=delta,
                      smooth_sensitivity=True, ss_order=order, ss_beta=beta)
  assert only.sanitised.smooth_sensitivity == pytest.approx(ss, rel=1e-12)
  # every query counts: the same histograms again, classes relabelled, double the sum
  twice = np.concatenate([votes[answered], votes[answered][:, ::-1]])
  both = pate.analyze(twice, mechanism='gnmax', sigma=40.0, delta=delta,
                      smooth_sensitivity=True, ss_order=order, ss_beta=beta)
  assert both.sanitised.smooth_sensitivity == pytest.approx(2 * ss, rel=1e-12)
  assert pate.smooth_sensitivity_gnmax(twice, sigma=40.0, order=order, beta=beta) == (
      pytest.approx(2 * ss, rel=1e-12))


def test_conditions_c5_c6_check():
  # C5: beta(q) non-decreasing on (0, q0); C6: beta(B_U(q)) - beta(q) non-decreasing on
  # (0, q1]. Derived here on a grid from the transcribed formulas; the regime must agree.
  for sigma, order in [(20.0, 25.0), (30.0, 25.0), (40.0, 20.0), (40.0, 50.0)]:
    l0 = _off_logq0(sigma, order)
    l1 = math.log(_off_bl(math.exp(l0), sigma, 10))
    lq_min = math.log(_off_bl(math.exp(_off_logq([250.] + [0.] * 9, sigma)), sigma, 10))
    grid = np.linspace(lq_min, l1, 3000)
    dep = np.array([_off_dep(sigma, l, order) for l in grid])
    du = np.array([_off_dep(sigma, math.log(_off_bu(math.exp(l), sigma, 10)), order)
                   for l in grid]) - dep
    c5, c6 = np.all(np.diff(dep) >= 0), np.all(np.diff(du) >= -1e-15)
    r = pate.gnmax_ss_regime(sigma=sigma, order=order, num_classes=10, num_teachers=250)
    assert r.conditions_hold == (c5 and c6), (sigma, order, c5, c6)
  bad = pate.gnmax_ss_regime(sigma=20.0, order=25.0, num_classes=10, num_teachers=250)
  assert not bad.conditions_hold   # then the trivial bound lambda / sigma^2 is used
  v = np.array([[240.] + [10.] + [0.] * 8])
  np.testing.assert_array_equal(
      pate.gnmax_local_sensitivity_by_distance(v, sigma=20.0, order=25.0), 25 / 400)
  # a unanimous vote already gets lambda / sigma^2: the RDP is constant, LS = 0
  r = pate.gnmax_ss_regime(sigma=40.0, order=200.0, num_classes=10, num_teachers=250)
  assert r.always_data_independent
  assert pate.smooth_sensitivity_gnmax(v, sigma=40.0, order=200.0) == 0.0


def test_sanitised_epsilon_on_overwhelming_consensus():
  # 500 teachers, 450 agree on every query: the data-dependent bound is tiny; releasing
  # it through smooth sensitivity costs its GNSS price (Thm. 23) and moves the order down,
  # but keeps it far below the data-independent epsilon.
  votes = np.zeros((500, 10))
  votes[:, 0], votes[:, 1] = 450, 50
  orders = np.concatenate([np.arange(2, 20, 0.5), np.arange(20, 80, 2.0)])
  acct = pate.analyze(votes, mechanism='gnmax', sigma=40.0, delta=1e-5, orders=orders,
                      smooth_sensitivity=True, key=jax.random.key(0))
  s = acct.sanitised
  raw, indep = acct.epsilon_data_dependent, acct.epsilon
  assert s.conditions_hold and s.smooth_sensitivity > 0
  assert raw <= s.epsilon_before_release <= s.epsilon
  assert s.epsilon - raw <= 0.25 * (indep - raw)
  assert s.epsilon <= 0.25 * indep
  assert 0 < s.noise_std < 0.2 * s.epsilon
  assert s.released is not None and abs(s.released - s.epsilon) < 6 * s.noise_std
  # the release costs exactly Thm. 23 at the chosen parameters
  assert s.release_rdp == pytest.approx(pate.gnss_rdp(beta=s.beta, sigma_ss=s.sigma_ss,
                                                      order=s.order))
  # weaker consensus: more sensitivity, a larger release cost and noise
  weak = votes.copy()
  weak[:, 0], weak[:, 1] = 350, 150
  w = pate.analyze(weak, mechanism='gnmax', sigma=40.0, delta=1e-5, orders=orders,
                   smooth_sensitivity=True).sanitised
  assert w.smooth_sensitivity > s.smooth_sensitivity and w.epsilon > s.epsilon


def test_gnss_rdp_closed_form_and_limits():
  # beta -> 0 is the Gaussian mechanism with noise SS * sigma and sensitivity <= SS
  assert pate.gnss_rdp(beta=0.0, sigma_ss=3.0, order=5.0) == pytest.approx(5 / 9)
  b, lam, s = 0.02, 10.0, 4.0
  assert pate.gnss_rdp(beta=b, sigma_ss=s, order=lam) == pytest.approx(
      lam * math.exp(2 * b) / s ** 2 + (b * lam - 0.5 * math.log(1 - 2 * lam * b)) / (lam - 1))
  # the official sigma minimises cost + 2 SS sigma
  ss = 0.01
  opt = pate.gnss_sigma(beta=b, order=lam, smooth_sensitivity=ss)
  f = lambda x: pate.gnss_rdp(beta=b, sigma_ss=x, order=lam) + 2 * ss * x
  assert f(opt) < f(opt * 1.05) and f(opt) < f(opt / 1.05)


def test_smooth_sensitivity_bad_inputs_raise():
  v = np.array([[8., 2.]])
  with pytest.raises(ValueError, match='beta=0.3'):
    pate.gnss_rdp(beta=0.3, sigma_ss=1.0, order=2.0)      # needs order < 1 / (2 beta)
  with pytest.raises(ValueError, match='sigma_ss=0'):
    pate.gnss_rdp(beta=0.01, sigma_ss=0.0, order=2.0)
  with pytest.raises(ValueError, match='order=1.0'):
    pate.smooth_sensitivity_gnmax(v, sigma=1.0, order=1.0)
  with pytest.raises(ValueError, match='sigma=-1'):
    pate.gnmax_local_sensitivity_by_distance(v, sigma=-1.0, order=2.0)
  with pytest.raises(ValueError, match='num_teachers=5'):
    pate.gnmax_local_sensitivity_by_distance(v, sigma=1.0, order=2.0, num_teachers=5)
  with pytest.raises(ValueError, match='non-negative'):
    pate.smooth_sensitivity_gnmax(np.array([[8., -1.]]), sigma=1.0, order=2.0)
  with pytest.raises(ValueError, match=r'\(1, 1\)'):
    pate.smooth_sensitivity_gnmax(np.array([[8.]]), sigma=1.0, order=2.0)
  with pytest.raises(ValueError, match='beta=-0.1'):
    pate.discounted_max(np.ones(3), -0.1)
  with pytest.raises(ValueError, match="'lnmax'"):
    pate.analyze(v, mechanism='lnmax', gamma=0.1, delta=1e-5, smooth_sensitivity=True)
  with pytest.raises(ValueError, match='ss_beta=-0.1'):
    pate.analyze(v, mechanism='gnmax', sigma=1.0, delta=1e-5, smooth_sensitivity=True,
                 ss_beta=-0.1)
  with pytest.raises(ValueError, match='ss_sigma=0'):
    pate.analyze(v, mechanism='gnmax', sigma=1.0, delta=1e-5, smooth_sensitivity=True,
                 ss_sigma=0.0)
  with pytest.raises(ValueError, match='ss_order=0.5'):
    pate.analyze(v, mechanism='gnmax', sigma=1.0, delta=1e-5, smooth_sensitivity=True,
                 ss_order=0.5)
  with pytest.raises(ValueError, match='ss_beta=0.4'):   # no order below 1 / (2 beta)
    pate.analyze(v, mechanism='gnmax', sigma=1.0, delta=1e-5, smooth_sensitivity=True,
                 ss_beta=0.4, orders=[2.0, 3.0])


# ------------------------------------------------------------------ answer cap, sampling

def _conf_indep_epsilon(q, answers_charged, sigma, sigma1, delta):
  """Q threshold checks (Gaussian, sensitivity 1) + GNMax on ``answers_charged`` queries."""
  ev = dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(
          dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), answers_charged),
      dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma1), q)])
  return accounting.epsilon(ev, delta, accountant='rdp')


def test_confident_gnmax_data_independent_epsilon_depends_on_the_cap_not_the_answers():
  # The number of answered queries depends on the private votes, so it cannot enter the
  # DP guarantee: the GNMax part is charged for the cap fixed in advance (every query
  # when there is none), whatever the realised number of answers.
  q, sigma, sigma1, delta = 50, 40.0, 150.0, 1e-5
  votes = np.zeros((q, 10))
  votes[:, 0] = 200
  few, many = np.arange(q) < 5, np.arange(q) < 20
  a = pate.analyze(votes, mechanism='confident_gnmax', sigma=sigma, sigma1=sigma1,
                   answered=few, max_answers=20, delta=delta)
  b = pate.analyze(votes, mechanism='confident_gnmax', sigma=sigma, sigma1=sigma1,
                   answered=many, max_answers=20, delta=delta)
  want = _conf_indep_epsilon(q, 20, sigma, sigma1, delta)
  assert a.epsilon == pytest.approx(want, rel=1e-12)
  assert b.epsilon == pytest.approx(want, rel=1e-12)
  assert a.num_answered == 5 and b.num_answered == 20 and a.max_answers == 20
  # the realised count would have given a smaller, invalid figure
  assert a.epsilon > _conf_indep_epsilon(q, 5, sigma, sigma1, delta) * 1.2
  # no cap: every query may be answered, so every GNMax is charged
  c = pate.analyze(votes, mechanism='confident_gnmax', sigma=sigma, sigma1=sigma1,
                   answered=few, delta=delta)
  assert c.epsilon == pytest.approx(_conf_indep_epsilon(q, q, sigma, sigma1, delta),
                                    rel=1e-12)
  # a cap above the number of queries charges the queries
  d = pate.analyze(votes, mechanism='confident_gnmax', sigma=sigma, sigma1=sigma1,
                   answered=few, max_answers=10 * q, delta=delta)
  assert d.epsilon == pytest.approx(c.epsilon, rel=1e-12)
  # the data-dependent figure stays on the answered queries and below the guarantee
  assert a.epsilon_data_dependent < b.epsilon_data_dependent <= b.epsilon
  with pytest.raises(ValueError, match='max_answers=4'):
    pate.analyze(votes, mechanism='confident_gnmax', sigma=sigma, sigma1=sigma1,
                 answered=few, max_answers=4, delta=delta)
  with pytest.raises(ValueError, match='max_answers'):
    pate.analyze(votes, mechanism='gnmax', sigma=sigma, max_answers=4, delta=delta)


def test_confident_gnmax_stops_answering_at_max_answers():
  rng = np.random.default_rng(0)
  q = 300
  votes = np.zeros((q, 5))
  votes[:, 0] = rng.integers(100, 250, q)
  votes[:, 1] = 250 - votes[:, 0]
  votes = jnp.asarray(votes)
  key = jax.random.key(3)
  run = jax.jit(functools.partial(pate.confident_gnmax, threshold=180., sigma1=40.,
                                  sigma2=20.), static_argnames='max_answers')
  free = run(votes, key)
  n_free = int(free.answered.sum())
  assert 20 < n_free < q
  cap = 20
  capped = run(votes, key, max_answers=cap)
  # the first `cap` queries that pass the check are answered, none after
  want = np.asarray(free.answered) & (np.cumsum(np.asarray(free.answered)) <= cap)
  np.testing.assert_array_equal(capped.answered, want)
  assert int(capped.answered.sum()) == cap
  np.testing.assert_array_equal(capped.labels, np.where(want, free.labels, -1))
  # never more than the cap, for other keys
  for k in jax.random.split(jax.random.key(4), 4):
    assert int(jnp.sum(run(votes, k, max_answers=cap).labels >= 0)) == cap
  with pytest.raises(ValueError, match='max_answers=-1'):
    pate.confident_gnmax(votes, key, threshold=180., sigma1=40., sigma2=20., max_answers=-1)


def _gnmax_exact_probabilities(votes, sigma):
  """P[argmax_j n_j + N(0, sigma^2) = j] = int phi(z) prod_{i != j} Phi((n_j-n_i)/sigma + z)
  dz, by Simpson's rule on a fine grid (the integrand is smooth and negligible at |z|=12)."""
  v = np.asarray(votes, np.float64)
  z = np.linspace(-12.0, 12.0, 4001)
  log_cdf = special.log_ndtr((v[:, None, None] - v[None, :, None]) / sigma + z)  # [j, i, z]
  log_cdf[np.arange(v.size), np.arange(v.size)] = 0.0                            # i != j
  integrand = np.exp(log_cdf.sum(1)) * stats.norm.pdf(z)
  return integrate.simpson(integrand, x=z, axis=-1)


def test_gnmax_and_threshold_sampling_at_the_papers_noise_scale():
  # 250 teachers, sigma = 40 (PATE 2018's MNIST setting): the empirical label distribution
  # matches the exact one within 5 standard errors; sigma / sqrt(2) or 2 sigma would not.
  votes = np.array([120., 100, 20, 10, 0, 0, 0, 0, 0, 0])
  sigma, n = 40.0, 100_000
  p = _gnmax_exact_probabilities(votes, sigma)
  assert p.sum() == pytest.approx(1.0, abs=1e-9)
  labels = pate.gnmax(jnp.tile(jnp.asarray(votes, jnp.float32), (n, 1)), jax.random.key(7),
                      sigma=sigma)
  freq = np.bincount(np.asarray(labels), minlength=votes.size) / n
  tol = 5 * np.sqrt(p * (1 - p) / n)
  np.testing.assert_array_less(np.abs(freq - p), tol)
  for wrong in (sigma / math.sqrt(2), 2 * sigma):
    assert np.any(np.abs(_gnmax_exact_probabilities(votes, wrong) - p) > 3 * tol)
  # Confident-GNMax's check: P[answered] = P[max n + N(0, sigma1^2) >= T]
  t, sigma1 = 150.0, 50.0
  ans = pate.confident_gnmax(jnp.tile(jnp.asarray(votes, jnp.float32), (n, 1)),
                             jax.random.key(8), threshold=t, sigma1=sigma1, sigma2=sigma)
  p_ans = stats.norm.sf((t - votes.max()) / sigma1)
  tol_ans = 5 * math.sqrt(p_ans * (1 - p_ans) / n)
  assert abs(float(jnp.mean(ans.answered)) - p_ans) < tol_ans
  assert abs(stats.norm.sf((t - votes.max()) / (2 * sigma1)) - p_ans) > 3 * tol_ans
