"""Building blocks shared by the white-box evasion attacks.

Everything here works on a batch ``[B, ...]`` of independent examples and is jit / vmap
friendly: attack objectives (cross-entropy, C&W margin, DLR and targeted DLR), success
masks, per-example norms, steepest-ascent directions, exact projections onto L_inf, L2 and
L1 balls (the L1 one also intersected with the input box), and random starts.

Conventions: an *objective* is always **maximised** by the attacker; for ``targeted=True``
the objectives are the ones whose increase moves the input towards the target label ``y``.
A model with a single logit (binary, class 1 when the logit is > 0) is handled as the
two-class model with logits ``[0, z]``, which gives the same probabilities and decisions.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks

NORMS = ('linf', 'l2', 'l1')
LOSSES = ('ce', 'cw', 'dlr')
_TINY = 1e-12


def as_multiclass(logits: jax.Array) -> jax.Array:
  """Single-logit binary scores ``z`` -> two-class logits ``[0, z]``; others unchanged."""
  if logits.shape[-1] == 1:
    return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
  return logits


def _label_logit_and_best_other(z: jax.Array, y: jax.Array):
  onehot = jax.nn.one_hot(y, z.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
  z_other = jnp.max(jnp.where(onehot, -jnp.inf, z), axis=-1)
  return z_y, z_other


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy ``-log softmax(z)_y``."""
  z = as_multiclass(logits)
  return -jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), y[:, None], axis=-1)[:, 0]


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """``z_y - max_{j != y} z_j`` per example (> 0 iff the model predicts ``y``; ties aside)."""
  z_y, z_other = _label_logit_and_best_other(as_multiclass(logits), y)
  return z_y - z_other


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference of Logits Ratio loss of Croce & Hein (ICML 2020), eq. (5), per example.

  ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi1 >= z_pi2 >= ...``
  the sorted logits. Maximised by an untargeted attacker. Needs >= 3 classes.
  """
  z = as_multiclass(logits)
  if z.shape[-1] < 3:
    raise ValueError(f'The DLR loss needs at least 3 classes; the logits have '
                     f'{z.shape[-1]}.')
  zs = jnp.sort(z, axis=-1)[:, ::-1]
  return -margin(z, y) / (zs[:, 0] - zs[:, 2] + _TINY)


def targeted_dlr_loss(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted DLR of Croce & Hein (ICML 2020), eq. (6), per example.

  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, maximised by the attacker (it grows as
  the target logit ``z_t`` overtakes the true one ``z_y``). Needs >= 4 classes.
  """
  z = as_multiclass(logits)
  if z.shape[-1] < 4:
    raise ValueError(f'The targeted DLR loss needs at least 4 classes; the logits have '
                     f'{z.shape[-1]}.')
  zs = jnp.sort(z, axis=-1)[:, ::-1]
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(z, target[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + _TINY)


def objective(loss: str, targeted: bool) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The per-example objective ``f(logits, y) -> [B]`` an attacker maximises.

  * ``'ce'``: cross-entropy of the true label (untargeted), minus the cross-entropy of the
    target label (targeted).
  * ``'cw'``: the C&W margin (Carlini & Wagner 2017, their f_6 without the clamp at
    -kappa): ``max_{j != y} z_j - z_y`` (untargeted), ``z_t - max_{j != t} z_j`` (targeted).
  * ``'dlr'``: the DLR loss (untargeted). For a targeted attack, ``'dlr'`` with only the
    target known is the DLR-normalised target margin ``(z_t - max_{j != t} z_j) /
    (z_pi1 - (z_pi3 + z_pi4) / 2)``; APGD-T uses the exact two-label form
    (:func:`targeted_dlr_loss`) because it also knows the true label.
  """
  _checks.check_choice('loss', loss, LOSSES)
  if loss == 'ce':
    return (lambda z, y: -cross_entropy(z, y)) if targeted else cross_entropy
  if loss == 'cw':
    return margin if targeted else (lambda z, y: -margin(z, y))
  if not targeted:
    return dlr_loss

  def _tdlr(logits, t):
    z = as_multiclass(logits)
    if z.shape[-1] < 4:
      raise ValueError(f'The targeted DLR loss needs at least 4 classes; the logits have '
                       f'{z.shape[-1]}.')
    zs = jnp.sort(z, axis=-1)[:, ::-1]
    return margin(z, t) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + _TINY)
  return _tdlr


def predict(logits: jax.Array) -> jax.Array:
  return jnp.argmax(as_multiclass(logits), axis=-1).astype(jnp.int32)


def success(logits: jax.Array, y: jax.Array, targeted: bool) -> jax.Array:
  """Per-example attack success: prediction != y (untargeted) or == y (targeted)."""
  pred = predict(logits)
  return pred == y if targeted else pred != y


def value_and_grad(logits_fn, obj):
  """``x, y -> (objective [B], logits, d objective / dx)``: one forward and one backward.

  The gradient of the *sum* of the per-example objectives equals the per-example gradients
  because the examples of a batch are independent under ``logits_fn``.

  A ``logits_fn`` that estimates its own gradients (e.g. the EOT model of
  :func:`jaxsec.attacks.evasion.adaptive.eot_logits_fn`, which averages per-sample loss
  gradients) provides ``attack_value_and_grad(obj)`` with the same contract; it is used
  instead.
  """
  custom = getattr(logits_fn, 'attack_value_and_grad', None)
  if custom is not None:
    return custom(obj)
  return plain_value_and_grad(logits_fn, obj)


def plain_value_and_grad(logits_fn, obj):
  """:func:`value_and_grad` by autodiff through ``logits_fn``, ignoring any
  ``attack_value_and_grad`` it provides (what such a custom estimator falls back on)."""
  def f(x, y):
    logits = logits_fn(x)
    v = obj(logits, y)
    return jnp.sum(v), (v, logits)

  g = jax.value_and_grad(f, has_aux=True)

  def run(x, y):
    (_, (v, logits)), grad = g(x, y)
    return v, logits, grad
  return run


# --------------------------------------------------------------------------- norms


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape((x.shape[0], -1))


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Per-example values [B] (or a scalar) broadcast against x [B, ...]."""
  v = jnp.asarray(v, x.dtype)
  if v.ndim == 0:
    return v
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def norm(d: jax.Array, p: str) -> jax.Array:
  """Per-example ``||d||_p`` for ``p`` in linf, l2, l1, l0 (number of non-zeros)."""
  f = _flat(d)
  if p == 'linf':
    return jnp.max(jnp.abs(f), axis=-1)
  if p == 'l2':
    return jnp.sqrt(jnp.sum(f * f, axis=-1))
  if p == 'l1':
    return jnp.sum(jnp.abs(f), axis=-1)
  if p == 'l0':
    return jnp.sum(f != 0, axis=-1).astype(d.dtype)
  raise ValueError(f'norm={p!r} is not one of (\'linf\', \'l2\', \'l1\', \'l0\').')


def normalize(g: jax.Array, p: str) -> jax.Array:
  """Scales each example of ``g`` to unit ``p``-norm (zero stays zero); linf -> sign."""
  if p == 'linf':
    return jnp.sign(g)
  return g / _bcast(jnp.maximum(norm(g, p), _TINY), g)


def steepest_ascent(g: jax.Array, p: str, x: jax.Array | None = None,
                    bounds=None) -> jax.Array:
  """The unit-``p``-norm direction d maximising <g, d> (the dual-norm maximiser).

  linf: ``sign(g)``; l2: ``g / ||g||_2``; l1: the signed coordinate(s) of largest ``|g|``
  (mass split evenly between ties). Given the current point ``x`` and the box ``bounds``,
  the l1 direction is box-aware (as PGD's sparse L1 step, Croce & Hein, ICCV 2021): the top
  coordinate is chosen among those that can move in the direction of ``sign(g)`` (a
  coordinate at ``hi`` with ``g > 0`` or at ``lo`` with ``g < 0`` is skipped); zero when
  none can.
  """
  if p != 'l1':
    return normalize(g, p)
  a = jnp.abs(_flat(g))
  if x is not None:
    if bounds is None:
      raise ValueError('bounds=None with x given; the box-aware l1 direction needs '
                       'bounds=(lo, hi).')
    lo, hi = bounds
    xf, gf = _flat(x), _flat(g)
    blocked = ((xf >= hi) & (gf > 0)) | ((xf <= lo) & (gf < 0))
    a = jnp.where(blocked, 0.0, a)
  top = (a >= jnp.max(a, axis=-1, keepdims=True)) & (a > 0)
  d = jnp.where(top, 1.0, 0.0) / jnp.maximum(jnp.sum(top, axis=-1, keepdims=True), 1)
  return (d * jnp.sign(_flat(g))).reshape(g.shape).astype(g.dtype)


# --------------------------------------------------------------------------- projections


def project_linf(delta: jax.Array, eps) -> jax.Array:
  """Euclidean projection of each example onto ``{||d||_inf <= eps}`` (clipping)."""
  e = _bcast(eps, delta)
  return jnp.clip(delta, -e, e)


def project_l2(delta: jax.Array, eps) -> jax.Array:
  """Euclidean projection onto ``{||d||_2 <= eps}`` (radial scaling)."""
  n = norm(delta, 'l2')
  e = jnp.asarray(eps, delta.dtype) * jnp.ones_like(n)
  scale = jnp.where(n > e, e / jnp.maximum(n, _TINY), 1.0)
  return delta * _bcast(scale, delta)


def _project_l1_box_1d(v, eps, lo, hi):
  """Exact Euclidean projection of the vector v onto {||d||_1 <= eps, lo <= d <= hi}.

  Needs lo <= 0 <= hi (the box contains 0). By the KKT conditions the solution is
  d_i = sign(v_i) * clip(|v_i| - lam, 0, c_i), c_i the box cap in the direction of v_i, with
  lam = 0 when that point is feasible and otherwise the root of the piecewise-linear,
  non-increasing g(lam) = sum_i clip(|v_i| - lam, 0, c_i) = eps. g's breakpoints are |v_i|
  and |v_i| - c_i; it is evaluated on all of them after one sort (O(n log n)) and the root
  is found by linear interpolation between two neighbouring breakpoints: no iteration, exact
  up to rounding. With lo = -inf, hi = inf this is the simplex-based projection of
  Duchi et al. (ICML 2008).
  """
  n = v.shape[0]
  u = jnp.abs(v)
  c = jnp.where(v >= 0, hi, -lo)
  c = jnp.maximum(c, 0.0)
  w = jnp.maximum(u - c, 0.0)           # below w_i the coordinate is capped at c_i
  u_s = jnp.sort(u)
  w_s = jnp.sort(w)
  u_cs = jnp.concatenate([jnp.zeros((1,), u.dtype), jnp.cumsum(u_s)])
  w_cs = jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.cumsum(w_s)])

  def g(t):  # sum_{u_i > t} (u_i - t) - sum_{w_i > t} (w_i - t), valid for t >= 0
    iu = jnp.searchsorted(u_s, t, side='right')
    iw = jnp.searchsorted(w_s, t, side='right')
    su = (u_cs[-1] - u_cs[iu]) - (n - iu) * t
    sw = (w_cs[-1] - w_cs[iw]) - (n - iw) * t
    return su - sw

  t = jnp.sort(jnp.concatenate([jnp.zeros((1,), u.dtype), u, w]))
  gt = jax.vmap(g)(t)                    # non-increasing in t, gt[-1] == 0
  eps = jnp.asarray(eps, v.dtype)
  k = jnp.sum(gt >= eps) - 1             # last breakpoint with g >= eps
  k = jnp.clip(k, 0, t.shape[0] - 2)
  t0, t1, g0, g1 = t[k], t[k + 1], gt[k], gt[k + 1]
  lam = t0 + (g0 - eps) * (t1 - t0) / jnp.maximum(g0 - g1, _TINY)
  lam = jnp.clip(lam, t0, t1)
  lam = jnp.where(gt[0] <= eps, 0.0, lam)     # the box point itself is feasible
  lam = jnp.where(eps <= 0, t[-1], lam)
  d = jnp.sign(v) * jnp.clip(u - lam, 0.0, c)
  return d.astype(v.dtype)


