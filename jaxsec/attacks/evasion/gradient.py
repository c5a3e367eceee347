"""One-step and iterative gradient-sign attacks: FGSM / FGM, BIM (I-FGSM), MI-FGSM."""
from __future__ import annotations

import jax.numpy as jnp

from jaxsec import _checks
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.pgd import run_pgd


def _info(logits_fn, x_adv, y, obj, targeted, grads):
  logits = logits_fn(x_adv)
  return {'success': common.success(logits, y, targeted), 'loss': obj(logits, y),
          'gradients': jnp.full((x_adv.shape[0],), grads, jnp.int32)}


def fgm(*, eps, norm: str = 'l2', loss: str = 'ce', targeted: bool = False,
        bounds=(0.0, 1.0), random_start: bool = False, step_size=None):
  """Fast gradient method: one step of size ``eps`` along the steepest-ascent direction.

  ``x_adv = clip(x + eps * d, lo, hi)`` where ``d`` maximises ``<grad, d>`` over the unit
  ball of the norm (the dual-norm maximiser): ``sign(g)`` for L_inf (this is FGSM,
  Goodfellow et al., ICLR 2015), ``g / ||g||_2`` for L2, and for L1 all the mass on the
  coordinate of largest ``|g|`` (split evenly between exact ties) -- the first-order optimum
  of the L1-constrained problem, as in CleverHans (ART's FGM instead uses ``g / ||g||_1``,
  which is not the steepest direction). The L1 step is box-aware, as PGD's: the top
  coordinate is taken among those not at the bound they would move towards (one at ``hi``
  with ``g > 0`` or at ``lo`` with ``g < 0``, whose step would be clipped away, leaving
  ``x`` unchanged). For ``targeted=True`` the step descends the loss of
  the target label: ``x - eps * sign(grad CE(x, t))`` for L_inf / CE.

  With ``random_start=True`` the step starts from a uniform point of the eps-ball and has
  length ``step_size`` (default ``1.25 * eps``), followed by projection onto the ball: the
  "FGSM-RS" of Wong, Rice & Kolter (ICLR 2020) used for fast adversarial training.

  Guarantee: ``||x_adv - x||_p <= eps`` and ``lo <= x_adv <= hi``.

  Args:
    eps: perturbation size (may be traced).
    norm: 'linf', 'l2' or 'l1'.
    loss: 'ce', 'cw' or 'dlr' (see :func:`common.objective`).
    targeted: ``y`` are target labels.
    bounds: input box ``(lo, hi)``.
    random_start: FGSM-RS (see above).
    step_size: step length with ``random_start`` (default 1.25 eps); without a random
      start the step is ``eps`` unless given.

  Returns:
    ``attack(logits_fn, x, y, key) -> AttackOutput`` (budget 'fixed'); info: ``success``,
    ``loss`` and ``gradients`` (= 1) per example.
  """
  bounds = common.check_common(eps=eps, norm_=norm, loss=loss, bounds=bounds)
  common.check_bool(targeted=targeted, random_start=random_start)
  if step_size is not None:
    _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  obj = common.objective(loss, targeted)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    e = jnp.asarray(eps, x.dtype)
    if random_start:
      x0 = common.project(x + common.random_in_ball(key, x.shape, e, norm, x.dtype), x, e,
                          norm, bounds)
      step = 1.25 * e if step_size is None else step_size
    else:
      x0 = x
      step = e if step_size is None else step_size
    _, _, g = common.value_and_grad(logits_fn, obj)(x0, y)
    d = common.steepest_ascent(g, norm, x0, bounds)
    x_adv = common.project(x0 + step * d, x, e, norm, bounds)
    return AttackOutput(x_adv, _info(logits_fn, x_adv, y, obj, targeted, 1), 'fixed')
  return attack


def fgsm(*, eps, loss: str = 'ce', targeted: bool = False, bounds=(0.0, 1.0),
         random_start: bool = False, step_size=None):
  """Fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015).

  ``x_adv = clip(x + eps * sign(grad_x J(x, y)), lo, hi)`` (untargeted);
  ``clip(x - eps * sign(grad_x J(x, t)), lo, hi)`` (targeted). This is :func:`fgm` with
  ``norm='linf'``; see it for ``random_start`` (FGSM-RS, Wong et al. 2020).

  >>> import jax, jax.numpy as jnp
  >>> w = jnp.array([[0.5, -2.0, 0.0]]).T
  >>> f = lambda x: x @ w                     # one logit: class 1 when w.x > 0
  >>> fgsm(eps=0.1, bounds=(-1, 1))(f, jnp.zeros((1, 3)), jnp.array([1]), None).x_adv
  Array([[-0.1,  0.1,  0. ]], dtype=float32)
  """
  return fgm(eps=eps, norm='linf', loss=loss, targeted=targeted, bounds=bounds,
             random_start=random_start, step_size=step_size)


