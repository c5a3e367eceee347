"""HopSkipJumpAttack (Chen, Jordan & Wainwright, S&P 2020): decision-based, L2 and L_inf."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import blackbox
from jaxsec.attacks.evasion import common

hsja_lib = importlib.import_module('jaxsec.attacks.blackbox.hopskipjump')

D = 16
W = np.asarray(jax.random.normal(jax.random.key(7), (D,)), np.float32)
B0 = 0.25
BOX = (-3.0, 3.0)


def _labels(x):
  """A linear binary classifier, labels only: class 1 iff w.x + b > 0."""
  return (x.reshape((x.shape[0], -1)) @ W + B0 > 0).astype(jnp.int32)


def _margin(x):
  return np.asarray(x).reshape((x.shape[0], -1)) @ W + B0


def _points(n, seed):
  return jax.random.uniform(jax.random.key(seed), (n, D), minval=-0.6, maxval=0.6)


_CACHE = {}


def _l2_attack():
  """One compiled L2 attack shared by the tests below (compiling HSJA takes seconds)."""
  if 'l2' not in _CACHE:
    atk = blackbox.hop_skip_jump(norm='l2', num_iterations=200, max_queries=3000,
                                 bounds=BOX)
    _CACHE['l2'] = jax.jit(lambda x, y, k: atk(_labels, x, y, k))
  return _CACHE['l2']


# --------------------------------------------------------------------------- pieces


def test_schedules_and_threshold_follow_the_paper():
  # B_t = int(B0 sqrt(t)) capped at B_max; theta = gamma / d^{3/2} (L2), gamma / d^2 (Linf).
  np.testing.assert_array_equal(hsja_lib.num_evals_schedule(100, 250, 8),
                                [100, 141, 173, 200, 223, 244, 250, 250])
  assert hsja_lib.theta_of(784, 'l2', 1.0) == pytest.approx(784 ** -1.5)
  assert hsja_lib.theta_of(784, 'linf', 2.0) == pytest.approx(2.0 / 784 ** 2)


@pytest.mark.parametrize('norm', ['l2', 'linf'])
def test_binary_search_returns_a_boundary_point_within_tolerance(norm):
  x = _points(6, 1)
  m = _margin(x)
  y = (m > 0).astype(np.int32)
  # x_tilde: x pushed across the hyperplane along -sign(m) w (adversarial for every row).
  x_tilde = x - jnp.asarray(np.sign(m) * 2.0 * np.abs(m) / (W @ W))[:, None] * W
  phi = hsja_lib._Phi(_labels, jnp.asarray(y), False)
  assert phi.one(x_tilde).all() and not phi.one(x).any()
  theta = 1e-4
  q0 = jnp.zeros((6,), jnp.int32)
  active = jnp.array([True] * 5 + [False])
  x_b, q = jax.jit(lambda a, b: hsja_lib.binary_search(
      phi, a, b, active, q0, jnp.int32(10 ** 6), norm=norm, theta=theta))(x, x_tilde)
  x_b, q = np.asarray(x_b), np.asarray(q)
  assert phi.one(jnp.asarray(x_b))[:5].all()                # still adversarial
  np.testing.assert_array_equal(x_b[5], np.asarray(x_tilde)[5])   # inactive: untouched
  assert q[5] == 0 and (q[:5] > 0).all()
  if norm == 'l2':
    # The segment parameter a* of the boundary is m / (m - m~); the search stops within
    # theta of it, on the adversarial side.
    m_t = _margin(x_tilde)
    a_star = m / (m - m_t)
    a = np.linalg.norm(x_b - np.asarray(x), axis=1) / np.linalg.norm(
        np.asarray(x_tilde - x), axis=1)
    assert (a[:5] >= a_star[:5] - 1e-6).all() and (a[:5] - a_star[:5] <= theta).all()
    assert (q[:5] == int(np.ceil(np.log2(1 / theta)))).all()  # halvings of [0, 1]
  else:
    # L_inf: clip(x~, x - r, x + r); the radius found is within the stopping tolerance
    # min(theta ||x~ - x||_inf, theta) of the smallest adversarial radius (bisection on the
    # piecewise-linear margin along r).
    r_tilde = np.abs(np.asarray(x_tilde - x)).max(1)
    r = np.abs(x_b - np.asarray(x)).max(1)
    tol = np.minimum(theta * r_tilde, theta)
    xt = np.asarray(x_tilde)
    for i in range(5):
      rs = np.linspace(0, r_tilde[i], 200001)
      pts = np.clip(xt[i], np.asarray(x)[i] - rs[:, None], np.asarray(x)[i] + rs[:, None])
      adv = (pts @ W + B0 > 0) != y[i]
      r_star = rs[np.argmax(adv)]
      assert r_star - r_tilde[i] / 2e5 <= r[i] <= r_star + tol[i] + r_tilde[i] / 2e5


def test_gradient_estimate_points_along_the_normal_on_a_linear_boundary():
  x = _points(3, 2)
  m = _margin(x)
  y = (m > 0).astype(np.int32)
  x_b = x - jnp.asarray(m / (W @ W))[:, None] * W               # on the hyperplane
  phi = hsja_lib._Phi(_labels, jnp.asarray(y), False)
  keys = jax.random.split(jax.random.key(3), 3)
  n_used = jnp.array([2000, 2000, 0])
  g = hsja_lib.estimate_direction(
      phi, lambda c: jax.vmap(lambda k: jax.random.fold_in(k, c))(keys), x_b, n_used,
      jnp.full((3,), 0.01), norm='l2', bounds=BOX, eval_batch=500)
  g = np.asarray(g)
  # The adversarial side of row i is -sign(m_i) w: the estimate points there.
  want = -np.sign(m)[:, None] * W / np.linalg.norm(W)
  cos = np.sum(g[:2] * want[:2], axis=1)
  assert (cos > 0.85).all(), cos
  np.testing.assert_allclose(np.linalg.norm(g[:2], axis=1), 1.0, rtol=1e-5)
  assert (g[2] == 0).all()                                       # no samples: no estimate


# --------------------------------------------------------------------------- the attack


def test_l2_converges_to_the_exact_distance_within_budget_and_bounds():
  x = _points(6, 4)
  m = _margin(x)
  y = (m > 0).astype(np.int32)
  y[5] = 1 - y[5]                               # row 5 is already misclassified
  out = _l2_attack()(x, jnp.asarray(y), jax.random.key(0))
  x_adv, info = np.asarray(out.x_adv), {k: np.asarray(v) for k, v in out.info.items()}
  exact = np.abs(m) / np.linalg.norm(W)          # minimal L2 distance to the hyperplane
  dist = np.linalg.norm(x_adv - np.asarray(x), axis=1)
  assert info['success'].all()
  assert (np.asarray(_labels(jnp.asarray(x_adv)))[:5] != y[:5]).all()   # adversarial
  assert (dist[:5] >= exact[:5] * (1 - 1e-4)).all()        # nothing beats the projection
  assert (dist[:5] <= exact[:5] * 1.02).all(), dist[:5] / exact[:5]
  np.testing.assert_allclose(info['distance'], dist, rtol=1e-5, atol=1e-6)
  assert x_adv.min() >= BOX[0] and x_adv.max() <= BOX[1]
  # Budget: spent exactly by every attacked row, never exceeded; row 5 used one query.
  assert (info["queries"][:5] == 3000).all() and info['queries'][5] == 1
  np.testing.assert_array_equal(x_adv[5], np.asarray(x)[5])
  assert dist[5] == 0 and info['iterations'][5] == 0 and (info['iterations'][:5] > 5).all()


def test_an_example_does_not_depend_on_the_rest_of_the_batch():
  x = _points(6, 4)
  y = jnp.asarray((_margin(x) > 0).astype(np.int32))
  x2 = x.at[1:].set(_points(5, 9))
  y2 = y.at[1:].set(jnp.asarray((_margin(x2[1:]) > 0).astype(np.int32)))
  a = _l2_attack()(x, y, jax.random.key(0))
  b = _l2_attack()(x2, y2, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(a.x_adv)[0], np.asarray(b.x_adv)[0])
  assert int(a.info['queries'][0]) == int(b.info['queries'][0])


def test_linf_converges_and_counts_every_query_it_sends():
  # One example, one random vector per query batch: then every input the attack sends is
  # a counted query, so the number of rows seen by the model must equal info['queries'].
  rows = []

  def counted(x):
    jax.debug.callback(lambda n: rows.append(int(n)), x.shape[0], ordered=True)
    return _labels(x)

  x = _points(1, 5)
  m = _margin(x)
  y = jnp.asarray((m > 0).astype(np.int32))
  atk = blackbox.hop_skip_jump(norm='linf', num_iterations=100, max_queries=1237,
                               eval_batch=1, bounds=BOX)
  out = jax.jit(lambda a, b, k: atk(counted, a, b, k))(x, y, jax.random.key(1))
  jax.effects_barrier()
  q = int(out.info['queries'][0])
  assert q == 1237 and sum(rows) == q
  exact = np.abs(m) / np.abs(W).sum()             # minimal L_inf distance to the hyperplane
  d = np.abs(np.asarray(out.x_adv - x)).max()
  assert bool(out.info['success'][0]) and int(_labels(out.x_adv)[0]) != int(y[0])
  assert exact[0] * (1 - 1e-4) <= d <= exact[0] * 1.15, d / exact[0]


def test_targeted_reaches_the_target_and_fails_cleanly_without_a_start():
  # Three classes; class 2 never wins inside the box (bias -100).
  wk = np.asarray(jax.random.normal(jax.random.key(11), (D, 3)), np.float32)
  bk = np.array([0.0, 0.0, -100.0], np.float32)
  scores = lambda x: x.reshape((x.shape[0], -1)) @ wk + bk      # scores are reduced to labels
  x = _points(3, 6)
  pred = np.argmax(np.asarray(scores(x)), 1)
  target = np.array([1 - pred[0], 1 - pred[1], 2], np.int32)
  # Starting points: random points of the box classified as the targets (none for 2).
  pool = np.asarray(jax.random.uniform(jax.random.key(12), (4000, D), minval=-3, maxval=3))
  pool_lab = np.argmax(pool @ wk + bk, 1)
  start = np.stack([pool[np.argmax(pool_lab == t)] for t in target[:2]] + [pool[0]])
  atk = blackbox.hop_skip_jump(norm='l2', targeted=True, num_iterations=30,
                               max_queries=1500, init_num_tries=20, bounds=BOX)
  out = jax.jit(lambda a, b, s, k: atk(scores, a, b, k, starting_points=s))(
      x, jnp.asarray(target), jnp.asarray(start), jax.random.key(2))
  lab = np.argmax(np.asarray(scores(out.x_adv)), 1)
  succ = np.asarray(out.info['success'])
  assert succ[:2].all() and (lab[:2] == target[:2]).all()
  d_start = np.linalg.norm(start - np.asarray(x), axis=1)
  d = np.linalg.norm(np.asarray(out.x_adv - x), axis=1)
  assert (d[:2] < 0.5 * d_start[:2]).all(), d[:2] / d_start[:2]
  # Unreachable target: start rejected, noise never hits it, example returned unchanged.
  assert not succ[2]
  np.testing.assert_array_equal(np.asarray(out.x_adv)[2], np.asarray(x)[2])
  assert int(out.info['queries'][2]) == 1 + 1 + 20               # clean, start, 20 draws
  assert (np.asarray(out.info['queries']) <= 1500).all()


# --------------------------------------------------------------------------- checks


@pytest.mark.parametrize('kwargs,message', [
    ({'norm': 'l1'}, "norm='l1'"),
    ({'max_queries': 0}, 'max_queries=0'),
    ({'max_queries': 2.5}, 'max_queries=2.5'),
    ({'num_iterations': -1}, 'num_iterations=-1'),
    ({'init_num_evals': 0}, 'init_num_evals=0'),
    ({'max_num_evals': 0}, 'max_num_evals=0'),
    ({'gamma': 0.0}, 'gamma=0.0'),
    ({'init_num_tries': -2}, 'init_num_tries=-2'),
    ({'init_blend_tol': 2.0}, 'init_blend_tol=2.0'),
    ({'eval_batch': 0}, 'eval_batch=0'),
    ({'targeted': 1}, 'targeted=1'),
    ({'bounds': (1.0, 0.0)}, r'bounds=\(1.0, 0.0\)'),
])
def test_bad_hyperparameters_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    blackbox.hop_skip_jump(**kwargs)


def test_bad_calls_raise():
  x = _points(2, 1)
  y = jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match='starting_points'):
    blackbox.hop_skip_jump(targeted=True, bounds=BOX)(_labels, x, y, jax.random.key(0))
  with pytest.raises(ValueError, match='starting_points'):
    blackbox.hop_skip_jump(bounds=BOX)(_labels, x, y, jax.random.key(0),
                                       starting_points=jnp.zeros((3, D)))
  with pytest.raises(ValueError, match='outside bounds'):
    blackbox.hop_skip_jump(bounds=(0.0, 0.5))(_labels, x + 1.0, y, jax.random.key(0))


def test_labels_of_accepts_labels_and_scores():
  np.testing.assert_array_equal(hsja_lib.labels_of(jnp.array([2, 0])), [2, 0])
  np.testing.assert_array_equal(hsja_lib.labels_of(jnp.array([[0.1, 0.9], [2.0, 1.0]])),
                                [1, 0])
  np.testing.assert_array_equal(hsja_lib.labels_of(jnp.array([[-1.0], [3.0]])), [0, 1])
  assert common.predict(jnp.array([[0.5]]))[0] == 1


# --------------------------------------------------------------------------- reference replay


def _np_net(d=8, c=3, seed=5):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(d, 12)), rng.normal(size=(12, c))


def _official_hsja_iterations(sample, x_tilde, model, draws, n_iter, theta, box):
  """numpy transcription of hsja.py (L2, untargeted, geometric progression): the initial
  binary_search_batch, then ``n_iter`` iterations of select_delta / approximate_gradient /
  geometric_progression_for_stepsize / clip / binary_search_batch, with the random vectors
  of approximate_gradient given (``draws[j]`` for iteration j + 1). Returns the boundary
  point after each iteration and the mean decision of each gradient estimate."""
  clip_min, clip_max = box
  d = sample.size
  label0 = np.argmax(model(sample[None]))
  decision = lambda im: np.argmax(model(np.clip(im, clip_min, clip_max)), axis=1) != label0

  def binary_search_batch(perturbed):
    dist_post = np.linalg.norm(sample - perturbed)
    highs, lows = np.ones(1), np.zeros(1)
    while np.max((highs - lows) / theta) > 1:
      mids = (highs + lows) / 2.0
      mid_images = (1 - mids[:, None]) * sample + mids[:, None] * perturbed
      dec = decision(mid_images)
      lows = np.where(dec == 0, mids, lows)
      highs = np.where(dec == 1, mids, highs)
    return (1 - highs[0]) * sample + highs[0] * perturbed, dist_post

  perturbed, dist_post_update = binary_search_batch(x_tilde)
  dist = np.linalg.norm(perturbed - sample)
  out, fmeans = [], []
  for j in range(n_iter):
    cur_iter = j + 1
    delta = (0.1 * (clip_max - clip_min) if cur_iter == 1
             else np.sqrt(d) * theta * dist_post_update)
    num_evals = int(min(int(100 * np.sqrt(j + 1)), 1e4))
    rv = draws[j][:num_evals]
    rv = rv / np.sqrt(np.sum(rv ** 2, axis=1, keepdims=True))
    pert = np.clip(perturbed + delta * rv, clip_min, clip_max)
    rv = (pert - perturbed) / delta
    fval = 2 * decision(pert).astype(float)[:, None] - 1.0
    fmeans.append(np.mean(fval))
    if np.mean(fval) == 1.0:
      gradf = np.mean(rv, axis=0)
    elif np.mean(fval) == -1.0:
      gradf = -np.mean(rv, axis=0)
    else:
      fval -= np.mean(fval)
      gradf = np.mean(fval * rv, axis=0)
    update = gradf / np.linalg.norm(gradf)
    epsilon = dist / np.sqrt(cur_iter)
    while not decision((perturbed + epsilon * update)[None])[0]:
      epsilon /= 2.0
    perturbed = np.clip(perturbed + epsilon * update, clip_min, clip_max)
    perturbed, dist_post_update = binary_search_batch(perturbed)
    dist = np.linalg.norm(perturbed - sample)
    out.append(perturbed)
  return out, fmeans


def test_hsja_iterations_replay_the_official_code():
  # Two HSJA iterations (gradient estimate with baseline subtraction, geometric step-size
  # search, binary search back to the boundary) from the same boundary point with the same
  # random vectors give the numpy transcription's points, in float64.
  w1, w2 = _np_net()
  model = lambda z: np.tanh(z @ w1) @ w2
  rng = np.random.default_rng(0)
  d, n_iter, box = 8, 2, (0.0, 1.0)
  theta = 1.0 / (np.sqrt(d) * d)
  sample = rng.uniform(0.3, 0.7, size=d)
  label0 = np.argmax(model(sample[None]))
  cand = rng.uniform(0, 1, size=(200, d))
  x_tilde = cand[np.argmax(np.argmax(model(cand), 1) != label0)]
  draws = rng.normal(size=(n_iter, 150, d))
  ref, fmeans = _official_hsja_iterations(sample, x_tilde, model, draws, n_iter, theta, box)
  # The probes are mixed and unbalanced, so the baseline changes the estimate.
  assert all(0.05 < abs(m) < 0.95 for m in fmeans), fmeans
  with jax.enable_x64(True):
    f = lambda z: jnp.tanh(z @ jnp.asarray(w1)) @ jnp.asarray(w2)
    x = jnp.asarray(sample)[None]
    y = jnp.asarray([label0], jnp.int32)
    phi = hsja_lib._Phi(f, y, False)
    q = jnp.zeros((1,), jnp.int32)
    big = jnp.asarray(10 ** 6, jnp.int32)
    on = jnp.ones((1,), bool)
    x_b, q = hsja_lib.binary_search(phi, x, jnp.asarray(x_tilde)[None], on, q, big,
                                    norm='l2', theta=theta)
    d_prev = float(np.linalg.norm(x_tilde - sample))
    for j in range(n_iter):
      t = j + 1
      delta = 0.1 * (box[1] - box[0]) if t == 1 else np.sqrt(d) * theta * d_prev
      n_used = jnp.asarray([int(100 * np.sqrt(t))], jnp.int32)
      grad = hsja_lib.estimate_direction(
          phi, None, x_b, n_used, jnp.asarray([delta]), norm='l2', bounds=box, eval_batch=50,
          draws=jnp.asarray(draws[j])[None])
      xi0 = hsja_lib.distance(x_b, x, 'l2') / np.sqrt(t)
      moved, x_t, q = hsja_lib.geometric_step(phi, x_b, grad, xi0, on, q, big, bounds=box)
      assert bool(moved[0])
      d_prev = float(hsja_lib.distance(x_t, x, 'l2')[0])
      x_b, q = hsja_lib.binary_search(phi, x, x_t, moved, q, big, norm='l2', theta=theta)
      np.testing.assert_allclose(np.asarray(x_b[0]), ref[j], atol=1e-10)


def test_gradient_estimate_subtracts_the_baseline():
  # Fixed probes with unbalanced decisions: the estimate is mean_b (phi_b - mean phi) u_b,
  # not mean_b phi_b u_b (which differs in direction whenever mean phi != 0).
  rng = np.random.default_rng(3)
  rv = rng.normal(size=(1, 40, D))
  x_b = jnp.zeros((1, D))
  y = jnp.asarray([int(_labels(x_b)[0])])
  phi = hsja_lib._Phi(_labels, y, False)
  delta = 0.5
  g = hsja_lib.estimate_direction(phi, None, x_b, jnp.asarray([40]), jnp.asarray([delta]),
                                  norm='l2', bounds=BOX, eval_batch=20,
                                  draws=jnp.asarray(rv, jnp.float32))
  u = rv[0] / np.linalg.norm(rv[0], axis=1, keepdims=True)
  fv = np.where(_margin(delta * u) > 0, 1.0, -1.0) * (1 if int(y[0]) == 0 else -1)
  assert 0.1 < abs(fv.mean()) < 0.9, fv.mean()
  want = np.mean((fv - fv.mean())[:, None] * u, axis=0)
  no_baseline = np.mean(fv[:, None] * u, axis=0)
  want, no_baseline = (v / np.linalg.norm(v) for v in (want, no_baseline))
  assert np.dot(want, no_baseline) < 0.999
  np.testing.assert_allclose(np.asarray(g[0]), want, atol=1e-5)
