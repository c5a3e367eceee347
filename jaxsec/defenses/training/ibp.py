"""Interval bound propagation (Gowal et al., "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", 2018): verified L_inf robustness and
IBP training.

* :func:`interval_bounds` -- elementwise bounds ``l <= f(x) <= u`` of the logits for every
  ``x`` in the box ``[lower, upper]``. Framework-free (DESIGN: a model is a function): the
  model ``apply_fn(params, x)`` is traced to a jaxpr and the box is pushed through it
  primitive by primitive. Affine maps (``dot_general``, ``conv_general_dilated``, ``mul`` /
  ``div`` by a constant) use the paper's rule (Sec. 3): ``mu = (u + l) / 2``, ``r = (u - l) / 2``,
  ``mu' = W mu``, ``r' = |W| r``; ``add`` of the bias, ReLU / tanh / sigmoid and the other
  monotone elementwise maps, max / avg pooling, reductions, reshapes and slices act on
  ``l`` and ``u`` directly. A primitive without a sound rule applied to the box (a
  comparison as in leaky ReLU, ``rsqrt`` of a statistic of the input as in GroupNorm or
  BatchNorm in training mode, a ``dot_general`` of two input-dependent operands as in
  attention) raises a ValueError naming it: nothing is bounded silently wrong.
* :func:`margin_bounds` -- lower bounds of the margins ``z_y - z_j`` (the specification
  ``c = e_y - e_j``). With ``elide=True`` (default) the specification is folded into the
  last dense layer, ``(W_y - W_j) h + b_y - b_j`` bounded from the box of ``h`` (the
  paper's elision of the last layer; never looser than ``l_y - u_j``, the naive form, ``elide=False``).
* :func:`worst_case_logits` -- the paper's ``z_hat(eps)``: ``-margin lower bound`` per class
  (0 at ``y``), whose cross-entropy upper-bounds the worst-case cross-entropy over the box.
* :func:`verified`, :func:`verified_accuracy` -- every margin's lower bound is positive on
  ``B_inf(x, eps)`` intersected with the data ``bounds``: a lower bound on the accuracy
  under any attack of that budget (PGD accuracy is an upper bound).
* :func:`ibp_objective` -- the loss transformation ``kappa * L(z, y) + (1 - kappa) *
  L(z_hat(eps), y)`` (the paper's training loss); :func:`ibp_schedule` the paper's schedules as pure functions
  of the step: after ``warmup_steps``, ``eps`` ramps linearly from 0 to ``eps_train`` and
  ``kappa`` from 1 to ``kappa_final`` (0.5) over ``ramp_steps``.
* :func:`fit_scheduled` -- ``jaxsec.train.fit``'s objective does not see the step, so the
  step-dependent IBP objective is trained by this minimal loop: one jitted
  ``train.make_step`` of ``objective_at(step)`` (the step a traced int, one compilation),
  batches drawn per epoch without replacement as in ``fit``.

Documented choices: the paper trains with ``eps_train = 1.1 eps_test`` on MNIST (pass
``eps_train`` explicitly; :func:`scheduled_objective` has ``eps_scale``); the box is
intersected with the data ``bounds`` (their code clips to the input domain); floating-point
rounding in the bounds is not accounted for (as in the paper).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jcore

from jaxsec import _checks
from jaxsec import progress as progress_lib
from jaxsec import train as train_lib
from jaxsec.defenses.training.adversarial import resolve_objective

Objective = Callable[[Callable, Any, jax.Array, jax.Array, jax.Array], jax.Array]

# ------------------------------------------------------------- propagation rules

# Non-decreasing in every floating operand (integer / bool operands must not depend on x):
# applied to the lower ends and to the upper ends separately.
_MONOTONE = frozenset({
    'add', 'add_any', 'max', 'min', 'clamp', 'concatenate', 'pad', 'reshape',
    'broadcast_in_dim', 'transpose', 'squeeze', 'expand_dims', 'slice', 'rev',
    'convert_element_type', 'copy', 'copy_p', 'reduce_sum', 'reduce_max', 'reduce_min',
    'reduce_window_sum', 'reduce_window_max', 'reduce_window_min', 'cumsum', 'cummax',
    'cummin', 'reduce_precision', 'select_n', 'gather', 'dynamic_slice',
    'dynamic_update_slice', 'tanh', 'logistic', 'exp', 'exp2', 'expm1', 'log', 'log1p',
    'sqrt', 'cbrt', 'erf', 'atan', 'asinh', 'sinh', 'floor', 'ceil', 'round',
    'sharding_constraint', 'optimization_barrier',
})
# Linear in one operand when the other is constant: the paper's centre / radius rule.
_AFFINE = frozenset({'dot_general', 'conv_general_dilated', 'mul'})
# Sub-jaxprs: recurse (the parameter that holds the jaxpr).
_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr',
          'custom_jvp_call': 'call_jaxpr', 'custom_vjp_call': 'call_jaxpr',
          'custom_vjp_call_jaxpr': 'fun_jaxpr', 'remat2': 'jaxpr', 'checkpoint': 'jaxpr'}


class _Box:
  """An interval value ``lo <= v <= hi`` (elementwise) in the jaxpr interpreter."""
  __slots__ = ('lo', 'hi')

  def __init__(self, lo, hi):
    self.lo, self.hi = lo, hi


def _bind(eqn, *args):
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns, params = params if isinstance(params, tuple) else ((), params)  # jax < 0.7
  out = eqn.primitive.bind(*subfuns, *args, **params)
  return out if eqn.primitive.multiple_results else [out]


def _refuse(eqn, why):
  raise ValueError(f'interval_bounds cannot bound the primitive {eqn.primitive.name!r} '
                   f'applied to an interval ({why}); supported: dense / conv layers, '
                   'monotone elementwise activations (relu, tanh, sigmoid), pooling, '
                   'reshapes, and normalisation with constant statistics.')


def _lo(v):
  return v.lo if isinstance(v, _Box) else v


def _hi(v):
  return v.hi if isinstance(v, _Box) else v


def _affine(eqn, vals):
  """``mu' = op(mu, W)``, ``r' = op(r, |W|)`` for an op linear in its interval operand."""
  boxed = [isinstance(v, _Box) for v in vals]
  if all(boxed):
    if eqn.primitive.name == 'mul':          # product of two intervals: the 4 corners
      a, b = vals
      corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
      return [_Box(functools.reduce(jnp.minimum, corners),
                   functools.reduce(jnp.maximum, corners))]
    _refuse(eqn, 'both operands depend on the input')
  i = boxed.index(True)
  box, w = vals[i], vals[1 - i]
  mu, r = (box.hi + box.lo) / 2, (box.hi - box.lo) / 2
  args_mu = [mu, w] if i == 0 else [w, mu]
  args_r = [r, jnp.abs(w)] if i == 0 else [jnp.abs(w), r]
  mu2, = _bind(eqn, *args_mu)
  r2, = _bind(eqn, *args_r)
  return [_Box(mu2 - r2, mu2 + r2)]


def _even(box, a, b):
  """The image of ``box`` under an even function, non-increasing on x <= 0 and
  non-decreasing on x >= 0, with end values ``a = f(lo)``, ``b = f(hi)``."""
  lo = jnp.where((box.lo <= 0) & (box.hi >= 0), jnp.zeros_like(a), jnp.minimum(a, b))
  return [_Box(lo, jnp.maximum(a, b))]


def _integer_pow(eqn, box):
  n = eqn.params['y']
  if n < 0:
    _refuse(eqn, 'a negative power is unbounded around 0')
  a, b = box.lo ** n, box.hi ** n
  if n % 2 == 1:
    return [_Box(a, b)]
  return _even(box, a, b)


def _propagate(eqn, vals):
  name = eqn.primitive.name
  if name in _CALLS:
    sub = eqn.params[_CALLS[name]]
    if isinstance(sub, jcore.ClosedJaxpr):
      return _interpret(sub.jaxpr, sub.consts, vals)
    return _interpret(sub, [], vals)
  if name in _AFFINE:
    return _affine(eqn, vals)
  if name == 'div':
    if isinstance(vals[1], _Box):
      _refuse(eqn, 'the divisor depends on the input')
    c = vals[1]
    q_lo, = _bind(eqn, vals[0].lo, c)
    q_hi, = _bind(eqn, vals[0].hi, c)
    return [_Box(jnp.minimum(q_lo, q_hi), jnp.maximum(q_lo, q_hi))]
  if name == 'neg':
    return [_Box(-vals[0].hi, -vals[0].lo)]
  if name == 'sub':
    return [_Box(_lo(vals[0]) - _hi(vals[1]), _hi(vals[0]) - _lo(vals[1]))]
  if name == 'integer_pow':
    return _integer_pow(eqn, vals[0])
  if name == 'square':
    return _even(vals[0], vals[0].lo ** 2, vals[0].hi ** 2)
  if name == 'abs':
    return _even(vals[0], jnp.abs(vals[0].lo), jnp.abs(vals[0].hi))
  if name in _MONOTONE:
    for v, var in zip(vals, eqn.invars, strict=True):
      if isinstance(v, _Box) and not jnp.issubdtype(var.aval.dtype, jnp.floating):
        _refuse(eqn, 'an integer or boolean operand (index, predicate) depends on the '
                'input')
    outs_lo = _bind(eqn, *[_lo(v) for v in vals])
    outs_hi = _bind(eqn, *[_hi(v) for v in vals])
    return [_Box(a, b) for a, b in zip(outs_lo, outs_hi, strict=True)]
  _refuse(eqn, 'no sound interval rule')


def _interpret(jaxpr, consts, args, extra=()):
  """Evaluates ``jaxpr`` on ``args`` (arrays or :class:`_Box`); returns its outputs, then
  the values of the variables ``extra``."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts, strict=True):
    env[v] = c
  for v, a in zip(jaxpr.invars, args, strict=True):
    env[v] = a
  for eqn in jaxpr.eqns:
    vals = [read(v) for v in eqn.invars]
    if any(isinstance(v, _Box) for v in vals):
      outs = _propagate(eqn, vals)
    else:
      outs = _bind(eqn, *vals)
    for v, o in zip(eqn.outvars, outs, strict=True):
      env[v] = o
  return [read(v) for v in list(jaxpr.outvars) + list(extra)]


