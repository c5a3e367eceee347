"""Input, objective and output perturbation.

Input perturbation (local DP, each record privatised before collection; replace-one adjacency):

* :func:`laplace_features`: clip to an l1 ball of radius ``R``, add ``Lap(2R / eps)``:
  eps-DP (Dwork et al. 2006).
* :func:`gaussian_features`: clip to an l2 ball of radius ``R``, add ``N(0, s^2)`` with the
  analytic calibration (Balle & Wang 2018) for l2 sensitivity ``2R``. Not floating-point
  hardened (a discrete Gaussian would be; not provided).
* :func:`snapping_laplace`: Mironov's (2012) snapping mechanism, the floating-point-safe
  Laplace (textbook sampling, as in :func:`laplace_features`, can leak the input through
  the low-order bits, Sec. 3); host-side randomness from ``secrets``.
* :func:`randomized_response` on labels (Warner 1965, k-ary): keep w.p. ``e^eps / (e^eps +
  k - 1)``, else a uniform *other* label: eps-DP. :func:`debias_label_frequencies` and
  :func:`rr_unbiased_loss` (backward correction, Natarajan et al. 2013, Patrini et al. 2017)
  are the unbiased estimators of the true label frequencies and loss.

Regularised ERM (Chaudhuri, Monteleoni, Sarwate 2011): labels in {-1, 1} (jaxsec's {0, 1}
are mapped), ``||x||_2 <= 1``, ``J(f) = 1/n sum_i l(y_i f.x_i) + Lambda/2 ||f||^2`` for the
logistic loss (``c = 1/4``) and the Huberised hinge of eq. (7) (``c = 1/(2h)``); replace-one.

* :func:`output_perturbation` (Alg. 1): ``f* + b``, ``p(b) ~ exp(-n Lambda eps / 2 ||b||)``.
* :func:`objective_perturbation` (Alg. 2, Thm. 9): minimise ``J(f) + b.f / n + Delta/2
  ||f||^2``. The guarantee needs the exact minimiser, so it solves to a gradient norm below
  ``tol`` and raises otherwise. Noise ``exp(-beta ||b||)`` is a uniform direction times a
  ``Gamma(d, 1/beta)`` norm (Sec. 4).
"""
from __future__ import annotations

import fractions
import functools
import math
import secrets
from typing import Any, NamedTuple

import gmpy2
import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec.privacy import accounting

LOSSES = ('logistic', 'huber')


# ---------------------------------------------------------------- input perturbation

def _clip_rows(x, radius, order):
  norms = jnp.linalg.norm(x.reshape(x.shape[0], -1), ord=order, axis=1)
  f = jnp.minimum(1.0, radius / jnp.maximum(norms, 1e-12))
  return x * f.reshape((-1,) + (1,) * (x.ndim - 1))


def laplace_features(x: jax.Array, key: jax.Array, *, eps: float, l1_radius: float
                     ) -> jax.Array:
  """eps-LDP records: clip each to l1 norm ``R``, add ``Lap(2R/eps)`` per coordinate.

  Textbook float32 Laplace sampling, not hardened against floating-point attacks
  (Mironov 2012); :func:`snapping_laplace` is (per coordinate, with its own budget).
  """
  _checks.check_array('x', x, dtype_kind='f')
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  _checks.check_float('l1_radius', l1_radius, minimum=0.0, strict_min=True)
  xc = _clip_rows(x, l1_radius, 1)
  return xc + (2.0 * l1_radius / eps) * jax.random.laplace(key, x.shape, x.dtype)


def gaussian_features(x: jax.Array, key: jax.Array, *, eps: float, delta: float,
                      l2_radius: float) -> jax.Array:
  """(eps, delta)-LDP records: clip to l2 norm ``R``, add Gaussian noise calibrated
  exactly to l2 sensitivity ``2R`` (analytic Gaussian mechanism via dp_accounting)."""
  _checks.check_array('x', x, dtype_kind='f')
  _checks.check_float('l2_radius', l2_radius, minimum=0.0, strict_min=True)
  std = accounting.gaussian_sigma(eps, delta, sensitivity=2.0 * l2_radius)
  xc = _clip_rows(x, l2_radius, 2)
  return xc + std * jax.random.normal(key, x.shape, x.dtype)


#: eta of Mironov (2012): the unit roundoff of IEEE double precision
_ETA = 2.0 ** -53


