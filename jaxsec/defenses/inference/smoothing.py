"""Randomized smoothing: certified L2 robustness (Cohen, Rosenfeld & Kolter, ICML 2019).

``g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I)`` is constant on the L2 ball of radius
``sigma * Phi^-1(pA_lower)`` when ``pA >= pA_lower > 1/2`` (Theorem 1, ``pB <= 1 - pA``).

* :func:`sample_counts` -- Monte Carlo counts of ``f(x + e)`` in chunks of at most
  ``batch_size`` noisy inputs (``lax.fori_loop`` / ``lax.map``): memory bounded whatever ``n``.
* :func:`predict` -- PREDICT: the top class if a two-sided binomial test of the top two
  counts rejects ``pA = pB`` at level ``alpha``, else :data:`ABSTAIN`; w.p. ``>= 1 - alpha``
  it returns no class other than ``g(x)``.
* :func:`certify` -- CERTIFY: ``n0`` draws pick ``cA``, ``n`` fresh draws give the one-sided
  Clopper-Pearson bound ``pA_lower``; returns ``(cA, sigma * Phi^-1(pA_lower))`` or
  ``(ABSTAIN, 0)``. W.p. ``>= 1 - alpha``, a returned class is ``g(x)`` within the radius.
* :func:`gaussian_augmentation` -- the training objective at ``x + N(0, sigma^2 I)`` (Sec.
  3.4; no clipping, as their ``train.py``).

Counting is one compiled program; the tests and ``Phi^-1`` run on the host in float64
(Clopper-Pearson via ``scipy.stats.beta``, as statsmodels' ``proportion_confint('beta')``
used by the authors' ``core.py``). Deviation from the authors' code, which abstains when
``pA_lower < 1/2``: this module follows the paper (``<= 1/2``); they differ only at
``pA_lower == 1/2``, where the radius is 0.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import stats

from jaxsec import _checks
from jaxsec.defenses.training import adversarial

ABSTAIN = -1
"""The class :func:`predict` and :func:`certify` return when they abstain (as Cohen's
``Smooth.ABSTAIN``)."""

Objective = Callable[[Callable, Any, jax.Array, jax.Array, jax.Array], jax.Array]


class Certificate(NamedTuple):
  """Per-example output of :func:`certify` (numpy arrays)."""
  prediction: np.ndarray  # [B] int: cA, or ABSTAIN
  radius: np.ndarray      # [B] float: certified L2 radius (0.0 where abstaining)


def _check_sigma(sigma):
  return float(_checks.check_float('sigma', sigma, minimum=0.0, strict_min=True,
                                   allow_traced=False))


def _check_alpha(alpha):
  return float(_checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0,
                                   strict_min=True, strict_max=True, allow_traced=False))


def _check_x(x):
  _checks.check_array('x', x, dtype_kind='f', finite=True)
  if x.ndim < 2:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected a batch [B, features...].')


def _num_classes(logits_fn, x):
  out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
  if len(out.shape) != 2:
    raise ValueError(f'logits_fn returns shape {out.shape} on one input; expected [1, K].')
  k = int(out.shape[-1])
  if k < 2:
    raise ValueError(f'logits_fn has {k} class; smoothing needs at least 2 classes.')
  return k


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num', 'chunk', 'per_pass',
                                             'num_classes'))
def _counts(logits_fn, x, key, sigma, *, num, chunk, per_pass, num_classes):
  """[B, K] int32 counts of argmax f(x_i + sigma e) over ``num`` draws per example.

  Examples go ``per_pass`` at a time (padded to a multiple); each pass is one forward over
  ``per_pass * chunk`` noisy inputs, a ``lax.fori_loop`` over the ``ceil(num / chunk)``
  chunks, with the draws past ``num`` in the last chunk masked out. Example ``i``'s chunk
  ``c`` draws from ``fold_in(split(key, B)[i], c)``, whatever ``per_pass`` is.
  """
  b = x.shape[0]
  n_chunks = -(-num // chunk)
  groups = -(-b // per_pass)
  pad = groups * per_pass - b
  keys = jax.random.split(key, b)
  if pad:
    x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    keys = jnp.concatenate([keys, keys[:1].repeat(pad, 0)])
  xg = x.reshape((groups, per_pass) + x.shape[1:])
  kg = keys.reshape((groups, per_pass))
  classes = jnp.arange(num_classes)

  def one_group(args):
    xs, ks = args

    def one_chunk(c, counts):
      noise = jax.vmap(lambda k: jax.random.normal(
          jax.random.fold_in(k, c), (chunk,) + xs.shape[1:], xs.dtype))(ks)
      noisy = (xs[:, None] + sigma * noise).reshape((per_pass * chunk,) + xs.shape[1:])
      pred = jnp.argmax(logits_fn(noisy), axis=-1).reshape((per_pass, chunk))
      valid = (c * chunk + jnp.arange(chunk)) < num
      hits = (pred[..., None] == classes) & valid[None, :, None]
      return counts + hits.sum(1, dtype=jnp.int32)

    return lax.fori_loop(0, n_chunks, one_chunk,
                         jnp.zeros((per_pass, num_classes), jnp.int32))

  return lax.map(one_group, (xg, kg)).reshape((groups * per_pass, num_classes))[:b]


def sample_counts(logits_fn: Callable, x: jax.Array, key: jax.Array, *, sigma: float,
                  num: int, batch_size: int) -> np.ndarray:
  """Class counts of the base classifier under Gaussian noise (Cohen's ``_sample_noise``).

  Args:
    logits_fn: the base classifier ``x -> logits [B, K]``; its argmax is ``f``.
    x: inputs ``[B, ...]``.
    key: the noise key; example ``i`` draws from ``split(key, B)[i]``.
    sigma: noise standard deviation (> 0).
    num: noise draws per example.
    batch_size: the most noisy inputs in one forward pass (``min(batch_size, num)`` draws
      of one example, or several whole examples when ``num < batch_size``).

  Returns:
    ``[B, K]`` int64 numpy counts; each row sums to ``num``.
  """
  _check_x(x)
  sigma = _check_sigma(sigma)
  num = _checks.check_int('num', num, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  k = _num_classes(logits_fn, x)
  chunk = min(batch_size, num)
  per_pass = max(1, min(batch_size // chunk, x.shape[0]))   # whole examples per pass
  return np.asarray(_counts(logits_fn, jnp.asarray(x), key, sigma, num=num, chunk=chunk,
                            per_pass=per_pass, num_classes=k), np.int64)


def lower_confidence_bound(count, n, *, alpha: float) -> np.ndarray:
  """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a binomial proportion.

  ``Beta.ppf(alpha; count, n - count + 1)``, and 0 where ``count == 0``: the lower end of
  statsmodels' ``proportion_confint(count, n, alpha=2 * alpha, method='beta')``, as in
  Cohen et al.'s ``_lower_confidence_bound``. Holds with probability >= ``1 - alpha``.
  """
  alpha = _check_alpha(alpha)
  count, n = np.asarray(count, np.int64), np.asarray(n, np.int64)
  if np.any(count < 0) or np.any(count > n):
    raise ValueError(f'count={count} must lie in [0, n={n}].')
  with np.errstate(invalid='ignore', divide='ignore'):
    low = stats.beta.ppf(alpha, count, n - count + 1)
  return np.where(count == 0, 0.0, low)


def binomial_pvalue(count1, count2) -> np.ndarray:
  """Two-sided exact binomial test of ``p = 1/2`` for ``count1 >= count2`` successes out of
  ``count1 + count2`` (``scipy.stats.binomtest(...).pvalue``, vectorised)."""
  c1, c2 = np.asarray(count1, np.int64), np.asarray(count2, np.int64)
  if np.any(c1 < c2) or np.any(c2 < 0):
    raise ValueError(f'count1={c1} must be >= count2={c2} >= 0.')
  # symmetric null: P(|X - m/2| >= c1 - m/2) = 2 P(X >= c1), capped at 1 (c1 == c2 gives 1)
  return np.minimum(1.0, 2.0 * stats.binom.sf(c1 - 1, c1 + c2, 0.5))


def predict_from_counts(counts, *, alpha: float) -> np.ndarray:
  """Cohen's PREDICT given the ``[B, K]`` counts of ``num_samples`` noise draws."""
  counts = np.asarray(counts, np.int64)
  top2 = np.sort(counts, axis=-1)[:, ::-1][:, :2]
  p = binomial_pvalue(top2[:, 0], top2[:, 1])
  return np.where(p > alpha, ABSTAIN, np.argmax(counts, -1)).astype(np.int64)


def certify_from_counts(counts_selection, counts_estimation, *, sigma: float, alpha: float
                        ) -> tuple[Certificate, dict]:
  """Cohen's CERTIFY given the ``[B, K]`` selection and (independent) estimation counts."""
  sigma = _check_sigma(sigma)
  c0 = np.asarray(counts_selection, np.int64)
  c = np.asarray(counts_estimation, np.int64)
  c_hat = np.argmax(c0, -1)
  n = c.sum(-1)
  n_a = np.take_along_axis(c, c_hat[:, None], -1)[:, 0]
  p_lower = lower_confidence_bound(n_a, n, alpha=alpha)
  ok = p_lower > 0.5
  radius = np.where(ok, sigma * stats.norm.ppf(np.where(ok, p_lower, 0.75)), 0.0)
  cert = Certificate(np.where(ok, c_hat, ABSTAIN).astype(np.int64), radius.astype(np.float64))
  return cert, {'p_lower': p_lower, 'count_a': n_a, 'selected': c_hat}


def predict(logits_fn: Callable, x: jax.Array, key: jax.Array, *, sigma: float,
            num_samples: int, alpha: float, batch_size: int) -> np.ndarray:
  """Cohen et al.'s PREDICT (their Algorithm, Sec. 3.2) for a batch of inputs.

  Draws ``num_samples`` noisy copies per example, then runs the two-sided binomial test of
  the top count against the runner-up (Hung & Fithian 2019); abstains where its p-value
  exceeds ``alpha``. Guarantee: for each example, the probability of returning a class
  other than ``g(x)`` is at most ``alpha``.

  Returns:
    ``[B]`` int64 numpy: the class, or :data:`ABSTAIN` (-1).
  """
  alpha = _check_alpha(alpha)
  num_samples = _checks.check_int('num_samples', num_samples, minimum=1)
  counts = sample_counts(logits_fn, x, key, sigma=sigma, num=num_samples,
                         batch_size=batch_size)
  return predict_from_counts(counts, alpha=alpha)


def certify(logits_fn: Callable, x: jax.Array, key: jax.Array, *, sigma: float, n0: int,
            n: int, alpha: float, batch_size: int) -> tuple[Certificate, dict]:
  """Cohen et al.'s CERTIFY (Sec. 3.2) for a batch of inputs.

  ``n0`` selection draws pick ``cA = argmax counts``; ``n`` independent estimation draws
  give ``pA_lower``, the one-sided ``1 - alpha`` Clopper-Pearson lower bound on
  ``P(f(x + e) = cA)``. Certified radius ``sigma * Phi^-1(pA_lower)``; abstain (class -1,
  radius 0) when ``pA_lower <= 1/2``. Guarantee: with probability >= ``1 - alpha`` per
  example, a returned class equals ``g(x)`` and ``g(x') = g(x)`` for all
  ``||x' - x||_2 < radius``. The paper uses ``n0=100, n=100000, alpha=0.001``.

  Args:
    logits_fn: base classifier ``x -> logits [B, K]``.
    x: inputs ``[B, ...]`` (the noise is not clipped to any box, as in the paper).
    key: noise key (selection and estimation draws use independent sub-keys).
    sigma: noise level (> 0).
    n0: selection draws, 1 <= n0 <= n.
    n: estimation draws.
    alpha: failure probability in (0, 1).
    batch_size: the most noisy inputs per forward pass (bounds memory).

  Returns:
    ``(Certificate, info)`` (as :func:`certify_from_counts`): the :class:`Certificate`
    ``(prediction [B], radius [B])`` and ``{'p_lower', 'count_a', 'selected',
    'counts_selection', 'counts_estimation'}``.
  """
  sigma = _check_sigma(sigma)
  alpha = _check_alpha(alpha)
  n = _checks.check_int('n', n, minimum=1)
  n0 = _checks.check_int('n0', n0, minimum=1)
  if n0 > n:
    raise ValueError(f'n0={n0} must be <= n={n} (selection draws vs estimation draws).')
  k_sel, k_est = jax.random.split(key)
  c0 = sample_counts(logits_fn, x, k_sel, sigma=sigma, num=n0, batch_size=batch_size)
  c = sample_counts(logits_fn, x, k_est, sigma=sigma, num=n, batch_size=batch_size)
  cert, info = certify_from_counts(c0, c, sigma=sigma, alpha=alpha)
  return cert, dict(info, counts_selection=c0, counts_estimation=c)


def certified_accuracy(cert: Certificate, y, radii) -> dict:
  """Fraction of examples certified correct at each L2 radius: prediction == y and
  radius >= r (Cohen et al.'s "approximate certified test accuracy"; at r = 0 a
  non-abstained correct prediction counts)."""
  y = np.asarray(y)
  pred, rad = np.asarray(cert.prediction), np.asarray(cert.radius)
  if y.shape != pred.shape:
    raise ValueError(f'y has shape {y.shape}; expected {pred.shape} (one label per example).')
  correct = pred == y
  return {f'{float(r):g}': float(np.mean(correct & (rad >= r))) for r in radii}


def gaussian_augmentation(*, sigma, loss=None, objective=None) -> Objective:
  """Gaussian data augmentation (Cohen et al. 2019, Sec. 3.4 / Lecuyer et al. 2019).

  ``objective'(apply_fn, params, x, y, key) = objective(apply_fn, params, x + sigma e, y,
  key')`` with ``e ~ N(0, I)`` drawn from ``key`` (no clipping to the data box, as the
  authors' ``train.py``). Training the base classifier this way makes ``f(x + e)`` accurate,
  which is what the smoothed classifier needs. ``sigma = 0`` is the plain objective.

  Args:
    sigma: noise standard deviation >= 0 (may be traced).
    loss, objective: what to train, at most one: a per-example ``loss(logits, y)`` / its
      name, or an objective ``(apply_fn, params, x, y, key) -> [B]`` (default
      cross-entropy; see :func:`jaxsec.defenses.training.adversarial.resolve_objective`).

  Returns:
    an objective for ``jaxsec.train.fit``.
  """
  sigma = _checks.check_float('sigma', sigma, minimum=0.0)
  inner = adversarial.resolve_objective(loss, objective)[0]

  def augmented(apply_fn, params, x, y, key):
    k_noise, k_inner = jax.random.split(key)
    noise = jax.random.normal(k_noise, x.shape, x.dtype)
    return inner(apply_fn, params, x + sigma * noise, y, k_inner)
  return augmented