def _trace(apply_fn, params, x):
  """The jaxpr of ``x -> apply_fn(params, x)`` with the params' leaves as leading inputs."""
  leaves, tree = jax.tree.flatten(params)

  def flat(leaves, x):
    return apply_fn(jax.tree.unflatten(tree, leaves), x)
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  closed = jax.make_jaxpr(flat)([spec(a) for a in leaves], spec(x))
  return closed, leaves


def _check_box(lower, upper):
  if lower.shape != upper.shape:
    raise ValueError(f'lower.shape={lower.shape} != upper.shape={upper.shape}.')
  if _checks.is_concrete(lower) and _checks.is_concrete(upper):
    bad = np.asarray(lower) > np.asarray(upper)
    if bad.any():
      i = np.argwhere(bad)[0]
      raise ValueError(f'lower > upper at index {tuple(int(j) for j in i)}: '
                       f'lower={float(np.asarray(lower)[tuple(i)])}, '
                       f'upper={float(np.asarray(upper)[tuple(i)])}.')


def interval_bounds(apply_fn, params, lower, upper) -> tuple[jax.Array, jax.Array]:
  """Elementwise bounds ``(l, u)`` of ``apply_fn(params, x)`` over the box ``lower <= x <=
  upper`` (interval bound propagation, Gowal et al. 2018; see the module doc for
  the supported primitives; others raise a ValueError naming the primitive).

  Sound (every ``x`` in the box has ``l <= f(x) <= u``), exact for one affine layer
  (``W mu + b -+ |W| r``), and ``l = u = f(x)`` for ``lower = upper = x``. Differentiable in
  ``params`` (IBP training) and jittable; ``params`` may be traced.
  """
  lower = jnp.asarray(lower)
  upper = jnp.asarray(upper)
  _check_box(lower, upper)
  closed, leaves = _trace(apply_fn, params, lower)
  box = _Box(lower, upper)
  out, = _interpret(closed.jaxpr, closed.consts, list(leaves) + [box])
  if not isinstance(out, _Box):       # the output does not depend on the input
    return out, out
  return out.lo, out.hi


