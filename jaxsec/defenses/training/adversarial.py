"""Adversarial training as objective transformations (survey §3.1, "adversarial training").

Every function here maps a training objective (``jaxsec.train``:
``objective(apply_fn, params, x, y, key) -> per-example losses [B]``), given as
``objective=``, or a per-example ``loss(logits, y)`` (or its name), given as ``loss=``, to
a new objective (:func:`resolve_objective`), so it plugs into ``train.fit`` /
``train.fit_many`` unchanged and composes with the regularisers of
:mod:`jaxsec.defenses.training.regularizers`.

* :func:`adversarial_training` -- the generic mixed objective of Goodfellow, Shlens &
  Szegedy (ICLR 2015), eq. (5): ``alpha * J(x, y) + (1 - alpha) * J(x_adv, y)`` with
  ``x_adv`` from *any* attack ``attack(logits_fn, x, y, key)`` of this package.
  ``alpha = 0.5`` with FGSM is Goodfellow's FGSM-AT; ``alpha = 0`` with PGD is Madry et
  al. (ICLR 2018); ``alpha = 0`` with FGSM + random start and step ``1.25 eps`` is the
  fast AT of Wong, Rice & Kolter (ICLR 2020).
* :func:`ensemble_adversarial_training` -- Tramer et al. (ICLR 2018): the adversarial
  half of each batch is crafted on a source drawn per batch from the model being trained
  and a set of *static* pre-trained models.
* :func:`trades` -- Zhang et al. (ICML 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``
  with ``x'`` maximising the KL term in the eps-ball.
* :func:`linear_adversarial_training` -- the closed-form worst case of an affine model:
  each margin shrinks by ``eps * ||w_y - w_j||_*`` (the dual norm).

The attack inside the objective never carries gradient into the parameters: it runs on
``stop_gradient(params)`` and its output is wrapped in ``stop_gradient`` (Danskin's
theorem: the gradient of ``max_delta L(theta, x + delta)`` is the gradient of ``L`` at the
maximiser, with the maximiser held fixed). The attack runs in inference mode by default, as in Madry et al.'s
and Zhang et al.'s code (``model.eval()`` for the attack): under ``fit(train_apply_fn=...)``
the training step hands the objective the training-mode pass with attribute
``eval_apply_fn`` (the inference-mode ``apply_fn``), and the attack uses that one. An
explicit ``attack_apply_fn`` overrides it (pass the training pass there to attack the
dropout-perturbed model instead); a model without a train / eval distinction uses the one
pass it has. The loss terms always use the pass the training step hands in.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxsec import _checks
from jaxsec import losses as losses_lib
from jaxsec import train as train_lib
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.gradient import fgsm
from jaxsec.attacks.evasion.pgd import pgd

Objective = Callable[[Callable, Any, jax.Array, jax.Array, jax.Array], jax.Array]
Loss = Callable[[jax.Array, jax.Array], jax.Array]


def resolve_objective(loss=None, objective=None) -> tuple[Objective, Loss | None]:
  """The objective a defense transforms, from an explicit ``loss=`` or ``objective=``.

  Every training-time defense takes, keyword-only, at most one of ``loss`` (a per-example
  ``loss(logits, y) -> [B]`` or its name in :func:`jaxsec.losses.get`; default
  cross-entropy) and ``objective`` (a full ``objective(apply_fn, params, x, y, key) ->
  [B]``, e.g. another defense's output). Returns ``(objective, loss)``: a loss is lifted
  with :func:`jaxsec.train.supervised` (``loss`` is returned too, for defenses that reuse
  its forward pass), an objective is returned as is with ``loss=None``.
  """
  if loss is not None and objective is not None:
    raise ValueError(f'Give either loss= or objective=, not both; got loss={loss!r}, '
                     f'objective={objective!r}.')
  if objective is not None:
    if not callable(objective):
      raise ValueError(f'objective={objective!r} must be an objective '
                       '(apply_fn, params, x, y, key) -> [B].')
    return objective, None
  if loss is None:
    loss = losses_lib.cross_entropy
  if isinstance(loss, str):
    loss = losses_lib.get(loss)
  if not callable(loss):
    raise ValueError(f'loss={loss!r} must be a per-example loss (logits, y) -> [B] or the '
                     'name of one.')
  return train_lib.supervised(loss), loss


def _attack_forward(apply_fn, attack_apply_fn):
  """The forward pass the inner attack runs on: ``attack_apply_fn`` if given, else the
  inference-mode pass attached by ``train.make_step`` (``eval_apply_fn``), else
  ``apply_fn``."""
  if attack_apply_fn is not None:
    return attack_apply_fn
  return getattr(apply_fn, 'eval_apply_fn', apply_fn)


def _check_attack(attack):
  if not callable(attack):
    raise ValueError(f'attack={attack!r} must be an attack function '
                     '(logits_fn, x, y, key) -> AttackOutput (e.g. '
                     'jaxsec.attacks.evasion.pgd(...)).')


def craft(attack, apply_fn, params, x, y, key):
  """Runs ``attack`` on the frozen model ``x -> apply_fn(stop_gradient(params), x)`` and
  returns ``stop_gradient(x_adv)``: no gradient reaches ``params`` through ``x_adv``."""
  frozen = lax.stop_gradient(params)
  x_adv = attack(lambda z: apply_fn(frozen, z), x, y, key).x_adv
  return lax.stop_gradient(x_adv)


def adversarial_training(*, attack: Callable, alpha=0.5, loss=None, objective=None,
                         attack_apply_fn: Callable | None = None) -> Objective:
  """The mixed adversarial objective of Goodfellow et al. (ICLR 2015), eq. (5).

  ``J~(theta, x, y) = alpha * J(theta, x, y) + (1 - alpha) * J(theta, x_adv, y)`` per
  example, ``x_adv = attack(f_theta, x, y, key)`` with ``theta`` frozen (see the module
  doc). Special cases: FGSM with ``alpha=0.5`` (Goodfellow's FGSM-AT), PGD with
  ``alpha=0`` (Madry et al.'s min-max objective), FGSM-RS with ``alpha=0`` (Wong et al.'s
  fast AT). ``alpha=1`` (or an attack with ``eps=0``) is the plain objective.

  Args:
    attack: any ``attack(logits_fn, x, y, key)`` (untargeted, ``y`` the true labels).
    alpha: weight of the clean term in [0, 1] (may be traced).
    loss, objective: what to harden, at most one (see :func:`resolve_objective`; default
      cross-entropy).
    attack_apply_fn: the forward pass the attack runs on, or None for the inference-mode
      pass (see the module doc).

  Returns:
    ``objective(apply_fn, params, x, y, key) -> [B]``.
  """
  obj = resolve_objective(loss, objective)[0]
  _check_attack(attack)
  _checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0)

  def new(apply_fn, params, x, y, key):
    k_atk, k_clean, k_adv = jax.random.split(key, 3)
    x_adv = craft(attack, _attack_forward(apply_fn, attack_apply_fn), params, x, y, k_atk)
    adv = obj(apply_fn, params, x_adv, y, k_adv)
    if not _checks.is_concrete(alpha) or float(alpha) > 0.0:
      return alpha * obj(apply_fn, params, x, y, k_clean) + (1.0 - alpha) * adv
    return adv
  return new


def fgsm_adversarial_training(*, eps, alpha=0.5, bounds=(0.0, 1.0), loss=None,
                              objective=None, attack_apply_fn=None) -> Objective:
  """Goodfellow et al. (ICLR 2015): :func:`adversarial_training` with FGSM and
  ``alpha = 0.5``."""
  return adversarial_training(attack=fgsm(eps=eps, bounds=bounds), alpha=alpha, loss=loss,
                              objective=objective, attack_apply_fn=attack_apply_fn)


def pgd_adversarial_training(*, eps, num_steps: int = 7, step_size=None,
                             norm: str = 'linf', bounds=(0.0, 1.0), loss=None,
                             objective=None, attack_apply_fn=None) -> Objective:
  """Madry et al. (ICLR 2018): train on the PGD maximiser only (``alpha = 0``).

  The inner attack is PGD with a random start and ``num_steps`` steps of ``step_size``
  (default ``2.5 eps / num_steps``), last iterate (``keep_best=False``, their code).
  """
  atk = pgd(eps=eps, num_steps=num_steps, step_size=step_size, norm=norm,
            random_start=True, keep_best=False, bounds=bounds)
  return adversarial_training(attack=atk, alpha=0.0, loss=loss, objective=objective,
                              attack_apply_fn=attack_apply_fn)


def fast_adversarial_training(*, eps, step_size=None, bounds=(0.0, 1.0), loss=None,
                              objective=None, attack_apply_fn=None) -> Objective:
  """Wong, Rice & Kolter (ICLR 2020), "Fast is better than free": FGSM from a uniform
  random start in the eps-ball with step ``1.25 eps`` (default), projected back onto the
  ball; trained on that point only. (Their cyclic learning rate is an optimizer choice:
  pass an ``optax`` schedule to ``fit``.)"""
  atk = fgsm(eps=eps, random_start=True, step_size=step_size, bounds=bounds)
  return adversarial_training(attack=atk, alpha=0.0, loss=loss, objective=objective,
                              attack_apply_fn=attack_apply_fn)


def ensemble_adversarial_training(*, attack: Callable, static_models: Sequence[Callable],
                                  alpha=0.5, include_current: bool = True,
                                  labels: str = 'predicted', loss=None, objective=None,
                                  attack_apply_fn: Callable | None = None) -> Objective:
  """Ensemble adversarial training (Tramer, Kurakin, Papernot, Goodfellow, Boneh &
  McDaniel, ICLR 2018).

  Adversarial examples are decoupled from the model being trained: for each batch the
  source of ``x_adv`` is drawn uniformly from the ``static_models`` (pre-trained, fixed
  ``x -> logits`` closures) and, with ``include_current``, the current model (their
  Algorithm: "rotate the source of adversarial examples"; the paper used single-step
  attacks on Inception models). The objective is the mix of :func:`adversarial_training`
  with weight ``alpha`` on the clean term (default 0.5, an equal mix; Tramer et al. follow
  Kurakin et al. 2017: half of each batch adversarial, the adversarial half weighted by
  lambda = 0.3, i.e. ``alpha = 1 / 1.3``). Implemented with
  ``lax.switch``, so the whole step stays one jitted program; only the chosen source's
  attack runs.

  ``labels='predicted'`` (default, as in Tramer et al.'s code, which crafts with the
  source model's own predictions ``argmax f_src(x)`` to avoid label leaking, Kurakin et
  al. 2017) or ``'true'`` (craft with ``y``). The training loss always uses ``y``.
  ``loss`` / ``objective``: what to harden, as for :func:`adversarial_training`.
  """
  obj = resolve_objective(loss, objective)[0]
  _check_attack(attack)
  _checks.check_float('alpha', alpha, minimum=0.0, maximum=1.0)
  static_models = tuple(static_models)
  for i, f in enumerate(static_models):
    if not callable(f):
      raise ValueError(f'static_models[{i}]={f!r} must be a logits function x -> logits.')
  if not static_models:
    raise ValueError('static_models is empty; expected at least one pre-trained model '
                     '(use adversarial_training without static models).')
  common.check_bool(include_current=include_current)
  _checks.check_choice('labels', labels, ('predicted', 'true'))

  def craft_on(f, xx, yy, kk):
    if labels == 'predicted':
      yy = lax.stop_gradient(common.predict(f(xx))).astype(yy.dtype)
    return attack(f, xx, yy, kk).x_adv

  def new(apply_fn, params, x, y, key):
    k_src, k_atk, k_clean, k_adv = jax.random.split(key, 4)
    frozen = lax.stop_gradient(params)
    fwd = _attack_forward(apply_fn, attack_apply_fn)
    sources: list[Callable[[jax.Array], Any]] = [lambda z, f=f: f(z) for f in static_models]
    if include_current:
      sources.append(lambda z: fwd(frozen, z))
    branches = [lambda xx, yy, kk, f=f: craft_on(f, xx, yy, kk) for f in sources]
    idx = jax.random.randint(k_src, (), 0, len(branches))
    x_adv = lax.stop_gradient(lax.switch(idx, branches, x, y, k_atk))
    adv = obj(apply_fn, params, x_adv, y, k_adv)
    return alpha * obj(apply_fn, params, x, y, k_clean) + (1.0 - alpha) * adv
  return new


def _kl(logits_p, logits_q):
  """Per-example KL(softmax(p) || softmax(q))."""
  lp = jax.nn.log_softmax(common.as_multiclass(logits_p), axis=-1)
  lq = jax.nn.log_softmax(common.as_multiclass(logits_q), axis=-1)
  return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


def trades_attack(*, eps, num_steps: int = 10, step_size=None, bounds=(0.0, 1.0),
                  init_std: float = 1e-3):
  """The inner maximisation of TRADES (Zhang et al. 2019, Algorithm 1 / official code).

  ``x'_0 = x + 0.001 N(0, I)``; ``x'_{k+1} = Proj(x'_k + step * sign(grad KL(f(x) ||
  f(x'_k))))``, the L_inf ball of ``eps`` intersected with the box; the last iterate. The
  clean distribution ``f(x)`` is held fixed. Default step ``eps / 4`` (their MNIST
  setting 0.01 for eps 0.1 ... 0.3 scaled). Returns ``attack(logits_fn, x, y, key) ->
  AttackOutput`` (budget 'fixed'; the labels only score ``info['success']``, misclassified
  at ``x_adv``: the attack itself is unsupervised).
  """
  bounds = common.check_common(eps=eps, bounds=bounds)
  num_steps = _checks.check_int('num_steps', num_steps, minimum=1)
  if step_size is not None:
    _checks.check_float('step_size', step_size, minimum=0.0, strict_min=True)
  _checks.check_float('init_std', init_std, minimum=0.0)

  def attack(logits_fn, x, y, key):
    e = jnp.asarray(eps, x.dtype)
    step = e / 4.0 if step_size is None else step_size
    p_clean = lax.stop_gradient(logits_fn(x))
    x0 = x + init_std * jax.random.normal(key, x.shape, x.dtype)
    x0 = common.project(x0, x, e, 'linf', bounds)
    grad = jax.grad(lambda z: jnp.sum(_kl(p_clean, logits_fn(z))))

    def body(_, xa):
      return common.project(xa + step * jnp.sign(grad(xa)), x, e, 'linf', bounds)
    x_adv = lax.fori_loop(0, num_steps, body, x0)
    return AttackOutput(x_adv, {'success': common.predict(logits_fn(x_adv)) != y}, 'fixed')
  return attack


def trades(*, beta=6.0, eps=None, num_steps: int = 10, step_size=None,
           bounds=(0.0, 1.0), attack: Callable | None = None, loss=None, objective=None,
           attack_apply_fn: Callable | None = None) -> Objective:
  """TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, ICML 2019), eq. (5) / code.

  ``L = loss(f(x), y) + beta * KL(softmax f(x) || softmax f(x'))`` per example (the
  official ``KLDivLoss(log_softmax(f(x')), softmax(f(x)))``, i.e. ``KL(p_clean ||
  p_adv)``), with
  ``x' = argmax_{x' in B(x, eps)} KL(f(x) || f(x'))`` found by :func:`trades_attack`
  (or by ``attack`` if given, e.g. a CE-PGD: a documented variant, not TRADES' own inner
  problem). ``x'`` is held fixed (stop_gradient); the gradient flows through both
  ``f(x)`` and ``f(x')`` of the KL term, as in the official code. ``beta = 0`` is the
  plain loss. Official settings: MNIST eps 0.3, 40 steps of 0.01, beta 1/lambda = 1 ... 6;
  CIFAR eps 8/255, 10 steps of 2/255, beta 6.

  The natural term is ``loss`` (a per-example ``loss(logits, y)`` or its name; default
  cross-entropy) on the shared forward pass, or ``objective`` (a full objective; then the
  KL term runs its own forward pass), at most one of them (see :func:`resolve_objective`).
  The inner maximisation runs in inference mode by default (``model.eval()`` in the
  official code; see the module doc and ``attack_apply_fn``).
  """
  if attack is None:
    if eps is None:
      raise ValueError('trades needs eps= (the radius of the inner maximisation) or an '
                       'attack=.')
    attack = trades_attack(eps=eps, num_steps=num_steps, step_size=step_size, bounds=bounds)
  _check_attack(attack)
  _checks.check_float('beta', beta, minimum=0.0)
  obj, loss = resolve_objective(loss, objective)

  def new(apply_fn, params, x, y, key):
    k_atk, k_obj = jax.random.split(key)
    x_adv = craft(attack, _attack_forward(apply_fn, attack_apply_fn), params, x, y, k_atk)
    b = x.shape[0]
    logits = apply_fn(params, jnp.concatenate([x, x_adv], axis=0))
    z_clean, z_adv = logits[:b], logits[b:]
    natural = loss(z_clean, y) if loss is not None else obj(apply_fn, params, x, y, k_obj)
    return natural + beta * _kl(z_clean, z_adv)
  return new


# --------------------------------------------------------------------- linear models


def input_jacobian(apply_fn, params, x) -> jax.Array:
  """Per-example Jacobian ``d logits / d x`` as ``[B, C, D]`` (D = flattened input size):
  C vector-Jacobian products of the batch (examples are independent). For an affine model
  ``z = W x + b`` this is ``W`` for every example."""
  b = x.shape[0]
  z, vjp = jax.vjp(lambda xx: apply_fn(params, xx), x)
  c = z.shape[-1]
  eye = jnp.broadcast_to(jnp.eye(c, dtype=z.dtype)[:, None, :], (c, b, c))
  rows = jax.vmap(lambda ct: vjp(ct)[0])(eye)            # [C, B, ...]
  return jnp.moveaxis(rows.reshape((c, b, -1)), 0, 1)    # [B, C, D]


def _dual_norm(v, norm):
  if norm == 'linf':
    return jnp.sum(jnp.abs(v), axis=-1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(v * v, axis=-1) + 1e-30)
  return jnp.max(jnp.abs(v), axis=-1)                    # l1 -> linf


def worst_case_logits(apply_fn, params, x, y, *, eps, norm='linf'):
  """Worst-case logits of an affine model under ``||delta||_p <= eps``.

  Binary (one logit ``f = w.x + b``, label ``s = 2y - 1``): ``f - s * eps * ||w||_*``,
  exact: ``min_delta s * f(x + delta) = s f(x) - eps ||w||_*``. Multiclass: logit ``j != y``
  becomes ``z_j + eps * ||w_j - w_y||_*``: each pairwise margin ``z_y - z_j`` is replaced by
  its exact worst case; the hinge and Crammer-Singer hinge of these logits are then the
  exact robust losses (the max over ``j`` and over ``delta`` commute), the cross-entropy an
  upper bound of the robust cross-entropy. The box ``bounds`` is ignored: this is the worst
  case over the whole ball, an upper bound on the loss under the boxed threat model. For a
  non-affine ``apply_fn`` it is the worst case of the local linearisation at ``x``.
  """
  jac = input_jacobian(apply_fn, params, x)              # [B, C, D]
  z = apply_fn(params, x)
  if z.shape[-1] == 1:
    s = 2.0 * y.astype(z.dtype) - 1.0
    return z - (s * eps * _dual_norm(jac[:, 0, :], norm))[:, None]
  w_y = jnp.take_along_axis(jac, y[:, None, None], axis=1)   # [B, 1, D]
  shift = eps * _dual_norm(jac - w_y, norm)                   # [B, C], 0 at j = y
  return z + shift


def linear_adversarial_training(*, eps, norm: str = 'linf', loss=None) -> Objective:
  """Adversarial training of a linear / SVM model with the closed-form worst case.

  ``loss(worst_case_logits(x), y)``: for a binary linear SVM with hinge loss this is
  ``max(0, 1 - s (w.x + b) + eps ||w||_*)`` (the robust SVM; ``||.||_*`` is the dual norm:
  L1 for an L_inf threat, L2 for L2), for logistic regression ``log(1 + exp(-(s f(x) -
  eps ||w||_*)))`` -- both exact, no attack loop. ``eps = 0`` is the plain loss.

  Args:
    loss: per-example ``loss(logits, y)`` (default ``losses.hinge``).
    eps: radius of the threat model (may be traced).
    norm: 'linf', 'l2' or 'l1'.
  """
  _checks.check_float('eps', eps, minimum=0.0)
  _checks.check_choice('norm', norm, common.NORMS)
  if loss is None:
    loss = losses_lib.hinge
  if isinstance(loss, str):
    loss = losses_lib.get(loss)

  def new(apply_fn, params, x, y, key):
    del key
    return loss(worst_case_logits(apply_fn, params, x, y, eps=eps, norm=norm), y)
  return new
