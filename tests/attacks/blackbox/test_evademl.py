"""EvadeML genetic programming (Xu, Qi & Evans, NDSS 2016) on binary features: against a
classifier whose score is a known linear function it evades, never returns a variant that
fails the oracle, counts every query and oracle call, and is reproducible from its key."""
import jax
import numpy as np
import pytest

from jaxsec.attacks.blackbox import evademl as ev

N = 40
FUNCTIONAL = np.arange(4)                    # e.g. /JavaScript, /OpenAction, ...
_W = np.concatenate([np.full(4, 1.0), np.full(12, 0.8), np.full(12, -0.6), np.zeros(12)])
_B = -2.0


def _score(x):
  """A known linear score: malicious when ``w.x + b >= 0`` (threshold 0)."""
  return np.asarray(x, np.float64) @ _W + _B


def _data(seed=0):
  rng = np.random.default_rng(seed)
  mal = (rng.random((6, N)) < np.r_[np.full(4, 1.0), np.full(12, 0.7), np.full(12, 0.1),
                                     np.full(12, 0.3)]).astype(np.int8)
  ben = (rng.random((30, N)) < np.r_[np.full(4, 0.02), np.full(12, 0.1), np.full(12, 0.6),
                                      np.full(12, 0.3)]).astype(np.int8)
  return mal, ben


class _Counter:
  def __init__(self, fn):
    self.fn, self.rows = fn, 0

  def __call__(self, *a):
    self.rows += np.asarray(a[0]).shape[0]
    return self.fn(*a)


def test_evades_a_linear_score_and_keeps_the_oracle_and_the_counts():
  seeds, donors = _data()
  assert np.all(_score(seeds) >= 0)                   # every seed detected
  q = _Counter(_score)
  o = _Counter(ev.functional_features_oracle(FUNCTIONAL))
  atk = ev.evademl_gp(pop_size=16, max_generations=30, threshold=0.0)
  r = atk(q, o, seeds, donors, jax.random.key(0))
  assert r.success.all()
  assert np.all(_score(r.x) < 0)                      # really evasive ...
  assert o.fn(r.x, seeds).all()                       # ... and still working
  np.testing.assert_allclose(r.info['score'], _score(r.x))
  np.testing.assert_array_equal(r.info['features_changed'], np.sum(r.x != seeds, 1))
  # One query and one oracle call for each seed, then pop_size per generation evaluated.
  np.testing.assert_array_equal(r.queries, 1 + 16 * r.generations)
  np.testing.assert_array_equal(r.oracle_calls, r.queries)
  assert q.rows == r.queries.sum() and o.rows == r.oracle_calls.sum()
  assert np.all(r.generations >= 1)
  h = r.info['best_fitness']
  assert r.generations.max() < 30 and np.all(np.isnan(h[np.arange(6), r.generations]))
  assert np.all(h[np.arange(6), r.generations - 1] > 0)          # stopped on evasion
  assert r.generations.max() > 1                                 # it took evolution


def test_a_strict_oracle_is_never_violated_and_the_budget_is_respected():
  # The oracle accepts only variants that keep *every* feature of the seed: evasion then
  # needs benign insertions only; whatever it returns works.
  seeds, donors = _data(1)
  strict = lambda x, s: np.all((np.asarray(x) == 1) | (np.asarray(s) == 0), 1)  # noqa: E731
  r = ev.evademl_gp(pop_size=8, max_generations=3, threshold=0.0)(_score, strict, seeds,
                                                               donors, jax.random.key(1))
  assert strict(r.x, seeds).all()
  assert np.all(r.generations <= 3) and np.all(r.queries <= 1 + 8 * 3)
  assert np.all(r.success == (_score(r.x) < 0))
  # An oracle that rejects every variant: the seed itself comes back, unsuccessful.
  only_seed = lambda x, s: np.all(np.asarray(x) == np.asarray(s), 1)  # noqa: E731
  r0 = ev.evademl_gp(pop_size=8, max_generations=2, threshold=0.0)(_score, only_seed, seeds,
                                                                donors, jax.random.key(2))
  np.testing.assert_array_equal(r0.x, seeds)
  assert not r0.success.any() and np.all(r0.generations == 2)


def test_reproducible_from_the_key():
  seeds, donors = _data(2)
  atk = ev.evademl_gp(pop_size=8, max_generations=5, threshold=0.0)
  orc = ev.functional_features_oracle(FUNCTIONAL)
  a = atk(_score, orc, seeds, donors, jax.random.key(3))
  b = atk(_score, orc, seeds, donors, jax.random.key(3))
  c = atk(_score, orc, seeds, donors, jax.random.key(4))
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_array_equal(a.queries, b.queries)
  assert not np.array_equal(a.info['best_fitness'], c.info['best_fitness'], equal_nan=True)


def test_mutation_operators():
  # Deletions only remove present features, insertions only add donor features.
  rng = np.random.default_rng(0)
  pop = (rng.random((200, N)) < 0.5).astype(np.int8)
  freq = np.zeros(N)
  freq[30:] = 0.1                                     # donors only have features 30..39
  out = ev.mutate(pop, 0.3, freq, rng)
  added = (out == 1) & (pop == 0)
  removed = (out == 0) & (pop == 1)
  assert not added[:, :30].any() and added.any() and removed.any()
  assert np.array_equal(ev.mutate(pop, 0.0, freq, rng), pop)


def test_bad_input():
  seeds, donors = _data()
  atk = ev.evademl_gp(pop_size=4, max_generations=2)
  orc = ev.functional_features_oracle(FUNCTIONAL)
  with pytest.raises(ValueError, match='binary'):
    atk(_score, orc, seeds * 2, donors, jax.random.key(0))
  with pytest.raises(ValueError, match='fail the oracle'):
    atk(_score, lambda x, s: np.zeros(len(x), bool), seeds, donors, jax.random.key(0))
  with pytest.raises(ValueError, match='pop_size'):
    ev.evademl_gp(pop_size=0)
  with pytest.raises(ValueError, match='mutation_rate'):
    ev.evademl_gp(mutation_rate=1.5)