def _last_dense(jaxpr):
  """``(h_var, w_var, b_var)`` if the output is ``dot_general(h, W) + b`` with ``h`` [B, D]
  and ``W`` [D, C] (a dense head), else None. ``b`` may be reshaped / broadcast."""
  producers = {v: e for e in jaxpr.eqns for v in e.outvars}
  out = jaxpr.outvars[0]
  eqn = producers.get(out)
  bias = None
  if eqn is not None and eqn.primitive.name == 'add':
    a, b = eqn.invars
    if a in producers and producers[a].primitive.name == 'dot_general':
      dot, bias = producers[a], b
    elif b in producers and producers[b].primitive.name == 'dot_general':
      dot, bias = producers[b], a
    else:
      return None
  elif eqn is not None and eqn.primitive.name == 'dot_general':
    dot = eqn
  else:
    return None
  (lc, rc), (lb, rb) = dot.params['dimension_numbers']
  h, w = dot.invars
  if (tuple(lc), tuple(rc), tuple(lb), tuple(rb)) != ((1,), (0,), (), ()):
    return None
  if len(h.aval.shape) != 2 or len(w.aval.shape) != 2:
    return None
  return h, w, bias


def margin_bounds(apply_fn, params, lower, upper, y, *, elide: bool = True) -> jax.Array:
  """Lower bounds ``[B, C]`` of the margins ``f_y(x) - f_j(x)`` over the box (0 at ``j = y``).

  ``elide=True``: the specification ``c = e_y - e_j`` is folded into the last dense layer
  (Gowal et al.'s elision of the last layer): ``(W_y - W_j)^T mu - |W_y - W_j|^T r + b_y - b_j`` with
  ``(mu, r)`` the box of that layer's input; at least as tight as ``elide=False``, ``l_y -
  u_j``. A model whose output is not a dense layer ``h W + b`` on ``[B, D]`` features falls
  back to the naive form (still sound). One logit (binary, class 1 when ``f > 0``): ``[B,
  1]``, the lower bound of ``s f(x)``, ``s = 2y - 1`` (exact interval, no elision needed).
  """
  lower = jnp.asarray(lower)
  upper = jnp.asarray(upper)
  _check_box(lower, upper)
  closed, leaves = _trace(apply_fn, params, lower)
  jaxpr = closed.jaxpr
  if len(jaxpr.outvars) != 1 or len(jaxpr.outvars[0].aval.shape) != 2:
    raise ValueError('margin_bounds expects logits [B, C]; got outputs '
                     f'{[v.aval for v in jaxpr.outvars]}.')
  num_classes = jaxpr.outvars[0].aval.shape[1]
  if num_classes == 1:                  # one logit (class 1 when f > 0): bound s f, s = 2y - 1
    out, = _interpret(jaxpr, closed.consts, list(leaves) + [_Box(lower, upper)])
    lo, hi = (out.lo, out.hi) if isinstance(out, _Box) else (out, out)
    return jnp.where(y[:, None] == 1, lo, -hi)
  onehot = jax.nn.one_hot(y, num_classes, dtype=lower.dtype)
  head = _last_dense(jaxpr) if elide else None
  if head is None:
    out, = _interpret(jaxpr, closed.consts, list(leaves) + [_Box(lower, upper)])
    lo, hi = (out.lo, out.hi) if isinstance(out, _Box) else (out, out)
    lo_y = jnp.sum(lo * onehot, axis=-1, keepdims=True)
    return (lo_y - hi) * (1.0 - onehot)
  h_var, w_var, b_var = head
  # The head's input box and parameters, read from the interpreter's environment.
  got = _interpret(jaxpr, closed.consts, list(leaves) + [_Box(lower, upper)],
                   extra=[h_var, w_var] + ([b_var] if b_var is not None else []))[1:]
  h, w = got[0], got[1]
  if isinstance(w, _Box):
    return margin_bounds(apply_fn, params, lower, upper, y, elide=False)
  bias = got[2] if b_var is not None else jnp.zeros((num_classes,), lower.dtype)
  if isinstance(bias, _Box):
    return margin_bounds(apply_fn, params, lower, upper, y, elide=False)
  bias = jnp.broadcast_to(bias, (lower.shape[0], num_classes))
  h_lo, h_hi = (h.lo, h.hi) if isinstance(h, _Box) else (h, h)
  mu, r = (h_hi + h_lo) / 2, (h_hi - h_lo) / 2
  w_y = jnp.take(w, y, axis=1).T                              # [B, D]
  w_d = w_y[:, :, None] - w[None]                             # [B, D, C]
  b_y = jnp.sum(bias * onehot, axis=-1, keepdims=True)
  m = (jnp.einsum('bd,bdc->bc', mu, w_d) - jnp.einsum('bd,bdc->bc', r, jnp.abs(w_d))
       + b_y - bias)
  return m * (1.0 - onehot)


