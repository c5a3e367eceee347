"""ACRE learning (Lowd & Meek, KDD 2005): on random linear classifiers the cost found is
within the proven factor of the closed-form minimal adversarial cost (continuous L1:
1 + eps; boolean Hamming: 2, also checked by brute force), with query counts under the
polynomial bounds of the module docstring."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from jaxsec.attacks.blackbox import acre


def _linear(w, b):
  return lambda X: (np.asarray(X) @ w + b > 0).astype(int)


def _continuous_problem(seed, n):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=n)
  x_a = rng.normal(size=n)
  b = 1.0 + rng.uniform() - w @ x_a              # margin at x_a in [1, 2]
  x_neg = x_a - 6.0 * np.sign(w) * rng.uniform(0.5, 1.0, size=n)   # far on the other side
  return w, b, x_a, x_neg


def _continuous_bound(n, d, f_gap, eps, delta, scale):
  steps = max(0, math.ceil(math.log2(math.log(2) / math.log1p(eps))))
  line = sum(2 + math.ceil(abs(math.log2(di / scale))) + steps for di in d)
  return (2 + math.ceil(math.log2(n)) + math.ceil(math.log2(f_gap / (delta * scale)))
          + 2 * (n - 1) + line)


@pytest.mark.parametrize('seed, n, eps, weighted', [
    (0, 5, 0.1, False), (1, 20, 0.01, True), (2, 60, 0.1, True), (3, 200, 0.05, False)])
def test_continuous_cost_within_one_plus_eps_of_the_mac_and_queries_bounded(
    seed, n, eps, weighted):
  w, b, x_a, x_neg = _continuous_problem(seed, n)
  a = np.random.default_rng(10 + seed).uniform(0.5, 2.0, n) if weighted else None
  r = acre.acre_continuous(_linear(w, b), x_a, x_neg, cost_weights=a, eps=eps)
  mac = acre.minimal_cost_continuous(w, b, x_a, a)
  aa = np.ones(n) if a is None else a
  assert _linear(w, b)(r.x[None])[0] == 0
  assert r.cost == pytest.approx(np.sum(aa * np.abs(r.x - x_a)))
  assert mac <= r.cost <= (1 + eps) * mac + 1e-12
  assert np.count_nonzero(r.x != x_a) == 1
  # The relative weights: w / (w.x_a + b) within (1 + eps).
  m = w @ x_a + b
  ratio = r.info['weights'] / (w / m)
  assert np.all(ratio >= 1 / (1 + eps) - 1e-12) and np.all(ratio <= 1 + eps + 1e-12)
  f = r.info['witness_feature']
  bound = _continuous_bound(n, m / np.abs(w), abs(x_neg[f] - x_a[f]), eps, 1e-6, 1.0)
  assert r.queries <= bound
  assert r.queries >= 2 * (n - 1)          # the sign probes alone


def test_continuous_irrelevant_features_are_found_and_never_moved():
  w, b, x_a, x_neg = _continuous_problem(4, 8)
  w[[1, 5]] = 0.0
  b = 1.5 - w @ x_a
  r = acre.acre_continuous(_linear(w, b), x_a, x_neg, eps=0.05)
  np.testing.assert_array_equal(r.info['signs'][[1, 5]], 0.0)
  np.testing.assert_array_equal(r.info['signs'][w != 0], -np.sign(w[w != 0]))
  assert r.cost <= 1.05 * acre.minimal_cost_continuous(w, b, x_a)


def _brute_force_mac(w, b, x_a):
  n = x_a.size
  for k in range(n + 1):
    for s in itertools.combinations(range(n), k):
      x = x_a.copy()
      x[list(s)] = 1 - x[list(s)]
      if x @ w + b <= 0:
        return k
  return -1


def _boolean_problem(seed, n):
  """A random linear classifier, a random x_a it labels positive with a margin that takes a
  few flips to cross, and x_neg = x_a with every score-lowering feature flipped."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=n)
  x_a = (rng.uniform(size=n) < 0.5).astype(float)
  gains = w * (1 - 2 * x_a)                          # score change of flipping each feature
  total = -np.sum(np.minimum(gains, 0.0))
  b = rng.uniform(0.15, 0.5) * total - w @ x_a       # margin: a fraction of the total drop
  x_neg = np.where(gains < 0, 1 - x_a, x_a)
  return w, b, x_a, x_neg


