"""DP-FTRL: private learning without sampling or shuffling (Kairouz, McMahan, Song, Thakkar,
Thakurta, Xu 2021, arXiv:2103.00039).

The data are visited in a fixed order (shuffled once, independently of the data), each
example in at most one batch per epoch. Follow-the-regularized-leader with linearised losses
and the regulariser ``||theta - theta_0||^2 / (2 lr)`` takes ``theta_{t+1} = theta_0 - lr *
S~_t / B``, where ``S~_t = sum_{s<=t} g_s + z_t`` is the prefix sum of the clipped batch
gradient sums released by the binary-tree mechanism (Dwork et al. 2010; Chan, Shi, Song
2011): node ``(t - 2^j, t]`` of level ``j = ctz(t)`` gets fresh noise ``N(0, (sigma C)^2)``
at step ``t``, and ``z_t`` is the sum of the nodes on the binary decomposition of ``t``
(``popcount(t)`` of them). The node noises are a fixed-depth array carried through ``lax``
(:func:`tree_noise_update`).

:func:`tree_aggregation_privatizer` is that mechanism as an optax transformation emitting
the increments ``(S~_t - S~_{t-1}) / B = (g_t + z_t - z_{t-1}) / B``: chained with
``optax.sgd(lr)`` it is DP-FTRL exactly; with ``optax.sgd(lr, momentum=beta)`` it is the
paper's DP-FTRLM (their ``m <- beta m + S~_t``, ``theta = theta_0 - lr m``) within a tree.
Any other optax optimizer gets the same privatised prefix sums (post-processing).

Formal guarantee: with the tree restarted every epoch (:func:`train` does) each example
touches at most ``depth = ceil(log2(steps_per_epoch + 1))`` nodes of each tree, each with
sensitivity ``C``, under the replace-with-a-special-(zero)-record adjacency of the paper
(Def. 1.1; ``NeighboringRelation.REPLACE_SPECIAL``). Accounted by ``dp_accounting``'s
``SingleEpochTreeAggregationDpEvent`` (RDP ``alpha depth / (2 sigma^2)`` per tree, their
App. D), self-composed over epochs. Neither sampling nor shuffling amplification is claimed.
The plain tree estimator is used (no Honaker variance reduction, no tree completion).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import progress
from jaxsec.privacy import accounting
from jaxsec.privacy import clipping as clipping_lib
from jaxsec.privacy import noise as noise_lib

NEIGHBORING_RELATION = dp_accounting.NeighboringRelation.REPLACE_SPECIAL

__all__ = ['TreeNoiseState', 'tree_depth', 'tree_noise_init', 'tree_noise_update',
           'tree_aggregation_privatizer', 'dp_event', 'epsilon', 'calibrate', 'train',
           'FTRLResult']


def tree_depth(num_steps: int) -> int:
  """Levels of a binary tree over ``num_steps`` leaves: ``ceil(log2(num_steps + 1))``, the
  number of nodes a leaf is in (dp_accounting's ``max_depth``)."""
  _checks.check_int('num_steps', num_steps, minimum=1)
  return int(num_steps).bit_length()


class TreeNoiseState(NamedTuple):
  """Tree-aggregation noise carried through ``lax``."""
  nodes: Any            # pytree; leaves [depth, *shape]: the latest node of each level
  cumulative: Any       # pytree: z_t, the noise of the current prefix sum
  step: jax.Array       # int32: steps taken in the current tree (t)
  key: jax.Array


def tree_noise_init(template: Any, *, depth: int, key: jax.Array) -> TreeNoiseState:
  """Empty tree of ``depth`` levels (serves ``2^depth - 1`` steps) shaped like ``template``."""
  _checks.check_int('depth', depth, minimum=1)
  nodes = jax.tree_util.tree_map(
      lambda l: jnp.zeros((depth,) + jnp.shape(l), jnp.result_type(l)), template)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, template)
  return TreeNoiseState(nodes, zeros, jnp.zeros((), jnp.int32), key)


def tree_noise_update(state: TreeNoiseState, stddev: Any) -> tuple[Any, TreeNoiseState]:
  """One step of the tree: ``(z_t, state)`` with fresh noise on node ``(t - 2^j, t]``,
  ``j = ctz(t)``, and ``z_t`` the sum of the nodes on ``t``'s binary decomposition.
  Jittable; ``t`` must stay below ``2^depth``."""
  t = state.step + 1
  level = jax.lax.population_count((t & -t) - 1)            # count of trailing zeros
  depth = jax.tree_util.tree_leaves(state.nodes)[0].shape[0]
  bits = ((t >> jnp.arange(depth, dtype=jnp.int32)) & 1).astype(jnp.float32)
  k_node, k_next = jax.random.split(state.key)
  zeros = jax.tree_util.tree_map(lambda l: jnp.zeros_like(l[0]), state.nodes)
  fresh = noise_lib.add_gaussian_noise(zeros, k_node, stddev)
  nodes = jax.tree_util.tree_map(lambda n, f: n.at[level].set(f), state.nodes, fresh)
  cumulative = jax.tree_util.tree_map(
      lambda n: jnp.tensordot(bits.astype(n.dtype), n, axes=(0, 0)), nodes)
  return cumulative, TreeNoiseState(nodes, cumulative, t, k_next)


