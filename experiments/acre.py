r"""ACRE learning against a linear SVM on binary features: queries to reach a minimal-cost
evasion vs dimension (Lowd & Meek, KDD 2005).

    python -m experiments.run --config=experiments/configs/acre.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/acre.py:smoke --workdir=/tmp/s

For each dimension ``n``: synthetic binary instances (each feature a Bernoulli "word"; a
fraction ``informative`` of the words has a different rate in the positive class), a
``sklearn.svm.LinearSVC`` fitted on them, and ``n_instances`` positive test instances
``x_a``, each attacked with a negative test instance as ``x_neg``. The oracle is the SVM's
label (``decision_function > 0``), one query per row. Reported per dimension:

* boolean features, Hamming cost (``acre_boolean``, FIND-WITNESS + FIND-ADVERSARIAL,
  2-approximation): queries (median, max), the ratio cost / MAC (the MAC in closed form
  from the SVM's ``w, b``: the greedy prefix of the largest score drops), the polynomial
  bound's value for the worst instance;
* the continuous relaxation (features unbounded, unit L1 cost; ``acre_continuous``,
  (1 + eps)-approximation): queries and cost / MAC.

Deviations from the paper (its Sec. 6 attacks naive Bayes and maxent spam filters on a
23,000-word Hotmail / Enron vocabulary, not bundled here): synthetic words and a linear SVM,
dimension swept from 10 to 1000; the query counts are those of this implementation's
pass order (module docstring of ``jaxsec.attacks.blackbox.acre``).
"""
from __future__ import annotations

import math
import os
import time

import ml_collections
import numpy as np
from sklearn.svm import LinearSVC

from experiments import common as common_lib
from experiments import defense_common as dc
from jaxsec import io as jio
from jaxsec.attacks.blackbox import acre

NAME = 'acre'


def _data(n: int, cfg, rng: np.random.Generator):
  """Class-conditional Bernoulli words: rates ``p_neg ~ U(0.05, 0.3)``; informative words
  have ``p_pos = min(0.9, p_neg * U(2, 4))`` or ``p_neg / U(2, 4)``, the rest ``p_pos =
  p_neg``. Returns ``(x, y, xt, yt)`` with balanced classes."""
  p_neg = rng.uniform(0.05, 0.3, n)
  inf = rng.uniform(size=n) < cfg.informative
  up = rng.uniform(size=n) < 0.5
  factor = rng.uniform(2.0, 4.0, n)
  p_pos = np.where(inf, np.where(up, np.minimum(0.9, p_neg * factor), p_neg / factor), p_neg)

  def draw(m):
    y = np.arange(m) % 2
    p = np.where(y[:, None] == 1, p_pos[None], p_neg[None])
    return (rng.uniform(size=(m, n)) < p).astype(np.float64), y
  x, y = draw(cfg.n_train)
  xt, yt = draw(cfg.n_test)
  return x, y, xt, yt


