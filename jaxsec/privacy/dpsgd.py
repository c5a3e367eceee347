"""DP-SGD (Abadi et al. 2016) as an optax-compatible training path.

One step: draw the batch with a sampler (:mod:`jaxsec.privacy.sampling`), sum the
per-example gradients clipped to ``C`` (:func:`jaxsec.privacy.clipping.clipped_grad`), add
``N(0, (sigma C)^2 I)`` (:mod:`jaxsec.privacy.noise`, shared with DP-FedAvg), divide by the
sampler's normaliser (the *expected* batch size), and hand the result to any optax optimizer:
chain :func:`~jaxsec.privacy.noise.gaussian_privatizer` before it
(``optax.chain(privatizer, optax.sgd(...))``), or use :func:`train`, which also does
sampling and accounting.

The guarantee: the released parameters are ``(epsilon, delta')``-DP under the sampler's
adjacency, with ``epsilon = sampler.epsilon(sigma, delta)`` (dp_accounting, PLD or RDP) and
``delta' = sampler.delta_spent(epsilon, delta)`` (``delta`` plus the Poisson sampler's
batch-overflow term; ``DPResult.delta`` is ``delta'``). Only the parameters (and, with
adaptive clipping, the noised clip norms) are covered; ``DPResult.nonprivate_diagnostics``
(clipped fraction, mean norm, realised batch sizes) is NOT covered: do not publish it.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially private learning with
adaptive clipping", 2021): ``C <- C exp(-eta (b - gamma))`` follows the ``target_quantile``
of the per-example norms, ``b`` the fraction with ``||g_i|| <= C`` privatised as
``(sum_i (1[||g_i|| <= C] - 1/2) + N(0, sigma_b^2)) / m + 1/2``. The gradient gets noise
multiplier ``sigma_g = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)``, so (gradient sum, count) is one
Gaussian mechanism with multiplier ``sigma`` (their Thm. 1): the accountant uses ``sigma``
unchanged, and adaptive clipping is accounted.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsec import _checks
from jaxsec.privacy import clipping as clipping_lib
from jaxsec.privacy import noise as noise_lib
from jaxsec.privacy import sampling as sampling_lib


def secure_key() -> jax.Array:
  """A PRNG key of the default implementation whose bits all come from ``os.urandom``
  (the OS CSPRNG), for ``secure_mode``."""
  shape = jax.random.key_data(jax.random.key(0)).shape
  words = np.frombuffer(os.urandom(4 * math.prod(shape)), np.uint32).reshape(shape)
  return jax.random.wrap_key_data(jnp.asarray(words))


@dataclasses.dataclass(frozen=True)
class AdaptiveClipping:
  """Quantile-based adaptive clipping (Andrew et al. 2021); defaults are theirs.

  Attributes:
    target_quantile: gamma, the quantile of per-example norms to track.
    learning_rate: eta of the geometric update.
    count_noise_std: sigma_b of the noised count; default ``expected_batch_size / 20``.
  """
  target_quantile: float = 0.5
  learning_rate: float = 0.2
  count_noise_std: float | None = None

  def __post_init__(self):
    _checks.check_probability('target_quantile', self.target_quantile)
    _checks.check_float('learning_rate', self.learning_rate, minimum=0.0)
    if self.count_noise_std is not None:
      _checks.check_float('count_noise_std', self.count_noise_std, minimum=0.0,
                          strict_min=True)

  def count_std(self, normalizer: float) -> float:
    return self.count_noise_std if self.count_noise_std is not None else normalizer / 20.0

  def gradient_noise_multiplier(self, noise_multiplier: float, normalizer: float) -> float:
    """sigma_g with sigma_g^-2 + (2 sigma_b)^-2 = sigma^-2 (Andrew et al. Thm 1)."""
    sb = self.count_std(normalizer)
    rest = noise_multiplier ** -2 - (2.0 * sb) ** -2
    if rest <= 0:
      raise ValueError(f'count_noise_std={sb} is too small for noise_multiplier='
                       f'{noise_multiplier}: need 2 * count_noise_std > noise_multiplier.')
    return rest ** -0.5

  def next_clip(self, l2_norm_clip: Any, num_below: Any, num: Any, normalizer: float,
                key: jax.Array, count_std: Any) -> jax.Array:
    """``C exp(-eta (b - gamma))`` with ``b = (num_below - num / 2 + N(0, count_std^2)) /
    normalizer + 1/2``, the privatised fraction of contributions with norm ``<= C``."""
    centred = num_below - 0.5 * num + count_std * jax.random.normal(key, ())
    frac = centred / normalizer + 0.5
    return l2_norm_clip * jnp.exp(-self.learning_rate * (frac - self.target_quantile))


class StepMetrics(NamedTuple):
  """Per-step values. Only ``l2_norm_clip`` is covered by the DP guarantee (a constant, or
  the adaptive clip norm computed from the noised count); the other three are
  NON-PRIVATE diagnostics computed from the batch without noise."""
  batch_size: jax.Array        # non-private: number of real examples
  l2_norm_clip: jax.Array      # C used at this step
  clipped_fraction: jax.Array  # non-private: fraction of real examples with ||g_i|| > C
  mean_norm: jax.Array         # non-private: mean per-example norm


def make_step(loss_fn: Callable[..., jax.Array], optimizer: optax.GradientTransformation, *,
              noise_multiplier: float, normalizer: float, method: str = 'auto',
              microbatch_size: int | None = None,
              adaptive_clipping: AdaptiveClipping | None = None,
              clip_fn: Callable | None = None, mesh: Any = None):
  """Jittable DP-SGD step ``(params, opt_state, clip, batch, mask, key) -> ...``.

  Returns ``step(params, opt_state, l2_norm_clip, batch: tuple, mask, key) -> (params,
  opt_state, next_l2_norm_clip, StepMetrics)``. ``optimizer`` is any optax optimizer; it
  receives the privatised mean gradient. ``clip_fn`` overrides the clipped-gradient
  function (tests and audits use it to build deliberately broken variants); ``mesh``
  shards the batch over the mesh axis 'data' (see ``clipped_grad``).
  """
  _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
  _checks.check_float('normalizer', normalizer, minimum=0.0, strict_min=True)
  cg = clip_fn or clipping_lib.clipped_grad(loss_fn, method=method,
                                            microbatch_size=microbatch_size, mesh=mesh)
  if adaptive_clipping is not None:
    grad_sigma = adaptive_clipping.gradient_noise_multiplier(noise_multiplier, normalizer)
    count_std = adaptive_clipping.count_std(normalizer)
  else:
    grad_sigma, count_std = noise_multiplier, 0.0

  def step(params, opt_state, l2_norm_clip, batch, mask, key):
    k_noise, k_count = jax.random.split(key)
    summed, info = cg(params, *batch, mask=mask, l2_norm_clip=l2_norm_clip)
    noisy = noise_lib.add_gaussian_noise(summed, k_noise, grad_sigma * l2_norm_clip)
    grads = jax.tree_util.tree_map(lambda l: l / normalizer, noisy)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    maskf = mask.astype(jnp.float32)
    n = jnp.sum(maskf)
    below = jnp.sum(maskf * (info.norms <= l2_norm_clip))
    if adaptive_clipping is not None:
      new_clip = adaptive_clipping.next_clip(l2_norm_clip, below, n, normalizer, k_count,
                                             count_std)
    else:
      new_clip = l2_norm_clip
    # Monitoring only (computed from the private batch; never released by the algorithm).
    metrics = StepMetrics(
        batch_size=n, l2_norm_clip=jnp.asarray(l2_norm_clip, jnp.float32),
        clipped_fraction=1.0 - below / jnp.maximum(n, 1.0),
        mean_norm=jnp.sum(info.norms) / jnp.maximum(n, 1.0))
    return params, opt_state, new_clip, metrics

  return step


#: keys of ``DPResult.nonprivate_diagnostics`` (besides 'step')
NONPRIVATE_KEYS = ('clipped_fraction', 'mean_norm', 'batch_size')


class DPResult(NamedTuple):
  """Outcome of :func:`train`.

  Attributes:
    params, opt_state: final state; ``params`` is what ``(epsilon, delta)`` covers.
    l2_norm_clip: final C (with adaptive clipping a function of noised counts: covered).
    noise_multiplier: sigma used.
    epsilon: the accountant's epsilon for the sampler's event.
    delta: the delta to report: the requested delta plus the sampler's overflow term
      (``sampler.delta_spent``); ``overflow_delta`` is that term alone.
    accountant, sampler: how it was accounted and drawn.
    history: per chunk, ``step`` and ``l2_norm_clip`` (covered by the guarantee).
    nonprivate_diagnostics: per chunk, ``step`` and the chunk means of
      ``clipped_fraction``, ``mean_norm`` (per-example gradient norm) and ``batch_size``
      (realised Poisson sizes). Computed from the private batches WITHOUT noise: NOT
      covered by ``(epsilon, delta)``. For debugging; never publish them next to epsilon.
    overflow_delta: the Poisson overflow term included in ``delta``.
  """
  params: Any
  opt_state: Any
  l2_norm_clip: float
  noise_multiplier: float
  epsilon: float
  delta: float
  accountant: str
  sampler: Any
  history: dict
  nonprivate_diagnostics: dict
  overflow_delta: float


class _Geometry:
  """A sampler as a static jit argument, equal to another of the same type and static
  attributes, so equal-geometry samplers share one compiled chunk (the schedule itself is a
  jit argument)."""

  def __init__(self, sampler):
    self.sampler = sampler
    self.key = (type(sampler), tuple(sorted(
        (k, v) for k, v in vars(sampler).items()
        if isinstance(v, (bool, int, float, str, tuple)))))

  def __eq__(self, other):
    return isinstance(other, _Geometry) and self.key == other.key

  def __hash__(self):
    return hash(self.key)


# Chunks are cached by jax's own jit cache: loss, optimizer, noise and sampler geometry are
# static arguments (shadow-model loops call ``train`` many times and compile once). The
# data, the batch schedule and the noise keys are jit *arguments*, never constants baked
# into the program.
@functools.partial(jax.jit, static_argnames=(
    'loss_fn', 'optimizer', 'geometry', 'noise_multiplier', 'method', 'microbatch_size',
    'adaptive_clipping', 'clip_fn'))
def _run_chunk(params, opt_state, clip, steps, schedule, data_dev, noise_keys, *, loss_fn,
               optimizer, geometry, noise_multiplier, method, microbatch_size,
               adaptive_clipping, clip_fn):
  """``steps`` DP-SGD steps in one ``lax.scan``."""
  sampler = geometry.sampler
  step_fn = make_step(loss_fn, optimizer, noise_multiplier=noise_multiplier,
                      normalizer=sampler.normalizer, method=method,
                      microbatch_size=microbatch_size, adaptive_clipping=adaptive_clipping,
                      clip_fn=clip_fn)

  def body(carry, t):
    p, s, c = carry
    idx, mask = sampler.indices(schedule, t)
    batch = tuple(a[idx] for a in data_dev)
    p, s, c, m = step_fn(p, s, c, batch, mask, noise_keys[t])
    return (p, s, c), m
  (params, opt_state, clip), ms = jax.lax.scan(body, (params, opt_state, clip), steps)
  return params, opt_state, clip, ms


def _compiled_chunk(loss_fn, optimizer, sampler, *, noise_multiplier, method,
                    microbatch_size, adaptive_clipping, clip_fn):
  """``run_chunk(params, opt_state, clip, steps, schedule, data, noise_keys)``, jitted."""
  static = dict(loss_fn=loss_fn, optimizer=optimizer, geometry=_Geometry(sampler),
                noise_multiplier=float(noise_multiplier), method=method,
                microbatch_size=microbatch_size, adaptive_clipping=adaptive_clipping,
                clip_fn=clip_fn)
  _checks.check_hashable('it is a static argument of the compiled DP-SGD chunk', **static)
  return functools.partial(_run_chunk, **static)


def train(loss_fn: Callable[..., jax.Array], params: Any, data: Sequence[jax.Array], *,
          optimizer: optax.GradientTransformation, sampler: sampling_lib._Sampler,
          key: jax.Array | None, l2_norm_clip: float, delta: float,
          noise_multiplier: float | None = None, target_epsilon: float | None = None,
          accountant: str | None = None, method: str = 'auto',
          microbatch_size: int | None = None,
          adaptive_clipping: AdaptiveClipping | None = None,
          steps_per_call: int = 50, callback: Callable[[int, Any, dict], None] | None = None,
          start_step: int = 0, opt_state: Any = None, clip_fn: Callable | None = None,
          verbose: bool = False, secure_mode: bool = False) -> DPResult:
  """Trains with DP-SGD; the sampler both draws the batches and accounts them.

  Args:
    loss_fn: per-example ``loss_fn(params, *batch) -> [B]``.
    params: initial parameters.
    data: tuple of arrays with a common leading size N = ``sampler.dataset_size``.
    optimizer: any optax optimizer (receives the privatised mean gradient).
    sampler: a :mod:`jaxsec.privacy.sampling` sampler (its ``num_steps`` is the run).
    key: PRNG key (sampling, noise). Ignored with ``secure_mode`` (may be None there).
    l2_norm_clip: C (initial C with adaptive clipping).
    delta: target delta of the accountant; the reported ``DPResult.delta`` adds the
      sampler's overflow term (``sampler.delta_spent``); a sampler whose term is too
      large is refused before training.
    noise_multiplier / target_epsilon: give one; with ``target_epsilon`` the smallest
      sigma meeting it is calibrated with the sampler's own event.
    accountant: 'pld' or 'rdp' (default: the sampler's default).
    method, microbatch_size: see :func:`jaxsec.privacy.clipping.clipped_grad`.
    adaptive_clipping: an :class:`AdaptiveClipping` or None (fixed C).
    steps_per_call: steps fused in one jitted ``lax.scan`` between host callbacks.
    callback: ``callback(step, params, extra)`` after each chunk (used for progress,
      evaluation and checkpoints); ``extra`` has ``opt_state`` and ``l2_norm_clip``.
    start_step, opt_state: resume a run at ``start_step`` (same key -> same run).
    clip_fn: override of the clipped-gradient function (see :func:`make_step`).
    secure_mode: like Opacus' ``secure_mode``: the key for Poisson sampling and noise is
      drawn from ``os.urandom`` (:func:`secure_key`) at each call and ``key`` is ignored,
      so an adversary who knows the user's seed cannot subtract the noise; runs are not
      reproducible (a resumed run draws fresh randomness for its remaining steps, which
      is the same mechanism). What it does not do: JAX expands that key with threefry2x32,
      a counter-based PRF (Salmon et al. 2011) that is not a vetted cryptographic
      generator, and the Gaussian is sampled in float32 by an inverse-erf transform that
      is not hardened against floating-point attacks on the noise's low-order bits
      (Mironov 2012); a discrete Gaussian (Canonne, Kamath, Steinke 2020) would be.

  Returns:
    :class:`DPResult` with the final params, the ``(epsilon, delta)`` spent, the private
    history and, apart, the non-private diagnostics.
  """
  data = tuple(data)
  if secure_mode:
    key = secure_key()
  elif key is None:
    raise ValueError('key=None: give a jax.random key, or secure_mode=True (keys from '
                     'os.urandom).')
  n = sampler.dataset_size
  for i, a in enumerate(data):
    if a.shape[0] != n:
      raise ValueError(f'data[{i}] has {a.shape[0]} rows; the sampler was built for '
                       f'dataset_size={n}.')
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)
  accountant = accountant or sampler.default_accountant()
  if noise_multiplier is None and target_epsilon is not None:
    noise_multiplier = sampler.calibrate(target_epsilon, delta, accountant=accountant)
  elif noise_multiplier is None or target_epsilon is not None:
    raise ValueError('Give exactly one of noise_multiplier and target_epsilon; got '
                     f'noise_multiplier={noise_multiplier}, target_epsilon={target_epsilon}.')
  eps = sampler.epsilon(noise_multiplier, delta, accountant=accountant)
  overflow_delta = sampler.overflow_delta(eps)
  _checks.check_int('steps_per_call', steps_per_call, minimum=1)
  k_sched, k_noise = jax.random.split(key)
  schedule = sampler.schedule(k_sched)
  run_chunk = _compiled_chunk(loss_fn, optimizer, sampler, noise_multiplier=noise_multiplier,
                              method=method, microbatch_size=microbatch_size,
                              adaptive_clipping=adaptive_clipping, clip_fn=clip_fn)
  data_dev = tuple(jnp.asarray(a) for a in data)
  noise_keys = jax.random.split(k_noise, sampler.num_steps)

  if opt_state is None:
    opt_state = optimizer.init(params)
  clip = jnp.asarray(l2_norm_clip, jnp.float32)
  history: dict[str, list[Any]] = {'step': [], 'l2_norm_clip': []}
  diagnostics: dict[str, list[Any]] = {'step': [], **{k: [] for k in NONPRIVATE_KEYS}}
  t = start_step
  t0 = time.time()
  while t < sampler.num_steps:
    k = min(steps_per_call, sampler.num_steps - t)
    params, opt_state, clip, ms = run_chunk(params, opt_state, clip,
                                            jnp.arange(t, t + k, dtype=jnp.int32),
                                            schedule, data_dev, noise_keys)
    t += k
    ms = jax.tree_util.tree_map(np.asarray, ms)
    history['step'].append(t)
    history['l2_norm_clip'].append(float(ms.l2_norm_clip[-1]))
    diagnostics['step'].append(t)
    for k in NONPRIVATE_KEYS:
      diagnostics[k].append(float(getattr(ms, k).mean()))
    if verbose:
      print(f'  step {t}/{sampler.num_steps}  C={float(clip):.3g}  clipped (non-private)='
            f'{diagnostics["clipped_fraction"][-1]:.2f}  {time.time() - t0:.0f}s',
            flush=True)
    if callback is not None:
      callback(t, params, {'opt_state': opt_state, 'l2_norm_clip': float(clip)})
  return DPResult(params, opt_state, float(clip), float(noise_multiplier), float(eps),
                  sampler.delta_spent(eps, delta), accountant, sampler, history,
                  diagnostics, float(overflow_delta))
