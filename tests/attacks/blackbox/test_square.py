"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black box, L_inf and L2."""
from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks import blackbox
from jaxsec.attacks.evasion import common

# The package re-exports the factory under the module's name: fetch the module itself.
sq_lib = importlib.import_module('jaxsec.attacks.blackbox.square')

KEY = jax.random.key(0)


def _linear(d, k, seed=0, bias=None):
  w = jax.random.normal(jax.random.key(seed), (d, k)) / math.sqrt(d)
  b = jnp.zeros(k) if bias is None else bias
  return lambda x: x.reshape((x.shape[0], -1)) @ w + b


def _dist(a, b, p):
  return np.asarray(common.norm(jnp.asarray(a) - jnp.asarray(b), p))


def _jit(atk):
  return jax.jit(atk, static_argnums=0)


# --------------------------------------------------------------------------- hand values


def test_p_schedule_follows_the_official_code():
  p = lambda i, n=5000: sq_lib.p_selection(0.8, i, n)
  # it = int(i / n * 10000): i = 5 -> 10 keeps p_init, i = 6 -> 12 halves it.
  assert p(0) == p(5) == 0.8
  assert p(6) == p(25) == 0.4
  assert p(26) == 0.2 and p(100) == 0.2 and p(101) == 0.1
  assert p(4999) == 0.8 / 512 and p(4001) == 0.8 / 512 and p(4000) == 0.8 / 256
  # Rescaled to the budget: with 1000 queries the first halving is after iteration 1.
  assert p(1, 1000) == 0.8 and p(2, 1000) == 0.4
  np.testing.assert_array_equal(sq_lib._schedule(0.8, 8, 5000), [0] * 6 + [1] * 2)


def test_window_sides_on_28x28_and_flat():
  ps = [0.8 / 2 ** j for j in range(10)]
  # round(sqrt(p * 784)): 25.04, 17.7, 12.5, 8.85, 6.26, 4.43, 3.13, 2.21, 1.57, 1.11.
  assert [sq_lib._linf_window(p, 28, 28)[0] for p in ps] == [25, 18, 13, 9, 6, 4, 3, 2, 2, 1]
  # L2: at least 3, odd.
  assert [sq_lib._l2_window(p, 28, 28)[0] for p in ps] == [25, 19, 13, 9, 7, 5, 3, 3, 3, 3]
  assert sq_lib._linf_window(1.0, 28, 28) == (27, 27)       # at most H - 1
  assert sq_lib._l2_window(1.0, 4, 4) == (4, 4)             # capped at the image
  # Flat [B, D] = one row: a segment holding the fraction p of the features.
  assert sq_lib._linf_window(0.5, 1, 40) == (1, 20)
  assert sq_lib._linf_window(1.0, 1, 40) == (1, 39)
  assert sq_lib._l2_window(0.5, 1, 40) == (1, 21)


def test_l2_initial_tiles():
  # 28x28: 5x5 tiles of side 28 // 5 = 5, centred at offset (28 - 25) // 2 = 1.
  tile, p0, p1, n = sq_lib._l2_init_tables(28, 28)
  assert n == 25
  assert (tile[0] == -1).all() and (tile[:, 0] == -1).all() and (tile[26:] == -1).all()
  assert tile[1, 1] == 0 and tile[5, 5] == 0 and tile[6, 1] == 5 and tile[25, 25] == 24
  np.testing.assert_allclose(p0[1:6, 1:6], sq_lib.meta_pattern(5, 5))
  np.testing.assert_allclose(p1[1:6, 1:6], sq_lib.meta_pattern(5, 5).T)
  # A flat vector of 40 features: 5 segments of 8.
  tile, p0, p1, n = sq_lib._l2_init_tables(1, 40)
  assert n == 5 and (tile[0] == np.repeat(np.arange(5), 8)).all()
  np.testing.assert_allclose(p0[0, :8], sq_lib.meta_pattern(1, 8)[0])


