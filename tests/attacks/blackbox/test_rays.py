"""RayS (Chen & Gu, KDD 2020), L_inf, decision-based: the official algorithm replayed in
NumPy, the closed-form minimal L_inf distance of a linear model, query counts, the box."""
from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import blackbox
from tests.attacks.blackbox.linear_model import KEY, assert_factory_refuses
from tests.attacks.blackbox.linear_model import assert_refuses_bad_input, multiclass
from tests.attacks.blackbox.linear_model import multiclass_batch as _batch
from tests.attacks.blackbox.linear_model import run_minimal_and_check

rays_lib = importlib.import_module('jaxsec.attacks.blackbox.rays')


def _reference(label, x, y, max_queries, tol=1e-3, lo=0.0, hi=1.0):
  """The authors' RayS.py for one example (the budget cut as jaxsec's: no query past it)."""
  d = x.size
  s, r, q = np.ones(d), np.inf, 0
  x_best = x.copy()
  point = lambda rr, ss: np.clip(x + rr * ss, lo, hi)
  adv = lambda z: label(z) != y
  q += 1                                          # the clean query
  level, ind = 0, 0
  while q < max_queries:
    size = math.ceil(d / 2 ** level)
    start, end = ind * size, min(d, (ind + 1) * size)
    s_try = s.copy()
    s_try[start:end] *= -1
    q += 1
    if adv(point(min(r, hi - lo), s_try)):
      a, b = 0.0, min(r, hi - lo)
      while b - a > tol / math.sqrt(d) and q < max_queries:
        mid = (a + b) / 2
        q += 1
        if adv(point(mid, s_try)):
          b = mid
        else:
          a = mid
      if b < r:
        r, s, x_best = b, s_try, point(b, s_try)
    ind += 1
    if ind == 2 ** level or end == d:
      level, ind = min(level + 1, math.ceil(math.log2(d))), 0
  return x_best, q, r


def test_matches_the_official_algorithm_replayed_in_numpy():
  x, y = _batch(b=6, seed=5)
  out = jax.jit(blackbox.rays(max_queries=300), static_argnums=0)(multiclass, x, y, KEY)
  label = lambda z: int(np.argmax(np.asarray(multiclass(jnp.asarray(z[None], jnp.float32)))))
  for i in range(6):
    x_ref, q_ref, r_ref = _reference(label, np.asarray(x[i], np.float64), int(y[i]), 300)
    assert int(out.info['queries'][i]) == q_ref
    np.testing.assert_allclose(out.x_adv[i], x_ref, atol=1e-5)
    np.testing.assert_allclose(out.info['distance'][i], np.abs(x_ref - x[i]).max(), atol=1e-5)
    assert r_ref < np.inf


def test_distance_approaches_the_closed_form_and_never_beats_it():
  # All succeed, never below the closed form, the checkpoints non-increasing and the last
  # one the result, the box, success at x_adv, the exact budget of 400 queries.
  x, out, ratio, at, exact, dist = run_minimal_and_check(blackbox.rays, 'linf',
                                                        (50, 100, 200, 400))
  # RayS is a local search over sign vectors: on 3 classes a ray may settle on a farther
  # class boundary (here one example of 16 stays 20% above the optimum).
  assert np.median(ratio) <= 1.02 and np.mean(ratio <= 1.05) >= 0.8, ratio
  assert ratio.max() <= 1.25, ratio
  assert np.all(at[:, 0] >= exact * (1 - 1e-4)) and np.median(at[:, 0] / exact) > 1.02
  # The L_inf distance reported.
  np.testing.assert_allclose(dist, np.abs(np.asarray(out.x_adv - x)).max(axis=1), atol=1e-6)


def test_adversarial_inputs_cost_one_query_and_budget_is_traced():
  x, y = _batch(b=4, seed=7)
  y = y.at[0].set((y[0] + 1) % 3)                   # example 0 is already misclassified
  run = jax.jit(lambda q: blackbox.rays(max_queries=q)(multiclass, x, y, KEY))
  small, big = run(jnp.int32(20)), run(jnp.int32(120))
  for out, q in ((small, 20), (big, 120)):
    assert int(out.info['queries'][0]) == 1 and float(out.info['distance'][0]) == 0.0
    np.testing.assert_array_equal(out.x_adv[0], x[0])
    np.testing.assert_array_equal(out.info['queries'][1:], q)
  assert np.all(np.asarray(big.info['distance']) <= np.asarray(small.info['distance']))


def test_blocks_follow_the_hierarchy():
  # d = 10: level 0 one block, level 1 two of 5, level 2 four of 3 (the last of 1),
  # level 4 single coordinates (ceil(log2 10) = 4).
  got = [tuple(int(v) for v in rays_lib.block_of(jnp.int32(lv), jnp.int32(i), 10))
         for lv, i in [(0, 0), (1, 1), (2, 2), (2, 3), (4, 9)]]
  assert got == [(0, 10), (5, 10), (6, 9), (9, 10), (9, 10)]


@pytest.mark.parametrize('kw, match', [
    (dict(max_queries=0), r'max_queries=0 must be >= 1'),
    (dict(max_queries=None), r'max_queries=None'),
    (dict(tol=0.0), r'tol=0.0 must be > 0'),
    (dict(targeted=1), r'targeted=1 must be a bool'),
    (dict(query_checkpoints=(10, 5)), r'must be strictly increasing'),
    (dict(bounds=(1.0, 0.0)), r'bounds'),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  assert_factory_refuses(blackbox.rays, kw, match)


def test_bad_input_raises_before_querying():
  assert_refuses_bad_input(blackbox.rays(max_queries=5))