def snapping_epsilon(eps: float, *, bound: float, sensitivity: float = 1.0) -> float:
  """The epsilon :func:`snapping_laplace` guarantees: ``eps (1 + 2^-49 B / Delta)``.

  Mironov (2012), Thm. 1: for a query of sensitivity 1 and ``lambda < B < 2^46 lambda``,
  the snapping mechanism with clamp ``B`` and noise scale ``lambda`` is
  ``(1/lambda + 2^-49 B/lambda)``-DP. The mechanism runs in units of ``Delta``, so ``B`` is
  ``bound / Delta``; the value returned is the theorem's, computed exactly for the
  floating-point ``lambda = 1/eps`` and ``B`` the mechanism uses and rounded up (so never
  below the guarantee by a rounding).
  """
  lam, b1 = _check_snapping(eps, bound, sensitivity)
  exact = (1 + fractions.Fraction(b1) / 2 ** 49) / fractions.Fraction(lam)
  out = float(exact)
  if fractions.Fraction(out) < exact:
    out = math.nextafter(out, math.inf)
  return out


def _check_snapping(eps, bound, sensitivity):
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  _checks.check_float('sensitivity', sensitivity, minimum=0.0, strict_min=True)
  _checks.check_float('bound', bound, minimum=0.0, strict_min=True)
  lam, b1 = 1.0 / float(eps), float(bound) / float(sensitivity)
  if not lam < b1 < 2.0 ** 46 * lam:
    raise ValueError(
        f'bound={bound}: the snapping mechanism (Mironov 2012, Thm. 1) needs '
        f'sensitivity / eps < bound < 2^46 sensitivity / eps, i.e. bound in '
        f'({sensitivity / eps:.6g}, {2.0 ** 46 * sensitivity / eps:.6g}); a clamp bound '
        'wider than the data costs nothing but 2^-49 bound / sensitivity in epsilon.')
  return lam, b1


def _uniform_full_precision(n: int) -> np.ndarray:
  """``n`` draws of U*: every double in (0, 1) with probability equal to the length of
  the real interval it rounds from (Mironov 2012, Sec. 5.2): a 52-bit significand and a
  geometric exponent, from the OS CSPRNG."""
  out = np.empty(n, np.float64)
  for i in range(n):
    mantissa = (1 << 52) | secrets.randbits(52)
    exponent = -53
    while True:                      # geometric(1/2): leading zeros of random words
      word = secrets.randbits(32)
      exponent -= 32 - word.bit_length()
      if word:
        break
    out[i] = math.ldexp(mantissa, exponent)
  return out


def snapping_laplace(values: Any, *, eps: float, sensitivity: float, bound: float
                     ) -> np.ndarray:
  """Mironov's (2012) snapping mechanism: a floating-point-safe Laplace mechanism.

  Each entry ``v`` (a query of l1 sensitivity ``Delta``; each entry is its own release,
  so k entries of one record compose to ``k`` times the epsilon) is released in units
  of ``Delta`` as

      clamp_B( round_Lambda( clamp_B(v / Delta) + S lambda ln(U*) ) ) * Delta

  with ``lambda = 1/eps``, ``S`` a uniform sign, ``U*`` uniform over the doubles in
  (0, 1) at full precision, ``ln`` correctly rounded (MPFR via gmpy2), ``round_Lambda``
  to the nearest multiple of ``Lambda``, the smallest power of two ``>= lambda``, and
  ``B = bound / Delta``. Guarantee: :func:`snapping_epsilon` ``~ eps (1 + 2^-49 B)``-DP
  (Thm. 1; needs ``lambda < B < 2^46 lambda``). Outputs lie on the grid
  ``Lambda * Delta`` or at ``+-bound``. Randomness: ``secrets`` (OS CSPRNG), host-side
  (not jittable). Make ``Delta`` a power of two for the scaling to be exact in floating
  point (otherwise ``v / Delta`` is rounded to the nearest double first).
  """
  lam, b1 = _check_snapping(eps, bound, sensitivity)
  v = np.asarray(values, np.float64)
  if not np.all(np.isfinite(v)):
    raise ValueError('values contain NaN or inf; the snapping mechanism needs finite values.')
  delta_ = float(sensitivity)
  big_lam = 2.0 ** math.ceil(math.log2(lam))     # smallest power of two >= lambda
  if big_lam / 2 >= lam:                          # guard log2 rounding
    big_lam /= 2
  n = v.size
  u = _uniform_full_precision(n)
  with gmpy2.context(precision=53, round=gmpy2.RoundToNearest):   # correctly rounded
    ln_u = np.array([float(gmpy2.log(gmpy2.mpfr(x))) for x in u], np.float64)
  sign = np.array([1.0 if secrets.randbits(1) else -1.0 for _ in range(n)], np.float64)
  x = np.clip(v.reshape(-1) / delta_, -b1, b1) + sign * (lam * ln_u)
  snapped = np.round(x / big_lam) * big_lam      # division by a power of two is exact
  out = np.clip(snapped, -b1, b1) * delta_
  return out.reshape(v.shape)