def test_pseudo_gaussian_patterns_by_hand():
  # 3x3: the centre gets 1 + 1/4, the ring 1/4; unit norm.
  g = sq_lib.pseudo_gaussian_rect(3, 3)
  raw = np.full((3, 3), 0.25)
  raw[1, 1] = 1.25
  np.testing.assert_allclose(g, raw / np.sqrt(np.sum(raw ** 2)))
  m = sq_lib.meta_pattern(5, 5)
  np.testing.assert_allclose(np.sum(m ** 2), 1.0)
  assert (m[:2] > 0).all() and (m[2:] < 0).all()            # two lobes, opposite signs
  # Each lobe is a unit-norm rectangle pattern, so the two halves are scaled by 1/sqrt(2).
  np.testing.assert_allclose(m[:2], sq_lib.pseudo_gaussian_rect(2, 5) / np.sqrt(2))
  np.testing.assert_allclose(m[2:], -sq_lib.pseudo_gaussian_rect(3, 5) / np.sqrt(2))
  r = sq_lib.meta_pattern(1, 6)                            # 1-D: left / right halves
  assert (r[0, :3] > 0).all() and (r[0, 3:] < 0).all()
  np.testing.assert_allclose(r[0, :3], -r[0, 3:])


def _official_l2_step(x, x_best, eps, r1, c1, r2, c2, s, pattern, signs, lo, hi):
  """A NumPy transcription of one iteration of the official ``square_attack_l2`` for one
  NHWC example, with the windows, pattern and signs given."""
  x, x_best = np.asarray(x, np.float64), np.asarray(x_best, np.float64)
  c = x.shape[-1]
  delta = x_best - x
  m1 = np.zeros(x.shape)
  m1[r1:r1 + s, c1:c1 + s] = 1.0
  m2 = np.zeros(x.shape)
  m2[r2:r2 + s, c2:c2 + s] = 1.0
  curr_norms_window = np.sqrt(np.sum((delta * m1) ** 2, axis=(0, 1), keepdims=True))
  curr_norms_image = np.sqrt(np.sum(delta ** 2))
  norms_windows = np.sqrt(np.sum((delta * np.maximum(m1, m2)) ** 2, axis=(0, 1),
                                 keepdims=True))
  new = np.ones((s, s, c)) * pattern[:, :, None] * signs[None, None, :]
  new += delta[r1:r1 + s, c1:c1 + s] / (1e-10 + curr_norms_window)
  new = new / np.sqrt(np.sum(new ** 2, axis=(0, 1), keepdims=True)) * (
      np.maximum(eps ** 2 - curr_norms_image ** 2, 0) / c + norms_windows ** 2) ** 0.5
  delta[r2:r2 + s, c2:c2 + s] = 0.0
  delta[r1:r1 + s, c1:c1 + s] = new
  return np.clip(x + delta / np.sqrt(np.sum(delta ** 2)) * eps, lo, hi)