def _one_dim(n: int, cfg, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  x, y, xt, yt = _data(n, cfg, rng)
  svm = LinearSVC(C=cfg.svm_c, dual=False, max_iter=20000).fit(x, y)
  w, b = svm.coef_[0].astype(np.float64), float(svm.intercept_[0])
  oracle = lambda X: (np.asarray(X, np.float64) @ w + b > 0).astype(np.int64)  # noqa: E731
  lab = oracle(xt)
  pos, neg = np.flatnonzero(lab == 1), np.flatnonzero(lab == 0)
  picks = pos[:cfg.n_instances]
  rows = []
  t0 = time.time()
  for j, i in enumerate(picks):
    x_a, x_neg = xt[i], xt[neg[j % neg.size]]
    rb = acre.acre_boolean(oracle, x_a, x_neg)
    mac_b = acre.minimal_cost_boolean(w, b, x_a)
    k0 = rb.info['initial_cost']
    rc = acre.acre_continuous(oracle, x_a, x_neg, eps=cfg.eps, delta=cfg.delta)
    mac_c = acre.minimal_cost_continuous(w, b, x_a)
    rows.append({
        'boolean_queries': rb.queries, 'boolean_cost': rb.cost, 'boolean_mac': mac_b,
        'boolean_initial_cost': k0,
        'boolean_bound': 2 + math.ceil(math.log2(n)) + (k0 + 1) * (
            k0 + math.comb(k0, 2) * (n - k0)),
        'continuous_queries': rc.queries, 'continuous_cost': rc.cost,
        'continuous_mac': mac_c})
  sec = time.time() - t0
  q_b = np.array([r['boolean_queries'] for r in rows])
  ratio_b = np.array([r['boolean_cost'] / r['boolean_mac'] for r in rows])
  q_c = np.array([r['continuous_queries'] for r in rows])
  ratio_c = np.array([r['continuous_cost'] / r['continuous_mac'] for r in rows])
  return {
      'n': n, 'svm_test_accuracy': float(np.mean(svm.predict(xt) == yt)),
      'n_attacked': len(rows),
      'boolean_queries_median': float(np.median(q_b)), 'boolean_queries_max': int(q_b.max()),
      'boolean_ratio_mean': float(ratio_b.mean()), 'boolean_ratio_max': float(ratio_b.max()),
      'boolean_mac_median': float(np.median([r['boolean_mac'] for r in rows])),
      'boolean_within_bound': all(r['boolean_queries'] <= r['boolean_bound']
                                  for r in rows),
      'continuous_queries_median': float(np.median(q_c)),
      'continuous_queries_max': int(q_c.max()),
      'continuous_ratio_max': float(ratio_c.max()),
      'seconds': sec, 'instances': rows}


def _slope(ns, qs) -> float:
  """Least-squares slope of log(queries) on log(n): the empirical polynomial degree."""
  return float(np.polyfit(np.log(ns), np.log(qs), 1)[0]) if len(ns) > 1 else float('nan')


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common_lib.device_info(), 'dims': {}}
  for k, n in enumerate(cfg.dims):
    dc.log(f'{NAME}: n={n}')
    e = _one_dim(int(n), cfg, cfg.seed * 1000 + k)
    dc.log(f'{NAME}: n={n}: boolean median {e["boolean_queries_median"]:.0f} queries, '
           f'cost/MAC <= {e["boolean_ratio_max"]:.2f}; continuous median '
           f'{e["continuous_queries_median"]:.0f} queries ({e["seconds"]:.1f} s)')
    results['dims'][str(n)] = e
  ns = [e['n'] for e in results['dims'].values()]
  results['boolean_slope'] = _slope(ns, [e['boolean_queries_median']
                                         for e in results['dims'].values()])
  results['continuous_slope'] = _slope(ns, [e['continuous_queries_median']
                                            for e in results['dims'].values()])
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def _by_dimension(r: dict) -> list:
  """``(n, entry)`` in increasing dimension (the JSON's keys are sorted as strings)."""
  return sorted(r['dims'].items(), key=lambda kv: int(kv[0]))


def render_markdown(r: dict) -> str:
  c = r['config']
  lines = [dc.heading('ACRE learning against a linear SVM on binary features: queries vs '
                      'dimension', r, NAME), '',
           f'Lowd & Meek (2005): {c["n_instances"]} positive test instances per dimension, '
           f'LinearSVC (C={c["svm_c"]}) on synthetic Bernoulli words ({c["n_train"]} training '
           'instances). Boolean: FIND-WITNESS + FIND-ADVERSARIAL, Hamming cost, proven '
           'factor 2; continuous relaxation: unit L1 cost, unbounded features, factor '
           f'1 + eps = {1 + c["eps"]:g}. MAC in closed form from the SVM\'s weights.', '',
           '| n | SVM test acc | boolean queries median / max | boolean cost / MAC mean / max '
           '| median MAC | within bound | continuous queries median / max '
           '| continuous cost / MAC max |',
           '|---|---|---|---|---|---|---|---|']
  for n, e in _by_dimension(r):
    lines.append(
        f'| {n} | {dc.fmt(e["svm_test_accuracy"])} | {e["boolean_queries_median"]:.0f} / '
        f'{e["boolean_queries_max"]} | {e["boolean_ratio_mean"]:.3f} / '
        f'{e["boolean_ratio_max"]:.3f} | {e["boolean_mac_median"]:g} | '
        f'{"yes" if e["boolean_within_bound"] else "NO"} | '
        f'{e["continuous_queries_median"]:.0f} / {e["continuous_queries_max"]} | '
        f'{e["continuous_ratio_max"]:.3f} |')
  lines += ['', f'Growth of the median query count with n (slope of log queries on log n): '
            f'boolean {r["boolean_slope"]:.2f}, continuous {r["continuous_slope"]:.2f}.']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: queries to a minimal-cost evasion at the largest dimension (variant
  'full')."""
  if r.get('variant') != 'full':
    return []
  n, e = _by_dimension(r)[-1]
  return [(f'ACRE (Lowd & Meek 2005) vs a LinearSVC on {n} binary features, cpu',
           f'{e["boolean_queries_median"]:.0f} median queries, cost <= '
           f'{e["boolean_ratio_max"]:.2f} x MAC (boolean); '
           f'{e["continuous_queries_median"]:.0f} queries (continuous)')]