def _check_iterative(eps, step_size, num_steps, norm, loss, targeted, bounds):
  """The arguments :func:`bim` and :func:`mi_fgsm` share (L_inf or L2, ``step_size`` None or
  positive); returns the checked ``(bounds, num_steps)``."""
  bounds = common.check_common(eps=eps, norm_=norm, loss=loss, bounds=bounds,
                               norms=('linf', 'l2'))
  common.check_bool(targeted=targeted)
  if step_size is not None:
    _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  return bounds, _checks.check_int('num_steps', num_steps, minimum=1)


def bim(*, eps, step_size=None, num_steps: int = 10, norm: str = 'linf', loss: str = 'ce',
        targeted: bool = False, bounds=(0.0, 1.0)):
  """Basic iterative method / I-FGSM (Kurakin, Goodfellow & Bengio, ICLR 2017 workshop).

  ``x_0 = x``, ``x_{k+1} = Clip_{x, eps}(x_k + alpha * sign(grad_x J(x_k, y)))``, the last
  iterate returned (no random start, no best-iterate selection: the paper's definition).
  Kurakin et al. take ``alpha = 1`` (of 255) and ``min(eps + 4, 1.25 eps)`` steps, i.e. a
  total path of about ``1.25 eps``; the default ``step_size = 1.25 * eps / num_steps``
  keeps that ratio for any ``num_steps``. ``norm='l2'`` gives the L2 analogue.
  ``targeted=True`` is their "iterative least-likely class" method given the target.
  Info (budget 'fixed'): ``success``, ``loss``, ``gradients`` per example.
  """
  bounds, num_steps = _check_iterative(eps, step_size, num_steps, norm, loss, targeted,
                                       bounds)
  obj = common.objective(loss, targeted)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    step = 1.25 * jnp.asarray(eps, x.dtype) / num_steps if step_size is None else step_size
    x_adv, s, v = run_pgd(logits_fn, x, y, key, eps=eps, step_size=step,
                          num_steps=num_steps, p=norm, random_start=False, restarts=1,
                          obj=obj, targeted=targeted, bounds=bounds, l1_quantile=0.0,
                          keep_best=False)
    return AttackOutput(x_adv, {'success': s, 'loss': v, 'gradients': jnp.full(
        (x.shape[0],), num_steps, jnp.int32)}, 'fixed')
  return attack


def mi_fgsm(*, eps, step_size=None, num_steps: int = 10, decay: float = 1.0,
            norm: str = 'linf', loss: str = 'ce', targeted: bool = False,
            bounds=(0.0, 1.0)):
  """Momentum iterative FGSM (Dong et al., CVPR 2018), built for transferability.

  ``g_{k+1} = mu g_k + grad_x J(x_k, y) / ||grad_x J(x_k, y)||_1`` and
  ``x_{k+1} = Clip_{x, eps}(x_k + alpha sign(g_{k+1}))`` (L_inf) or
  ``x_k + alpha g_{k+1} / ||g_{k+1}||_2`` (their L2 variant), with ``alpha = eps / T`` by
  default and ``mu = decay = 1.0``, the paper's settings. The last iterate is returned.
  Info (budget 'fixed'): ``success``, ``loss``, ``gradients`` per example.
  """
  bounds, num_steps = _check_iterative(eps, step_size, num_steps, norm, loss, targeted,
                                       bounds)
  _checks.check_float('decay', decay, minimum=0.0)
  obj = common.objective(loss, targeted)

  def attack(logits_fn, x, y, key):
    common.check_call(x, y, bounds, logits_fn)
    e = jnp.asarray(eps, x.dtype)
    step = e / num_steps if step_size is None else step_size
    vg = common.value_and_grad(logits_fn, obj)

    def body(_, carry):
      x_adv, m = carry
      _, _, g = vg(x_adv, y)
      m = decay * m + common.normalize(g, 'l1')
      x_adv = common.project(x_adv + step * common.normalize(m, norm), x, e, norm, bounds)
      return x_adv, m

    x_adv, _ = common.fori_loop(0, num_steps, body, (x, jnp.zeros_like(x)))
    return AttackOutput(x_adv, _info(logits_fn, x_adv, y, obj, targeted, num_steps),
                        'fixed')
  return attack