@pytest.mark.parametrize('transpose', [False, True])
def test_l2_update_matches_the_official_step(transpose):
  h = w = 10
  ks = jax.random.split(jax.random.key(5), 3)
  x = jax.random.uniform(ks[0], (h, w, 3), minval=-1.0, maxval=2.0)
  eps = 2.0
  x_best = jnp.clip(x + 0.3 * jax.random.normal(ks[1], x.shape), -1.0, 2.0)
  windows = [sq_lib._l2_window(0.3 / 2 ** j, h, w) for j in range(10)]
  pats, pats_t = sq_lib._l2_pattern_tables(windows, h)
  k = 1
  s = windows[k][0]
  assert s == 5
  sign = jnp.array([1.0, -1.0, -1.0])
  got = jax.jit(sq_lib._l2_update, static_argnums=(6, 7, 12))(
      x, x_best, 2, 4, 5, 1, s, s, jnp.asarray(transpose), sign, k, jnp.float32(eps),
      (-1.0, 2.0), jnp.asarray(pats), jnp.asarray(pats_t))
  pattern = sq_lib.meta_pattern(s, s)
  want = _official_l2_step(x, x_best, eps, 2, 4, 5, 1, s,
                           pattern.T if transpose else pattern, np.asarray(sign), -1.0, 2.0)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_linf_proposal_changes_one_window_with_one_sign_per_channel():
  h, w, c = 7, 7, 2
  x = jax.random.uniform(jax.random.key(1), (h, w, c))
  x = x.at[0].set(0.0).at[-1].set(1.0)                      # rows at the bounds
  eps = 0.2
  words = jax.random.bits(jax.random.key(2), (w * c,), jnp.uint32)
  x_best = sq_lib._linf_init(words, x, eps, (0.0, 1.0))
  # Vertical stripes: +-eps, one sign per column and channel (before clipping).
  d = np.asarray(sq_lib._linf_init(words, jnp.full_like(x, 0.5), eps,
                                   (0.0, 1.0))) - 0.5
  np.testing.assert_allclose(np.abs(d), eps, rtol=1e-5)
  assert (d == d[:1]).all() and len(np.unique(np.sign(d))) == 2
  sh_tab = jnp.full((10,), 3, jnp.int32)
  xp, xm = np.clip(np.asarray(x) + eps, 0, 1), np.clip(np.asarray(x) - eps, 0, 1)
  propose = jax.jit(jax.vmap(lambda k: sq_lib._linf_propose(k, x, x_best, 0, eps,
                                                            (0.0, 1.0), sh_tab, sh_tab)))
  news = np.asarray(propose(jax.random.bits(jax.random.key(100), (20, 2 + c), jnp.uint32)))
  for i, new in enumerate(news):
    diff = np.any(new != np.asarray(x_best), axis=-1)
    assert diff.any()                                         # the window always changes
    rows, cols = np.nonzero(diff)
    assert rows.max() - rows.min() < 3 and cols.max() - cols.min() < 3
    for ch in range(c):                                       # one sign per channel
      sel = new[rows.min():rows.min() + 1, cols.min():cols.min() + 1, ch]
      is_p = np.allclose(new[..., ch][diff], xp[..., ch][diff])
      is_m = np.allclose(new[..., ch][diff], xm[..., ch][diff])
      assert is_p or is_m, (i, ch, sel)
    assert np.abs(new - np.asarray(x)).max() <= eps + 1e-6


# --------------------------------------------------------------------------- guarantees