def _eps_box(x, eps, bounds):
  _checks.check_float('eps', eps, minimum=0.0)
  lo, hi = x - eps, x + eps
  if bounds is not None:
    b = _checks.check_bounds(bounds)
    lo, hi = jnp.clip(lo, b[0], b[1]), jnp.clip(hi, b[0], b[1])
  return lo, hi


def worst_case_logits(apply_fn, params, x, y, *, eps, bounds=(0.0, 1.0),
                      elide: bool = True) -> jax.Array:
  """The paper's ``z_hat(eps)`` ``[B, C]``: ``-`` the lower bound of ``z_y - z_j`` over
  ``B_inf(x, eps)`` intersected with ``bounds`` (None: the whole ball), 0 at ``j = y``.
  ``CE(z_hat, y)`` upper-bounds ``max_delta CE(f(x + delta), y)`` (cross-entropy is
  shift-invariant, so this equals the paper's ``z_hat_j = u_j``, ``z_hat_y = l_y`` for
  ``elide=False``). One logit: ``s m``, ``m`` the lower bound of ``s f``, ``s = 2y - 1``
  (the end of the logit interval that maximises the binary cross-entropy). ``eps`` may be
  traced."""
  lo, hi = _eps_box(x, eps, bounds)
  m = margin_bounds(apply_fn, params, lo, hi, y, elide=elide)
  if m.shape[-1] == 1:
    return (2.0 * y.astype(m.dtype) - 1.0)[:, None] * m
  return -m