def project_l1(delta: jax.Array, eps, lo=None, hi=None) -> jax.Array:
  """Exact Euclidean projection of each example onto the L1 ball (optionally ∩ a box).

  Args:
    delta: perturbations [B, ...].
    eps: radius, a scalar or one per example [B] (may be traced).
    lo, hi: optional per-coordinate bounds on ``delta`` (same shape as ``delta``, with
      ``lo <= 0 <= hi``), e.g. ``lo = bounds[0] - x``, ``hi = bounds[1] - x``. Then the
      result is the exact projection onto ``{||d||_1 <= eps} ∩ [lo, hi]`` (not the L1
      projection followed by clipping, which is feasible but not the nearest point).
  """
  f = _flat(delta)
  lo_f = jnp.full_like(f, -jnp.inf) if lo is None else _flat(jnp.broadcast_to(lo, delta.shape))
  hi_f = jnp.full_like(f, jnp.inf) if hi is None else _flat(jnp.broadcast_to(hi, delta.shape))
  e = jnp.broadcast_to(jnp.asarray(eps, delta.dtype), (delta.shape[0],))
  out = jax.vmap(_project_l1_box_1d)(f, e, lo_f, hi_f)
  return out.reshape(delta.shape)


def project(x_adv: jax.Array, x: jax.Array, eps, p: str, bounds) -> jax.Array:
  """Maps ``x_adv`` to a point of ``{||x' - x||_p <= eps} ∩ [lo, hi]^d``.

  linf and l1: the exact Euclidean projection onto the intersection. l2: projection onto
  the ball followed by clipping to the box; the result is feasible (clipping towards a
  point of the box only shrinks every coordinate of the perturbation) but not always the
  nearest feasible point, as in Madry et al. and AutoAttack.
  """
  lo, hi = bounds
  d = x_adv - x
  if p == 'linf':
    d = project_linf(d, eps)
  elif p == 'l2':
    d = project_l2(d, eps)
  elif p == 'l1':
    return x + project_l1(d, eps, lo - x, hi - x)
  else:
    raise ValueError(f'norm={p!r} is not one of {NORMS}.')
  return jnp.clip(x + d, lo, hi)


