"""Batch samplers that are also their own privacy accountants.

DP-SGD's guarantee depends on how batches are drawn; drawing one way and accounting another
(TF Privacy #483, jax_privacy #84: shuffled batches accounted as Poisson) reports an epsilon
that does not hold. A sampler here both draws the batches and names the ``dp_accounting``
event of its mechanism, so the two cannot disagree:

* :class:`PoissonSampler` (default; Abadi et al. 2016, Mironov et al. 2019): each example is
  in each batch independently w.p. ``q``; ``PoissonSampledDpEvent`` under add/remove-one.
* :class:`CyclicPoissonSampler` (Choquette-Choo et al. 2023): the data split once into k
  groups, step t Poisson-samples group ``t mod k``; DP-SGD's event over ``ceil(T / k)`` steps,
  valid also for banded matrix-factorization noise (:mod:`~jaxsec.privacy.banded_mf`).
* :class:`FixedSizeSampler`: ``b`` distinct examples per step; ``SampledWithoutReplacementDpEvent``
  (Wang, Balle, Kasiviswanathan 2019, Thm 27) under replace-one (RDP only).
* :class:`ShuffleSampler`: shuffle then iterate. No tight analysis is known; accounted
  conservatively as one full Gaussian mechanism per epoch, no amplification (replace-one).

Poisson batches under jit: ``n_t ~ Binomial(N, q)`` then a uniform subset of that size (the
same distribution as independent Bernoulli(q) trials), padded to a static ``max_batch_size``
with a 0/1 mask; all sizes are drawn before training (:meth:`PoissonSampler.schedule`). On an
oversized batch, ``overflow='raise'`` (default) raises before any data are touched; this
mechanism differs from the accounted one only on the data-independent event "some step
overflows", of probability ``p <= T P[Binomial(N, q) > max_batch_size]``, so it is ``(eps,
delta + (1 + e^eps) p)``-DP: that term (:meth:`PoissonSampler.overflow_delta`) is added to
the reported delta; :meth:`PoissonSampler.epsilon` raises when it exceeds
``max_overflow_delta_fraction * delta`` (1%).
``overflow='truncate'`` keeps a uniform ``max_batch_size``-subset and is accounted with
``TruncatedSubsampledGaussianDpEvent`` (PLD). Oversized batches are never resampled
(conditioning on size is another mechanism). The noisy sum is divided by the *expected* batch
size ``q N`` (a realised-size normaliser is data-dependent and not covered by the analysis).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxsec import _checks
from jaxsec.privacy import accounting

NR = dp_accounting.NeighboringRelation


class BatchSchedule(NamedTuple):
  """Per-step randomness and batch sizes of a whole run (drawn before training)."""
  keys: jax.Array      # [T] typed PRNG keys, one per step
  sizes: jax.Array     # [T] int32 number of real (unmasked) examples per step
  perms: jax.Array | None = None  # [epochs, N] permutations (ShuffleSampler); [1, N]
  #                                   the split into groups (CyclicPoissonSampler)


class _Sampler:
  """Shared interface: ``schedule`` / ``indices`` draw batches, ``dp_event`` accounts them."""

  #: adjacency the reported epsilon refers to
  neighboring_relation: NR = NR.ADD_OR_REMOVE_ONE
  #: accountants that support this sampler's event
  accountants: tuple[str, ...] = ('pld', 'rdp')
  #: relation passed to dp_accounting (may differ from the semantic one, see subclasses)
  _accountant_relation: NR = NR.ADD_OR_REMOVE_ONE
  dataset_size: int
  num_steps: int
  batch_size: int          # static (padded) batch size of one step
  normalizer: float        # the noisy sum is divided by this

  def dp_event(self, noise_multiplier: float, num_steps: int | None = None
               ) -> dp_accounting.DpEvent:
    raise NotImplementedError

  def _steps(self, num_steps):
    if num_steps is None:
      return self.num_steps
    return _checks.check_int('num_steps', num_steps, minimum=0)

  def default_accountant(self) -> str:
    return self.accountants[0]

  def overflow_delta(self, epsilon: float) -> float:
    """What the batch-drawing adds to delta beyond the accounted event (0 here)."""
    del epsilon
    return 0.0

  def delta_spent(self, epsilon: float, delta: float) -> float:
    """The delta to report with ``epsilon``: the accountant's ``delta`` plus
    :meth:`overflow_delta`."""
    return float(delta) + self.overflow_delta(epsilon)

  def epsilon(self, noise_multiplier: float, delta: float, *, num_steps: int | None = None,
              accountant: str | None = None) -> float:
    """Epsilon at ``delta`` after ``num_steps`` (default: the whole run)."""
    accountant = accountant or self.default_accountant()
    if accountant not in self.accountants:
      raise ValueError(f'accountant={accountant!r} cannot account {type(self).__name__}; '
                       f'expected one of {self.accountants}.')
    _checks.check_float('noise_multiplier', noise_multiplier, minimum=0.0)
    if noise_multiplier == 0:
      return math.inf
    return accounting.epsilon(self.dp_event(noise_multiplier, num_steps), delta,
                              accountant=accountant,
                              neighboring_relation=self._accountant_relation)

  def calibrate(self, target_epsilon: float, delta: float, *, accountant: str | None = None,
                tol: float = 1e-3) -> float:
    """Smallest noise multiplier with ``epsilon(sigma, delta) <= target_epsilon``."""
    accountant = accountant or self.default_accountant()
    if accountant not in self.accountants:
      raise ValueError(f'accountant={accountant!r} cannot account {type(self).__name__}; '
                       f'expected one of {self.accountants}.')
    return accounting.calibrate(lambda s: self.dp_event(s), target_epsilon, delta,
                                accountant=accountant,
                                neighboring_relation=self._accountant_relation, tol=tol,
                                lower=1e-3)

  def schedule(self, key: jax.Array) -> BatchSchedule:
    raise NotImplementedError

  def indices(self, schedule: BatchSchedule, step: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """Jittable: ``(indices [batch_size] int32, mask [batch_size] bool)`` of ``step``."""
    raise NotImplementedError

  def schedules(self, keys: jax.Array) -> BatchSchedule:
    """Schedules of several independent runs, stacked on a leading axis (for vmap)."""
    many = [self.schedule(k) for k in keys]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *many)


def _check_common(dataset_size, num_steps):
  _checks.check_int('dataset_size', dataset_size, minimum=1)
  _checks.check_int('num_steps', num_steps, minimum=1)


#: the default largest Poisson overflow term ``(1 + e^eps) p`` accepted, as a fraction of delta
DEFAULT_MAX_OVERFLOW_DELTA_FRACTION = 0.01


class PoissonSampler(_Sampler):
  """Poisson subsampling: each example joins each step's batch independently w.p. ``q``.

  Args:
    dataset_size: N, number of training examples.
    num_steps: T, number of DP-SGD steps of the run (accounting and the overflow bound
      use it).
    expected_batch_size: q N; give this or ``sampling_probability``.
    sampling_probability: q in (0, 1].
    max_batch_size: static padded batch size; default: the smallest size whose
      probability of being exceeded in any of the T steps is <= ``overflow_tolerance``.
    overflow: 'raise' (default) or 'truncate' (accounted, PLD only). See module doc.
    overflow_tolerance: target run-wide overflow probability for the default size.
    max_overflow_delta_fraction: with ``overflow='raise'``, :meth:`epsilon` refuses a
      ``max_batch_size`` whose delta term ``(1 + e^eps) p`` exceeds this fraction of
      delta (default 0.01).
    normalizer: what the noisy sum is divided by; default the expected batch size q N.
      Like every DP library, the default treats N as public; under strict add/remove
      adjacency pass a public constant (the audit experiment does).
  """

  def __init__(self, *, dataset_size: int, num_steps: int,
               expected_batch_size: float | None = None,
               sampling_probability: float | None = None,
               max_batch_size: int | None = None, overflow: str = 'raise',
               overflow_tolerance: float = 1e-15, normalizer: float | None = None,
               max_overflow_delta_fraction: float = DEFAULT_MAX_OVERFLOW_DELTA_FRACTION):
    _check_common(dataset_size, num_steps)
    pool = self._pool_size(dataset_size)
    if sampling_probability is None and expected_batch_size is not None:
      _checks.check_float('expected_batch_size', expected_batch_size, minimum=0.0,
                          maximum=pool, strict_min=True)
      sampling_probability = float(expected_batch_size) / pool
    elif sampling_probability is None or expected_batch_size is not None:
      raise ValueError('Give exactly one of expected_batch_size and sampling_probability; '
                       f'got expected_batch_size={expected_batch_size}, '
                       f'sampling_probability={sampling_probability}.')
    _checks.check_float('sampling_probability', sampling_probability, minimum=0.0,
                        maximum=1.0, strict_min=True)
    _checks.check_choice('overflow', overflow, ('raise', 'truncate'))
    _checks.check_float('overflow_tolerance', overflow_tolerance, minimum=0.0, maximum=1.0,
                        strict_min=True)
    _checks.check_float('max_overflow_delta_fraction', max_overflow_delta_fraction,
                        minimum=0.0, maximum=1.0)
    self.max_overflow_delta_fraction = float(max_overflow_delta_fraction)
    self.dataset_size = int(dataset_size)
    self.pool_size = pool
    self.num_steps = int(num_steps)
    self.q = float(sampling_probability)
    self.overflow = overflow
    binom = stats.binom(self.pool_size, self.q)
    if max_batch_size is None:
      # smallest m with T * P[Bin(N, q) > m] <= tol  (union bound over steps)
      max_batch_size = max(1, self._smallest_size(overflow_tolerance))
    _checks.check_int('max_batch_size', max_batch_size, minimum=1, maximum=self.pool_size)
    self.batch_size = int(max_batch_size)
    if normalizer is not None:
      _checks.check_float('normalizer', normalizer, minimum=0.0, strict_min=True)
    self.normalizer = float(normalizer) if normalizer is not None else (
        self.q * self.pool_size)
    # P[some step overflows] <= T * P[Bin(N,q) > m]
    self.overflow_probability = float(min(1.0, self.num_steps * binom.sf(self.batch_size)))
    self.accountants = ('pld',) if overflow == 'truncate' else ('pld', 'rdp')

  def _pool_size(self, dataset_size: int) -> int:
    """Examples eligible at each step: all of them (a group of them when cyclic)."""
    return dataset_size

  def _smallest_size(self, run_probability: float) -> int:
    """Smallest m with ``T * P[Bin(N, q) > m] <= run_probability`` (bisection on the
    survival function; scipy's discrete ``isf`` returns N below ~1e-13)."""
    binom = stats.binom(self.pool_size, self.q)
    target = run_probability / self.num_steps
    lo, hi = 0, self.pool_size             # sf(N) = 0 always passes
    while lo < hi:
      mid = (lo + hi) // 2
      if binom.sf(mid) <= target:
        hi = mid
      else:
        lo = mid + 1
    return lo

  def overflow_delta(self, epsilon: float) -> float:
    """``(1 + e^eps) p`` with ``overflow='raise'`` (see module doc); 0 for 'truncate'."""
    if self.overflow == 'truncate' or self.overflow_probability == 0.0:
      return 0.0
    if epsilon >= 700:          # e^eps overflows a float; the guarantee is void anyway
      return math.inf
    return (1.0 + math.exp(epsilon)) * self.overflow_probability

  def epsilon(self, noise_multiplier: float, delta: float, *, num_steps: int | None = None,
              accountant: str | None = None) -> float:
    """Epsilon at ``delta`` after ``num_steps``; report it with :meth:`delta_spent`.

    Raises ``ValueError`` (nothing trained) when ``overflow='raise'`` and the overflow
    term :meth:`overflow_delta` exceeds ``max_overflow_delta_fraction * delta``.
    """
    eps = super().epsilon(noise_multiplier, delta, num_steps=num_steps,
                          accountant=accountant)
    if math.isfinite(eps):
      od = self.overflow_delta(eps)
      limit = self.max_overflow_delta_fraction * float(delta)
      if od > limit:
        ok = self._smallest_size(limit / (1.0 + math.exp(min(eps, 700.0))))
        raise ValueError(
            f'max_batch_size={self.batch_size}: overflow probability '
            f'{self.overflow_probability:.3g} (P[some of the {self.num_steps} Poisson '
            f'batches exceeds {self.batch_size}], binomial tail with a union bound) adds '
            f'(1 + e^eps) * p = {od:.3g} to delta={delta:g} at eps={eps:.4g}, more than '
            f'max_overflow_delta_fraction={self.max_overflow_delta_fraction:g} of delta. '
            f'The smallest max_batch_size that passes is {ok} (or use '
            "overflow='truncate', accounted exactly). Nothing was trained.")
    return eps

  def __repr__(self):
    return (f'PoissonSampler(N={self.dataset_size}, q={self.q:.6g}, T={self.num_steps}, '
            f'max_batch_size={self.batch_size}, overflow={self.overflow!r})')

  def dp_event(self, noise_multiplier, num_steps=None):
    steps = self._steps(num_steps)
    if self.overflow == 'truncate':
      step_event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
          dataset_size=self.pool_size, sampling_probability=self.q,
          truncated_batch_size=self.batch_size, noise_multiplier=float(noise_multiplier))
    else:
      step_event = dp_accounting.PoissonSampledDpEvent(
          self.q, dp_accounting.GaussianDpEvent(float(noise_multiplier)))
    return dp_accounting.SelfComposedDpEvent(step_event, steps)

  def _draw(self, key):
    k_size, k_steps = jax.random.split(key)
    sizes = jax.random.binomial(k_size, self.pool_size, self.q, shape=(self.num_steps,))
    return jax.random.split(k_steps, self.num_steps), sizes

  def _checked(self, sizes):
    sizes = np.asarray(sizes).astype(np.int64)
    big = int(sizes.max())
    if big > self.batch_size:
      if self.overflow == 'raise':
        raise ValueError(
            f'Poisson batch size {big} exceeds max_batch_size={self.batch_size} '
            f'(P[overflow] <= {self.overflow_probability:.2e}). Nothing was trained. Use a '
            'larger max_batch_size, or overflow="truncate" (accounted with '
            'TruncatedSubsampledGaussianDpEvent).')
      sizes = np.minimum(sizes, self.batch_size)
    return jnp.asarray(sizes, jnp.int32)

  def schedule(self, key: jax.Array) -> BatchSchedule:
    """Draws all T batch sizes and step keys; checks overflow before training starts."""
    keys, sizes = self._draw(key)
    return BatchSchedule(keys, self._checked(sizes))

  def schedules(self, keys: jax.Array) -> BatchSchedule:
    ks, sizes = jax.vmap(self._draw)(keys)
    return BatchSchedule(ks, self._checked(sizes))

  def indices(self, schedule, step):
    perm = jax.random.permutation(schedule.keys[step], self.dataset_size)[:self.batch_size]
    mask = jnp.arange(self.batch_size) < schedule.sizes[step]
    return perm.astype(jnp.int32), mask