def verified(apply_fn, params, x, y, eps, bounds=(0.0, 1.0), *, elide: bool = True
             ) -> jax.Array:
  """Bool ``[B]``: IBP proves that every ``x'`` in ``B_inf(x, eps)`` intersected with
  ``bounds`` is classified ``y`` (all margins' lower bounds > 0)."""
  m = margin_bounds(apply_fn, params, *_eps_box(x, eps, bounds), y, elide=elide)
  num_classes = m.shape[-1]
  if num_classes == 1:
    return m[:, 0] > 0
  others = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), jnp.inf, m)
  return jnp.all(others > 0, axis=-1)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'bounds', 'elide'))
def _verified_batch(params, x, y, eps, *, apply_fn, bounds, elide):
  return verified(apply_fn, params, x, y, eps, bounds, elide=elide)


def verified_accuracy(apply_fn, params, x, y, eps, bounds=(0.0, 1.0), *,
                      elide: bool = True, batch_size: int = 500) -> float:
  """Fraction of ``(x, y)`` that :func:`verified` proves robust at ``eps`` (jitted, in
  batches of ``batch_size``): a lower bound on the accuracy under any L_inf attack of
  budget ``eps``."""
  _checks.check_float('eps', eps, minimum=0.0)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  bounds = None if bounds is None else tuple(float(b) for b in _checks.check_bounds(bounds))
  x, y = np.asarray(x), np.asarray(y)
  hits = 0
  for s in range(0, x.shape[0], batch_size):
    hits += int(jnp.sum(_verified_batch(params, jnp.asarray(x[s:s + batch_size]),
                                        jnp.asarray(y[s:s + batch_size]), eps,
                                        apply_fn=apply_fn, bounds=bounds, elide=elide)))
  return hits / max(x.shape[0], 1)