# --------------------------------------------------------------------------- random starts


def random_in_ball(key: jax.Array, shape, eps, p: str, dtype=jnp.float32) -> jax.Array:
  """A point drawn uniformly from the ``p``-ball of radius ``eps`` per example."""
  b = shape[0]
  d = 1
  for s in shape[1:]:
    d *= s
  k1, k2, k3 = jax.random.split(key, 3)
  e = _bcast(jnp.asarray(eps, dtype), jnp.zeros(shape, dtype))
  if p == 'linf':
    return jax.random.uniform(k1, shape, dtype, -1.0, 1.0) * e
  # radius^(1/d) trick: uniform in the ball = uniform direction on the sphere x U^(1/d).
  r = jax.random.uniform(k2, (b,), dtype) ** (1.0 / d)
  if p == 'l2':
    direction = normalize(jax.random.normal(k1, shape, dtype), 'l2')
  elif p == 'l1':  # uniform on the L1 sphere: Exp(1) magnitudes normalised, random signs
    mag = jax.random.exponential(k1, shape, dtype)
    sgn = jax.random.rademacher(k3, shape, dtype)
    direction = normalize(mag * sgn, 'l1')
  else:
    raise ValueError(f'norm={p!r} is not one of {NORMS}.')
  return direction * _bcast(r, direction) * e


