"""Genetic-programming evasion of a classifier on structured discrete inputs (EvadeML: Xu, Qi
& Evans, "Automatically Evading Classifiers: A Case Study on PDF Malware Classifiers", NDSS
2016), on binary feature vectors.

A malicious seed (a PDF in the paper, here its binary features: a feature is an object path
present in the file) is evolved by mutation only: every present feature ("node") of a
variant is mutated with probability ``mutation_rate`` by one of *delete* (remove it),
*insert* (add a feature taken from a benign donor: the "external genome") or *swap*
(replace it by a donor feature); the donor feature is drawn uniformly from the (donor,
feature) pairs of the benign donors, so by its frequency among them. Fitness (the authors'
``fitness_01``): ``threshold - score(x)`` if the functionality oracle says the variant still
works (in the paper, the Cuckoo sandbox sees the seed's malicious behaviour), else a very
low score. Each generation: evaluate the population (one classifier query and one oracle
call per variant); stop when a variant's fitness exceeds ``fitness_threshold`` (evaded: its
score is below ``threshold`` and it works) or at ``max_generations``; otherwise sort by
fitness, replace each non-working variant by the seed (first generation) or, at random, by
the seed, the best variant of the previous generation or the best so far, and mutate every
variant. Parameters of the paper: population 48, 20 generations, mutation rate 0.1,
fitness threshold 0.

Why host (NumPy) code: the oracle is an arbitrary external program (a sandbox) and the loop
stops per seed at data-dependent generations, as ACRE's. The classifier's queries are one
batched ``query_fn`` call per generation over the populations of every seed still running
(jit the ``query_fn`` so a generation is one compiled program), and so are the oracle's.

Deliberate differences from the paper: binary feature vectors instead of PDF object trees
(a path is a feature; inserting a subtree inserts one feature); the mutation decisions of a
pass are drawn on the features present at its start (the authors' pass also visits nodes
inserted during it); no crossover (the paper's runs used none) and no trace replay from
earlier seeds; a replacement "best" that does not exist yet (no working variant so far) is
the seed. Randomness: a ``jax.random`` key seeds a NumPy generator (reproducible).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from jaxsec import _checks
from jaxsec import progress as progress_lib

LOW_SCORE = -np.inf                # fitness of a variant that fails the oracle


@dataclasses.dataclass(frozen=True)
class EvadeMLResult:
  """Per seed: the returned variant ``x`` [S, n] (it passes the oracle: the evasive one of
  highest fitness when ``success``, else the best working variant found, or the seed),
  ``success`` [S] (``x`` scores below ``threshold``), ``generations`` [S] (generations
  evaluated), ``queries`` [S] and ``oracle_calls`` [S] (rows sent, the seed's own check
  included), and ``info``: ``score`` [S] (the classifier's score of ``x``),
  ``features_changed`` [S] (Hamming distance to the seed), ``best_fitness`` [S, G] (per
  generation; nan once a seed stopped)."""
  x: np.ndarray
  success: np.ndarray
  generations: np.ndarray
  queries: np.ndarray
  oracle_calls: np.ndarray
  info: dict


def _rng_from_key(key) -> np.random.Generator:
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def mutate(pop: np.ndarray, rate: float, donor_freq: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
  """One mutation pass over each row of ``pop`` [m, n] (0 / 1): each present feature is,
  with probability ``rate``, deleted, kept with a donor feature inserted, or swapped for a
  donor feature (uniformly); donor features are drawn with probabilities ``donor_freq``."""
  present = pop == 1
  site = present & (rng.random(pop.shape) < rate)
  op = rng.integers(0, 3, pop.shape)                 # 0 delete, 1 insert, 2 swap
  out = pop.copy()
  out[site & (op != 1)] = 0
  rows, cols = np.nonzero(site & (op != 0))
  if rows.size:
    out[rows, rng.choice(pop.shape[1], size=rows.size, p=donor_freq)] = 1
  return out


def evademl_gp(*, pop_size: int = 48, max_generations: int = 20, mutation_rate: float = 0.1,
            threshold: float = 0.5, fitness_threshold: float = 0.0):
  """EvadeML genetic programming on binary features (Xu, Qi & Evans, NDSS 2016); see the
  module docstring.

  Args:
    pop_size: variants per generation (the paper's 48).
    max_generations: generations evaluated at most (the paper's 20).
    mutation_rate: probability that a present feature is mutated in a pass (0.1).
    threshold: the classifier's decision threshold (score >= threshold: malicious).
    fitness_threshold: stop once ``threshold - score > fitness_threshold`` for a working
      variant (the paper's 0).

  Returns:
    ``attack(query_fn, oracle, seeds, donors, key, progress=None) -> EvadeMLResult``;
    ``query_fn(X [m, n]) -> scores [m]`` (higher = more malicious), ``oracle(X [m, n],
    seeds [m, n]) -> bool [m]`` (True: row ``i`` keeps the behaviour of its seed),
    ``seeds`` [S, n] and ``donors`` [D, n] 0 / 1 arrays, ``key`` a ``jax.random`` key;
    ``progress``: see ``jaxsec.progress.make`` (one unit per generation).
  """
  _checks.check_counts(pop_size=pop_size, max_generations=max_generations)
  _checks.check_probability('mutation_rate', mutation_rate)
  _checks.check_float('threshold', threshold, allow_traced=False)
  _checks.check_float('fitness_threshold', fitness_threshold, minimum=0.0,
                      allow_traced=False)

  def attack(query_fn: Callable, oracle: Callable, seeds, donors, key,
             progress=None) -> EvadeMLResult:
    seeds = _binary('seeds', seeds)
    donors = _binary('donors', donors)
    if donors.shape[1] != seeds.shape[1] or not donors.any():
      raise ValueError(f'donors has shape {donors.shape} with {int(donors.sum())} present '
                       f'features; expected [D, {seeds.shape[1]}] with at least one.')
    rng = _rng_from_key(key)
    s_n, n = seeds.shape
    freq = donors.sum(0) / donors.sum()
    ask = lambda x: _scores(query_fn, x)  # noqa: E731
    ok0 = _oracle(oracle, seeds, seeds)
    if not ok0.all():
      raise ValueError(f'seeds {np.flatnonzero(~ok0)[:5].tolist()} fail the oracle; each '
                       'seed must keep its own behaviour.')
    score0 = ask(seeds)
    queries = np.ones(s_n, np.int64)
    calls = np.ones(s_n, np.int64)
    gens = np.zeros(s_n, np.int64)
    best_x, best_fit = seeds.copy(), threshold - score0    # best working variant so far
    best_score = score0.copy()
    success = best_fit > fitness_threshold
    active = ~success
    hist = np.full((s_n, max_generations), np.nan)
    pop = mutate(np.repeat(seeds[:, None], pop_size, 1).reshape(-1, n), mutation_rate,
                 freq, rng).reshape(s_n, pop_size, n)
    last_best = seeds.copy()                               # best of the previous generation
    hist_best = seeds.copy()                               # best before this generation
    update = progress_lib.make(progress, max_generations, 'generation')
    for g in range(1, max_generations + 1):
      idx = np.flatnonzero(active)
      if idx.size == 0:
        break
      flat = pop[idx].reshape(-1, n)
      sc = ask(flat).reshape(idx.size, pop_size)
      ok = _oracle(oracle, flat, np.repeat(seeds[idx], pop_size, 0)).reshape(idx.size,
                                                                              pop_size)
      queries[idx] += pop_size
      calls[idx] += pop_size
      gens[idx] = g
      fit = np.where(ok, threshold - sc, LOW_SCORE)
      top = np.argmax(fit, 1)
      top_fit = fit[np.arange(idx.size), top]
      hist[idx, g - 1] = top_fit
      gen_best = pop[idx, top]
      better = top_fit > best_fit[idx]
      prev_hist_best = np.where(np.isfinite(best_fit[idx])[:, None], best_x[idx], seeds[idx])
      best_x[idx] = np.where(better[:, None], gen_best, best_x[idx])
      best_score[idx] = np.where(better, sc[np.arange(idx.size), top], best_score[idx])
      best_fit[idx] = np.maximum(best_fit[idx], top_fit)
      done = top_fit > fitness_threshold
      success[idx] = done
      active[idx[done]] = False
      if update is not None:
        update(f'{int(success.sum())}/{s_n} evaded')
      if g == max_generations:
        break
      go = ~done
      ii = idx[go]
      # Selection: sort by fitness (all kept: no crossover); replace non-working variants.
      order = np.argsort(-fit[go], axis=1, kind='stable')
      new = np.take_along_axis(pop[ii], order[:, :, None], 1)
      low = ~np.isfinite(np.take_along_axis(fit[go], order, 1))
      if g == 1:
        choice = np.zeros(low.shape, np.int64)
      else:
        choice = rng.integers(0, 3, low.shape)             # seed, last gen best, best so far
      hist_best[ii] = prev_hist_best[go]
      cands = np.stack([seeds[ii], last_best[ii], hist_best[ii]], 1)       # [A, 3, n]
      repl = np.take_along_axis(cands, choice[:, :, None], 1)
      new = np.where(low[:, :, None], repl, new)
      last_best[ii] = np.where(np.isfinite(top_fit[go])[:, None], gen_best[go], seeds[ii])
      pop[ii] = mutate(new.reshape(-1, n), mutation_rate, freq, rng).reshape(
          ii.size, pop_size, n)
    info = {'score': best_score, 'features_changed': np.sum(best_x != seeds, 1),
            'best_fitness': hist}
    return EvadeMLResult(best_x, success, gens, queries, calls, info)
  return attack


def _binary(name: str, a) -> np.ndarray:
  a = np.asarray(a)
  if a.ndim != 2 or a.shape[0] == 0:
    raise ValueError(f'{name} has shape {a.shape}; expected a non-empty [m, n].')
  if not np.all((a == 0) | (a == 1)):
    raise ValueError(f'{name} has values {np.unique(a)[:5]}; expected binary 0 / 1 features.')
  return a.astype(np.int8)


def _scores(query_fn: Callable, x: np.ndarray) -> np.ndarray:
  s = np.asarray(query_fn(x.astype(np.float32)), np.float64).reshape(-1)
  if s.shape[0] != x.shape[0]:
    raise ValueError(f'query_fn returned {s.shape[0]} scores for {x.shape[0]} rows; '
                     'expected one score per row.')
  return s


def _oracle(oracle: Callable, x: np.ndarray, seeds: np.ndarray) -> np.ndarray:
  ok = np.asarray(oracle(x, seeds)).reshape(-1)
  if ok.shape[0] != x.shape[0] or ok.dtype != bool:
    raise ValueError(f'oracle returned {ok!r}; expected one bool per row ({x.shape[0]}).')
  return ok


def functional_features_oracle(functional) -> Callable:
  """The synthetic oracle of the tests and the study: a variant keeps its seed's behaviour
  iff every *functional* feature (indices ``functional``, e.g. /JavaScript, /OpenAction)
  present in the seed is still present in it."""
  f = np.asarray(functional, np.int64)

  def oracle(x, seeds):
    x, seeds = np.asarray(x), np.asarray(seeds)
    return np.all((x[:, f] == 1) | (seeds[:, f] == 0), axis=1)
  return oracle
