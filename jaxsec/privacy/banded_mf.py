"""Banded matrix factorization, amplified by cyclic Poisson sampling (BandMF; Choquette-Choo,
Ganesh, McKenna, McMahan, Rush, Thakurta, Xu, NeurIPS 2023, arXiv:2306.08153).

The matrix mechanism releases ``C x + z`` for the stream of clipped batch gradient sums
``x_1..x_n`` (``z_t ~ N(0, (sigma C_clip)^2 I)``); step t trains on row t of
``C^{-1} (C x + z) = x + C^{-1} z``, so the iterates of any optimizer are post-processing.
``C`` is lower-triangular, ``b``-banded and Toeplitz (``coef``, found by jax_privacy's
``toeplitz.optimize_banded_toeplitz`` for the prefix-sum workload), with its columns
normalised to norm 1. ``C^{-1} z`` is streamed by jax_privacy's
``toeplitz.inverse_as_streaming_matrix`` (their Alg. 9): the last ``b - 1`` noise rows are
the state, O(b d) memory, carried through the training ``lax.scan``.

Formal guarantee (their Thm. 4): under cyclic Poisson sampling with ``k >= b`` groups
(:class:`~jaxsec.privacy.sampling.CyclicPoissonSampler`, their Alg. 2) an example's
participations are at least ``b`` steps apart, so they hit disjoint rows of ``C`` through
columns of norm 1, and the run has the guarantee of DP-SGD with the group's sampling
probability over ``ceil(n / k)`` steps: the sampler's own ``dp_accounting`` event, under
zero-out adjacency. With ``b = k = 1``, ``C = I`` and this is DP-SGD step for step.
The number of bands is chosen as in their Sec. 5 (:func:`select_bands`): the smallest
prefix-sum error at the noise multiplier each ``b`` needs for the target epsilon.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax_privacy.matrix_factorization import streaming_matrix
from jax_privacy.matrix_factorization import toeplitz
import numpy as np
import optax

from jaxsec import _checks
from jaxsec import progress
from jaxsec.privacy import clipping as clipping_lib
from jaxsec.privacy import dpsgd
from jaxsec.privacy import noise as noise_lib
from jaxsec.privacy import sampling as sampling_lib

__all__ = ['optimize_strategy', 'inverse_stream', 'mean_squared_error', 'BandsChoice',
           'select_bands', 'check_sampler', 'BandedNoiseState', 'banded_mf_privatizer',
           'train', 'BandedMFResult']


def _check_coef(coef: Any, num_steps: int) -> tuple[float, ...]:
  """``coef`` as a hashable unit-norm tuple, checked (1-D, finite, ``c_0 != 0``, at most
  ``num_steps`` bands)."""
  arr = np.asarray(coef, np.float64)
  if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or arr[0] == 0:
    raise ValueError(f'coef={coef!r} must be a non-empty 1-D array of finite Toeplitz '
                     'coefficients with coef[0] != 0.')
  if arr.size > num_steps:
    raise ValueError(f'coef has {arr.size} bands; expected at most num_steps={num_steps}.')
  return tuple(float(v) for v in arr / np.linalg.norm(arr))


def optimize_strategy(num_steps: int, bands: int, *, max_optimizer_steps: int = 250
                      ) -> np.ndarray:
  """Unit-norm Toeplitz coefficients of the ``bands``-banded strategy with the smallest mean
  squared prefix-sum error over ``num_steps`` steps (jax_privacy's L-BFGS, float64)."""
  _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_int('bands', bands, minimum=1, maximum=num_steps)
  _checks.check_int('max_optimizer_steps', max_optimizer_steps, minimum=1)
  if bands == 1:
    return np.ones(1)
  coef = np.asarray(toeplitz.optimize_banded_toeplitz(
      num_steps, bands, max_optimizer_steps=max_optimizer_steps), np.float64)
  return coef / np.linalg.norm(coef)


def inverse_stream(coef: Any, num_steps: int) -> streaming_matrix.StreamingMatrix:
  """``C^{-1}`` of the column-normalised ``num_steps x num_steps`` banded Toeplitz ``C``, as
  jax_privacy's ``StreamingMatrix`` (state: the last ``b - 1`` rows of the output)."""
  _checks.check_int('num_steps', num_steps, minimum=1)
  c = jnp.asarray(_check_coef(coef, num_steps), jnp.float32)
  return toeplitz.inverse_as_streaming_matrix(c, column_normalize_for_n=num_steps)


def mean_squared_error(coef: Any, num_steps: int) -> float:
  """Mean over t of the squared norm of row t of ``A C^{-1}`` (``A`` the prefix sums): the
  variance of the noise on the prefix sum of the gradients, per unit noise std."""
  b = streaming_matrix.multiply_streaming_matrices(streaming_matrix.prefix_sum(),
                                                   inverse_stream(coef, num_steps))
  return float(jnp.mean(b.row_norms_squared(num_steps)))


class BandsChoice(NamedTuple):
  """One candidate of :func:`select_bands`: ``rmse = noise_multiplier * sqrt(mse)``."""
  bands: int
  coef: tuple[float, ...]
  noise_multiplier: float
  mean_squared_error: float
  rmse: float


def select_bands(candidates: Sequence[int], *, dataset_size: int, num_steps: int,
                 expected_batch_size: float, target_epsilon: float, delta: float,
                 accountant: str = 'pld', max_optimizer_steps: int = 250
                 ) -> list[BandsChoice]:
  """For each ``b`` in ``candidates``: the optimised strategy, the noise multiplier that
  cyclic Poisson sampling with ``k = b`` groups needs for ``(target_epsilon, delta)``, and
  the resulting prefix-sum RMSE (their Sec. 5; jax_privacy's
  ``optimize_coefs_for_amplifications`` with this accountant). Uses only public quantities;
  pick ``min(choices, key=lambda c: c.rmse)``."""
  if not candidates:
    raise ValueError('candidates is empty; expected at least one number of bands.')
  out = []
  for b in candidates:
    sampler = sampling_lib.CyclicPoissonSampler(
        dataset_size=dataset_size, num_steps=num_steps, cycle_length=b,
        expected_batch_size=expected_batch_size)
    sigma = sampler.calibrate(target_epsilon, delta, accountant=accountant)
    coef = optimize_strategy(num_steps, b, max_optimizer_steps=max_optimizer_steps)
    mse = mean_squared_error(coef, num_steps)
    out.append(BandsChoice(b, _check_coef(coef, num_steps), float(sigma), mse,
                           float(sigma) * math.sqrt(mse)))
  return out


def check_sampler(sampler: Any, bands: int) -> None:
  """Raises unless ``sampler`` separates participations by at least ``bands`` steps (the
  premise of Thm. 4): a :class:`~jaxsec.privacy.sampling.CyclicPoissonSampler` with
  ``cycle_length >= bands``, or a :class:`~jaxsec.privacy.sampling.PoissonSampler` with one
  band."""
  if isinstance(sampler, sampling_lib.CyclicPoissonSampler):
    sep = sampler.cycle_length
  elif type(sampler) is sampling_lib.PoissonSampler:   # pylint: disable=unidiomatic-typecheck
    sep = 1
  else:
    raise ValueError(f'sampler={sampler!r}: banded MF is accounted for (cyclic) Poisson '
                     'sampling only; expected a CyclicPoissonSampler or PoissonSampler.')
  if bands > sep:
    raise ValueError(f'{bands} bands need participations at least {bands} steps apart; '
                     f'sampler={sampler!r} separates them by {sep} (use cycle_length >= '
                     f'{bands}).')


class BandedNoiseState(NamedTuple):
  """State of :func:`banded_mf_privatizer`."""
  stream: Any        # the StreamingMatrix state of C^{-1} (b - 1 buffers per leaf)
  key: jax.Array


def _correlated_step(cinv, summed, stream, key, stddev, normalizer):
  """``((x_t + (C^{-1} z)_t) / normalizer, stream)`` with ``z_t = N(0, stddev^2)`` from
  ``key`` (drawn as DP-SGD draws its noise)."""
  z = noise_lib.add_gaussian_noise(jax.tree_util.tree_map(jnp.zeros_like, summed), key,
                                   stddev)
  w, stream = cinv.multiply_next(z, stream)
  out = jax.tree_util.tree_map(lambda g, n: (g + n.astype(g.dtype)) / normalizer, summed, w)
  return out, stream


def banded_mf_privatizer(*, coef: Any, num_steps: int, noise_multiplier: float,
                         l2_norm_clip: float, normalizer: float, key: jax.Array
                         ) -> optax.GradientTransformation:
  """Optax transformation: summed clipped gradients ``x_t`` -> ``(x_t + (C^{-1} z)_t) / B``.

  ``z_t ~ N(0, (noise_multiplier * l2_norm_clip)^2 I)``; ``C`` is the column-normalised
  banded Toeplitz matrix of ``coef`` over ``num_steps`` steps. The input must be the *sum*
  of per-example gradients clipped to ``l2_norm_clip`` and batches drawn by a sampler that
  passes :func:`check_sampler`; ``normalizer`` B is its (expected) batch size. With
  ``coef=[1]`` it is :func:`~jaxsec.privacy.noise.gaussian_privatizer` exactly.
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  _checks.check_float('normalizer', normalizer, minimum=0.0, strict_min=True)
  cinv = inverse_stream(coef, num_steps)
  stddev = noise_multiplier * l2_norm_clip

  def init_fn(params):
    return BandedNoiseState(cinv.init_multiply(params), key)

  def update_fn(updates, state, params=None):
    del params
    k, nk = jax.random.split(state.key)
    out, stream = _correlated_step(cinv, updates, state.stream, k, stddev, normalizer)
    return out, BandedNoiseState(stream, nk)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------
# Training: one lax.scan per chunk of steps
# ----------------------------------------------------------------------------------------

class BandedMFResult(NamedTuple):
  """Outcome of :func:`train`. ``params`` is what ``(epsilon, delta)`` covers (``delta``
  includes the sampler's overflow term ``overflow_delta``) under ``neighboring_relation``.
  ``nonprivate_mean_clipped_fraction`` is computed from the batches without noise: NOT
  covered by the guarantee."""
  params: Any
  opt_state: Any
  epsilon: float
  delta: float
  overflow_delta: float
  neighboring_relation: str
  accountant: str
  sampler: Any
  coef: tuple[float, ...]
  noise_multiplier: float
  nonprivate_mean_clipped_fraction: float


@functools.partial(jax.jit, static_argnames=(
    'loss_fn', 'optimizer', 'geometry', 'coef', 'noise_multiplier', 'method',
    'microbatch_size'))
def _run_chunk(params, opt_state, stream, clip, steps, schedule, data, noise_keys, *,
               loss_fn, optimizer, geometry, coef, noise_multiplier, method,
               microbatch_size):
  sampler = geometry.sampler
  cinv = inverse_stream(coef, sampler.num_steps)
  cg = clipping_lib.clipped_grad(loss_fn, method=method, microbatch_size=microbatch_size)

  def body(carry, t):
    p, s, st = carry
    idx, mask = sampler.indices(schedule, t)
    summed, info = cg(p, *(a[idx] for a in data), mask=mask, l2_norm_clip=clip)
    k_noise, _ = jax.random.split(noise_keys[t])        # as dpsgd.make_step
    grads, st = _correlated_step(cinv, summed, st, k_noise, noise_multiplier * clip,
                                 sampler.normalizer)
    updates, s = optimizer.update(grads, s, p)
    p = optax.apply_updates(p, updates)
    m = mask.astype(jnp.float32)
    frac = jnp.sum(m * (info.norms > clip)) / jnp.maximum(jnp.sum(m), 1.0)
    return (p, s, st), frac
  (params, opt_state, stream), clipped = jax.lax.scan(body, (params, opt_state, stream),
                                                      steps)
  return params, opt_state, stream, clipped


def train(loss_fn: Callable[..., jax.Array], params: Any, data: Sequence[Any], *,
          optimizer: optax.GradientTransformation, sampler: sampling_lib._Sampler,
          coef: Any, key: jax.Array, l2_norm_clip: float, delta: float,
          noise_multiplier: float | None = None, target_epsilon: float | None = None,
          accountant: str | None = None, method: str = 'auto',
          microbatch_size: int | None = None, steps_per_call: int = 50,
          verbose: bool = False) -> BandedMFResult:
  """Trains with BandMF noise ``C^{-1} z`` on batches drawn (and accounted) by ``sampler``.

  ``coef``: the strategy's Toeplitz coefficients (:func:`optimize_strategy`); ``sampler``
  must separate participations by ``len(coef)`` steps (:func:`check_sampler`), and its
  ``num_steps`` is the run. Give ``noise_multiplier`` or ``target_epsilon`` (calibrated with
  the sampler's event). Keys are derived as in :func:`jaxsec.privacy.dpsgd.train`, so with
  ``coef=[1]`` the run is DP-SGD's step for step. ``loss_fn(params, *batch) -> [B]``.
  """
  data = tuple(jnp.asarray(a) for a in data)
  coef = _check_coef(coef, sampler.num_steps)
  check_sampler(sampler, len(coef))
  for i, a in enumerate(data):
    if a.shape[0] != sampler.dataset_size:
      raise ValueError(f'data[{i}] has {a.shape[0]} rows; the sampler was built for '
                       f'dataset_size={sampler.dataset_size}.')
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  _checks.check_int('steps_per_call', steps_per_call, minimum=1)
  accountant = accountant or sampler.default_accountant()
  if (noise_multiplier is None) == (target_epsilon is None):
    raise ValueError('Give exactly one of noise_multiplier and target_epsilon; got '
                     f'noise_multiplier={noise_multiplier}, target_epsilon={target_epsilon}.')
  if target_epsilon is not None:
    noise_multiplier = sampler.calibrate(target_epsilon, delta, accountant=accountant)
  assert noise_multiplier is not None
  eps = sampler.epsilon(noise_multiplier, delta, accountant=accountant)
  k_sched, k_noise = jax.random.split(key)
  schedule = sampler.schedule(k_sched)
  noise_keys = jax.random.split(k_noise, sampler.num_steps)
  static = dict(loss_fn=loss_fn, optimizer=optimizer,
                geometry=dpsgd._Geometry(sampler),  # pylint: disable=protected-access
                coef=coef, noise_multiplier=float(noise_multiplier), method=method,
                microbatch_size=microbatch_size)
  _checks.check_hashable('it is a static argument of the compiled BandMF chunk', **static)
  opt_state = optimizer.init(params)
  stream = inverse_stream(coef, sampler.num_steps).init_multiply(params)
  clip = jnp.asarray(l2_norm_clip, jnp.float32)
  total, t, clipped = sampler.num_steps, 0, []
  bar = progress.Progress('BandMF', total, 'step') if verbose else None
  while t < total:
    k = min(steps_per_call, total - t)
    params, opt_state, stream, c = _run_chunk(
        params, opt_state, stream, clip, jnp.arange(t, t + k, dtype=jnp.int32), schedule,
        data, noise_keys, **static)
    clipped.append(np.asarray(c))
    t += k
    if bar is not None:
      print(bar.update(k), flush=True)
  return BandedMFResult(
      params, opt_state, epsilon=float(eps), delta=sampler.delta_spent(eps, delta),
      overflow_delta=float(sampler.overflow_delta(eps)),
      neighboring_relation=sampler.neighboring_relation.name, accountant=accountant,
      sampler=sampler, coef=coef, noise_multiplier=float(noise_multiplier),
      nonprivate_mean_clipped_fraction=float(np.mean(np.concatenate(clipped))))
