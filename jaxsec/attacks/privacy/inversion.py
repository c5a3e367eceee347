"""Model inversion (Fredrikson, Jha, Ristenpart 2015) and attribute inference (Fredrikson et
al. 2014).

* :func:`model_inversion` (MI-FACE, CCS 2015, Algorithm 1): starting from ``x_0``, gradient
  descent on the cost ``c(x) = 1 - p_target(x) + AuxTerm(x)`` with a ``Process`` step after
  every update (the paper's denoising and sharpening; here a Gaussian-blur denoiser every
  ``denoise_every`` steps and projection onto ``bounds``); it returns the iterate with the
  lowest cost, ``argmin_i c(x_i)``, as the paper does. The auxiliary term is a total-variation
  prior (``tv_weight``) and an optional L2 term. The loop is a ``lax.fori_loop`` that runs
  all ``num_steps`` (the paper's early stops (no improvement in ``beta`` steps, cost below
  ``gamma``) only save time: the lowest-cost iterate is tracked throughout).
* :func:`attribute_inference` (USENIX Security 2014, the pharmacogenetics attack): the
  attacker knows a record's other features and its label ``y`` and the marginal prior of a
  hidden sensitive feature; for every candidate value ``v`` it queries the model on the
  completed record and picks ``argmax_v p_model(y | x_{-s}, v) * prior(v)`` (the maximum a
  posteriori estimate with the model's confidence as the likelihood). The baseline is the
  base rate: always guessing the most frequent value.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.metrics import gaussian_window


def gaussian_blur(x: jax.Array, sigma: float, size: int = 5) -> jax.Array:
  """Separable Gaussian blur of NHWC images (zero-padding free: edge replication)."""
  g = jnp.asarray(gaussian_window(size, sigma))
  p = size // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode='edge')
  h, w = x.shape[1], x.shape[2]
  rows = g[0] * xp[:, 0:h, :, :]
  for i in range(1, size):
    rows = rows + g[i] * xp[:, i:i + h, :, :]
  out = g[0] * rows[:, :, 0:w, :]
  for j in range(1, size):
    out = out + g[j] * rows[:, :, j:j + w, :]
  return out


def _tv(x):
  dh = jnp.abs(x[:, 1:, :, :] - x[:, :-1, :, :])
  dw = jnp.abs(x[:, :, 1:, :] - x[:, :, :-1, :])
  return jnp.sum(dh, axis=(1, 2, 3)) + jnp.sum(dw, axis=(1, 2, 3))


COSTS = ('one_minus_prob', 'neg_log_prob')


class InversionOutput(NamedTuple):
  """What :func:`model_inversion` returns: ``x`` [B, H, W, C], the reconstruction (the
  lowest-cost iterate per example), and ``info`` with ``cost`` [B] and ``confidence``
  [B] (the model's probability of the target class at ``x``). Unpack as
  ``x, info = invert(...)`` or read ``.x`` / ``.info``."""
  x: jax.Array
  info: dict


def model_inversion(*, num_steps: int = 500, step_size: float = 0.1,
                    cost: str = 'one_minus_prob', tv_weight: float = 0.0,
                    l2_weight: float = 0.0, denoise_every: int = 0,
                    denoise_sigma: float = 0.5, bounds: tuple[float, float] = (0.0, 1.0)):
  """MI-FACE model inversion factory (Fredrikson et al. 2015).

  Args:
    num_steps: gradient steps (the paper's alpha).
    step_size: the paper's lambda.
    cost: 'one_minus_prob' (paper: ``1 - p_y(x)``) or 'neg_log_prob' (``-log p_y``, whose
      gradient does not vanish where ``p_y`` is small).
    tv_weight: total-variation prior weight (sum of absolute neighbour differences).
    l2_weight: weight of ``||x||^2 / 2``.
    denoise_every: apply the Gaussian-blur denoiser every this many steps (0: never).
    denoise_sigma: the denoiser's sigma (5x5 window).
    bounds: the input box; every iterate is projected onto it.

  Returns:
    ``invert(logits_fn, x_init, y_target, key) -> InversionOutput(x, info)`` (one return
    type, no flag; see :class:`InversionOutput`).
  """
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  _checks.check_positive('step_size', step_size)
  _checks.check_choice('cost', cost, COSTS)
  _checks.check_float('tv_weight', tv_weight, minimum=0.0)
  _checks.check_float('l2_weight', l2_weight, minimum=0.0)
  denoise_every = _checks.check_int('denoise_every', denoise_every, minimum=0)
  _checks.check_positive('denoise_sigma', denoise_sigma)
  lo, hi = _checks.check_bounds(bounds)

  def invert(logits_fn, x_init, y, key):
    del key  # deterministic
    _checks.check_array('x_init', x_init, ndim=4, dtype_kind='f')
    _checks.check_labels('y', y, batch=x_init.shape[0])

    def costs(x):
      logits = logits_fn(x)
      logp = jax.nn.log_softmax(logits, -1)[jnp.arange(x.shape[0]), y]
      c = 1.0 - jnp.exp(logp) if cost == 'one_minus_prob' else -logp
      aux = tv_weight * _tv(x) + 0.5 * l2_weight * jnp.sum(x ** 2, axis=(1, 2, 3))
      return c + aux, jnp.exp(logp)

    grad_fn = jax.grad(lambda x: jnp.sum(costs(x)[0]))
    x0 = jnp.clip(jnp.asarray(x_init), lo, hi)
    c0, p0 = costs(x0)

    def body(i, carry):
      x, best_x, best_c, best_p = carry
      x = x - step_size * grad_fn(x)
      if denoise_every:
        x = jax.lax.cond((i + 1) % denoise_every == 0,
                         lambda z: gaussian_blur(z, denoise_sigma), lambda z: z, x)
      x = jnp.clip(x, lo, hi)
      c, p = costs(x)
      better = c < best_c
      best_x = jnp.where(better[:, None, None, None], x, best_x)
      return x, best_x, jnp.where(better, c, best_c), jnp.where(better, p, best_p)

    _, best_x, best_c, best_p = jax.lax.fori_loop(0, num_steps, body, (x0, x0, c0, p0))
    return InversionOutput(best_x, {'cost': best_c, 'confidence': best_p})

  return invert


class AttributeInference(NamedTuple):
  """``values``: inferred feature values ``[N]``; ``log_posterior``: ``[N, K]`` unnormalised
  log posteriors over the ``K`` candidates; ``base_rate_value``: the prior's mode."""
  values: np.ndarray
  log_posterior: np.ndarray
  base_rate_value: float


def attribute_inference(logits_fn: Callable[[jax.Array], jax.Array], x, y, *,
                        feature: int, candidates: Sequence[float],
                        prior: Sequence[float] | np.ndarray | None = None) -> AttributeInference:
  """Fredrikson et al. 2014's MAP attribute inference on a tabular model.

  Args:
    logits_fn: the model ``x [B, D] -> logits [B, C]``.
    x: ``[N, D]`` records; column ``feature`` is ignored (the attacker does not know it).
    y: ``[N]`` the records' labels (known to the attacker, as the paper's outcome).
    candidates: the ``K`` values the sensitive feature can take.
    prior: marginal probabilities of the candidates (default uniform).

  Returns:
    :class:`AttributeInference`; ``values[i] = argmax_k log p(y_i | x_i[feature := v_k])
    + log prior_k``.
  """
  x = np.asarray(x, np.float32)
  _checks.check_array('x', x, ndim=2, dtype_kind='f')
  feature = _checks.check_int('feature', feature, minimum=0, maximum=x.shape[1] - 1)
  cand = np.asarray(candidates, np.float32).reshape(-1)
  if cand.size < 2:
    raise ValueError(f'candidates={list(candidates)} must have at least 2 values.')
  prior_p = np.asarray(np.full(cand.size, 1.0 / cand.size) if prior is None else prior,
                       np.float64)
  if prior_p.shape != cand.shape or np.any(prior_p < 0) or not np.isclose(prior_p.sum(), 1.0):
    raise ValueError(f'prior={prior_p.tolist()} must be {cand.size} probabilities summing to 1.')
  y = np.asarray(y)
  _checks.check_labels('y', y, batch=x.shape[0])
  out = []
  for v in cand:
    xv = x.copy()
    xv[:, feature] = v
    logp = jax.nn.log_softmax(jnp.asarray(logits_fn(jnp.asarray(xv))), -1)
    out.append(np.asarray(logp)[np.arange(x.shape[0]), y])
  with np.errstate(divide='ignore'):
    post = np.stack(out, 1).astype(np.float64) + np.log(prior_p)[None]
  return AttributeInference(cand[np.argmax(post, 1)], post, float(cand[np.argmax(prior_p)]))


__all__ = ('gaussian_blur', 'model_inversion', 'AttributeInference', 'attribute_inference')
