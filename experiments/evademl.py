r"""EvadeML genetic programming (Xu, Qi & Evans, NDSS 2016) against classifiers on binary
PDF-like features: evasion rate, generations, oracle calls and classifier queries.

    python -m experiments.run --config=experiments/configs/evademl.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/evademl.py:smoke --workdir=/tmp/s

Simulated data (the paper's Contagio PDFs and the Cuckoo sandbox are not bundled): binary
"object path" features drawn per class (Bernoulli rates in the config): ``functional``
features (the malicious payload's /JavaScript, /OpenAction, ... : every malicious file has
at least one, benign files rarely), further malicious-indicative features (obfuscation,
odd structure), benign-indicative ones (fonts, pages, metadata) and neutral ones. The
synthetic oracle (``evademl.functional_features_oracle``): a variant keeps its seed's
behaviour iff every functional feature present in the seed is still present. Classifiers:
L2 logistic regression (``learners.logreg_newton``) and an MLP (full-batch GD), each scoring
the malicious probability, threshold 0.5; their scores are jitted and batched over every
population still running (one call per generation). Seeds: malicious test files the
classifier detects; donors (the external genome): benign training files. Settings of the
paper: population 48, 20 generations, mutation rate 0.1.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common as common_lib
from experiments import defense_common as dc
from jaxsec import io as jio
from jaxsec import models
from jaxsec.attacks.blackbox import evademl
from jaxsec.attacks.poisoning import learners

NAME = 'evademl'


def simulate(cfg, rng: np.random.Generator):
  """``(x_train, y_train, x_test, y_test, functional)``: 0 / 1 features, label 1 malicious."""
  r = cfg.rates
  kinds = [('functional', cfg.n_functional), ('malicious', cfg.n_malicious_ind),
           ('benign', cfg.n_benign_ind), ('neutral', cfg.n_neutral)]
  p_mal, p_ben = [], []
  for kind, k in kinds:
    if kind == 'neutral':
      lo, hi = r.neutral
      p = rng.uniform(lo, hi, k)
      p_mal.append(p)
      p_ben.append(p)
    else:
      p_mal.append(np.full(k, getattr(r, f'{kind}_in_malicious')))
      p_ben.append(np.full(k, getattr(r, f'{kind}_in_benign')))
  p_mal, p_ben = np.concatenate(p_mal), np.concatenate(p_ben)
  functional = np.arange(cfg.n_functional)

  def draw(m):
    y = np.arange(m) % 2
    p = np.where(y[:, None] == 1, p_mal[None], p_ben[None])
    x = (rng.random((m, p_mal.size)) < p).astype(np.int8)
    none = (y == 1) & (x[:, functional].sum(1) == 0)          # malware needs a payload
    x[np.flatnonzero(none), rng.integers(0, cfg.n_functional, none.sum())] = 1
    return x, y.astype(np.int32)
  x, y = draw(cfg.n_train)
  xt, yt = draw(cfg.n_test)
  return x, y, xt, yt, functional


def classifiers(cfg, x, y, key) -> dict:
  """``name -> score_fn(X) -> P(malicious)`` (jitted)."""
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  lr = learners.logreg_newton(xj, yj, num_classes=1, l2=cfg.logreg_l2)
  model = models.get('mlp', num_classes=2, hidden=tuple(cfg.mlp_hidden))
  train_fn = learners.unrolled_gd(model.apply, lambda k: models.init(model, k, (1, x.shape[1])),
                                  num_steps=cfg.mlp_steps, learning_rate=cfg.mlp_lr,
                                  momentum=0.9, remat=False)
  mp = jax.jit(train_fn)(xj, yj, key)
  mlp_logits = models.logits_fn(model, mp)
  return {
      'logreg': jax.jit(lambda a: jax.nn.sigmoid(learners.linear_apply(lr, a)[:, 0])),
      'mlp': jax.jit(lambda a: jax.nn.softmax(mlp_logits(a), -1)[:, 1])}


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  rng = np.random.default_rng(cfg.seed)
  x, y, xt, yt, functional = simulate(cfg, rng)
  key = jax.random.key(cfg.seed)
  oracle = evademl.functional_features_oracle(functional)
  donors = x[y == 0]
  attack = evademl.evademl_gp(pop_size=cfg.pop_size, max_generations=cfg.max_generations,
                              mutation_rate=cfg.mutation_rate, threshold=0.5)
  results = {'name': NAME, 'variant': cfg.variant, 'config': cfg.to_dict(),
             'device': common_lib.device_info(), 'n_features': int(x.shape[1]),
             'classifiers': {}}
  for k, (name, score) in enumerate(classifiers(cfg, x, y, jax.random.fold_in(key, 1)).items()):
    s_test = np.asarray(score(jnp.asarray(xt, jnp.float32)))
    acc = float(np.mean((s_test >= 0.5) == (yt == 1)))
    seeds = xt[(yt == 1) & (s_test >= 0.5)][:cfg.n_seeds]
    t0 = time.time()
    r = attack(score, oracle, seeds, donors, jax.random.fold_in(key, 10 + k),
               progress=f'{NAME}/{name}')
    sec = time.time() - t0
    assert oracle(r.x, seeds).all()
    ok = r.success
    results['classifiers'][name] = {
        'test_accuracy': acc, 'n_seeds': int(seeds.shape[0]),
        'evasion_rate': float(ok.mean()),
        'generations_mean': float(r.generations.mean()),
        'generations_median_evaded': float(np.median(r.generations[ok])) if ok.any() else None,
        'queries_mean': float(r.queries.mean()), 'queries_total': int(r.queries.sum()),
        'oracle_calls_mean': float(r.oracle_calls.mean()),
        'oracle_calls_total': int(r.oracle_calls.sum()),
        'features_changed_median': float(np.median(r.info['features_changed'])),
        'score_max_evaded': float(r.info['score'][ok].max()) if ok.any() else None,
        'seconds': sec,
        'per_seed': {'success': ok.tolist(), 'generations': r.generations.tolist(),
                     'queries': r.queries.tolist()}}
    dc.log(f'{NAME}: {name}: evaded {ok.sum()}/{ok.size}, mean generations '
           f'{r.generations.mean():.1f}, {r.queries.sum()} queries ({sec:.1f} s)')
  jio.write_json_atomic(os.path.join(workdir, f'{NAME}.json'), results)
  return results


def render_markdown(r: dict) -> str:
  c = r['config']
  title = dc.heading('EvadeML genetic programming against binary-feature classifiers', r,
                     NAME)
  intro = (f'Xu, Qi & Evans (2016) on simulated PDF-like binary features ({r["n_features"]}: '
           f'{c["n_functional"]} functional, {c["n_malicious_ind"]} malicious-indicative, '
           f'{c["n_benign_ind"]} benign-indicative, {c["n_neutral"]} neutral); oracle: the '
           'seed\'s functional features stay present. Population '
           f'{c["pop_size"]}, up to {c["max_generations"]} generations, mutation rate '
           f'{c["mutation_rate"]}; seeds = detected malicious test files; donors = benign '
           'training files. Queries and oracle calls include the seed\'s own check.')
  lines = [title, '', intro, '']
  rows = []
  for name, e in r['classifiers'].items():
    med = e['generations_median_evaded']
    rows.append([name, dc.fmt(e['test_accuracy']), e['n_seeds'], dc.fmt(e['evasion_rate']),
                 f'{e["generations_mean"]:.1f}', '-' if med is None else f'{med:g}',
                 f'{e["queries_mean"]:.0f}', f'{e["oracle_calls_mean"]:.0f}',
                 f'{e["features_changed_median"]:g}', f'{e["seconds"]:.1f}'])
  lines += common_lib.md_table(
      ['classifier', 'test acc', 'seeds', 'evasion rate', 'generations (mean)',
       'generations (median, evaded)', 'queries / seed', 'oracle calls / seed',
       'features changed (median)', 'seconds'], rows)
  return '\n'.join(lines) + '\n'
