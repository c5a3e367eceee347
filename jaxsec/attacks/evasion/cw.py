"""Carlini & Wagner attacks (IEEE S&P 2017): L2, L_inf and L0.

All three optimise in the tanh change of variables of the paper (Sec. V.A, "change of
variables"), generalised to any box: ``x' = lo + (hi - lo) (tanh(w) + 1) / 2``, so that the
box constraint always holds and Adam works unconstrained on ``w``. The misclassification
term is the paper's f_6 with confidence ``kappa``:

* untargeted: ``max(z_y - max_{j != y} z_j, -kappa)``
* targeted:   ``max(max_{j != t} z_j - z_t, -kappa)``

and an example counts as adversarial (the official code's ``compare``) when
``z_y + kappa < max_{j != y} z_j`` (untargeted) or ``z_t - kappa > max_{j != t} z_j``
(targeted). Distances are measured in the input's own units (for bounds ``(0, 1)`` these are
the paper's units; the official code's [-0.5, 0.5] box has the same scale).

All the per-example searches (binary search over c, the tau schedule of L_inf, the pixel
fixing of L0) are vectorised over the batch: each example keeps its own state, and the
whole attack is one ``lax`` loop program, jittable with ``jax.jit(attack,
static_argnums=0)``. Adam is elementwise, so optimising the batch at once with per-example
constants and masks is exactly the per-example optimisation of the official code. Called
eagerly on the CPU backend, each attack runs the same iterations as a host loop over
jitted straight-line blocks instead (XLA:CPU runs loop bodies slowly, jax-ml/jax#12868); the
iterations and the result are the same, and the choice is internal (no argument selects it).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common

_B1, _B2, _EPS = 0.9, 0.999, 1e-8
_ATANH_SCALE = 0.999999   # the official code's factor, keeps arctanh finite at the bounds
_HOST_BLOCK_MAX = 10      # host loop: at most this many straight-line Adam steps per block


def to_box(w, lo, hi):
  """``lo + (hi - lo) (tanh(w) + 1) / 2``: R^d -> the open box."""
  return lo + (hi - lo) * (jnp.tanh(w) + 1.0) * 0.5


def from_box(x, lo, hi):
  """Inverse of :func:`to_box` (with the official 0.999999 shrink at the bounds)."""
  u = jnp.clip(2.0 * (x - lo) / (hi - lo) - 1.0, -1.0, 1.0)
  return jnp.arctanh(u * _ATANH_SCALE)


def cw_margin(z, y, targeted: bool):
  """``z_y - max_{j != y} z_j`` (untargeted) or ``max_{j != t} z_j - z_t`` (targeted): the
  attack succeeds (with confidence kappa) when this is < -kappa."""
  m = common.margin(z, y)
  return -m if targeted else m


def _bc(v, x):
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _adam(g, m, v, t, lr, active):
  """One masked Adam step per example (``t`` [B] is the per-example step count)."""
  a = _bc(active, g)
  t1 = t + 1.0
  m1 = _B1 * m + (1 - _B1) * g
  v1 = _B2 * v + (1 - _B2) * g * g
  mh = m1 / _bc(1 - _B1 ** t1, g)
  vh = v1 / _bc(1 - _B2 ** t1, g)
  step = lr * mh / (jnp.sqrt(vh) + _EPS)
  return (jnp.where(a, -step, 0.0), jnp.where(a, m1, m), jnp.where(a, v1, v),
          jnp.where(active, t1, t))


def _adam_or_restart(g, w, m1, v1, t, const, step, active, works, *, learning_rate,
                     num_steps, const_factor, largest_const):
  """The shared tail of the official L_inf and L0 loops, per example.

  Where ``works`` (a solution was just accepted) Adam restarts from ``w`` (moments and
  step counts zeroed); elsewhere an ``active`` example takes one Adam step, and after
  ``num_steps`` of them ``const *= const_factor``. Returns ``(w, m1, v1, t, const, step,
  give_up)``, ``give_up`` where ``const`` reached ``largest_const``.
  """
  moving = active & ~works
  upd, m1n, v1n, tn = _adam(g, m1, v1, t, learning_rate, moving)
  w = w + upd
  reset = _bc(works, w)
  m1 = jnp.where(reset, 0.0, m1n)
  v1 = jnp.where(reset, 0.0, v1n)
  t = jnp.where(works, 0.0, tn)
  step = jnp.where(works, 0, step + moving.astype(jnp.int32))
  bump = moving & (step >= num_steps)
  const = jnp.where(bump, const * const_factor, const)
  step = jnp.where(bump, 0, step)
  return w, m1, v1, t, const, step, bump & (const >= largest_const)


def _check_official(name, loop, *, targeted, confidence, learning_rate, num_steps,
                    abort_early, bounds, initial_const, largest_const, const_factor):
  """The checks shared by the official L_inf and L0 loops (``name`` the public attack):
  they always abort early and grow ``c`` by ``const_factor`` up to ``largest_const``.
  Returns the checked ``bounds``."""
  bounds = _check_cw(targeted, confidence, learning_rate, num_steps, abort_early, bounds)
  if not abort_early:
    raise ValueError(f'abort_early=False is not supported by {name}: the '
                     'official algorithm accepts a solution as soon as it works.')
  _checks.check_choice('loop', loop, _LOOPS)
  _checks.check_float('initial_const', initial_const, minimum=0.0, strict_min=True)
  _checks.check_float('largest_const', largest_const, minimum=0.0, strict_min=True)
  _checks.check_float('const_factor', const_factor, minimum=1.0, strict_min=True)
  return bounds


def _sqdist(d):
  f = d.reshape((d.shape[0], -1))
  return jnp.sum(f * f, axis=-1)


def _check_cw(targeted, confidence, learning_rate, num_steps, abort_early, bounds):
  common.check_bool(targeted=targeted, abort_early=abort_early)
  _checks.check_float('confidence', confidence, minimum=0.0)
  _checks.check_float('learning_rate', learning_rate, minimum=0.0, strict_min=True)
  _checks.check_int('num_steps', num_steps, minimum=1)
  return _checks.check_bounds(bounds)


_HOST_CLOSURE_ERROR = ("loop='host' needs a hashable logits_fn that closes over no traced "
                       "values (it is a static argument of the jitted blocks); use "
                       "loop='program' or 'auto'.")
_LOOPS = ('auto', 'program', 'host')


def _loop_mode(loop, logits_fn, x, y) -> str:
  """'host' or 'program' for one call. ``loop`` is internal (the public factories pass
  'auto': the host loop for eager calls on the CPU backend with a hashable ``logits_fn``,
  the program otherwise); the private factories take 'program' / 'host' so that tests can
  check that both paths give the same result."""
  traced = any(isinstance(a, jax.core.Tracer) for a in (x, y))
  if loop == 'host' and traced:
    raise ValueError("loop='host' needs concrete x and y (it drives the iterations from "
                     "Python); under jit / vmap / grad use loop='program' or 'auto'.")
  try:
    hash(logits_fn)
    hashable = True
  except TypeError:
    hashable = False
  if loop == 'host' and not hashable:
    raise ValueError(_HOST_CLOSURE_ERROR)
  if loop == 'host' or (loop == 'auto' and not traced and hashable
                        and jax.default_backend() == 'cpu'):
    return 'host'
  return 'program'


def _while_attack(loop, make, host_block, logits_fn, x, y):
  """Runs the state machine ``make(logits_fn, x, y) -> (init, cond, body, finish)`` as a
  ``lax.while_loop`` or, for loop='host', as blocks of ``_HOST_BLOCK_MAX`` body steps until
  ``cond`` is False (falls back to the program when logits_fn closes over tracers)."""
  mode = _loop_mode(loop, logits_fn, x, y)
  init, cond, body, finish = make(logits_fn, x, y)
  s = init()
  if mode == 'host':
    while True:
      nxt = host_block(logits_fn, s, x, y)
      if isinstance(nxt[0], jax.core.Tracer):
        if loop == 'host':
          raise ValueError(_HOST_CLOSURE_ERROR)
        break                                   # traced closure: the program below
      s = nxt
      if not bool(cond(s)):
        return finish(s)
  return finish(lax.while_loop(cond, body, s))


def _state_machine_attack(make, *, loop, bounds):
  """The attack function of a state machine ``make`` (L_inf, L0): checks, the empty batch,
  then :func:`_while_attack` with one jitted host block shared by all calls."""
  host_block = _host_block(make)

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, bounds, logits_fn)
    if x.shape[0] == 0:   # empty batch: nothing to attack
      return AttackOutput(x, {'success': jnp.zeros((0,), bool)}, 'minimal')
    return _while_attack(loop, make, host_block, logits_fn, x, y)
  return attack


def _host_block(make):
  """jit(logits_fn static): ``_HOST_BLOCK_MAX`` straight-line steps of ``make``'s body."""
  @functools.partial(jax.jit, static_argnums=0)
  def block(logits_fn, s, x, y):
    body = make(logits_fn, x, y)[2]
    for _ in range(_HOST_BLOCK_MAX):
      s = body(s)
    return s
  return block