# ------------------------------------------------------------------ training


def ibp_objective(*, eps, kappa=0.5, bounds=(0.0, 1.0), elide: bool = True, loss=None,
                  objective=None) -> Objective:
  """IBP training (Gowal et al.'s loss): ``kappa * L(x, y) + (1 - kappa) * L_hat(x, y)``.

  ``L`` is the objective given as ``loss=`` or ``objective=`` (see
  :func:`jaxsec.defenses.training.resolve_objective`; default cross-entropy); ``L_hat`` is
  the same objective with the model replaced by its worst-case logits ``x' ->
  z_hat(x', eps)`` (:func:`worst_case_logits`, for ``loss=`` exactly ``loss(z_hat, y)``).
  ``eps`` and ``kappa`` may be traced (the schedules of :func:`ibp_schedule`);
  ``kappa = 1`` is the plain objective. The bounds are differentiated through (unlike
  adversarial training, there is no inner maximiser to hold fixed).
  """
  _checks.check_float('eps', eps, minimum=0.0)
  _checks.check_float('kappa', kappa, minimum=0.0, maximum=1.0)
  obj = resolve_objective(loss, objective)[0]
  if bounds is not None:
    bounds = tuple(float(b) for b in _checks.check_bounds(bounds))

  def new(apply_fn, params, x, y, key):
    k_clean, k_hat = jax.random.split(key)

    def hat_fn(p, xx):
      return worst_case_logits(apply_fn, p, xx, y, eps=eps, bounds=bounds, elide=elide)
    robust = obj(hat_fn, params, x, y, k_hat)
    if _checks.is_concrete(kappa) and float(kappa) == 0.0:
      return robust
    return kappa * obj(apply_fn, params, x, y, k_clean) + (1.0 - kappa) * robust
  return new


def ibp_schedule(step, *, eps_train, warmup_steps: int, ramp_steps: int,
                 kappa_final=0.5) -> tuple[jax.Array, jax.Array]:
  """``(eps, kappa)`` at ``step`` (int, may be traced): 0 and 1 for ``step <
  warmup_steps``, then linear to ``eps_train`` and ``kappa_final`` over ``ramp_steps``,
  constant after (Gowal et al.'s training setup; MNIST: 2k warm-up, 10k ramp steps of 60k,
  ``kappa_final = 0.5``)."""
  _checks.check_float('eps_train', eps_train, minimum=0.0)
  _checks.check_float('kappa_final', kappa_final, minimum=0.0, maximum=1.0)
  warmup_steps = _checks.check_int('warmup_steps', warmup_steps, minimum=0)
  ramp_steps = _checks.check_int('ramp_steps', ramp_steps, minimum=0)
  t = jnp.asarray(step, jnp.float32) - warmup_steps
  frac = jnp.clip(t / max(ramp_steps, 1), 0.0, 1.0) if ramp_steps else (t >= 0).astype(
      jnp.float32)
  return eps_train * frac, 1.0 + (kappa_final - 1.0) * frac


