"""Adversarial training objectives: strength 0 is the plain loss, jit / grad work, no
gradient flows through x_adv, closed forms on linear models, the margin grows."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import losses, train
from jaxsec.attacks.base import AttackOutput
from jaxsec.attacks.evasion import fgsm, pgd
from jaxsec.defenses.training import adversarial as adv


def _mlp_apply(p, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ p['w1'] + p['b1'])
  return h @ p['w2'] + p['b2']


def _mlp_params(key, d=6, h=5, c=3):
  k1, k2 = jax.random.split(key)
  return {'w1': jax.random.normal(k1, (d, h)), 'b1': jnp.zeros(h),
          'w2': jax.random.normal(k2, (h, c)), 'b2': jnp.zeros(c)}


def _data(key, n=8, d=6, c=3):
  kx, ky = jax.random.split(key)
  return jax.random.uniform(kx, (n, d)), jax.random.randint(ky, (n,), 0, c)


PLAIN = train.supervised(losses.cross_entropy)


def _zero_strength_objectives(static):
  return {
      'alpha=1': adv.adversarial_training(attack=pgd(eps=0.1, num_steps=3), alpha=1.0),
      'fgsm eps=0': adv.fgsm_adversarial_training(eps=0.0),
      'pgd eps=0': adv.pgd_adversarial_training(eps=0.0, num_steps=3, step_size=0.01),
      'fast eps=0': adv.fast_adversarial_training(eps=0.0),
      'trades beta=0': adv.trades(beta=0.0, eps=0.1, num_steps=2),
      'ensemble eps=0': adv.ensemble_adversarial_training(
          attack=fgsm(eps=0.0), static_models=[static], alpha=0.5),
  }


def test_strength_zero_is_plain_loss_and_jit_grad_work():
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  key = jax.random.key(2)
  static = lambda z: _mlp_apply(_mlp_params(jax.random.key(9)), z)
  want = PLAIN(_mlp_apply, p, x, y, key)
  g_want = jax.grad(lambda q: jnp.mean(PLAIN(_mlp_apply, q, x, y, key)))(p)
  for name, obj in _zero_strength_objectives(static).items():
    f = jax.jit(lambda q, o=obj: o(_mlp_apply, q, x, y, key))
    np.testing.assert_allclose(f(p), want, rtol=1e-5, atol=1e-6, err_msg=name)
    g = jax.jit(jax.grad(lambda q, o=obj: jnp.mean(o(_mlp_apply, q, x, y, key))))(p)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_nonzero_strength_differentiable_and_larger_than_clean():
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  key = jax.random.key(2)
  static = lambda z: _mlp_apply(_mlp_params(jax.random.key(9)), z)
  clean = float(jnp.mean(PLAIN(_mlp_apply, p, x, y, key)))
  objs = {'fgsm': adv.fgsm_adversarial_training(eps=0.2),
          'pgd': adv.pgd_adversarial_training(eps=0.2, num_steps=5),
          'fast': adv.fast_adversarial_training(eps=0.2),
          'trades': adv.trades(beta=6.0, eps=0.2, num_steps=5),
          # true labels: with the sources' predictions the step may lower the loss on y
          'ensemble': adv.ensemble_adversarial_training(attack=fgsm(eps=0.2),
                                                        static_models=[static],
                                                        labels='true')}
  for name, obj in objs.items():
    v, g = jax.jit(jax.value_and_grad(lambda q, o=obj: jnp.mean(o(_mlp_apply, q, x, y,
                                                                   key))))(p)
    assert np.isfinite(float(v)) and float(v) >= clean - 1e-6, name
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(g)), name
    assert sum(float(jnp.sum(jnp.abs(l))) for l in jax.tree.leaves(g)) > 0, name


def test_no_gradient_through_x_adv():
  """Danskin: the gradient is that of the loss at the (fixed) maximiser."""
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  key = jax.random.key(3)
  atk = pgd(eps=0.2, num_steps=4)
  obj = adv.adversarial_training(attack=atk, alpha=0.0)
  g = jax.grad(lambda q: jnp.mean(obj(_mlp_apply, q, x, y, key)))(p)
  k_atk = jax.random.split(key, 3)[0]
  x_adv = atk(lambda z: _mlp_apply(p, z), x, y, k_atk).x_adv
  g_fixed = jax.grad(lambda q: jnp.mean(losses.cross_entropy(_mlp_apply(q, x_adv), y)))(p)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_fixed), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fgsm_at_on_linear_model_matches_hand_computation():
  w = jnp.array([[0.5], [-2.0], [1.0]])
  apply_fn = lambda p, x: x @ p
  x = jnp.array([[0.5, 0.5, 0.5], [0.2, 0.8, 0.4]])
  y = jnp.array([1, 0])
  obj = adv.fgsm_adversarial_training(eps=0.1, alpha=0.5)
  got = obj(apply_fn, w, x, y, jax.random.key(0))
  s = 2.0 * y - 1.0
  # FGSM on a linear binary model moves every coordinate by eps against s * sign(w).
  x_adv = jnp.clip(x - 0.1 * s[:, None] * jnp.sign(w[:, 0])[None], 0, 1)
  bce = lambda z: optax.sigmoid_binary_cross_entropy(z[:, 0], y.astype(jnp.float32))
  np.testing.assert_allclose(got, 0.5 * bce(x @ w) + 0.5 * bce(x_adv @ w), rtol=1e-6)


def test_worst_case_logits_binary_and_multiclass_are_exact():
  # binary: s f(x) - eps ||w||_1
  w = jnp.array([[0.5], [-2.0], [1.0]])
  apply_fn = lambda p, x: x @ p[0] + p[1]
  params = (w, jnp.array([0.3]))
  x = jnp.array([[0.1, 0.2, 0.3]])
  for yy in (0, 1):
    y = jnp.array([yy])
    z = adv.worst_case_logits(apply_fn, params, x, y, eps=0.1)
    s = 2 * yy - 1
    np.testing.assert_allclose(s * z[0, 0], s * (x @ w + 0.3)[0, 0] - 0.1 * 3.5, rtol=1e-6)
  # multiclass in 2-D, L_inf: the worst pairwise margin is attained at a corner.
  W = jax.random.normal(jax.random.key(0), (2, 4))
  apply2 = lambda p, x: x @ p
  x = jnp.array([[0.3, -0.2]])
  y = jnp.array([2])
  eps = 0.25
  z = adv.worst_case_logits(apply2, W, x, y, eps=eps)
  corners = jnp.array([[a, b] for a in (-eps, eps) for b in (-eps, eps)])
  zc = (x + corners) @ W                               # [4, C]
  for j in range(4):
    if j == 2:
      continue
    brute = jnp.min(zc[:, 2] - zc[:, j])
    np.testing.assert_allclose(z[0, 2] - z[0, j], brute, rtol=1e-5)
  # L2: the dual is L2
  z2 = adv.worst_case_logits(apply2, W, x, y, eps=eps, norm='l2')
  np.testing.assert_allclose(z2[0, 0] - z2[0, 2] - (x @ W)[0, 0] + (x @ W)[0, 2],
                             eps * jnp.linalg.norm(W[:, 0] - W[:, 2]), rtol=1e-5)


def test_linear_adversarial_training_increases_margin():
  # Separable by x1 alone (|x1| >= 0.5); x2 is noise. The max L_inf-margin separator is
  # w ~ (1, 0) (margin ~0.5). The start w = (10, 4) already has s f >= 1 everywhere with an
  # L_inf margin of only ~0.07: the plain hinge has zero gradient there and stays; the
  # closed-form robust hinge needs s f >= 1 + eps ||w||_1 and turns w towards (1, 0).
  rng = np.random.default_rng(0)
  n = 128
  y = rng.integers(0, 2, n).astype(np.int32)
  x1 = (2 * y - 1) * rng.uniform(0.5, 1.5, n)
  x = np.stack([x1, rng.uniform(-1, 1, n)], 1).astype(np.float32)
  apply_fn = lambda p, xx: xx @ p['w'] + p['b']
  p0 = {'w': jnp.array([[10.0], [4.0]]), 'b': jnp.zeros(1)}
  s = 2 * y - 1

  def margin(p):      # L_inf distance of each point to the boundary, signed
    return s * np.asarray(apply_fn(p, x))[:, 0] / np.abs(np.asarray(p['w'])).sum()

  def fit(obj):
    return train.fit(apply_fn, p0, x, y, optimizer=optax.adam(0.05), key=jax.random.key(0),
                     batch_size=n, num_steps=200, objective=obj).params

  m_plain = margin(fit(train.supervised(losses.hinge)))
  m_robust = margin(fit(adv.linear_adversarial_training(eps=0.3)))
  assert np.min(m_robust) > 0.3                    # every point robust at eps
  assert np.min(m_plain) < 0.25
  assert np.min(m_robust) > np.min(m_plain) + 0.1
  np.testing.assert_allclose(
      adv.linear_adversarial_training(eps=0.0)(apply_fn, p0, x, y, None),
      losses.hinge(apply_fn(p0, x), y), rtol=1e-6)


def test_trades_attack_stays_in_ball_and_raises_kl():
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  f = lambda z: _mlp_apply(p, z)
  out = jax.jit(adv.trades_attack(eps=0.1, num_steps=10), static_argnums=0)(
      f, x, y, jax.random.key(0))
  x_adv = out.x_adv
  assert out.budget == 'fixed'
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(x_adv), -1) != y)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.1 + 1e-6
  assert float(jnp.min(x_adv)) >= 0 and float(jnp.max(x_adv)) <= 1
  kl = adv._kl(f(x), f(x_adv))
  assert float(jnp.mean(kl)) > 1e-3


def test_ensemble_uses_static_source():
  w_static = jnp.array([[1.0], [1.0], [-1.0]])
  static = lambda z: z @ w_static
  apply_fn = lambda p, z: z @ p
  w = jnp.array([[0.5], [-2.0], [1.0]])
  x = jnp.full((2, 3), 0.5)
  y = jnp.array([1, 0])
  for labels in ('true', 'predicted'):
    obj = adv.ensemble_adversarial_training(attack=fgsm(eps=0.1), static_models=[static],
                                            include_current=False, alpha=0.0,
                                            labels=labels)
    # crafted on the static model, with y or with its prediction (1 for both: 0.5 > 0)
    s = 2.0 * y - 1.0 if labels == 'true' else jnp.ones(2)
    x_adv = x - 0.1 * s[:, None] * jnp.sign(w_static[:, 0])[None]
    want = optax.sigmoid_binary_cross_entropy((x_adv @ w)[:, 0], y.astype(jnp.float32))
    np.testing.assert_allclose(obj(apply_fn, w, x, y, jax.random.key(0)), want, rtol=1e-6,
                               err_msg=labels)


def test_ensemble_default_labels_are_the_source_predictions():
  # Tramer et al.'s code crafts with argmax f_src(x) (no label leaking); the default must
  # not use y. Three classes; the static source predicts class 2 everywhere.
  static = lambda z: jnp.stack([z[:, 0], -z[:, 0], 5.0 + 0.0 * z[:, 0]], axis=1)
  seen = []
  def attack(logits_fn, x, y, key):
    del logits_fn, key
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), y)
    return AttackOutput(x, {'success': jnp.zeros(x.shape[:1], bool)}, 'fixed')
  obj = adv.ensemble_adversarial_training(attack=attack, static_models=[static],
                                          include_current=False)
  x = jnp.ones((3, 2))
  y = jnp.array([0, 1, 0])
  jax.block_until_ready(obj(lambda p, z: z @ p, jnp.ones((2, 3)), x, y, jax.random.key(0)))
  np.testing.assert_array_equal(seen[-1], [2, 2, 2])
  with pytest.raises(ValueError, match="labels='gold'"):
    adv.ensemble_adversarial_training(attack=fgsm(eps=0.1), static_models=[static],
                                      labels='gold')


def _dropout_model():
  # A linear model whose training pass zeroes the first half of the features (a fixed
  # "dropout" mask, so the two passes differ for sure); apply_fn is the inference pass.
  apply_fn = lambda p, z: z @ p
  mask = jnp.array([0.0, 0.0, 0.0, 2.0, 2.0, 2.0])
  train_apply_fn = lambda p, z, key: (z * mask) @ p
  return apply_fn, train_apply_fn


def _spy_attack(seen):
  def attack(logits_fn, x, y, key):
    del y, key
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), logits_fn(x))
    return AttackOutput(x, {'success': jnp.zeros(x.shape[:1], bool)}, 'fixed')
  return attack


@pytest.mark.parametrize('name', ['adversarial_training', 'trades', 'ensemble'])
def test_inner_attack_runs_in_eval_mode_under_fit(name):
  apply_fn, train_apply_fn = _dropout_model()
  p = jax.random.normal(jax.random.key(0), (6, 3))
  x, y = _data(jax.random.key(1))
  seen = []
  make = {'adversarial_training': lambda a: adv.adversarial_training(attack=a, alpha=0.0),
          'trades': lambda a: adv.trades(attack=a, beta=1.0),
          'ensemble': lambda a: adv.ensemble_adversarial_training(
              attack=a, static_models=[lambda z: z @ p], alpha=0.0, labels='true')}[name]
  obj = make(_spy_attack(seen))
  step = train.make_step(apply_fn, obj, optax.sgd(0.0), train_apply_fn=train_apply_fn)
  opt = optax.sgd(0.0).init(p)
  for k in range(4):   # the ensemble draws its source per step: the current model in some
    jax.block_until_ready(jax.jit(step)(p, opt, x, y, jax.random.key(k)))
  assert seen
  for z in seen:       # every logits the attack saw are the eval-mode ones
    np.testing.assert_allclose(z, apply_fn(p, x), rtol=1e-5, atol=1e-6)
  # an explicit attack_apply_fn overrides: the training pass is seen then
  seen.clear()
  obj = adv.adversarial_training(attack=_spy_attack(seen), alpha=0.0,
                                 attack_apply_fn=lambda q, z: train_apply_fn(q, z, None))
  step = train.make_step(apply_fn, obj, optax.sgd(0.0), train_apply_fn=train_apply_fn)
  jax.block_until_ready(jax.jit(step)(p, opt, x, y, jax.random.key(0)))
  np.testing.assert_allclose(seen[-1], train_apply_fn(p, x, None), rtol=1e-5, atol=1e-6)


def test_trades_accepts_string_loss_and_objective():
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  key = jax.random.key(2)
  want = adv.trades(beta=2.0, eps=0.1, num_steps=3)(_mlp_apply, p, x, y, key)
  by_name = adv.trades(loss='cross_entropy', beta=2.0, eps=0.1, num_steps=3)
  np.testing.assert_allclose(by_name(_mlp_apply, p, x, y, key), want, rtol=1e-6)
  as_obj = adv.trades(objective=PLAIN, beta=2.0, eps=0.1, num_steps=3)
  np.testing.assert_allclose(jax.jit(lambda q: as_obj(_mlp_apply, q, x, y, key))(p), want,
                             rtol=1e-5)
  # a 5-argument objective that is not a plain loss: its value is the natural term
  shifted = lambda apply_fn, q, xx, yy, k: PLAIN(apply_fn, q, xx, yy, k) + 1.0
  got = adv.trades(objective=shifted, beta=2.0, eps=0.1, num_steps=3)(_mlp_apply, p, x, y, key)
  np.testing.assert_allclose(got, want + 1.0, rtol=1e-5)


def test_loss_and_objective_are_explicit_not_guessed():
  """A loss is passed as ``loss=``, an objective as ``objective=``; nothing is inferred
  from the callable's signature. A loss with an optional third parameter or ``*args``
  (which counting arguments took for an objective) is used as a loss."""
  p = _mlp_params(jax.random.key(0))
  x, y = _data(jax.random.key(1))
  key = jax.random.key(2)
  atk = fgsm(eps=0.1)
  want = adv.adversarial_training(attack=atk)(_mlp_apply, p, x, y, key)

  def ce_with_option(logits, labels, scale=1.0):
    return scale * losses.cross_entropy(logits, labels)
  for loss in (ce_with_option, lambda *a: losses.cross_entropy(*a), 'cross_entropy'):
    got = adv.adversarial_training(attack=atk, loss=loss)(_mlp_apply, p, x, y, key)
    np.testing.assert_allclose(got, want, rtol=1e-6)
  got = adv.adversarial_training(attack=atk, objective=PLAIN)(_mlp_apply, p, x, y, key)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  with pytest.raises(ValueError, match='either loss= or objective='):
    adv.adversarial_training(attack=atk, loss='cross_entropy', objective=PLAIN)
  with pytest.raises(TypeError):
    adv.adversarial_training(PLAIN, attack=atk)       # keyword-only: no positional guess
  with pytest.raises(ValueError, match='loss=3'):
    adv.trades(eps=0.1, loss=3)
  with pytest.raises(ValueError, match='objective=3'):
    adv.pgd_adversarial_training(eps=0.1, objective=3)


def test_trades_objective_by_hand_official_kl_direction():
  # A 3-class linear model and a fixed x' (the attack returns x + delta): the objective
  # is CE(f(x), y) + beta * KL(p_clean || p_adv), the official
  # KLDivLoss(log_softmax(f(x')), softmax(f(x))). The reverse KL differs by > 10%.
  w = np.array([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]], np.float32)
  x = np.array([[0.2, 0.9], [1.0, -0.4]], np.float32)
  y = np.array([1, 0])
  delta = np.array([[0.5, -0.6], [-0.7, 0.4]], np.float32)
  beta = 3.0
  obj = adv.trades(beta=beta, attack=lambda f, xx, yy, k: AttackOutput(
      xx + delta, {'success': jnp.zeros(xx.shape[:1], bool)}, 'fixed'))
  got = np.asarray(obj(lambda q, z: z @ q, jnp.asarray(w), jnp.asarray(x), jnp.asarray(y),
                       jax.random.key(0)))

  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  p, q = softmax(x @ w), softmax((x + delta) @ w)
  ce = -np.log(p[np.arange(2), y])
  kl_official = np.sum(p * np.log(p / q), axis=1)
  kl_reverse = np.sum(q * np.log(q / p), axis=1)
  assert np.all(np.abs(kl_official - kl_reverse) > 0.1 * kl_official)
  np.testing.assert_allclose(got, ce + beta * kl_official, rtol=1e-5)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='alpha'):
    adv.adversarial_training(attack=fgsm(eps=0.1), alpha=1.5)
  with pytest.raises(ValueError, match='attack'):
    adv.adversarial_training(attack=3)
  with pytest.raises(ValueError, match='static_models'):
    adv.ensemble_adversarial_training(attack=fgsm(eps=0.1), static_models=[])
  with pytest.raises(ValueError, match='eps'):
    adv.trades(beta=1.0)
  with pytest.raises(ValueError, match='norm'):
    adv.linear_adversarial_training(eps=0.1, norm='l3')