# --------------------------------------------------------------------------- checks


def check_common(*, eps=None, norm_=None, loss=None, bounds=(0.0, 1.0), eps_name='eps',
                 norms=NORMS):
  """Factory-time checks shared by the attacks; returns the checked bounds."""
  if eps is not None:
    _checks.check_float(eps_name, eps, minimum=0.0)
  if norm_ is not None:
    _checks.check_choice('norm', norm_, norms)
  if loss is not None:
    _checks.check_choice('loss', loss, LOSSES)
  return _checks.check_bounds(bounds)


def check_bool(**kw):
  """``ValueError`` unless every keyword value is a Python bool."""
  for k, v in kw.items():
    if not isinstance(v, bool):
      raise ValueError(f'{k}={v!r} must be a bool (True or False).')


def check_call(x, y, bounds, logits_fn=None, randomized: bool = False):
  """Call-time checks on the batch, shared by every attack entry point that takes ``(x, y)``.

  Always: shapes and dtypes. On concrete (eager, non-traced) values only: ``x`` finite (no
  NaN / inf) and inside ``bounds`` (``None``: no box), and, given ``logits_fn`` (a model or
  a score oracle), labels ``y`` in ``[0, num_classes)`` of the model (a single-logit model
  has 2 classes; the number of classes comes from ``jax.eval_shape``, no model evaluation;
  a function answering labels ``[B]`` gives no class count and is not used;
  ``randomized=True``: a randomised model ``logits_fn(x, key)``). Under ``jit`` / ``vmap``
  the value checks are skipped, so attacks still trace.
  """
  _checks.check_array('x', x, dtype_kind='f')
  if x.ndim < 1:
    raise ValueError(f'x has shape {tuple(x.shape)}; expected a batch [B, ...].')
  _checks.check_labels('y', y, batch=x.shape[0])
  if _checks.is_concrete(x):
    arr = np.asarray(x)            # one device-to-host copy for both value checks
    _checks.check_array('x', arr, finite=True)
    if bounds is not None:
      _checks.check_in_bounds('x', arr, bounds, tol=1e-5)
  if logits_fn is not None and _checks.is_concrete(y) and y.size:
    args = (jax.ShapeDtypeStruct(x.shape, x.dtype),)
    if randomized:
      args += (jax.eval_shape(lambda: jax.random.key(0)),)
    spec = jax.eval_shape(logits_fn, *args)
    if len(spec.shape) >= 2:
      _checks.check_labels('y', y, num_classes=max(int(spec.shape[-1]), 2))