class CyclicPoissonSampler(PoissonSampler):
  """Cyclic Poisson sampling (Choquette-Choo et al. 2023, arXiv:2306.08153, Alg. 2).

  The dataset is split once, data-independently, into ``cycle_length`` k groups of
  ``N // k`` examples (the ``N mod k`` left over are never used); step t Poisson-samples
  group ``t mod k`` with probability ``q = expected_batch_size / (N // k)``. Each example can
  only take part in steps k apart (k-min-separation), at most ``ceil(T / k)`` times.

  Accounted as DP-SGD with that ``q`` over ``ceil(T / k)`` steps: exact for independent
  noise, and for the correlated noise of a ``b``-banded matrix factorization with unit
  columns when ``b <= k`` (their Thm. 4; :mod:`jaxsec.privacy.banded_mf`). The split fixes
  N, so the adjacency is zero-out (``REPLACE_SPECIAL``; the zeroed example's sum is the
  remove-one neighbour's, so dp_accounting's add/remove event is the exact curve); with
  k = 1 there is no split and this is :class:`PoissonSampler` under add/remove-one.
  Overflow of the static batch is handled and charged as in :class:`PoissonSampler`, with
  the binomial over one group.

  Args:
    cycle_length: k, the number of groups (and the least separation of participations).
    **kwargs: :class:`PoissonSampler`'s arguments; ``expected_batch_size`` /
      ``sampling_probability`` refer to one group of ``N // k``.
  """

  def __init__(self, *, cycle_length: int, **kwargs: Any):
    self.cycle_length = _checks.check_int('cycle_length', cycle_length, minimum=1)
    super().__init__(**kwargs)
    self.neighboring_relation = (NR.ADD_OR_REMOVE_ONE if self.cycle_length == 1
                                 else NR.REPLACE_SPECIAL)

  def _pool_size(self, dataset_size: int) -> int:
    if self.cycle_length > dataset_size:
      raise ValueError(f'cycle_length={self.cycle_length} must be <= dataset_size='
                       f'{dataset_size}.')
    return dataset_size // self.cycle_length

  def participations(self, num_steps: int | None = None) -> int:
    """Most steps an example can be in: ``ceil(num_steps / cycle_length)``."""
    return -(-self._steps(num_steps) // self.cycle_length)

  def dp_event(self, noise_multiplier, num_steps=None):
    return super().dp_event(noise_multiplier, self.participations(num_steps))

  def __repr__(self):
    return (f'CyclicPoissonSampler(N={self.dataset_size}, k={self.cycle_length}, '
            f'q={self.q:.6g}, T={self.num_steps}, max_batch_size={self.batch_size}, '
            f'overflow={self.overflow!r})')

  def schedule(self, key: jax.Array) -> BatchSchedule:
    """Draws the split (``perms[0]``), all T batch sizes and step keys; checks overflow."""
    k_split, k_steps = jax.random.split(key)
    keys, sizes = self._draw(k_steps)
    split = jax.random.permutation(k_split, self.dataset_size).astype(jnp.int32)
    return BatchSchedule(keys, self._checked(sizes), split[None])

  def schedules(self, keys: jax.Array) -> BatchSchedule:
    return _Sampler.schedules(self, keys)

  def indices(self, schedule, step):
    m = self.pool_size
    group = jax.lax.dynamic_slice(schedule.perms[0], ((step % self.cycle_length) * m,), (m,))
    pick = jax.random.permutation(schedule.keys[step], m)[:self.batch_size]
    mask = jnp.arange(self.batch_size) < schedule.sizes[step]
    return group[pick], mask


class _FixedBatchSampler(_Sampler):
  """A sampler whose every batch has exactly ``batch_size`` examples (normalizer ``b``)."""

  def __init__(self, *, dataset_size: int, num_steps: int, batch_size: int):
    _check_common(dataset_size, num_steps)
    _checks.check_int('batch_size', batch_size, minimum=1, maximum=dataset_size)
    self.dataset_size, self.num_steps = int(dataset_size), int(num_steps)
    self.batch_size = int(batch_size)
    self.normalizer = float(batch_size)

  def __repr__(self):
    return (f'{type(self).__name__}(N={self.dataset_size}, b={self.batch_size}, '
            f'T={self.num_steps})')


class FixedSizeSampler(_FixedBatchSampler):
  """``batch_size`` distinct examples drawn uniformly, independently at every step.

  Accounted with ``SampledWithoutReplacementDpEvent`` under replace-one adjacency
  (the only adjacency under which a fixed batch size is meaningful) with the RDP
  accountant. Under replace-one the clipped sum moves by up to ``2 C``, so the Gaussian
  event's noise multiplier (noise std / replace-one sensitivity, Wang et al. 2019 Thm 27)
  is ``sigma / 2``. (Replace-one epsilons are not comparable to add/remove-one ones.)
  """

  neighboring_relation = NR.REPLACE_ONE
  _accountant_relation = NR.REPLACE_ONE
  accountants = ('rdp',)

  def __init__(self, *, dataset_size: int, num_steps: int, batch_size: int):
    super().__init__(dataset_size=dataset_size, num_steps=num_steps, batch_size=batch_size)
    self.q = self.batch_size / self.dataset_size

  def dp_event(self, noise_multiplier, num_steps=None):
    steps = self._steps(num_steps)
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(
            self.dataset_size, self.batch_size,
            dp_accounting.GaussianDpEvent(float(noise_multiplier) / 2.0)), steps)

  def schedule(self, key):
    return BatchSchedule(jax.random.split(key, self.num_steps),
                         jnp.full((self.num_steps,), self.batch_size, jnp.int32))

  def indices(self, schedule, step):
    perm = jax.random.permutation(schedule.keys[step], self.dataset_size)[:self.batch_size]
    return perm.astype(jnp.int32), jnp.ones((self.batch_size,), bool)