@pytest.mark.parametrize('norm,eps,bounds,shape', [
    ('linf', 0.4, (0.0, 1.0), (6, 24)),
    ('l2', 3.0, (-1.0, 2.0), (6, 24)),
    ('linf', 0.4, (-1.0, 2.0), (6, 6, 5, 3)),
    ('l2', 3.0, (-1.0, 2.0), (6, 9, 1)),                      # W = 1: handled as a row
])
def test_stays_in_ball_and_bounds(norm, eps, bounds, shape):
  lo, hi = bounds
  x = jax.random.uniform(jax.random.key(3), shape, minval=lo, maxval=hi)
  x = x.at[0].set(lo).at[1].set(hi)                           # whole examples at a bound
  d = math.prod(shape[1:])
  f = _linear(d, 4, seed=1)
  y = common.predict(f(x))
  out = _jit(blackbox.square(eps=eps, norm=norm, num_queries=40, bounds=bounds))(f, x, y, KEY)
  assert out.x_adv.shape == x.shape and out.x_adv.dtype == x.dtype
  assert float(_dist(out.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi
  assert (np.asarray(out.x_adv) != np.asarray(x)).any()      # it did perturb
  np.testing.assert_array_equal(out.info['success'], common.predict(f(out.x_adv)) != y)


def _recording(f, log):
  """``f`` that appends the scores of every call (in call order) to ``log``."""
  def q(x):
    z = f(x)
    jax.debug.callback(lambda a: log.append(np.asarray(a)), z, ordered=True)
    return z
  return q


@pytest.mark.parametrize('norm,eps', [('linf', 0.15), ('l2', 0.6)])
def test_queries_counted_per_example_and_best_point_kept(norm, eps):
  d, budget = 16, 60
  f = _linear(d, 3, seed=2)
  x = jax.random.uniform(jax.random.key(4), (8, d))
  pred = common.predict(f(x))
  y = pred.at[0].set((pred[0] + 1) % 3)                       # example 0: already wrong
  log = []
  atk = blackbox.square(eps=eps, norm=norm, num_queries=budget)
  out = _jit(atk)(_recording(f, log), x, y, KEY)
  jax.effects_barrier()
  scores = np.stack(log)                                      # [calls, B, 3]
  assert 2 <= scores.shape[0] <= budget
  q = np.asarray(out.info['queries'])
  assert q.dtype == np.int32 and q.max() <= budget and q[0] == 1
  np.testing.assert_array_equal(out.x_adv[0], x[0])          # returned unchanged
  margins = np.asarray(jax.vmap(lambda z: common.margin(z, y))(jnp.asarray(scores)))
  fooled = margins < 0                                        # [calls, B]
  for i in range(1, 8):
    first = np.argmax(fooled[1:, i]) + 1 if fooled[1:, i].any() else None
    # Queries stop right after the first successful proposal (margin loss: a successful
    # proposal is always an improvement), else the whole budget is spent.
    assert q[i] == (first + 1 if first is not None else budget), (i, q[i], first)
    # The returned point is the best one among all proposals the example paid for.
    np.testing.assert_allclose(out.info['loss'][i], margins[1:q[i], i].min(), rtol=1e-6)
    np.testing.assert_allclose(common.margin(f(out.x_adv[i:i + 1]), y[i:i + 1])[0],
                               out.info['loss'][i], rtol=1e-5, atol=1e-6)
  assert (q[1:] < budget).any() and (q[1:] > 2).any()       # the test sees both regimes


@pytest.mark.parametrize('norm,eps', [('linf', 0.2), ('l2', 1.0)])
def test_loss_of_current_point_never_increases(norm, eps):
  f = _linear(5 * 5 * 2, 4, seed=3)
  x = jax.random.uniform(jax.random.key(6), (5, 5, 5, 2))
  y = common.predict(f(x))
  x_adv, succ, q, loss, hist = jax.jit(
      lambda x, y: sq_lib.run_square(f, x, y, KEY, eps=eps, norm=norm, num_queries=80,
                                     p_init=0.5, targeted=False, loss='margin',
                                     bounds=(0.0, 1.0), history=True))(x, y)
  assert hist.shape == (79,) + x.shape
  # The loss of the current point, recomputed from the points themselves.
  losses = np.asarray(jax.jit(jax.vmap(lambda h: common.margin(f(h), y)))(hist))  # [T, B]
  steps = np.diff(losses, axis=0)
  assert (steps <= 1e-6).all(), steps.max()
  moved = np.any(np.diff(np.asarray(hist).reshape(79, 5, -1), axis=0) != 0, axis=-1)
  assert (steps[moved] < 0).all()                             # moves only when it improves
  assert moved.sum() >= 5                                     # and it does move
  # Once an example is fooled it is never updated again.
  for i in range(5):
    done = np.nonzero(losses[:, i] < 0)[0]
    if done.size:
      assert not moved[done[0]:, i].any()
  for h in hist:
    assert float(_dist(h, x, norm).max()) <= eps * (1 + 1e-5)
  np.testing.assert_array_equal(x_adv, hist[-1])
  np.testing.assert_allclose(loss, losses[-1], rtol=1e-5, atol=1e-6)


def test_never_fooled_model():
  f = lambda x: jnp.zeros((x.shape[0], 3)).at[:, 1].set(5.0) + 0.01 * jnp.tanh(
      x.reshape((x.shape[0], -1))[:, :3])
  x = jax.random.uniform(jax.random.key(7), (4, 6, 6, 1))
  y = jnp.ones(4, jnp.int32)
  for norm, eps in (('linf', 0.3), ('l2', 2.0)):
    out = _jit(blackbox.square(eps=eps, norm=norm, num_queries=30))(
        f, x, y, KEY)
    assert not out.info['success'].any()
    np.testing.assert_array_equal(out.info['queries'], 30)
    assert float(_dist(out.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert 0.0 <= float(out.x_adv.min()) and float(out.x_adv.max()) <= 1.0


@pytest.fixture(scope='module')
def digits_linear():
  """Softmax regression on sklearn digits as 8x8x1 images in [0, 1] (~95% accuracy)."""
  from sklearn.datasets import load_digits
  d = load_digits()
  x = jnp.asarray(d.data.reshape(-1, 8, 8, 1) / 16.0, jnp.float32)
  y = jnp.asarray(d.target, jnp.int32)
  f = lambda p, x: x.reshape((x.shape[0], -1)) @ p[0] + p[1]
  p = (jnp.zeros((64, 10)), jnp.zeros(10))
  g = jax.jit(jax.grad(lambda p: common.cross_entropy(f(p, x[:1500]), y[:1500]).mean()))
  for _ in range(200):
    p = jax.tree.map(lambda a, b: a - 2.0 * b, p, g(p))
  fn = lambda x: f(p, x)
  xt, yt = x[1500:1564], y[1500:1564]
  assert float(jnp.mean(common.predict(fn(xt)) == yt)) > 0.85
  return fn, xt, yt


_DIGITS_ATTACKS = {
    'linf': _jit(blackbox.square(eps=0.3, norm='linf', num_queries=300)),
    'l2': _jit(blackbox.square(eps=3.0, norm='l2', num_queries=300))}


@pytest.mark.parametrize('norm,eps', [('linf', 0.3), ('l2', 3.0)])
def test_high_success_at_large_eps_jitted(digits_linear, norm, eps):
  f, x, y = digits_linear
  out = _DIGITS_ATTACKS[norm](f, x, y, KEY)
  clean_ok = np.asarray(common.predict(f(x)) == y)
  succ = np.asarray(out.info['success'])
  assert succ[clean_ok].mean() >= 0.9, succ[clean_ok].mean()
  assert float(_dist(out.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
  # Successful examples stop early: the mean cost is well below the budget.
  assert np.asarray(out.info['queries'])[succ].mean() < 150


def test_example_result_does_not_depend_on_the_batch(digits_linear):
  f, x, y = digits_linear
  atk = _DIGITS_ATTACKS['l2']
  full = atk(f, x, y, KEY)                                  # compiled for the test above
  part = atk(f, x[:5], y[:5], KEY)
  # Same draws, same decisions (float rounding of the batched norms may differ by an ulp).
  np.testing.assert_allclose(full.x_adv[:5], part.x_adv, atol=1e-6)
  np.testing.assert_array_equal(full.info['queries'][:5], part.info['queries'])


@pytest.mark.parametrize('loss', ['ce', 'margin'])
def test_targeted_reaches_target(loss):
  f = _linear(32, 5, seed=8)
  x = jax.random.uniform(jax.random.key(9), (10, 32), minval=-1.0, maxval=1.0)
  t = (common.predict(f(x)) + 1 + jnp.arange(10) % 4) % 5
  out = _jit(blackbox.square(eps=1.0, num_queries=200, targeted=True, loss=loss,
                             bounds=(-1.0, 1.0)))(f, x, t, KEY)
  np.testing.assert_array_equal(common.predict(f(out.x_adv)), t)
  assert out.info['success'].all()
  assert float(jnp.abs(out.x_adv - x).max()) <= 1.0 + 1e-6


def test_vmap_over_eps():
  f = _linear(20, 3, seed=10)
  x = jax.random.uniform(jax.random.key(11), (6, 20))
  y = common.predict(f(x))
  eps = jnp.array([0.0, 0.05, 0.3])
  xa = jax.jit(jax.vmap(lambda e: blackbox.square(eps=e, norm='l2', num_queries=20)(
      f, x, y, KEY).x_adv))(eps)
  np.testing.assert_array_equal(xa[0], x)                      # eps = 0: nothing moves
  for i, e in enumerate(np.asarray(eps)):
    assert float(_dist(xa[i], x, 'l2').max()) <= e * (1 + 1e-5) + 1e-7
  single = _jit(blackbox.square(eps=0.3, norm='l2', num_queries=20))(f, x, y, KEY).x_adv
  np.testing.assert_allclose(xa[2], single, atol=1e-6)


@pytest.mark.parametrize('kw,name', [
    (dict(eps=-0.1), 'eps'),
    (dict(eps=0.1, norm='l1'), 'norm'),
    (dict(eps=0.1, num_queries=0), 'num_queries'),
    (dict(eps=0.1, num_queries=2.5), 'num_queries'),
    (dict(eps=0.1, p_init=0.0), 'p_init'),
    (dict(eps=0.1, p_init=1.5), 'p_init'),
    (dict(eps=0.1, loss='dlr'), 'loss'),
    (dict(eps=0.1, targeted='yes'), 'targeted'),
    (dict(eps=0.1, bounds=(1.0, 0.0)), 'bounds'),
])
def test_bad_hyperparameters(kw, name):
  with pytest.raises(ValueError, match=name):
    blackbox.square(**kw)


def test_bad_inputs():
  atk = blackbox.square(eps=0.1)
  f = lambda x: jnp.zeros((x.shape[0], 2))
  with pytest.raises(ValueError, match=r'\(2, 1, 2, 2, 2\)'):
    atk(f, jnp.zeros((2, 1, 2, 2, 2)), jnp.zeros(2, jnp.int32), KEY)
  with pytest.raises(ValueError, match='outside bounds'):
    atk(f, jnp.full((2, 4), 3.0), jnp.zeros(2, jnp.int32), KEY)


# --------------------------------------------------------------------------- AutoAttack


def test_autoattack_standard_has_square():
  assert attacks.auto_attack_stage_names(num_classes=10) == [
      'apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert 'square' not in attacks.auto_attack_stage_names(num_classes=10, version='jaxsec-fast')


def test_run_auto_attack_square_catches_gradient_masking():
  # Zero gradients (stop_gradient on the input): the gradient stages only ever try their
  # random start, Square's random search still finds the worst-case corner.
  d = 64
  w = jax.random.normal(jax.random.key(12), (d, 4))
  f = lambda x: jax.lax.stop_gradient(x) @ w
  x = jax.random.uniform(jax.random.key(13), (24, d), minval=0.3, maxval=0.7)
  y = common.predict(f(x))
  with pytest.warns(UserWarning, match='Square Attack has decreased'):
    res = attacks.run_auto_attack(f, x, y, KEY, eps=0.08, norm='linf', batch_size=32)
  names = [s['name'] for s in res['stages']]
  assert names == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  # The official checks flag it: all-zero gradients and a Square-only robustness drop.
  assert res['checks']['zero_gradients'] == len(y) and res['checks']['square_only']
  acc = [s['robust_accuracy'] for s in res['stages']]
  assert acc[2] >= 0.5, acc                                   # gradients are useless here
  assert acc[3] <= 0.5 * acc[2], acc                          # Square is not
  assert res['stages'][3]['attacked'] == round(acc[2] * len(y))
  assert res['robust_accuracy'] == pytest.approx(acc[3])
  assert float(np.abs(res['x_adv'] - np.asarray(x)).max()) <= 0.08 + 1e-6