def rr_keep_probability(eps: float, num_classes: int) -> float:
  return math.exp(eps) / (math.exp(eps) + num_classes - 1)


def randomized_response(y: jax.Array, key: jax.Array, *, eps: float, num_classes: int
                        ) -> jax.Array:
  """k-ary randomized response: eps-LDP labels (accounted by
  ``accounting.randomized_response_event``)."""
  _checks.check_float('eps', eps, minimum=0.0)
  _checks.check_int('num_classes', num_classes, minimum=2)
  _checks.check_labels('y', y, num_classes)
  p = rr_keep_probability(eps, num_classes)
  k1, k2 = jax.random.split(key)
  keep = jax.random.uniform(k1, y.shape) < p
  other = (y + jax.random.randint(k2, y.shape, 1, num_classes)) % num_classes
  return jnp.where(keep, y, other).astype(y.dtype)


def rr_transition_matrix(eps: float, num_classes: int) -> np.ndarray:
  """``T[i, j] = P[observed j | true i]`` of :func:`randomized_response`."""
  p = rr_keep_probability(eps, num_classes)
  off = (1 - p) / (num_classes - 1)
  return np.full((num_classes, num_classes), off) + (p - off) * np.eye(num_classes)


def debias_label_frequencies(y_rr: jax.Array, *, eps: float, num_classes: int) -> jax.Array:
  """Unbiased estimate of the true label frequencies from randomised labels:
  ``pi = (f - (1-p)/(k-1)) / (p - (1-p)/(k-1))`` (may leave [0, 1] by sampling noise)."""
  f = jnp.bincount(y_rr, length=num_classes) / y_rr.shape[0]
  p = rr_keep_probability(eps, num_classes)
  off = (1 - p) / (num_classes - 1)
  return (f - off) / (p - off)


def rr_unbiased_loss(loss, *, eps: float, num_classes: int):
  """``loss(logits, y) -> [B]`` -> unbiased loss for randomised labels.

  ``E_{y~ | y}[new(logits, y~)] = loss(logits, y)`` exactly (backward correction with the
  known transition matrix). The corrected loss may be negative.
  """
  tinv = jnp.asarray(np.linalg.inv(rr_transition_matrix(eps, num_classes)), jnp.float32)

  def new(logits, y_rr):
    cls = jnp.arange(num_classes)
    per_class = jax.vmap(lambda c: loss(logits, jnp.full(logits.shape[:1], c, jnp.int32)),
                         out_axes=1)(cls)                     # [B, K]
    return jnp.einsum('jk,bk->bj', tinv, per_class)[jnp.arange(logits.shape[0]), y_rr]
  return new


# ---------------------------------------------------------------- regularised ERM (CMS 2011)

def huber_hinge(z: jax.Array, h: float) -> jax.Array:
  """CMS eq. (7): 0 for z > 1+h, (1+h-z)^2/(4h) for |1-z| <= h, 1-z for z < 1-h."""
  return jnp.where(z > 1 + h, 0.0,
                   jnp.where(z < 1 - h, 1 - z, (1 + h - z) ** 2 / (4 * h)))


def _margin_loss(name, h):
  if name == 'logistic':
    return lambda z: jnp.logaddexp(0.0, -z), 0.25
  return lambda z: huber_hinge(z, h), 1.0 / (2.0 * h)


