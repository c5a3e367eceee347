"""FGSM / FGM / BIM / MI-FGSM / PGD: closed forms, budgets, bounds, targets, jit + vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)


def _linear(w, b=0.0):
  """Single-logit binary linear model f(x) = w.x + b on flattened x."""
  return lambda x: x.reshape((x.shape[0], -1)) @ w[:, None] + b


def _linear_multi(W, b):
  return lambda x: x.reshape((x.shape[0], -1)) @ W + b


def _mlp(key, d, h, c):
  k1, k2 = jax.random.split(key)
  W1 = jax.random.normal(k1, (d, h)) / np.sqrt(d)
  W2 = jax.random.normal(k2, (h, c)) / np.sqrt(h)
  return lambda x: jnp.tanh(x.reshape((x.shape[0], -1)) @ W1 * 3.0) @ W2 * 3.0


# ----------------------------------------------------------------------------- closed forms


def test_fgsm_linear_is_eps_sign_w():
  w = jnp.array([0.7, -1.3, 0.2, -0.05, 2.0])
  f = _linear(w)
  x = jnp.zeros((3, 5))
  eps = 0.1
  # True class 1 (w.x > 0): the attacker decreases w.x -> x - eps sign(w).
  out = attacks.fgsm(eps=eps, bounds=(-1.0, 1.0))(f, x, jnp.ones(3, jnp.int32), KEY).x_adv
  np.testing.assert_allclose(out, -eps * np.sign(w)[None].repeat(3, 0), atol=1e-7)
  # True class 0: increases w.x -> x + eps sign(w).
  out = attacks.fgsm(eps=eps, bounds=(-1.0, 1.0))(f, x, jnp.zeros(3, jnp.int32), KEY).x_adv
  np.testing.assert_allclose(out, eps * np.sign(w)[None].repeat(3, 0), atol=1e-7)
  # Targeted towards class 1: x + eps sign(w) (descends the loss of the target).
  out = attacks.fgsm(eps=eps, targeted=True, bounds=(-1.0, 1.0))(
      f, x, jnp.ones(3, jnp.int32), KEY).x_adv
  np.testing.assert_allclose(out, eps * np.sign(w)[None].repeat(3, 0), atol=1e-7)


def test_fgsm_multiclass_linear_sign_of_weight_difference():
  # For CE on a linear softmax model the gradient is W (p - onehot(y)); for two classes
  # the sign is sign(w_other - w_y) for every coordinate.
  W = jnp.array([[1.0, -1.0], [-2.0, 0.5], [0.3, 0.9]])
  f = _linear_multi(W, jnp.zeros(2))
  x = jnp.full((1, 3), 0.5)
  out = attacks.fgsm(eps=0.2)(f, x, jnp.array([0]), KEY).x_adv
  np.testing.assert_allclose(out, 0.5 + 0.2 * np.sign(W[:, 1] - W[:, 0])[None], atol=1e-6)


def test_fgm_l2_l1_closed_form():
  w = jnp.array([3.0, -4.0, 0.0])
  f = _linear(w)
  x = jnp.zeros((1, 3))
  y = jnp.array([0])
  out = attacks.fgm(eps=0.5, norm='l2', bounds=(-1, 1))(f, x, y, KEY).x_adv
  np.testing.assert_allclose(out[0], 0.5 * np.array([3.0, -4.0, 0.0]) / 5.0, atol=1e-6)
  out = attacks.fgm(eps=0.5, norm='l1', bounds=(-1, 1))(f, x, y, KEY).x_adv
  np.testing.assert_allclose(out[0], [0.0, -0.5, 0.0], atol=1e-6)


def test_fgsm_clips_to_bounds():
  w = jnp.array([1.0, -1.0])
  x = jnp.array([[0.95, 0.02]])
  out = attacks.fgsm(eps=0.1)(_linear(w), x, jnp.array([0]), KEY).x_adv
  np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-7)


def test_fgsm_random_start_stays_in_ball():
  f = _mlp(KEY, 6, 8, 3)
  x = jax.random.uniform(KEY, (16, 6))
  y = jnp.zeros(16, jnp.int32)
  out = attacks.fgsm(eps=0.1, random_start=True)(f, x, y, jax.random.key(3)).x_adv
  assert float(jnp.max(jnp.abs(out - x))) <= 0.1 + 1e-6
  assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_pgd_linear_l2_reaches_boundary_direction():
  # On a linear binary model, L2 PGD without random start moves along -w/||w||.
  w = jnp.array([3.0, -4.0])
  atk = attacks.pgd(eps=0.5, step_size=0.1, num_steps=20, norm='l2', random_start=False,
                    bounds=(-5, 5))
  out = atk(_linear(w, 10.0), jnp.zeros((1, 2)), jnp.array([1]), KEY).x_adv
  np.testing.assert_allclose(out[0], -0.5 * np.array([3.0, -4.0]) / 5.0, atol=1e-5)


# ----------------------------------------------------------------------------- budgets


@pytest.mark.parametrize('norm,bounds', [('linf', (-2.0, 3.0)), ('l2', (0.0, 1.0)),
                                         ('l1', (0.0, 1.0)), ('l1', (-2.0, 3.0))])
def test_pgd_stays_in_ball_and_bounds(norm, bounds):
  lo, hi = bounds
  d = 12
  f = _mlp(jax.random.key(1), d, 16, 4)
  x = jax.random.uniform(jax.random.key(2), (9, 2, 6), minval=lo, maxval=hi)
  x = x.at[0].set(lo).at[1].set(hi)  # points on the faces of the box
  y = jax.random.randint(jax.random.key(3), (9,), 0, 4)
  eps = {'linf': 0.3, 'l2': 1.5, 'l1': 3.0}[norm]
  atk = attacks.pgd(eps=eps, step_size=eps / 2, num_steps=6, norm=norm, restarts=2,
                    bounds=bounds, l1_quantile=0.7)
  out = jax.jit(atk, static_argnums=0)(f, x, y, jax.random.key(4))
  xa = out.x_adv
  assert xa.shape == x.shape and xa.dtype == x.dtype
  assert float(xa.min()) >= lo and float(xa.max()) <= hi
  n = common.norm(xa - x, norm)
  assert float(n.max()) <= eps * (1 + 1e-5) + 1e-6
  assert out.info['success'].shape == (9,)
  np.testing.assert_array_equal(out.info['gradients'], 12)
  # Reported success matches the model's predictions on x_adv.
  np.testing.assert_array_equal(out.info['success'], common.predict(f(xa)) != y)


@pytest.mark.parametrize('name,norm', [('bim', 'l2'), ('mi_fgsm', 'linf')])
def test_iterative_stay_in_ball(name, norm):
  f = _mlp(jax.random.key(1), 8, 16, 4)
  x = jax.random.uniform(jax.random.key(2), (5, 8), minval=-2, maxval=3)
  y = jnp.arange(5, dtype=jnp.int32) % 4
  eps = 0.2 if norm == 'linf' else 0.8
  atk = getattr(attacks, name)(eps=eps, num_steps=5, norm=norm, bounds=(-2, 3))
  xa = atk(f, x, y, KEY).x_adv
  assert float(common.norm(xa - x, norm).max()) <= eps * (1 + 1e-5)
  assert float(xa.min()) >= -2 and float(xa.max()) <= 3


def test_mi_fgsm_first_step_is_fgsm_step():
  f = _mlp(jax.random.key(1), 8, 16, 4)
  x = jax.random.uniform(jax.random.key(2), (5, 8))
  y = jnp.zeros(5, jnp.int32)
  a = attacks.mi_fgsm(eps=0.05, num_steps=1)(f, x, y, KEY).x_adv
  b = attacks.fgsm(eps=0.05)(f, x, y, KEY).x_adv
  np.testing.assert_allclose(a, b, atol=1e-7)


def test_bim_one_step_equals_fgsm():
  f = _mlp(jax.random.key(1), 8, 16, 4)
  x = jax.random.uniform(jax.random.key(2), (5, 8))
  y = jnp.zeros(5, jnp.int32)
  a = attacks.bim(eps=0.05, step_size=0.05, num_steps=1)(f, x, y, KEY).x_adv
  b = attacks.fgsm(eps=0.05)(f, x, y, KEY).x_adv
  np.testing.assert_allclose(a, b, atol=1e-7)


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize('loss,norm', [('ce', 'linf'), ('cw', 'l2'), ('dlr', 'l1')])
def test_pgd_targeted_reaches_target(loss, norm):
  f = _mlp(jax.random.key(5), 10, 32, 5)
  x = jax.random.uniform(jax.random.key(6), (16, 10))
  # Targets are the predictions at other points of the box, so they are reachable: every
  # budget below covers the whole box [0, 1]^10.
  t = common.predict(f(jax.random.uniform(jax.random.key(7), (16, 10))))
  eps = {'linf': 1.0, 'l2': 3.2, 'l1': 10.0}[norm]
  atk = attacks.pgd(eps=eps, step_size=eps / 5, num_steps=30, norm=norm, loss=loss,
                    targeted=True, l1_quantile=0.8)
  out = atk(f, x, t, KEY)
  assert float(jnp.mean(common.predict(f(out.x_adv)) == t)) == 1.0
  assert bool(out.info['success'].all())


def test_targeted_fgsm_and_bim_on_linear_model():
  W = jax.random.normal(jax.random.key(7), (6, 4))
  f = _linear_multi(W, jnp.zeros(4))
  x = jax.random.uniform(jax.random.key(8), (8, 6), minval=-1, maxval=1)
  t = (common.predict(f(x)) + 2) % 4
  out = attacks.bim(eps=5.0, num_steps=40, targeted=True, bounds=(-10, 10))(f, x, t, KEY).x_adv
  assert bool(jnp.all(common.predict(f(out)) == t))


def test_pgd_untargeted_beats_fgsm_and_clean():
  f = _mlp(jax.random.key(9), 10, 32, 3)
  x = jax.random.uniform(jax.random.key(10), (64, 10))
  y = common.predict(f(x))
  eps = 0.15
  s_fgsm = jnp.mean(common.predict(f(attacks.fgsm(eps=eps)(f, x, y, KEY).x_adv)) != y)
  s_pgd = jnp.mean(common.predict(f(attacks.pgd(eps=eps, num_steps=20)(f, x, y, KEY).x_adv)) != y)
  assert float(s_pgd) >= float(s_fgsm)
  assert float(s_pgd) > 0


def test_restarts_never_hurt():
  f = _mlp(jax.random.key(11), 10, 32, 3)
  x = jax.random.uniform(jax.random.key(12), (64, 10))
  y = common.predict(f(x))
  kw = dict(eps=0.1, num_steps=5, loss='cw')
  # Restart i uses fold_in(key, i), so the 1-restart run is the first run of the 3.
  one = attacks.pgd(restarts=1, **kw)(f, x, y, KEY)
  three = attacks.pgd(restarts=3, **kw)(f, x, y, KEY)
  assert bool(jnp.all(three.info['success'] >= one.info['success']))
  assert bool(jnp.all((three.info['loss'] >= one.info['loss'] - 1e-5) |
                      three.info['success']))


# ----------------------------------------------------------------------------- jit / vmap


def test_jit_and_vmap_over_eps():
  f = _mlp(jax.random.key(13), 10, 16, 3)
  x = jax.random.uniform(jax.random.key(14), (32, 10))
  y = common.predict(f(x))
  eps_grid = jnp.array([0.0, 0.05, 0.1, 0.3])

  def run(name, **kw):
    def one(eps):
      atk = getattr(attacks, name)(eps=eps, **kw)
      return atk(f, x, y, KEY).x_adv
    return jax.jit(jax.vmap(one))(eps_grid)

  for name, kw in [('fgsm', {}), ('mi_fgsm', {'num_steps': 3}),
                   ('pgd', {'num_steps': 3, 'norm': 'l2'})]:
    xa = run(name, **kw)
    assert xa.shape == (4,) + x.shape
    p = kw.get('norm', 'linf')
    for i, e in enumerate(np.asarray(eps_grid)):
      assert float(common.norm(xa[i] - x, p).max()) <= e * (1 + 1e-5) + 1e-6, (name, e)
    # Equal to the attack built with a concrete eps.
    single = getattr(attacks, name)(eps=0.1, **kw)(f, x, y, KEY).x_adv
    np.testing.assert_allclose(xa[2], single, atol=1e-5)
    np.testing.assert_allclose(xa[0], x, atol=1e-6)


def test_jit_static_logits_fn():
  f = _mlp(jax.random.key(13), 10, 16, 3)
  x = jax.random.uniform(jax.random.key(14), (4, 10))
  y = jnp.zeros(4, jnp.int32)
  atk = attacks.pgd(eps=0.1, num_steps=2, restarts=2, norm='l1')
  out = jax.jit(atk, static_argnums=0)(f, x, y, KEY)
  assert float(common.norm(out.x_adv - x, 'l1').max()) <= 0.1 * (1 + 1e-5)
  np.testing.assert_array_equal(out.info['gradients'], 4)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize('factory,kw,name', [
    (attacks.pgd, dict(eps=-0.1), 'eps'),
    (attacks.pgd, dict(eps=0.1, norm='l3'), 'norm'),
    (attacks.pgd, dict(eps=0.1, loss='mse'), 'loss'),
    (attacks.pgd, dict(eps=0.1, num_steps=0), 'num_steps'),
    (attacks.pgd, dict(eps=0.1, restarts=0), 'restarts'),
    (attacks.pgd, dict(eps=0.1, step_size=0.0), 'step_size'),
    (attacks.pgd, dict(eps=0.1, bounds=(1, 0)), 'bounds'),
    (attacks.pgd, dict(eps=0.1, l1_quantile=1.0), 'l1_quantile'),
    (attacks.pgd, dict(eps=0.1, targeted='yes'), 'targeted'),
    (attacks.fgsm, dict(eps=float('nan')), 'eps'),
    (attacks.fgm, dict(eps=0.1, norm='l0'), 'norm'),
    (attacks.bim, dict(eps=0.1, norm='l1'), 'norm'),
    (attacks.bim, dict(eps=0.1, num_steps=2.5), 'num_steps'),
    (attacks.mi_fgsm, dict(eps=0.1, decay=-1.0), 'decay'),
])
def test_bad_hyperparameters(factory, kw, name):
  with pytest.raises(ValueError, match=name):
    factory(**kw)


def test_bad_inputs():
  f = _mlp(KEY, 4, 4, 3)
  atk = attacks.pgd(eps=0.1, num_steps=1)
  with pytest.raises(ValueError, match='x'):
    atk(f, jnp.full((2, 4), 2.0), jnp.zeros(2, jnp.int32), KEY)
  with pytest.raises(ValueError, match='y'):
    atk(f, jnp.zeros((2, 4)), jnp.zeros(3, jnp.int32), KEY)


# ----------------------------------------------------------------------------- projections


def _proj_l1_box_ref(v, eps, lo, hi):
  """float64 reference from the KKT conditions: bisection on the multiplier."""
  v = np.asarray(v, np.float64)
  c = np.where(v >= 0, hi, -lo)
  d = lambda lam: np.sign(v) * np.clip(np.abs(v) - lam, 0, c)
  if np.abs(d(0.0)).sum() <= eps:
    return d(0.0)
  a, b = 0.0, np.abs(v).max()
  for _ in range(200):
    m = 0.5 * (a + b)
    a, b = (m, b) if np.abs(d(m)).sum() > eps else (a, m)
  return d(b)


def test_l1_projection_matches_reference_and_is_optimal():
  rng = np.random.default_rng(0)
  b, n = 40, 6
  v = rng.normal(size=(b, n)) * rng.choice([0.1, 1.0, 5.0], size=(b, 1))
  v[:5, 3:] = 0.0                                    # ties and zeros
  v[5:8] = np.abs(v[5:8, :1])                        # all-equal magnitudes
  eps = rng.uniform(0.05, 3.0, size=b)
  lo, hi = -rng.uniform(0, 1, (b, n)), rng.uniform(0, 1, (b, n))
  lo[::4] = 0.0                                      # points on a face of the box
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  p_ball = np.asarray(common.project_l1(f32(v), f32(eps)))
  p_box = np.asarray(common.project_l1(f32(v), f32(eps), f32(lo), f32(hi)))
  for i in range(b):
    inf = np.full(n, np.inf)
    np.testing.assert_allclose(p_ball[i], _proj_l1_box_ref(v[i], eps[i], -inf, inf),
                               atol=2e-5)
    np.testing.assert_allclose(p_box[i], _proj_l1_box_ref(v[i], eps[i], lo[i], hi[i]),
                               atol=2e-5)
    assert np.abs(p_box[i]).sum() <= eps[i] * (1 + 1e-5)
    assert np.all(p_box[i] >= lo[i] - 1e-7) and np.all(p_box[i] <= hi[i] + 1e-7)
    # Brute force: no random feasible point is closer than the projection.
    z = rng.uniform(lo[i], hi[i], size=(2000, n))
    z = z * np.minimum(1.0, eps[i] / np.maximum(np.abs(z).sum(1, keepdims=True), 1e-12))
    assert (np.linalg.norm(p_box[i] - v[i]) <=
            np.linalg.norm(z - v[i], axis=1).min() + 1e-5)


def test_l1_projection_closed_form_small():
  # Duchi et al.: projecting (3, 1) on the L1 ball of radius 2 -> (2, 0);
  # (1, 1) with radius 1 -> (0.5, 0.5).
  np.testing.assert_allclose(common.project_l1(jnp.array([[3.0, 1.0]]), 2.0), [[2.0, 0.0]],
                             atol=1e-6)
  np.testing.assert_allclose(common.project_l1(jnp.array([[1.0, -1.0]]), 1.0),
                             [[0.5, -0.5]], atol=1e-6)
  # With a box cap of 0.2 on the first coordinate: (0.2, 0.8) for v=(3, 1), eps=1.
  np.testing.assert_allclose(
      common.project_l1(jnp.array([[3.0, 1.0]]), 1.0, jnp.array([[-1.0, -1.0]]),
                        jnp.array([[0.2, 5.0]])), [[0.2, 0.8]], atol=1e-6)
  # Inside the ball: unchanged.
  np.testing.assert_allclose(common.project_l1(jnp.array([[0.1, -0.2]]), 1.0),
                             [[0.1, -0.2]], atol=1e-7)


def test_l2_linf_projection():
  d = jnp.array([[3.0, 4.0], [0.1, 0.0]])
  np.testing.assert_allclose(common.project_l2(d, 1.0), [[0.6, 0.8], [0.1, 0.0]], atol=1e-6)
  np.testing.assert_allclose(common.project_linf(d, 0.5), [[0.5, 0.5], [0.1, 0.0]])


def test_sparse_l1_direction_skips_blocked_coordinates():
  from jaxsec.attacks.evasion.pgd import sparse_l1_direction
  g = jnp.array([[5.0, -4.0, 3.0, 0.5]])
  x = jnp.array([[1.0, 0.5, 0.5, 0.5]])  # coordinate 0 sits on the upper bound
  d = sparse_l1_direction(g, x, (0.0, 1.0), 2)
  np.testing.assert_allclose(d, [[0.0, -0.5, 0.5, 0.0]])


# ----------------------------------------------------------------------------- objectives


def test_dlr_and_margin_by_hand():
  z = jnp.array([[2.0, 5.0, 1.0, 3.0]])
  y = jnp.array([0])
  # sorted: 5, 3, 2, 1 -> z_pi1 - z_pi3 = 3; margin z_y - max_other = 2 - 5 = -3
  np.testing.assert_allclose(common.dlr_loss(z, y), [1.0], rtol=1e-6)
  np.testing.assert_allclose(common.margin(z, y), [-3.0])
  y = jnp.array([1])  # correct: -(5 - 3) / 3
  np.testing.assert_allclose(common.dlr_loss(z, y), [-2.0 / 3.0], rtol=1e-6)
  # targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2) = -(5 - 1) / (5 - 1.5)
  np.testing.assert_allclose(common.targeted_dlr_loss(z, jnp.array([1]), jnp.array([2])),
                             [-4.0 / 3.5], rtol=1e-6)
  # CE objective equals -log softmax
  np.testing.assert_allclose(common.cross_entropy(z, y), -jax.nn.log_softmax(z)[0, 1],
                             rtol=1e-6)
  with pytest.raises(ValueError, match='3 classes'):
    common.dlr_loss(jnp.zeros((1, 2)), jnp.array([0]))


# ----------------------------------------------------------------------------- EOT / BPDA


def test_bpda_forward_and_straight_through_gradient():
  quant = lambda x: jnp.round(x * 4.0) / 4.0
  p = attacks.bpda(quant)
  x = jnp.array([[0.1, 0.4, 0.8]])
  np.testing.assert_allclose(p(x), quant(x))
  w = jnp.array([1.0, -2.0, 3.0])
  g = jax.grad(lambda x: jnp.sum(p(x) * w))(x)
  np.testing.assert_allclose(g, w[None])                  # identity on the backward pass
  assert float(jnp.abs(jax.grad(lambda x: jnp.sum(quant(x) * w))(x)).sum()) == 0.0
  # A given approximation: its vector-Jacobian product is used.
  p2 = attacks.bpda(quant, approx=lambda x: 2.0 * x)
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(p2(x) * w))(x), 2.0 * w[None])
  # Works under jit and vmap.
  np.testing.assert_allclose(jax.jit(jax.vmap(p))(x), quant(x))
  with pytest.raises(ValueError, match='preprocess'):
    attacks.bpda(3)


def test_bpda_breaks_gradient_masking_quantisation():
  W = jax.random.normal(jax.random.key(20), (12, 3))
  logits = lambda x: (x - 0.5) @ W * 4.0
  quant = lambda x: jnp.round(x * 8.0) / 8.0
  defended = lambda x: logits(quant(x))
  x = jax.random.uniform(jax.random.key(21), (32, 12))
  y = common.predict(defended(x))
  atk = attacks.pgd(eps=0.3, num_steps=10, random_start=False)
  naive = atk(defended, x, y, KEY).x_adv
  np.testing.assert_allclose(naive, x)                     # zero gradients: stuck
  adaptive = atk(attacks.bpda_logits_fn(logits, quant), x, y, KEY).x_adv
  assert float(jnp.mean(common.predict(defended(adaptive)) != y)) > 0.5


def test_eot_logits_fn_is_the_sample_mean():
  W = jax.random.normal(jax.random.key(22), (5, 3))
  model = lambda x, k: (x + 0.3 * jax.random.normal(k, x.shape)) @ W
  x = jax.random.uniform(jax.random.key(23), (4, 5))
  key = jax.random.key(24)
  f = attacks.eot_logits_fn(model, num_samples=8, key=key, resample='fixed')
  manual = jnp.mean(jnp.stack([model(x, k) for k in jax.random.split(key, 8)]), 0)
  np.testing.assert_allclose(f(x), manual, atol=1e-5)
  np.testing.assert_allclose(f(x), f(x + 0.1) - 0.1 * jnp.sum(W, 0), atol=1e-5)
  g = attacks.eot_logits_fn(model, num_samples=8, key=key)      # per-input draws
  np.testing.assert_allclose(g(x), g(x))                          # pure
  np.testing.assert_allclose(jax.jit(g)(x), g(x), atol=1e-5)
  assert not np.allclose(g(x), g(x + 0.1) - 0.1 * jnp.sum(W, 0), atol=1e-5)
  p = attacks.eot_logits_fn(model, num_samples=8, key=key, average='probs', resample='fixed')
  np.testing.assert_allclose(jnp.exp(p(x)), jnp.mean(jnp.stack(
      [jax.nn.softmax(model(x, k)) for k in jax.random.split(key, 8)]), 0), atol=1e-5)
  with pytest.raises(ValueError, match='num_samples'):
    attacks.eot_logits_fn(model, num_samples=0, key=key)
  with pytest.raises(ValueError, match='average'):
    attacks.eot_logits_fn(model, num_samples=2, key=key, average='median')


def test_eot_fgsm_against_random_input_dropout_is_the_expected_gradient_sign():
  # Defence: each input coordinate is dropped with probability 1/2. One sample's gradient
  # is zero on the dropped coordinates; the EOT gradient (64 draws) is the expected one,
  # diag(E m) (w_1 - w_0) for this two-class linear model, whose sign is that of w_1 - w_0.
  W = jnp.array([[1.0, -1.0], [-2.0, 0.5], [0.3, 0.9], [0.2, -0.4], [-1.0, 0.7]])
  logits_fn = lambda x: x @ W
  transform = lambda x, k: x * jax.random.bernoulli(k, 0.5, x.shape)
  x = jnp.full((2, 5), 0.5)
  y = jnp.zeros(2, jnp.int32)
  expected = 0.5 + 0.1 * np.sign(W[:, 1] - W[:, 0])[None].repeat(2, 0)
  atk = attacks.eot(attacks.fgsm(eps=0.1), transform, num_samples=64)
  np.testing.assert_allclose(atk(logits_fn, x, y, KEY).x_adv, expected, atol=1e-6)
  one = attacks.eot(attacks.fgsm(eps=0.1), transform, num_samples=1)(logits_fn, x, y, KEY).x_adv
  assert float(jnp.sum(one == 0.5)) > 0                    # some coordinates never moved
  # The same with the randomised model given as (x, key) -> logits, under jit.
  model = lambda x, k: logits_fn(transform(x, k))
  atk2 = attacks.eot(attacks.pgd(eps=0.1, num_steps=3, random_start=False), num_samples=64)
  out = jax.jit(atk2, static_argnums=0)(model, x, y, KEY).x_adv
  np.testing.assert_allclose(out, expected, atol=1e-6)