def tree_aggregation_privatizer(*, noise_multiplier: float, l2_norm_clip: float,
                                normalizer: float, steps_per_tree: int, key: jax.Array
                                ) -> optax.GradientTransformation:
  """Optax transformation: summed clipped gradients ``g_t`` -> ``(g_t + z_t - z_{t-1}) / B``.

  ``z_t`` is the tree noise (node std ``noise_multiplier * l2_norm_clip``) of the prefix
  sum; the tree restarts (``z`` back to 0) every ``steps_per_tree`` steps. The input must be
  the *sum* of per-example gradients clipped to ``l2_norm_clip`` (``clipped_grad``), each
  example in at most one step per tree; ``normalizer`` B is the fixed batch size.
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  _checks.check_float('normalizer', normalizer, minimum=0.0, strict_min=True)
  depth = tree_depth(steps_per_tree)
  stddev = float(noise_multiplier) * float(l2_norm_clip)

  def init_fn(params):
    return tree_noise_init(params, depth=depth, key=key)

  def update_fn(updates, state, params=None):
    del params
    restart = state.step >= steps_per_tree
    state = state._replace(
        step=jnp.where(restart, 0, state.step),
        cumulative=jax.tree_util.tree_map(lambda c: jnp.where(restart, 0, c),
                                          state.cumulative))
    prev = state.cumulative
    z, state = tree_noise_update(state, stddev)
    out = jax.tree_util.tree_map(lambda g, a, b: (g + (a - b).astype(g.dtype)) / normalizer,
                                 updates, z, prev)
    return out, state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------
# Accounting (dp_accounting's tree events)
# ----------------------------------------------------------------------------------------

def dp_event(noise_multiplier: float, *, steps_per_epoch: int, epochs: int
             ) -> dp_accounting.DpEvent:
  """One tree per epoch (restarted), each example once per tree: the epochs compose."""
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0, strict_min=True)
  _checks.check_int('steps_per_epoch', steps_per_epoch, minimum=1)
  _checks.check_int('epochs', epochs, minimum=1)
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.SingleEpochTreeAggregationDpEvent(float(noise_multiplier),
                                                      int(steps_per_epoch)), int(epochs))


def epsilon(noise_multiplier: float, delta: float, *, steps_per_epoch: int, epochs: int
            ) -> float:
  """Epsilon at ``delta`` (RDP accountant, replace-special adjacency) of :func:`train`."""
  return accounting.epsilon(dp_event(noise_multiplier, steps_per_epoch=steps_per_epoch,
                                     epochs=epochs), delta, accountant='rdp',
                            neighboring_relation=NEIGHBORING_RELATION)


def calibrate(target_epsilon: float, delta: float, *, steps_per_epoch: int, epochs: int,
              tol: float = 1e-3) -> float:
  """Smallest node noise multiplier with :func:`epsilon` ``<= target_epsilon``."""
  return accounting.calibrate(
      lambda s: dp_event(s, steps_per_epoch=steps_per_epoch, epochs=epochs),
      target_epsilon, delta, accountant='rdp', neighboring_relation=NEIGHBORING_RELATION,
      tol=tol, lower=1e-3)


# ----------------------------------------------------------------------------------------
# Training: one lax.scan per chunk of steps
# ----------------------------------------------------------------------------------------

class FTRLResult(NamedTuple):
  """Outcome of :func:`train`; ``params`` is what ``(epsilon, delta)`` covers (under
  ``neighboring_relation``). ``nonprivate_mean_clipped_fraction`` is computed from the
  batches without noise: NOT covered by the guarantee."""
  params: Any
  opt_state: Any
  noise_multiplier: float
  epsilon: float
  delta: float
  neighboring_relation: str
  steps_per_epoch: int
  epochs: int
  nonprivate_mean_clipped_fraction: float


@functools.partial(jax.jit, static_argnames=(
    'loss_fn', 'optimizer', 'method', 'microbatch_size', 'batch_size', 'steps_per_epoch',
    'noise_multiplier', 'l2_norm_clip'))
def _run_chunk(params, opt_state, steps, order, data, *, loss_fn, optimizer, method,
               microbatch_size, batch_size, steps_per_epoch, noise_multiplier,
               l2_norm_clip):
  chain = _chain(optimizer, noise_multiplier, l2_norm_clip, batch_size, steps_per_epoch,
                 None)
  cg = clipping_lib.clipped_grad(loss_fn, method=method, microbatch_size=microbatch_size)
  mask = jnp.ones((batch_size,), bool)

  def body(carry, t):
    p, s = carry
    j = t % steps_per_epoch
    idx = jax.lax.dynamic_slice(order, (j * batch_size,), (batch_size,))
    batch = tuple(a[idx] for a in data)
    summed, info = cg(p, *batch, mask=mask, l2_norm_clip=l2_norm_clip)
    updates, s = chain.update(summed, s, p)
    p = optax.apply_updates(p, updates)
    return (p, s), jnp.mean((info.norms > l2_norm_clip).astype(jnp.float32))
  (params, opt_state), clipped = jax.lax.scan(body, (params, opt_state), steps)
  return params, opt_state, clipped


def _chain(optimizer, noise_multiplier, l2_norm_clip, batch_size, steps_per_epoch, key):
  # The key lives in the optimizer state (set at init), never in the compiled program.
  priv = tree_aggregation_privatizer(
      noise_multiplier=noise_multiplier, l2_norm_clip=l2_norm_clip, normalizer=batch_size,
      steps_per_tree=steps_per_epoch,
      key=key if key is not None else jax.random.key(0))
  return optax.chain(priv, optimizer)


def train(loss_fn: Callable[..., jax.Array], params: Any, data: Sequence[Any], *,
          optimizer: optax.GradientTransformation, batch_size: int, epochs: int,
          key: jax.Array, l2_norm_clip: float, delta: float,
          noise_multiplier: float | None = None, target_epsilon: float | None = None,
          method: str = 'auto', microbatch_size: int | None = None,
          steps_per_call: int = 50, verbose: bool = False) -> FTRLResult:
  """Trains with DP-FTRL (tree restarted each epoch); ``optax.sgd(lr)`` gives the paper's
  DP-FTRL, ``optax.sgd(lr, momentum=0.9)`` its DP-FTRLM within each tree.

  The data are permuted once with ``key`` (data-independent) and visited in that order
  every epoch in ``N // batch_size`` disjoint batches (the last partial batch is dropped).
  Give ``noise_multiplier`` (node noise std / C) or ``target_epsilon`` (calibrated with
  :func:`calibrate`). ``loss_fn(params, *batch) -> [B]`` as in ``clipped_grad``.
  """
  data = tuple(jnp.asarray(a) for a in data)
  n = int(data[0].shape[0])
  for i, a in enumerate(data):
    if a.shape[0] != n:
      raise ValueError(f'data[{i}] has {a.shape[0]} rows; data[0] has {n}.')
  _checks.check_int('batch_size', batch_size, minimum=1, maximum=n)
  _checks.check_int('epochs', epochs, minimum=1)
  _checks.check_int('steps_per_call', steps_per_call, minimum=1)
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  spe = n // batch_size
  if (noise_multiplier is None) == (target_epsilon is None):
    raise ValueError('Give exactly one of noise_multiplier and target_epsilon; got '
                     f'noise_multiplier={noise_multiplier}, target_epsilon={target_epsilon}.')
  if target_epsilon is not None:
    noise_multiplier = calibrate(target_epsilon, delta, steps_per_epoch=spe, epochs=epochs)
  assert noise_multiplier is not None
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  eps = (epsilon(noise_multiplier, delta, steps_per_epoch=spe, epochs=epochs)
         if noise_multiplier > 0 else float('inf'))
  k_order, k_noise = jax.random.split(key)
  order = jax.random.permutation(k_order, n).astype(jnp.int32)
  static = dict(loss_fn=loss_fn, optimizer=optimizer, method=method,
                microbatch_size=microbatch_size, batch_size=int(batch_size),
                steps_per_epoch=spe, noise_multiplier=float(noise_multiplier),
                l2_norm_clip=float(l2_norm_clip))
  _checks.check_hashable('it is a static argument of the compiled DP-FTRL chunk', **static)
  opt_state = _chain(optimizer, float(noise_multiplier), float(l2_norm_clip), batch_size,
                     spe, k_noise).init(params)
  total = spe * epochs
  clipped = []
  bar = progress.Progress('DP-FTRL', total, 'step') if verbose else None
  t = 0
  while t < total:
    k = min(steps_per_call, total - t)
    params, opt_state, c = _run_chunk(params, opt_state,
                                      jnp.arange(t, t + k, dtype=jnp.int32), order, data,
                                      **static)
    clipped.append(np.asarray(c))
    t += k
    if bar is not None:
      print(bar.update(k), flush=True)
  return FTRLResult(params, opt_state, float(noise_multiplier), float(eps), float(delta),
                    NEIGHBORING_RELATION.name, spe, int(epochs),
                    float(np.mean(np.concatenate(clipped))))