def prepare_erm_data(x: Any, y: Any, *, add_bias: bool = True) -> tuple[jax.Array, jax.Array]:
  """Flattens, optionally appends a constant 1 feature (a regularised bias), scales every
  record by ``max(1, ||x_i||)`` (a per-record map, so DP is unaffected) so that
  ``||x_i|| <= 1``, and maps labels {0, 1} -> {-1, +1}."""
  x = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
  if add_bias:
    x = jnp.concatenate([x, jnp.ones((x.shape[0], 1), jnp.float32)], axis=1)
  x = _clip_rows(x, 1.0, 2)
  y = jnp.asarray(y)
  if np.issubdtype(y.dtype, np.integer):
    _checks.check_labels('y', y, 2)
    y = 2.0 * y.astype(jnp.float32) - 1.0
  return x, y.astype(jnp.float32)


def _check_erm(x, y, lam, loss, h):
  _checks.check_array('x', x, ndim=2, dtype_kind='f')
  _checks.check_choice('loss', loss, LOSSES)
  _checks.check_float('regularization', lam, minimum=0.0, strict_min=True)
  _checks.check_float('huber_h', h, minimum=0.0, strict_min=True, maximum=1.0)
  if _checks.is_concrete(x):
    mx = float(jnp.max(jnp.linalg.norm(x, axis=1)))
    if mx > 1 + 1e-5:
      raise ValueError(f'x has a record of l2 norm {mx:.4g}; CMS 2011 needs ||x_i|| <= 1 '
                       '(use prepare_erm_data).')
  if _checks.is_concrete(y):
    vals = set(np.unique(np.asarray(y)).tolist())
    if not vals <= {-1.0, 1.0}:
      raise ValueError(f'y has values {sorted(vals)[:5]}; expected labels in {{-1, +1}}.')


def _newton(obj, d, tol, dtype, max_iter=100):
  """Damped Newton's method on a smooth strongly convex objective (exact minimiser)."""
  g_fn = jax.grad(obj)
  h_fn = jax.hessian(obj)

  def body(state):
    f, it, _ = state
    g = g_fn(f)
    step = jnp.linalg.solve(h_fn(f), g)
    # backtracking (Armijo) keeps Newton globally convergent
    def ok(t):
      return obj(f - t * step) <= obj(f) - 0.25 * t * jnp.dot(g, step)
    t = jax.lax.while_loop(lambda t: (~ok(t)) & (t > 1e-8), lambda t: t * 0.5, 1.0)
    f = f - t * step
    return f, it + 1, jnp.linalg.norm(g_fn(f))

  f0 = jnp.zeros((d,), dtype)
  f, _, gn = jax.lax.while_loop(lambda s: (s[2] > tol) & (s[1] < max_iter), body,
                                (f0, 0, jnp.array(jnp.inf, dtype)))
  return f, gn


@functools.partial(jax.jit, static_argnames=('loss', 'huber_h'))
def _solve(x, y, b, lam, extra, *, loss, huber_h, tol):
  """argmin_f mean l(y f.x) + (lam + extra)/2 ||f||^2 + b.f / n (one compilation)."""
  l, _ = _margin_loss(loss, huber_h)
  n = x.shape[0]
  obj = lambda f: (jnp.mean(l(y * (x @ f))) + 0.5 * (lam + extra) * jnp.dot(f, f)
                   + jnp.dot(b, f) / n)
  return _newton(obj, x.shape[1], tol, x.dtype)


def _solve_exact(x, y, b, lam, extra, *, loss, huber_h, tol):
  """Solves in float64 (the guarantee needs the exact minimiser; float32 stalls near a
  gradient norm of 1e-4 when the noise term is large) and returns float32 weights (a
  post-processing of the minimiser). ``tol`` is relative to the scale of the gradient's
  terms, ``1 + ||b|| / n`` (the loss part has norm <= 1 since |l'| <= 1, ||x|| <= 1)."""
  tol = float(tol) * (1.0 + float(np.linalg.norm(np.asarray(b))) / x.shape[0])
  with jax.enable_x64(True):
    f, gn = _solve(jnp.asarray(np.asarray(x), jnp.float64),
                   jnp.asarray(np.asarray(y), jnp.float64),
                   jnp.asarray(np.asarray(b), jnp.float64), float(lam), float(extra),
                   loss=loss, huber_h=float(huber_h), tol=tol)
    f, gn = np.asarray(f), float(gn)
  if not gn <= tol:
    raise RuntimeError(f'ERM solver stopped at gradient norm {gn:.3g} > tol={tol}; the '
                       'privacy guarantee needs the exact minimiser.')
  return jnp.asarray(f, jnp.float32), gn


