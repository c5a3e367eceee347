"""Projected gradient descent (Madry et al. 2018) in L_inf, L2 and sparse L1, with restarts.

Each step ascends the attack objective along the steepest-ascent direction of the norm
(sign for L_inf, the normalised gradient for L2, the sparse top-coordinate direction of
SLIDE for L1) and projects back onto ``{||x' - x||_p <= eps} ∩ [lo, hi]^d``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common


def sparse_l1_direction(g: jax.Array, x_adv: jax.Array, bounds, k: int) -> jax.Array:
  """The SLIDE step direction of Tramer & Boneh (NeurIPS 2019), made box-aware.

  Keeps the ``k`` coordinates of largest ``|g|`` among those that can still move in the
  ascent direction (a coordinate at the upper bound with ``g > 0``, or at the lower bound
  with ``g < 0``, is excluded, as in Croce & Hein's SL1D / "Mind the box", ICCV 2021),
  sets them to ``sign(g) / k`` and the rest to 0: a unit-L1 vector.
  """
  lo, hi = bounds
  gf = common._flat(g)
  xf = common._flat(x_adv)
  blocked = ((xf >= hi) & (gf > 0)) | ((xf <= lo) & (gf < 0))
  a = jnp.where(blocked, -1.0, jnp.abs(gf))
  vals, idx = lax.top_k(a, k)
  keep = vals > 0
  mask = jnp.zeros_like(gf).at[jnp.arange(gf.shape[0])[:, None], idx].set(
      keep.astype(gf.dtype))
  cnt = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)
  return (mask * jnp.sign(gf) / cnt).reshape(g.shape)


def _direction(g, x_adv, p, bounds, l1_k):
  if p == 'l1':
    return sparse_l1_direction(g, x_adv, bounds, l1_k)
  return common.normalize(g, p)


def run_pgd(logits_fn, x, y, key, *, eps, step_size, num_steps, p, random_start,
            restarts, obj, targeted, bounds, l1_quantile, keep_best, success_fn=None):
  """The PGD engine (shared with BIM and auto_attack). Returns (x_best, success, objective).

  ``success_fn(logits, y) -> [B]`` overrides the success test implied by ``targeted``.
  """
  if success_fn is None:
    success_fn = lambda logits, y: common.success(logits, y, targeted)
  lo, hi = bounds
  dim = math.prod(x.shape[1:])
  l1_k = max(1, int(math.ceil((1.0 - l1_quantile) * dim)))
  vg = common.value_and_grad(logits_fn, obj)
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)

  def one_run(key):
    if random_start:
      x0 = common.project(x + common.random_in_ball(key, x.shape, eps, p, x.dtype), x, eps,
                          p, bounds)
    else:
      x0 = x

    def body(_, carry):
      x_adv, best_x, best_s, best_v = carry
      v, logits, g = vg(x_adv, y)
      s = success_fn(logits, y)
      if keep_best:
        imp = common.better(s, v, best_s, best_v)
        best_x = common.select(imp, x_adv, best_x)
        best_s = best_s | s
        best_v = jnp.where(imp, v, best_v)
      x_new = x_adv + step_size * _direction(g, x_adv, p, bounds, l1_k)
      x_new = common.project(x_new, x, eps, p, bounds)
      return x_new, best_x, best_s, best_v

    b = x.shape[0]
    init = (x0, x0, jnp.zeros((b,), bool), jnp.full((b,), -jnp.inf, x.dtype))
    x_last, best_x, best_s, best_v = common.fori_loop(0, num_steps, body, init)
    # Evaluate the last iterate too (one extra forward pass).
    logits = logits_fn(x_last)
    v = obj(logits, y)
    s = success_fn(logits, y)
    if keep_best:
      imp = common.better(s, v, best_s, best_v)
      return common.select(imp, x_last, best_x), s | best_s, jnp.where(imp, v, best_v)
    return x_last, s, v

  # Restart i draws from fold_in(key, i): the first r restarts are the same for any
  # restarts >= r, so adding restarts can only improve each example.
  x_b, s_b, v_b = one_run(jax.random.fold_in(key, 0))

  def restart(i, carry):
    x_b, s_b, v_b = carry
    x_r, s_r, v_r = one_run(jax.random.fold_in(key, i))
    imp = common.better(s_r, v_r, s_b, v_b)
    return common.select(imp, x_r, x_b), s_b | s_r, jnp.where(imp, v_r, v_b)

  if restarts > 1:
    # Unrolled on CPU only when all restarts' steps together are short (common.fori_loop).
    x_b, s_b, v_b = common.fori_loop(1, restarts, restart, (x_b, s_b, v_b),
                                     unrolled_steps=restarts * num_steps)
  return x_b, s_b, v_b


def pgd(*, eps, step_size=None, num_steps: int = 40, norm: str = 'linf',
        random_start: bool = True, restarts: int = 1, loss: str = 'ce',
        targeted: bool = False, bounds=(0.0, 1.0), l1_quantile: float = 0.95,
        keep_best: bool = True):
  """Projected gradient descent attack (Madry et al., ICLR 2018).

  ``x_{k+1} = Proj_{B_p(x, eps) ∩ [lo, hi]}(x_k + step_size * d_k)`` with ``d_k`` the
  steepest-ascent direction of the objective for the norm: ``sign(g)`` (L_inf),
  ``g / ||g||_2`` (L2), and for L1 the sparse direction of SLIDE (Tramer & Boneh, NeurIPS
  2019; Croce & Hein's SL1D): ``sign(g_i) / k`` on the ``k = ceil((1 - l1_quantile) d)``
  largest ``|g_i|`` among coordinates not blocked by the box, 0 elsewhere.

  Projections are exact for L_inf and for L1 (onto the L1 ball *intersected with the box*,
  see :func:`common.project_l1`); for L2 the ball projection is followed by clipping to
  the box (feasible, as in Madry et al. / AutoAttack).

  Guarantee: every returned example satisfies ``||x_adv - x||_p <= eps`` (up to float
  rounding) and ``lo <= x_adv <= hi``.

  Restarts: ``restarts`` independent runs (random starts drawn from the uniform
  distribution on the ball); per example the best result is kept, where a successful point
  beats an unsuccessful one and otherwise the higher objective wins. With
  ``keep_best=True`` (default) the best iterate *within* each run is kept as well (for
  free: objective and prediction come with each gradient); ``keep_best=False`` returns
  the last iterate of each run, Madry et al.'s definition.

  Args:
    eps: radius of the threat model (may be traced: ``jax.vmap`` over eps works).
    step_size: step length in the attack norm; default ``2.5 * eps / num_steps`` (Madry et
      al.'s heuristic). May be traced.
    num_steps: gradient steps per restart (static).
    norm: 'linf', 'l2' or 'l1'.
    random_start: start at a uniform point of the ball (else at ``x``).
    restarts: number of runs (>= 1); restarts > 1 needs random_start=True (ValueError).
    loss: 'ce' (cross-entropy), 'cw' (C&W margin) or 'dlr' (Croce & Hein); see
      :func:`common.objective`.
    targeted: ``y`` are target labels and success means predicting them.
    bounds: the input box ``(lo, hi)``.
    l1_quantile: for norm='l1', the fraction of coordinates *not* moved per step.
    keep_best: keep the best iterate of each run (else the last).

  Returns:
    ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed') with
    ``info['success']`` (bool [B]), ``info['loss']`` (objective at x_adv [B]) and
    ``info['gradients']`` (int [B], the gradient evaluations spent per example).

  >>> import jax, jax.numpy as jnp
  >>> w = jnp.array([[1.0, -2.0]]).T
  >>> f = lambda x: jnp.concatenate([jnp.zeros((x.shape[0], 1)), x @ w], axis=1)
  >>> atk = pgd(eps=0.1, num_steps=5, random_start=False, bounds=(-1.0, 1.0))
  >>> atk(f, jnp.zeros((1, 2)), jnp.array([0]), jax.random.key(0)).x_adv.round(3)
  Array([[ 0.1, -0.1]], dtype=float32)
  """
  bounds = common.check_common(eps=eps, norm_=norm, loss=loss, bounds=bounds)
  if step_size is not None:
    _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  restarts = _checks.check_int('restarts', restarts, minimum=1)
  common.check_bool(random_start=random_start, targeted=targeted, keep_best=keep_best)
  if restarts > 1 and not random_start:
    raise ValueError(f'restarts={restarts} needs random_start=True: without a random start '
                     'every restart runs the same deterministic iterations.')
  l1_quantile = float(_checks.check_float('l1_quantile', l1_quantile, minimum=0.0,
                                          maximum=1.0, strict_max=True, allow_traced=False))
  obj = common.objective(loss, targeted)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    step = 2.5 * jnp.asarray(eps, x.dtype) / num_steps if step_size is None else step_size
    x_adv, s, v = run_pgd(logits_fn, x, y, key, eps=eps, step_size=step,
                          num_steps=num_steps, p=norm, random_start=random_start,
                          restarts=restarts, obj=obj, targeted=targeted, bounds=bounds,
                          l1_quantile=l1_quantile, keep_best=keep_best)
    grads = jnp.full((x.shape[0],), restarts * num_steps, jnp.int32)
    return AttackOutput(x_adv, {'success': s, 'loss': v, 'gradients': grads}, 'fixed')
  return attack