def scheduled_objective(*, eps_test, warmup_steps: int, ramp_steps: int,
                        eps_scale: float = 1.1, kappa_final=0.5, bounds=(0.0, 1.0),
                        elide: bool = True, loss=None, objective=None
                        ) -> Callable[[jax.Array], Objective]:
  """``step -> ibp_objective(eps, kappa)`` with :func:`ibp_schedule` and ``eps_train =
  eps_scale * eps_test`` (the paper's 1.1 on MNIST; ``eps_scale=1`` trains at
  ``eps_test``). For :func:`fit_scheduled`."""
  _checks.check_float('eps_test', eps_test, minimum=0.0)
  _checks.check_float('eps_scale', eps_scale, minimum=0.0)
  eps_train = eps_scale * eps_test
  ibp_schedule(0, eps_train=eps_train, warmup_steps=warmup_steps, ramp_steps=ramp_steps,
               kappa_final=kappa_final)                      # checks the settings
  resolve_objective(loss, objective)                         # checks loss / objective

  def objective_at(step):
    eps, kappa = ibp_schedule(step, eps_train=eps_train, warmup_steps=warmup_steps,
                              ramp_steps=ramp_steps, kappa_final=kappa_final)
    return ibp_objective(eps=eps, kappa=kappa, bounds=bounds, elide=elide, loss=loss,
                         objective=objective)
  return objective_at


@functools.partial(jax.jit, static_argnames=('apply_fn', 'objective_at', 'optimizer'),
                   donate_argnums=(0, 1))
def _scheduled_step(params, opt_state, x, y, key, step, *, apply_fn, objective_at,
                    optimizer):
  return train_lib.make_step(apply_fn, objective_at(step), optimizer)(params, opt_state, x,
                                                                      y, key)


def fit_scheduled(apply_fn, params, x, y, *, objective_at: Callable[[jax.Array], Objective],
                  optimizer: optax.GradientTransformation, key: jax.Array, num_steps: int,
                  batch_size: int = 128, progress: progress_lib.ProgressArg = None
                  ) -> train_lib.FitResult:
  """Trains with a step-dependent objective ``objective_at(step)`` (``step`` a traced int
  32 scalar): ``num_steps`` steps of ``train.make_step``, each epoch a fresh permutation
  (``fold_in(key, epoch)``), ``len(x) // batch_size`` batches without replacement. The
  step is one jitted program (compiled once per ``objective_at``); the host loops over
  steps. ``progress`` (a label, a ``jaxsec.progress.Progress`` or a callable, see
  ``jaxsec.progress.make``) logs one line per epoch with the rate, the ETA and the last
  loss. Returns ``FitResult(params, opt_state, {'loss': [num_steps]})``."""
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  batch_size = _checks.check_int('batch_size', batch_size, minimum=1)
  if not callable(objective_at):
    raise ValueError(f'objective_at={objective_at!r} must be a function step -> objective.')
  x, y = jnp.asarray(x), jnp.asarray(y)
  n = x.shape[0]
  if batch_size > n:
    raise ValueError(f'batch_size={batch_size} exceeds the {n} training examples.')
  per_epoch = n // batch_size
  update = progress_lib.make(progress, -(-num_steps // per_epoch), 'epoch')
  params = jax.tree.map(jnp.array, params)
  opt_state = optimizer.init(params)
  losses = []
  order = jax.random.permutation(jax.random.fold_in(key, 0), n)
  for t in range(num_steps):
    epoch, i = divmod(t, per_epoch)
    if i == 0 and epoch > 0:
      order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    idx = order[i * batch_size:(i + 1) * batch_size]
    k = jax.random.fold_in(jax.random.fold_in(key, epoch), i + 1)
    params, opt_state, loss = _scheduled_step(params, opt_state, x[idx], y[idx], k,
                                              jnp.asarray(t, jnp.int32), apply_fn=apply_fn,
                                              objective_at=objective_at,
                                              optimizer=optimizer)
    losses.append(loss)
    if update is not None and (i == per_epoch - 1 or t == num_steps - 1):
      update(f'loss {float(loss):.4f}')
  return train_lib.FitResult(params, opt_state, {'loss': np.asarray(jnp.stack(losses))})


__all__ = ['interval_bounds', 'margin_bounds', 'worst_case_logits', 'verified',
           'verified_accuracy', 'ibp_objective', 'ibp_schedule', 'scheduled_objective',
           'fit_scheduled']