@pytest.mark.parametrize('seed', range(12))
def test_boolean_cost_within_two_of_the_brute_force_mac(seed):
  n = 10
  w, b, x_a, x_neg = _boolean_problem(seed, n)
  f = _linear(w, b)
  assert f(x_a[None])[0] == 1 and f(x_neg[None])[0] == 0
  r = acre.acre_boolean(f, x_a, x_neg)
  mac = _brute_force_mac(w, b, x_a)
  assert mac == acre.minimal_cost_boolean(w, b, x_a) >= 1
  assert f(r.x[None])[0] == 0 and set(np.unique(r.x)) <= {0.0, 1.0}
  assert r.cost == np.count_nonzero(r.x != x_a) == len(r.info['changed'])
  assert mac <= r.cost <= 2 * mac
  k0 = r.info['initial_cost']
  assert r.cost <= k0 and r.info['rounds'] <= k0 + 1
  bound = 2 + math.ceil(math.log2(n)) + (k0 + 1) * (k0 + math.comb(k0, 2) * (n - k0))
  assert r.queries <= bound


@pytest.mark.parametrize('n', [30, 60])
def test_boolean_larger_dimension_closed_form_and_bound(n):
  w, b, x_a, x_neg = _boolean_problem(100 + n, n)
  f = _linear(w, b)
  r = acre.acre_boolean(f, x_a, x_neg)
  mac = acre.minimal_cost_boolean(w, b, x_a)
  assert f(r.x[None])[0] == 0 and mac <= r.cost <= 2 * mac
  k0 = r.info['initial_cost']
  assert r.queries <= 2 + math.ceil(math.log2(n)) + (k0 + 1) * (
      k0 + math.comb(k0, 2) * (n - k0))
  assert r.info['removals'] + r.info['replacements'] == k0 - r.cost


def test_replacement_step_is_needed_for_the_factor_two():
  # w = (2, 2, 3), b = -4.5, x_a = 1 1 1 (score 2.5), x_neg = 0 0 0. The witness path
  # gives z1 = 0 1 1 (0.5, positive), z2 = 0 0 1 (-1.5, negative): y = z2, cost 2. Undoing
  # either change makes y positive again; replacing the two changes by flipping feature 2
  # (1 1 0, score -0.5) reaches the MAC 1.
  w, b = np.array([2.0, 2.0, 3.0]), -4.5
  r = acre.acre_boolean(_linear(w, b), np.ones(3), np.zeros(3))
  assert acre.minimal_cost_boolean(w, b, np.ones(3)) == 1
  assert r.info['initial_cost'] == 2 and r.info['removals'] == 0
  assert r.info['replacements'] == 1 and r.cost == 1
  np.testing.assert_array_equal(r.x, [1.0, 1.0, 0.0])


@pytest.mark.parametrize('call, match', [
    (lambda f: acre.acre_continuous(f, np.zeros(3), np.zeros(2)), r'x_a has shape \(3,\)'),
    (lambda f: acre.acre_continuous(f, np.ones(3), np.zeros(3), eps=0.0),
     r'eps=0.0 must be > 0'),
    (lambda f: acre.acre_continuous(f, np.ones(3), np.zeros(3), delta=1.0),
     r'delta=1.0 must be < 1.0'),
    (lambda f: acre.acre_continuous(f, np.ones(3), np.zeros(3), scale=-1.0),
     r'scale=-1.0 must be > 0'),
    (lambda f: acre.acre_continuous(f, np.ones(3), np.zeros(3), cost_weights=[1, 0, 1]),
     r'cost_weights=\[1, 0, 1\] must be 3 finite values > 0'),
    (lambda f: acre.acre_continuous(f, np.array([1.0, np.nan, 0]), np.zeros(3)),
     r'x_a contains 1 non-finite values'),
    (lambda f: acre.acre_continuous(f, np.zeros(3), np.ones(3)),
     r'labels x_a 0 and x_neg 1; ACRE needs x_a positive'),
    (lambda f: acre.acre_boolean(f, np.array([1.0, 0.5, 1.0]), np.zeros(3)),
     r'x_a has values \[0.5 1. \]; boolean features are 0 / 1'),
    (lambda f: acre.acre_boolean(f, np.ones(3), np.zeros(3), max_rounds=0),
     r'max_rounds=0 must be >= 1'),
    (lambda f: acre.acre_boolean(lambda X: np.full(len(X), 0.5), np.ones(3), np.zeros(3)),
     r'query_fn must return one 0/1 label per row'),
])
def test_bad_input_raises(call, match):
  f = _linear(np.ones(3), -1.5)
  with pytest.raises(ValueError, match=match):
    call(f)