def select(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example ``where(mask, a, b)`` for mask [B] and a, b [B, ...]."""
  return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def better(succ_new, loss_new, succ_old, loss_old):
  """True where (success, objective) of the new point beats the old one lexicographically."""
  return (succ_new & ~succ_old) | ((succ_new == succ_old) & (loss_new > loss_old))


# Iterations of at most this many steps are fully unrolled when tracing for the CPU
# backend. XLA:CPU runs convolutions inside while-loop bodies much slower than in
# straight-line code (jax-ml/jax#12868; timings in experiments/benchmarks/attack_speed.py),
# and partial unrolling keeps the loop and the penalty. Longer loops stay loops (compile
# time grows with the unrolled length). A platform detail, not a setting: the results are
# the same either way (tests/attacks/evasion/test_cpu_unroll.py).
_CPU_UNROLL_MAX = 32


def best_of_runs(run, k: int):
  """The per-example best of ``run(0), ..., run(k - 1)`` (each ``(x_adv, success, loss)``,
  ``j`` traced after the first), ranked by :func:`better`: ``(x_adv, success, loss)`` with
  ``success`` the OR over the runs. One compiled loop, however large ``k``."""
  x_b, s_b, v_b = run(0)

  def body(j, c):
    x_r, s_r, v_r = run(j)
    imp = better(s_r, v_r, c[1], c[2])
    return select(imp, x_r, c[0]), c[1] | s_r, jnp.where(imp, v_r, c[2])

  if k > 1:
    x_b, s_b, v_b = jax.lax.fori_loop(1, k, body, (x_b, s_b, v_b))
  return x_b, s_b, v_b


def fori_loop(lower: int, upper: int, body, init, *, unrolled_steps: int | None = None):
  """``lax.fori_loop`` with static bounds, fully unrolled on CPU for short loops.

  Same semantics as ``lax.fori_loop(lower, upper, body, init)``; only the compiled form
  differs (accelerators always get the loop). ``unrolled_steps``: the length that counts
  against the limit (default ``upper - lower``; larger when each body holds a loop of
  its own, e.g. PGD restarts of ``num_steps`` steps each).
  """
  n = upper - lower
  size = n if unrolled_steps is None else unrolled_steps
  if 0 < n and size <= _CPU_UNROLL_MAX and jax.default_backend() == 'cpu':
    return jax.lax.fori_loop(lower, upper, body, init, unroll=True)
  return jax.lax.fori_loop(lower, upper, body, init)