class ShuffleSampler(_FixedBatchSampler):
  """Shuffle once per epoch, then iterate over fixed-size disjoint batches (drop last).

  No tight accounting of this common loop is known (TF Privacy #483). Each example is in
  at most one batch per epoch, so replacing it changes one step's clipped sum by at most
  ``2 C`` per epoch; composing one Gaussian mechanism with noise multiplier ``sigma / 2``
  (std over replace-one sensitivity) per epoch, *with no amplification by sampling*, is a
  valid, conservative upper bound under replace-one adjacency. For an unsubsampled
  Gaussian the privacy loss depends only on shift/std, so the event
  ``GaussianDpEvent(sigma / 2)`` is evaluated with dp_accounting's add/remove relation
  (whose Gaussian shift is one sensitivity), which is exact for this event.
  """

  neighboring_relation = NR.REPLACE_ONE
  _accountant_relation = NR.ADD_OR_REMOVE_ONE
  accountants = ('pld', 'rdp')

  def __init__(self, *, dataset_size: int, num_steps: int, batch_size: int):
    super().__init__(dataset_size=dataset_size, num_steps=num_steps, batch_size=batch_size)
    self.steps_per_epoch = self.dataset_size // self.batch_size

  def dp_event(self, noise_multiplier, num_steps=None):
    steps = self._steps(num_steps)
    epochs = -(-steps // self.steps_per_epoch)
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(float(noise_multiplier) / 2.0), epochs)

  def schedule(self, key):
    epochs = -(-self.num_steps // self.steps_per_epoch)
    k_perm, k_steps = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, self.dataset_size))(
        jax.random.split(k_perm, epochs))
    return BatchSchedule(jax.random.split(k_steps, self.num_steps),
                         jnp.full((self.num_steps,), self.batch_size, jnp.int32),
                         perms.astype(jnp.int32))

  def indices(self, schedule, step):
    epoch = step // self.steps_per_epoch
    j = step % self.steps_per_epoch
    idx = jax.lax.dynamic_slice(schedule.perms[epoch], (j * self.batch_size,),
                                (self.batch_size,))
    return idx, jnp.ones((self.batch_size,), bool)


def get(name: str, **kwargs) -> _Sampler:
  """Sampler by name: 'poisson', 'cyclic_poisson', 'fixed' (uniform without replacement),
  'shuffle'."""
  table = {'poisson': PoissonSampler, 'cyclic_poisson': CyclicPoissonSampler,
           'fixed': FixedSizeSampler, 'shuffle': ShuffleSampler}
  _checks.check_choice('sampler', name, tuple(table))
  return table[name](**kwargs)