# =========================================================================== L2


def carlini_wagner_l2(*, targeted: bool = False, confidence=0.0, initial_const=1e-3,
                      num_binary_steps: int = 9, num_steps: int = 1000,
                      learning_rate=1e-2, abort_early: bool = True, bounds=(0.0, 1.0)):
  """C&W L2 attack (Carlini & Wagner, S&P 2017, Sec. V.A).

  Minimises ``||x' - x||_2^2 + c * f_6(x')`` over ``w`` with Adam, ``x' = box(w)``, and for
  each example runs a binary search over ``c`` (``num_binary_steps`` rounds, starting at
  ``initial_const``): on success ``c`` is halved towards the lower bound, on failure it is
  multiplied by 10 until an upper bound is known, then bisected (the official code,
  including its rule that with >= 10 binary steps the last round uses the upper bound).
  Each round restarts Adam from ``x``. With ``abort_early`` an example's round stops when
  its loss has not decreased by 0.01% over ``num_steps // 10`` steps. The attack keeps, per
  example, the adversarial point of smallest L2 found in any round.

  Guarantee: ``lo <= x_adv <= hi``; where ``success`` is True, ``x_adv`` is adversarial with
  confidence ``kappa``; elsewhere ``x_adv = x``.

  Args:
    targeted: ``y`` are target labels.
    confidence: kappa >= 0.
    initial_const: initial c > 0 (may be traced).
    num_binary_steps: binary search rounds over c, >= 1.
    num_steps: Adam iterations per round (official default 10000; 1000 here).
    learning_rate: Adam step size on ``w``.
    abort_early: stop a round when the loss stalls.
    bounds: input box ``(lo, hi)``.

  Returns:
    ``attack(logits_fn, x, y, key=None) -> AttackOutput`` (budget 'minimal'); info:
    ``success`` [B], ``l2`` [B] (``||x_adv - x||_2``; 0 where it failed), ``const`` [B]
    (the final c), ``steps`` [B] and ``gradients`` [B] (Adam steps = gradient
    evaluations, all rounds).

  Called eagerly on the CPU backend, the Adam iterations run as a Python loop over jitted
  blocks of straight-line steps, each block ending where the early-abort test falls, so the
  loop stops exactly when the one-program form would (same result); under ``jit`` /
  ``vmap`` / ``grad`` and on accelerators the attack is one ``lax`` program. The host
  blocks are compiled once per ``logits_fn`` (a static argument), so reuse one
  ``logits_fn`` across calls.
  """
  return _carlini_wagner_l2(
      'auto', targeted=targeted, confidence=confidence, initial_const=initial_const,
      num_binary_steps=num_binary_steps, num_steps=num_steps, learning_rate=learning_rate,
      abort_early=abort_early, bounds=bounds)


