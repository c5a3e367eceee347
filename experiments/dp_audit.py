r"""Empirical privacy audit of jaxsec's DP-SGD: lower bounds on epsilon vs the accountant.

    python -m experiments.run --config=experiments/configs/dp_audit.py --workdir=docs/results  # full run (a few minutes)
    python -m experiments.run --config=experiments/configs/dp_audit.py:smoke --workdir=/tmp/s

The audited program is jaxsec's own DP-SGD step (``jaxsec.privacy.dpsgd.make_step`` with
the Poisson sampler that also accounts it): logistic regression on synthetic data plus
*gradient canaries* (Nasr et al. 2021's strongest white-box adversary that only sees the
final model): a canary's loss is ``-L w_c`` for its own otherwise unused parameter
``w_c``, so its per-example gradient has norm ``L = canary_scale * C`` and, once clipped,
moves ``w_c`` by exactly ``C`` (times the learning rate over the normaliser) each time it
is sampled. The score of a canary is its final ``w_c``.

* Multi-run audit (Jagielski et al. 2020 / Nasr et al. 2021): ``runs`` training runs with
  one canary and ``runs`` without, all in one vmapped program; a Bonferroni-corrected
  threshold test with Clopper-Pearson bounds gives a 95% lower bound on epsilon.
* One-run audit (Steinke, Nasr, Jagielski 2023): ``m`` canaries each included with
  probability 1/2 in a single run of ``jaxsec.privacy.dpsgd.train``; guess "in" for the
  top ``k`` scores and "out" for the bottom ``k``.

Each is run for a correct DP-SGD and for a *buggy* one that forgets to clip (per-example
gradients are summed unclipped while the noise is still calibrated to C). The accountant's
epsilon is the same for both, so a sound audit must give a lower bound below the claimed
epsilon for the correct one and may exceed it for the buggy one, which it must, to be
useful. Two sampling regimes: full batch (q = 1; the accountant is exact there and the
audit can be nearly tight) and Poisson (q < 1; final-model audits are known to be loose).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsec import io as jio
from jaxsec.privacy import audit
from jaxsec.privacy import clipping
from jaxsec.privacy import dpsgd
from jaxsec.privacy import sampling

NAME = 'dp_audit'


def _data(c, key):
  k1, k2 = jax.random.split(key)
  x = jax.random.normal(k1, (c.num_real, c.dim))
  y = (x @ jax.random.normal(k2, (c.dim,)) > 0).astype(jnp.float32)
  return x, y


def _loss_fn(c):
  big = c.canary_scale * c.l2_norm_clip

  def loss(params, x, y, canary):
    """canary = -1 for real examples, j >= 0 for the canary owning parameter dim + j."""
    real = optax.sigmoid_binary_cross_entropy(x @ params[:c.dim], y)
    cw = params[c.dim + jnp.maximum(canary, 0)]
    return jnp.where(canary >= 0, -big * cw, real)
  return loss


def _buggy_clip_fn(loss_fn):
  """DP-SGD that forgets to clip: the per-example sum is unclipped (C only sets noise)."""
  inner = clipping.clipped_grad(loss_fn)

  def fn(params, *batch, mask=None, l2_norm_clip=None):
    del l2_norm_clip
    return inner(params, *batch, mask=mask, l2_norm_clip=1e12)
  return fn


def _sampler(c, q, steps, n, normalizer):
  return sampling.PoissonSampler(dataset_size=n, num_steps=steps, sampling_probability=q,
                                 max_batch_size=n if q == 1.0 else None,
                                 normalizer=normalizer)


def multi_run_scores(c, q, steps, sigma, with_canary, key, buggy):
  """Final canary coordinate of ``c.runs`` independent DP-SGD runs (vmapped)."""
  x, y = _data(c, jax.random.key(c.seed))
  n = c.num_real + int(with_canary)
  can = jnp.full((n,), -1, jnp.int32)
  if with_canary:
    x = jnp.concatenate([x, jnp.zeros((1, c.dim))])
    y = jnp.concatenate([y, jnp.zeros((1,))])
    can = can.at[-1].set(0)
  normalizer = q * c.num_real          # public constant, identical on D and D'
  s = _sampler(c, q, steps, n, normalizer)
  lf = _loss_fn(c)
  opt = optax.sgd(c.learning_rate)
  step = dpsgd.make_step(lf, opt, noise_multiplier=sigma, normalizer=normalizer,
                         clip_fn=_buggy_clip_fn(lf) if buggy else None)
  k_sched, k_noise = jax.random.split(key)
  scheds = s.schedules(jax.random.split(k_sched, c.runs))
  params0 = jnp.zeros((c.dim + 1,))

  def one(sched, kn):
    def body(carry, t):
      p, st = carry
      idx, mask = s.indices(sched, t)
      p, st, _, _ = step(p, st, c.l2_norm_clip, (x[idx], y[idx], can[idx]), mask,
                         jax.random.fold_in(kn, t))
      return (p, st), None
    (p, _), _ = jax.lax.scan(body, (params0, opt.init(params0)), jnp.arange(steps))
    return p[c.dim]

  return np.asarray(jax.jit(jax.vmap(one))(scheds, jax.random.split(k_noise, c.runs)))


def one_run(c, q, steps, sigma, key, buggy):
  """Steinke et al. 2023: m canaries, each in w.p. 1/2, one run of dpsgd.train."""
  m = c.one_run_canaries
  k_inc, k_train = jax.random.split(key)
  included = np.asarray(jax.random.bernoulli(k_inc, 0.5, (m,)))
  x, y = _data(c, jax.random.key(c.seed))
  ids = np.nonzero(included)[0].astype(np.int32)
  xa = jnp.concatenate([x, jnp.zeros((len(ids), c.dim))])
  ya = jnp.concatenate([y, jnp.zeros((len(ids),))])
  ca = jnp.concatenate([jnp.full((c.num_real,), -1, jnp.int32), jnp.asarray(ids)])
  n = int(xa.shape[0])
  normalizer = q * (c.num_real + m / 2)
  s = _sampler(c, q, steps, n, normalizer)
  lf = _loss_fn(c)
  res = dpsgd.train(lf, jnp.zeros((c.dim + m,)), (xa, ya, ca),
                    optimizer=optax.sgd(c.learning_rate), sampler=s, key=k_train,
                    l2_norm_clip=c.l2_norm_clip, delta=c.delta, noise_multiplier=sigma,
                    accountant='pld', steps_per_call=steps,
                    clip_fn=_buggy_clip_fn(lf) if buggy else None)
  scores = np.asarray(res.params[c.dim:])
  k = c.one_run_guesses
  out = audit.one_run_audit(scores, included, k_pos=k, k_neg=k, delta=c.delta)
  return out, res.epsilon


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  rows = []
  key = jax.random.key(c.seed + 1)
  for ri, reg in enumerate(c.regimes):
    q, steps = float(reg['q']), int(reg['steps'])
    acct = _sampler(c, q, steps, c.num_real, q * c.num_real)
    for ei, eps in enumerate(c.claimed_epsilons):
      t0 = time.time()
      sigma = acct.calibrate(eps, c.delta, accountant='pld')
      claimed = acct.epsilon(sigma, c.delta, accountant='pld')
      for buggy in (False, True):
        kk = jax.random.fold_in(key, (ri * 100 + ei) * 2 + int(buggy))
        k1, k2, k3 = jax.random.split(kk, 3)
        pos = multi_run_scores(c, q, steps, sigma, True, k1, buggy)
        neg = multi_run_scores(c, q, steps, sigma, False, k2, buggy)
        mr = audit.epsilon_lower_bound_from_scores(pos, neg, delta=c.delta,
                                                   num_thresholds=c.num_thresholds)
        orun, _ = one_run(c, q, steps, sigma, k3, buggy)
        row = {'regime': reg['name'], 'q': q, 'steps': steps, 'noise_multiplier': sigma,
               'claimed_epsilon': claimed, 'target_epsilon': eps, 'buggy_no_clip': buggy,
               'multi_run_lower_bound': mr.epsilon_lower_bound,
               'multi_run_fpr': mr.false_positive_rate, 'multi_run_fnr': mr.false_negative_rate,
               'one_run_lower_bound': orun.epsilon_lower_bound,
               'one_run_correct': orun.num_correct, 'one_run_guesses': orun.num_guesses,
               'seconds': time.time() - t0}
        print(row, flush=True)
        rows.append(row)
  out = {'name': NAME, 'variant': c.variant, 'delta': c.delta, 'runs_per_side': c.runs,
         'one_run_canaries': c.one_run_canaries, 'confidence': 0.95, 'rows': rows,
         'config': c.to_dict()}
  jio.write_json_atomic(os.path.join(workdir, NAME + '.json'), out)
  return out


def render_markdown(r: dict) -> str:
  """The docs table, rendered from the results JSON."""
  lines = ['## Privacy audit of DP-SGD (gradient canaries, final model)', '',
           f"95% lower bounds on epsilon (delta = {r['delta']:g}): multi-run threshold test "
           f"over {r['runs_per_side']} runs per side (Clopper-Pearson, Bonferroni over "
           f"thresholds), and the one-run audit with {r['one_run_canaries']} canaries "
           '(Steinke et al. 2023). "no clip" is a deliberately broken DP-SGD that sums '
           'unclipped gradients but calibrates noise to C: its lower bound exceeding the '
           'claimed epsilon is the audit catching the bug. A 95% bound from R runs cannot '
           'exceed about log(R) (one-run: log of the number of guesses), so a bug can only be '
           'shown below that ceiling.', '',
           '| regime | DP-SGD | sigma | claimed eps (PLD) | multi-run lower bound | '
           'one-run lower bound | caught? |', '|---|---|---|---|---|---|---|']
  for x in r['rows']:
    lb = max(x['multi_run_lower_bound'], x['one_run_lower_bound'])
    verdict = ('**bug caught**' if lb > x['claimed_epsilon'] else 'no') if x[
        'buggy_no_clip'] else ('sound' if lb <= x['claimed_epsilon'] else '**VIOLATION**')
    lines.append(f"| {x['regime']} (q={x['q']:g}, T={x['steps']}) | "
                 f"{'no clip (bug)' if x['buggy_no_clip'] else 'correct'} | "
                 f"{x['noise_multiplier']:.3f} | {x['claimed_epsilon']:.2f} | "
                 f"{x['multi_run_lower_bound']:.2f} | {x['one_run_lower_bound']:.2f} | "
                 f'{verdict} |')
  return '\n'.join(lines) + '\n'