@functools.partial(jax.jit, static_argnums=(1,))
def _gamma_ball_noise(key, d, beta):
  k1, k2 = jax.random.split(key)
  direction = jax.random.normal(k1, (d,))
  direction = direction / jnp.linalg.norm(direction)
  norm = jax.random.gamma(k2, float(d)) / beta
  return direction * norm


class ErmResult(NamedTuple):
  weights: jax.Array     # [d] (the last entry is the bias when prepare_erm_data added it)
  epsilon: float
  grad_norm: float       # ||grad|| of the (perturbed) objective at the returned solution
  extra_regularization: float   # Delta of objective perturbation (0 otherwise)


def erm(x: jax.Array, y: jax.Array, *, regularization: float, loss: str = 'logistic',
        huber_h: float = 0.5, tol: float = 1e-8) -> ErmResult:
  """Non-private regularised ERM: the exact minimiser of J (the baseline)."""
  _check_erm(x, y, regularization, loss, huber_h)
  f, gn = _solve_exact(x, y, np.zeros((x.shape[1],)), regularization, 0.0, loss=loss,
                       huber_h=huber_h, tol=tol)
  return ErmResult(f, math.inf, float(gn), 0.0)


def output_perturbation(x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
                        regularization: float, loss: str = 'logistic', huber_h: float = 0.5,
                        tol: float = 1e-8) -> ErmResult:
  """CMS 2011 Alg. 1: eps-DP ``f* + b`` with ``p(b) ~ exp(-n Lambda eps ||b|| / 2)``."""
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  base = erm(x, y, regularization=regularization, loss=loss, huber_h=huber_h, tol=tol)
  n, d = x.shape
  beta = n * regularization * eps / 2.0
  return ErmResult(base.weights + _gamma_ball_noise(key, d, beta), float(eps),
                   base.grad_norm, 0.0)


def objective_perturbation_params(eps: float, n: int, regularization: float, c: float
                                  ) -> tuple[float, float]:
  """``(eps', Delta)`` of CMS 2011 Alg. 2."""
  lam = regularization
  eps_p = eps - math.log(1 + 2 * c / (n * lam) + c * c / (n * lam) ** 2)
  if eps_p > 0:
    return eps_p, 0.0
  return eps / 2.0, c / (n * (math.exp(eps / 4.0) - 1.0)) - lam


def objective_perturbation(x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
                           regularization: float, loss: str = 'logistic',
                           huber_h: float = 0.5, tol: float = 1e-8) -> ErmResult:
  """CMS 2011 Alg. 2: eps-DP minimiser of ``J(f) + b.f/n + Delta/2 ||f||^2``."""
  _checks.check_float('eps', eps, minimum=0.0, strict_min=True)
  _check_erm(x, y, regularization, loss, huber_h)
  n, d = x.shape
  _, c = _margin_loss(loss, huber_h)
  eps_p, extra = objective_perturbation_params(eps, n, regularization, c)
  b = _gamma_ball_noise(key, d, eps_p / 2.0)
  f, gn = _solve_exact(x, y, b, regularization, extra, loss=loss, huber_h=huber_h,
                       tol=tol)
  return ErmResult(f, float(eps), float(gn), float(extra))


def erm_accuracy(weights: jax.Array, x: jax.Array, y: jax.Array) -> float:
  """Accuracy of sign(x.f) against labels in {-1, +1}."""
  return float(jnp.mean(jnp.sign(x @ weights) == y))


def one_vs_rest(method, x: jax.Array, y: jax.Array, key: jax.Array, *, num_classes: int,
                eps: float, **kw) -> tuple[jax.Array, float]:
  """K one-vs-rest private binary classifiers; each gets ``eps / K`` (one record enters
  all K problems, so the total by basic composition is ``eps``). Returns ``(W [d, K],
  eps)``; predict with ``argmax(x @ W)``."""
  _checks.check_int('num_classes', num_classes, minimum=2)
  ws = []
  for k, kk in enumerate(jax.random.split(key, num_classes)):
    yk = jnp.where(y == k, 1.0, -1.0)
    ws.append(method(x, yk, kk, eps=eps / num_classes, **kw).weights)
  return jnp.stack(ws, axis=1), float(eps)