def _carlini_wagner_l2(loop, *, targeted, confidence, initial_const, num_binary_steps,
                       num_steps, learning_rate, abort_early, bounds):
  """:func:`carlini_wagner_l2` with its loop form forced (``loop`` in ``_LOOPS``)."""
  bounds = _check_cw(targeted, confidence, learning_rate, num_steps, abort_early,
                     bounds)
  _checks.check_float('initial_const', initial_const, minimum=0.0, strict_min=True)
  _checks.check_int('num_binary_steps', num_binary_steps, minimum=1)
  _checks.check_choice('loop', loop, _LOOPS)
  lo, hi = bounds
  repeat = num_binary_steps >= 10
  every = max(num_steps // 10, 1)
  # Host blocks: step 0 alone, then blocks of ``k`` steps, then the remainder (never past
  # num_steps); the host stops after the block where no example is left active. With k
  # dividing ``every``, each early-abort test (steps 0, every, 2 every, ...) ends its block
  # and no step is wasted. Where ``every`` has no divisor of useful size (e.g. 11), blocks
  # of _HOST_BLOCK_MAX steps may run up to k - 1 idle steps after the last example stops
  # (a no-op on the result: nothing moves once every example is inactive).
  k = max(d for d in range(1, min(every, _HOST_BLOCK_MAX) + 1) if every % d == 0)
  if k < _HOST_BLOCK_MAX // 2 and every > _HOST_BLOCK_MAX:
    k = _HOST_BLOCK_MAX
  q, r = divmod(num_steps - 1, k)
  block_sizes = (1,) + (k,) * q + ((r,) if r else ())

  def make_body(logits_fn, x, y, kappa, b):
    def per_example_loss(w, const):
      xa = to_box(w, lo, hi)
      l2 = _sqdist(xa - x)
      z = common.as_multiclass(logits_fn(xa))
      m = cw_margin(z, y, targeted)
      loss = l2 + const * jnp.maximum(m, -kappa)
      return jnp.sum(loss), (loss, l2, m, xa)

    vg = jax.value_and_grad(per_example_loss, has_aux=True)

    def body(s, const):
      i, w, m1, v1, prev, active, best_l2, best_adv, steps = s
      (_, (loss, l2, marg, xa)), g = vg(w, const)
      succ = marg + kappa < 0
      imp = active & succ & (l2 < best_l2)
      best_l2 = jnp.where(imp, l2, best_l2)
      best_adv = common.select(imp, xa, best_adv)
      steps = steps + active.astype(jnp.int32)
      if abort_early:
        check = (i % every) == 0
        stall = check & (loss > prev * 0.9999)
        prev = jnp.where(check, loss, prev)
        still = active & ~stall
      else:
        still = active
      upd, m1, v1, _ = _adam(g, m1, v1, jnp.full((b,), i, x.dtype), learning_rate, still)
      return i + 1, w + upd, m1, v1, prev, still, best_l2, best_adv, steps
    return body

  def round_init(x):
    b, dt = x.shape[0], x.dtype
    return (jnp.asarray(0), from_box(x, lo, hi), jnp.zeros_like(x), jnp.zeros_like(x),
            jnp.full((b,), jnp.inf, dt), jnp.ones((b,), bool), jnp.full((b,), jnp.inf, dt),
            x, jnp.zeros((b,), jnp.int32))

  def outer_init(x):
    b, dt = x.shape[0], x.dtype
    return (jnp.full((b,), initial_const, dt), jnp.zeros((b,), dt), jnp.full((b,), 1e10, dt),
            jnp.full((b,), jnp.inf, dt), x, jnp.zeros((b,), jnp.int32))

  def round_const(j, s):
    const, _, upper = s[:3]
    return jnp.where(j == num_binary_steps - 1, upper, const) if repeat else const

  def outer_update(s, const, l2, adv, st):
    _, lower, upper, o_l2, o_adv, steps = s
    found = jnp.isfinite(l2)
    imp = found & (l2 < o_l2)
    o_l2 = jnp.where(imp, l2, o_l2)
    o_adv = common.select(imp, adv, o_adv)
    upper = jnp.where(found, jnp.minimum(upper, const), upper)
    lower = jnp.where(found, lower, jnp.maximum(lower, const))
    known = upper < 1e9
    const = jnp.where(known, 0.5 * (lower + upper), jnp.where(found, const, const * 10))
    return const, lower, upper, o_l2, o_adv, steps + st

  def finish(x, s):
    const, _, _, o_l2, x_adv, steps = s
    success = jnp.isfinite(o_l2)
    info = {'success': success, 'l2': common.norm(x_adv - x, 'l2'), 'const': const,
            'steps': steps, 'gradients': steps}
    return AttackOutput(x_adv, info, 'minimal')

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def host_block(logits_fn, size, s, const, x, y):
    body = make_body(logits_fn, x, y, jnp.asarray(confidence, x.dtype), x.shape[0])
    for _ in range(size):
      s = body(s, const)
    return s

  host_round_start = jax.jit(lambda j, s, x: (round_const(j, s), round_init(x)))
  host_outer_update = jax.jit(outer_update)

  def attack_host(logits_fn, x, y):
    """The same iterations as the program below, driven from Python (None where
    logits_fn closes over traced values)."""
    s = outer_init(x)
    for j in range(num_binary_steps):
      const, st = host_round_start(j, s, x)
      for size in block_sizes:
        st = host_block(logits_fn, size, st, const, x, y)
        if isinstance(st[5], jax.core.Tracer):
          return None          # logits_fn closes over traced values: use the program
        if not bool(jnp.any(st[5])):
          break
      s = host_outer_update(s, const, st[6], st[7], st[8])
    return finish(x, s)

  def attack(logits_fn, x, y, key=None):
    del key
    common.check_call(x, y, bounds, logits_fn)
    if x.shape[0] == 0:   # empty batch: nothing to attack
      return AttackOutput(x, {'success': jnp.zeros((0,), bool)}, 'minimal')
    if _loop_mode(loop, logits_fn, x, y) == 'host':
      out = attack_host(logits_fn, x, y)
      if out is not None:
        return out
      if loop == 'host':
        raise ValueError(_HOST_CLOSURE_ERROR)
    body = make_body(logits_fn, x, y, jnp.asarray(confidence, x.dtype), x.shape[0])

    def one_round(const):
      out = lax.while_loop(lambda s: (s[0] < num_steps) & jnp.any(s[5]),
                           lambda s: body(s, const), round_init(x))
      return out[6], out[7], out[8]

    def outer(j, s):
      const = round_const(j, s)
      l2, adv, st = one_round(const)
      return outer_update(s, const, l2, adv, st)

    return finish(x, lax.fori_loop(0, num_binary_steps, outer, outer_init(x)))
  return attack


# =========================================================================== L_inf


def carlini_wagner_linf(*, targeted: bool = False, confidence=0.0, initial_const=1e-5,
                        largest_const=20.0, const_factor=2.0, decrease_factor=0.9,
                        initial_tau=1.0, min_tau=1.0 / 256, num_steps: int = 1000,
                        learning_rate=5e-3, abort_early: bool = True, bounds=(0.0, 1.0)):
  """C&W L_inf attack (Carlini & Wagner, S&P 2017, Sec. V.C), the official tau iteration.

  For a threshold ``tau`` (in units of the box width ``hi - lo``) it minimises
  ``c * max(m + kappa, 0) + sum_i max(|x'_i - x_i| - tau, 0)`` with Adam (``m`` the margin
  above), doubling ``c`` (``const_factor``) after every ``num_steps`` iterations without a
  solution, up to ``largest_const``. A solution is accepted as soon as the point is
  adversarial and the loss is below ``1e-4 c`` (the official ``works`` test, i.e. the
  tau-penalty is ~0). Then ``tau <- min(tau, ||x' - x||_inf) * decrease_factor``, the
  search warm-starts from the solution with the same ``c`` (official ``REDUCE_CONST =
  False``), and it stops when ``tau < min_tau`` or when ``c`` reaches ``largest_const``
  without a solution; the last solution is returned.

  The official code runs this per image with nested Python loops. Here it is one flat
  per-example state machine in a ``lax.while_loop`` (each iteration: one gradient
  evaluation for the batch; each example advances its own phase), which is the same
  algorithm; the loop ends when every example is done. ``abort_early=False`` would keep
  optimising after the ``works`` test; the official attack always aborts, so the flag only
  exists for interface symmetry and must stay True.

  Guarantee: ``lo <= x_adv <= hi``; where ``success``, ``x_adv`` is adversarial (with kappa);
  elsewhere ``x_adv = x``.

  Args:
    targeted, confidence, bounds: as for :func:`carlini_wagner_l2`.
    initial_const: first c (official 1e-5).
    largest_const: give up once c reaches this (official 20).
    const_factor: c multiplier on failure (official 2).
    decrease_factor: tau multiplier after a success (official 0.9).
    initial_tau, min_tau: start and stop thresholds as fractions of ``hi - lo``
      (official 1 and 1/256).
    num_steps: Adam iterations per value of c (official 1000).
    learning_rate: Adam step size (official 5e-3).

  ``info``: ``success``, ``linf`` (``||x_adv - x||_inf``, 0 where it failed), ``const``,
  ``tau``, ``steps`` and ``gradients`` (gradient evaluations while the example was active).

  Called eagerly on the CPU backend, the state machine runs as a Python loop over jitted
  blocks of straight-line iterations (the same iterations: the machine is a no-op once
  every example is done, so a block may overrun the end); otherwise one ``lax.while_loop``.
  """
  return _carlini_wagner_linf(
      'auto', targeted=targeted, confidence=confidence, initial_const=initial_const,
      largest_const=largest_const, const_factor=const_factor,
      decrease_factor=decrease_factor, initial_tau=initial_tau, min_tau=min_tau,
      num_steps=num_steps, learning_rate=learning_rate, abort_early=abort_early,
      bounds=bounds)


def _carlini_wagner_linf(loop, *, targeted, confidence, initial_const, largest_const,
                         const_factor, decrease_factor, initial_tau, min_tau, num_steps,
                         learning_rate, abort_early, bounds):
  """:func:`carlini_wagner_linf` with its loop form forced (``loop`` in ``_LOOPS``)."""
  lo, hi = _check_official(
      'carlini_wagner_linf', loop, targeted=targeted, confidence=confidence,
      learning_rate=learning_rate, num_steps=num_steps, abort_early=abort_early,
      bounds=bounds, initial_const=initial_const, largest_const=largest_const,
      const_factor=const_factor)
  _checks.check_float('decrease_factor', decrease_factor, minimum=0.0, maximum=1.0,
                      strict_min=True, strict_max=True)
  _checks.check_float('initial_tau', initial_tau, minimum=0.0, maximum=1.0, strict_min=True)
  _checks.check_float('min_tau', min_tau, minimum=0.0, strict_min=True)
  if _checks.is_concrete(min_tau) and _checks.is_concrete(initial_tau) and (
      float(min_tau) > float(initial_tau)):
    raise ValueError(f'min_tau={min_tau} must be <= initial_tau={initial_tau}.')
  width = hi - lo

  def make(logits_fn, x, y):
    b = x.shape[0]
    dt = x.dtype
    kappa = jnp.asarray(confidence, dt)

    def per_example_loss(w, const, tau):
      xa = to_box(w, lo, hi)
      pen = jnp.sum(jax.nn.relu(jnp.abs(xa - x) - _bc(tau, x)).reshape((b, -1)), axis=-1)
      z = common.as_multiclass(logits_fn(xa))
      m = cw_margin(z, y, targeted)
      loss = const * jax.nn.relu(m + kappa) + pen
      return jnp.sum(loss), (loss, m, xa)

    vg = jax.value_and_grad(per_example_loss, has_aux=True)

    def cond(s):
      return jnp.any(~s[9])

    def body(s):
      w, m1, v1, t, const, tau, step, prev, found, done, steps = s
      active = ~done
      (_, (loss, marg, xa)), g = vg(w, const, tau)
      steps = steps + active.astype(jnp.int32)
      works = active & (marg + kappa < 0) & (loss < 1e-4 * const)
      # --- accepted solution: shrink tau, restart the optimiser from here.
      actual = jnp.max(jnp.abs(xa - x).reshape((b, -1)), axis=-1)
      new_tau = jnp.minimum(tau, actual) * decrease_factor
      prev = common.select(works, xa, prev)
      found = found | works
      tau = jnp.where(works, new_tau, tau)
      done = done | (works & (new_tau < min_tau * width))
      # --- otherwise one Adam step; after num_steps steps, c *= const_factor.
      w, m1, v1, t, const, step, give_up = _adam_or_restart(
          g, w, m1, v1, t, const, step, active, works, learning_rate=learning_rate,
          num_steps=num_steps, const_factor=const_factor, largest_const=largest_const)
      done = done | give_up
      return w, m1, v1, t, const, tau, step, prev, found, done, steps

    def init():
      z0 = jnp.zeros_like(x)
      return (from_box(x, lo, hi), z0, z0, jnp.zeros((b,), dt),
              jnp.full((b,), initial_const, dt), jnp.full((b,), initial_tau * width, dt),
              jnp.zeros((b,), jnp.int32), x, jnp.zeros((b,), bool), jnp.zeros((b,), bool),
              jnp.zeros((b,), jnp.int32))

    def finish(out):
      _, _, _, _, const, tau, _, x_adv, found, _, steps = out
      info = {'success': found, 'linf': common.norm(x_adv - x, 'linf'), 'const': const,
              'tau': tau, 'steps': steps, 'gradients': steps}
      return AttackOutput(x_adv, info, 'minimal')

    return init, cond, body, finish

  return _state_machine_attack(make, loop=loop, bounds=(lo, hi))


# =========================================================================== L0


def l0_pixels_to_fix(valid, x_new, x, grad_w, *, image: bool, width):
  """The official C&W-L0 rule: which valid pixels to fix after a successful round.

  Transcribes ``CarliniL0.attack_single`` of Carlini's ``l0_attack.py`` (nn_robust_attacks)
  for a batch. Per example, with ``delta = x_new - x`` and ``grad_w`` the gradient of the
  attack loss with respect to the tanh variable (the official ``outgrad``, taken w.r.t.
  ``modifier``; zero on fixed pixels), the score of a pixel is
  ``|sum_c delta_c| * sum_c |grad_w_c|``. Valid pixels are fixed in increasing score
  (ties: lower index first), stopping after the first fixed pixel whose score exceeds 0.01,
  or once ``did >= 0.3 * sqrt(n)`` pixels were fixed, ``n`` the number of *changed* pixels
  (those with some channel moved by >= ``1e-4 width``; the official ``equal_count``).

  Args:
    valid: [B, P] bool, the still-modifiable pixels.
    x_new, x, grad_w: [B, ...] (NHWC when ``image``; then a pixel is one (h, w) location).
    image: group the channels (last axis) of a rank-4 input into pixels.
    width: ``hi - lo`` of the box (scales the 1e-4 "unchanged" tolerance).

  Returns:
    [B, P] bool: the pixels to fix (a subset of ``valid``; empty only where nothing is valid).
  """
  b = x.shape[0]
  d = x_new - x
  if image:
    score = jnp.abs(jnp.sum(d, axis=-1)) * jnp.sum(jnp.abs(grad_w), axis=-1)
    unchanged = jnp.all(jnp.abs(d) < 1e-4 * width, axis=-1)
  else:
    score = jnp.abs(d) * jnp.abs(grad_w)
    unchanged = jnp.abs(d) < 1e-4 * width
  score = score.reshape((b, -1))
  npix = score.shape[1]
  n_changed = npix - jnp.sum(unchanged.reshape((b, -1)), axis=-1)
  score = jnp.where(valid, score, jnp.inf)           # fixed pixels sort last, never counted
  order = jnp.argsort(score, axis=-1, stable=True)
  srt = jnp.take_along_axis(score, order, axis=-1)
  did = jnp.arange(1, npix + 1, dtype=x.dtype)[None]
  stop = (srt > 0.01) | (did >= 0.3 * jnp.sqrt(n_changed.astype(x.dtype))[:, None])
  first = jnp.where(jnp.any(stop, axis=-1), jnp.argmax(stop, axis=-1) + 1, npix)
  nfix = jnp.minimum(first, jnp.sum(valid, axis=-1))
  rank = jnp.argsort(order, axis=-1)
  return valid & (rank < nfix[:, None])


def carlini_wagner_l0(*, targeted: bool = False, confidence=0.0, initial_const=1e-3,
                      largest_const=2e6, const_factor=2.0, num_steps: int = 1000,
                      learning_rate=1e-2, max_rounds: int | None = None,
                      abort_early: bool = True, bounds=(0.0, 1.0)):
  """C&W L0 attack (Carlini & Wagner, S&P 2017, Sec. V.B), official pixel-fixing loop.

  Repeatedly: solve the L2 problem ``c * max(m + kappa, 0) + ||x' - x||_2^2`` restricted
  to the still-modifiable ("valid") pixels (the others are fixed to ``x``), with Adam in the
  tanh variables, doubling ``c`` after every ``num_steps`` iterations without success up to
  ``largest_const`` and accepting the first adversarial iterate (official ``works`` test).
  Then fix the least important valid pixels by the official rule (``l0_attack.py`` of
  nn_robust_attacks; see :func:`l0_pixels_to_fix`): with ``g`` the gradient of the loss
  with respect to the tanh variable ``w`` at that solution, score each pixel by
  ``|sum_c (x'_c - x_c)| * sum_c |g_c|`` and fix valid pixels in increasing score until one
  whose score exceeds 0.01 has been fixed or ``0.3 * sqrt(#changed pixels)`` have been
  fixed. The search
  warm-starts from the solution with the same c. It stops when the restricted problem has
  no solution (c reached ``largest_const``), when no valid pixel is left, or after
  ``max_rounds`` rounds (the jittable cap; default: the number of pixels, which the
  official loop can never exceed since each round fixes >= 1 pixel), and returns the last
  solution.

  A "pixel" is one spatial location across channels for rank-4 NHWC inputs (as in the
  paper), and one feature otherwise. A pixel counts as unchanged when all its channels moved
  by less than ``1e-4 (hi - lo)``. Scores are in the input's own units (for a box of width
  1, e.g. ``(0, 1)``, those of the official [-0.5, 0.5] box, so the 0.01 threshold is the
  official one).

  Guarantee: ``lo <= x_adv <= hi``; where ``success``, ``x_adv`` is adversarial (with kappa)
  and differs from ``x`` only on the pixels still valid in its round; elsewhere
  ``x_adv = x``.

  Args:
    targeted, confidence, bounds: as for :func:`carlini_wagner_l2`.
    initial_const, largest_const, const_factor: the c schedule (official 1e-3, 2e6, 2).
    num_steps: Adam iterations per value of c (official 1000).
    learning_rate: Adam step size (official 1e-2).
    max_rounds: cap on pixel-fixing rounds (None: number of pixels).
    abort_early: must be True (the official attack accepts the first working iterate).

  ``info``: ``success``, ``l0`` (changed pixels), ``features_changed`` (changed scalar
  features), ``rounds``, ``steps``/``gradients`` (gradient evaluations), ``const``.

  Called eagerly on the CPU backend, the state machine runs as a Python loop over jitted
  blocks (same iterations, as for :func:`carlini_wagner_linf`).
  """
  return _carlini_wagner_l0(
      'auto', targeted=targeted, confidence=confidence, initial_const=initial_const,
      largest_const=largest_const, const_factor=const_factor, num_steps=num_steps,
      learning_rate=learning_rate, max_rounds=max_rounds, abort_early=abort_early,
      bounds=bounds)


def _carlini_wagner_l0(loop, *, targeted, confidence, initial_const, largest_const,
                       const_factor, num_steps, learning_rate, max_rounds, abort_early,
                       bounds):
  """:func:`carlini_wagner_l0` with its loop form forced (``loop`` in ``_LOOPS``)."""
  lo, hi = _check_official(
      'carlini_wagner_l0', loop, targeted=targeted, confidence=confidence,
      learning_rate=learning_rate, num_steps=num_steps, abort_early=abort_early,
      bounds=bounds, initial_const=initial_const, largest_const=largest_const,
      const_factor=const_factor)
  if max_rounds is not None:
    _checks.check_int('max_rounds', max_rounds, minimum=1)
  width = hi - lo

  def make(logits_fn, x, y):
    b = x.shape[0]
    dt = x.dtype
    kappa = jnp.asarray(confidence, dt)
    image = x.ndim == 4
    pix_shape = (b,) + (x.shape[1:3] + (1,) if image else x.shape[1:])
    npix = math.prod(pix_shape[1:])
    rounds_cap = npix if max_rounds is None else max_rounds

    def pixel_all(a):
      if image:
        a = jnp.all(a, axis=-1, keepdims=True)
      return a.reshape((b, -1))

    def newimg(w, valid):
      vm = valid.reshape(pix_shape)
      return jnp.where(vm, to_box(w, lo, hi), x)

    def per_example_loss(w, valid, const):
      xn = newimg(w, valid)
      z = common.as_multiclass(logits_fn(xn))
      m = cw_margin(z, y, targeted)
      loss = const * jax.nn.relu(m + kappa) + _sqdist(xn - x)
      return jnp.sum(loss), (m, xn)

    # The gradient w.r.t. the tanh variable w (the official ``outgrad`` w.r.t. ``modifier``):
    # Adam's gradient, and the one the pixel-fixing rule scores with; zero on fixed pixels.
    vg = jax.value_and_grad(per_example_loss, has_aux=True)

    def cond(s):
      return jnp.any(~s[8])

    def body(s):
      w, m1, v1, t, const, step, valid, prev, done, found, rounds, steps = s
      active = ~done
      (_, (marg, xn)), g_w = vg(w, valid, const)
      steps = steps + active.astype(jnp.int32)
      works = active & (marg + kappa < 0)
      # --- accepted: fix the least important valid pixels (the official rule).
      fix = l0_pixels_to_fix(valid, xn, x, g_w, image=image, width=width) & works[:, None]
      valid = valid & ~fix
      prev = common.select(works, xn, prev)
      found = found | works
      rounds = rounds + works.astype(jnp.int32)
      done = done | (works & ((jnp.sum(valid, axis=-1) == 0) | (rounds >= rounds_cap)))
      # --- otherwise one Adam step (``valid`` only changes where ``works``: not moving).
      w, m1, v1, t, const, step, give_up = _adam_or_restart(
          g_w, w, m1, v1, t, const, step, active, works, learning_rate=learning_rate,
          num_steps=num_steps, const_factor=const_factor, largest_const=largest_const)
      done = done | give_up
      return w, m1, v1, t, const, step, valid, prev, done, found, rounds, steps

    def init():
      z0 = jnp.zeros_like(x)
      return (from_box(x, lo, hi), z0, z0, jnp.zeros((b,), dt),
              jnp.full((b,), initial_const, dt), jnp.zeros((b,), jnp.int32),
              jnp.ones((b, npix), bool), x, jnp.zeros((b,), bool), jnp.zeros((b,), bool),
              jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.int32))

    def finish(out):
      const, x_adv, found, rounds, steps = out[4], out[7], out[9], out[10], out[11]
      changed = jnp.abs(x_adv - x) >= 1e-4 * width
      info = {'success': found, 'l0': jnp.sum(~pixel_all(~changed), axis=-1),
              'features_changed': jnp.sum(changed.reshape((b, -1)), axis=-1),
              'rounds': rounds, 'steps': steps, 'gradients': steps, 'const': const}
      return AttackOutput(x_adv, info, 'minimal')

    return init, cond, body, finish

  return _state_machine_attack(make, loop=loop, bounds=(lo, hi))
