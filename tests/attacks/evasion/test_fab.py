"""FAB and FAB-T (Croce & Hein, ICML 2020): exact projections, closed forms, MLP behaviour."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from jaxsec import attacks
from jaxsec.attacks.evasion import autoattack as aa_lib
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.autopgd import top_other_classes
from jaxsec.attacks.evasion.fab import project_hyperplane_box

KEY = jax.random.key(0)
NORMS = ('linf', 'l2', 'l1')
DUAL_ORD = {'linf': 1, 'l2': 2, 'l1': np.inf}


def _np_norm(d, norm):
  d = np.asarray(d, np.float64).reshape(len(d), -1)
  return {'linf': np.abs(d).max(1), 'l2': np.linalg.norm(d, axis=1),
          'l1': np.abs(d).sum(1)}[norm]


# --------------------------------------------------------------------------- projections


def _brute_force(t, w, b, norm, lo, hi):
  """min ||d||_p s.t. <w, t + d> = b, lo <= t + d <= hi; None if infeasible."""
  n = len(t)
  l, h, e = lo - t, hi - t, b - w @ t
  if norm == 'linf':     # variables (d, s): min s, -s <= d_i <= s
    a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
    res = linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * n),
                  A_eq=np.r_[w, 0.0][None], b_eq=[e],
                  bounds=[(l[i], h[i]) for i in range(n)] + [(0, None)], method='highs')
    return res.fun if res.status == 0 else None
  if norm == 'l1':       # d = p - m, p, m >= 0
    a_ub = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), np.eye(n)]])
    res = linprog(np.ones(2 * n), A_ub=a_ub, b_ub=np.r_[h, -l], A_eq=np.r_[w, -w][None],
                  b_eq=[e], bounds=[(0, None)] * (2 * n), method='highs')
    return res.fun if res.status == 0 else None
  # l2: the optimum is a KKT point; enumerate all active sets (free / at l / at h).
  best = None
  for act in itertools.product((0, 1, 2), repeat=n):
    act = np.array(act)
    d = np.where(act == 1, l, np.where(act == 2, h, 0.0))
    free = act == 0
    rem = e - w[~free] @ d[~free]
    wf = w[free]
    if wf @ wf < 1e-12:
      if abs(rem) > 1e-9:
        continue
    else:
      d[free] = rem / (wf @ wf) * wf
    if np.all(d >= l - 1e-9) and np.all(d <= h + 1e-9) and abs(w @ d - e) < 1e-8:
      v = np.linalg.norm(d)
      best = v if best is None or v < best else best
  return best


@pytest.mark.parametrize('norm', NORMS)
def test_projection_matches_brute_force(norm):
  rng = np.random.default_rng({'linf': 0, 'l2': 1, 'l1': 2}[norm])
  n, m = 5, 60
  proj = jax.jit(project_hyperplane_box, static_argnums=3)
  n_feasible = 0
  for lo, hi in ((0.0, 1.0), (-1.0, 2.5)):
    t = rng.uniform(lo, hi, (m, n))
    t[::4, 0] = lo                                 # points on the box faces
    t[1::4, 1] = hi
    w = rng.normal(size=(m, n))
    w[::3, 2] = 0.0                                # coordinates the plane ignores
    # b from a target point, half of them far outside the box (plane may miss the box)
    z = rng.uniform(lo - 0.3, hi + 0.3, (m, n)) * np.where(np.arange(m)[:, None] % 2, 1, 4)
    b = np.sum(w * z, 1)
    d = np.asarray(proj(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
                        jnp.asarray(b, jnp.float32), norm, lo, hi), np.float64)
    got = _np_norm(d, norm)
    assert np.all(t + d >= lo - 1e-5) and np.all(t + d <= hi + 1e-5)
    for i in range(m):
      ref = _brute_force(t[i], w[i], b[i], norm, lo, hi)
      if ref is not None:
        n_feasible += 1
        np.testing.assert_allclose(w[i] @ (t[i] + d[i]), b[i], atol=2e-4)
        np.testing.assert_allclose(got[i], ref, rtol=2e-4, atol=2e-5)
      else:
        # The plane misses the box: the corner closest to it (every w_i != 0 coordinate
        # at its bound towards the plane), as in the official code.
        s = np.sign(b[i] - w[i] @ t[i]) * np.sign(w[i])
        corner = np.where(s > 0, hi - t[i], np.where(s < 0, lo - t[i], 0.0))
        np.testing.assert_allclose(d[i], corner, atol=1e-5)
  assert 30 <= n_feasible < 2 * m                 # both cases were exercised


@pytest.mark.parametrize('norm', NORMS)
def test_projection_without_active_box_is_the_textbook_formula(norm):
  # Far from the faces the box is inactive: L2 -> e w / ||w||^2, L_inf -> e sign(w) /
  # ||w||_1, L1 -> e / w_k on the coordinate of largest |w_k|. Any input shape.
  w = jax.random.normal(jax.random.key(1), (3, 2, 3))
  t = jnp.zeros((3, 2, 3))
  e = jnp.array([0.1, -0.2, 0.0])
  d = project_hyperplane_box(t, w, e, norm, -100.0, 100.0)
  wf, df = np.asarray(w).reshape(3, -1), np.asarray(d).reshape(3, -1)
  ev = np.asarray(e)[:, None]
  if norm == 'l2':
    want = ev * wf / np.sum(wf ** 2, 1, keepdims=True)
  elif norm == 'linf':
    want = ev * np.sign(wf) / np.sum(np.abs(wf), 1, keepdims=True)
  else:
    k = np.argmax(np.abs(wf), 1)
    want = np.zeros_like(wf)
    want[np.arange(3), k] = ev[:, 0] / wf[np.arange(3), k]
  assert d.shape == t.shape
  np.testing.assert_allclose(df, want, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize('norm', NORMS)
def test_affine_multiclass_one_step_is_exact(norm):
  # On an affine 4-class model the boundaries are hyperplanes; from x the first FAB step
  # lands at eta times the exact minimal distance min_s (z_y - z_s) / ||W_y - W_s||_q, on
  # the nearest class's side. FAB-T with one target does the same towards that target.
  W = jax.random.normal(jax.random.key(3), (6, 4))
  bias = jax.random.normal(jax.random.key(4), (4,))
  # 'highest': exact f32 products on GPUs too (TF32 would be 3e-4 off the closed forms).
  f = lambda x: jnp.dot(x.reshape(x.shape[0], -1), W, precision='highest') + bias
  x = 0.3 * jax.random.normal(jax.random.key(5), (7, 6))
  z = f(x)
  y = jnp.argmax(z, 1)
  bounds, eta = (-50.0, 50.0), 1.05                   # the box never binds
  gap = np.asarray(jnp.take_along_axis(z, y[:, None], 1) - z)            # [B, C]
  wdiff = np.asarray(W)[:, np.asarray(y)].T[:, :, None] - np.asarray(W)[None]   # [B, D, C]
  dual = np.linalg.norm(wdiff, ord=DUAL_ORD[norm], axis=1)
  own = np.arange(4)[None] == np.asarray(y)[:, None]
  dists = np.where(own, np.inf, gap / np.where(own, 1.0, dual))
  run = jax.jit(attacks.fab(norm=norm, num_steps=1, bounds=bounds),
                static_argnums=0)
  out = run(f, x, y, None)
  np.testing.assert_allclose(out.info['norm'], eta * dists.min(1), rtol=1e-5)
  np.testing.assert_allclose(_np_norm(out.x_adv - x, norm), out.info['norm'], rtol=1e-5)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(jnp.argmax(f(out.x_adv), 1), dists.argmin(1))
  np.testing.assert_array_equal(out.info['gradients'], 3)     # C - 1 per step

  t = np.asarray(top_other_classes(z, y, 1))[:, 0]
  out_t = jax.jit(attacks.fab_t(norm=norm, num_steps=1, num_target_classes=1, bounds=bounds),
                  static_argnums=0)(f, x, y, None)
  np.testing.assert_allclose(out_t.info['norm'], eta * dists[np.arange(7), t], rtol=1e-5)
  np.testing.assert_array_equal(out_t.info['gradients'], 1)

  # Step 2 by hand: after the backward step x_1 = x + beta eta d (d the exact minimal
  # displacement, D = ||d||), so delta_1 = (1 - beta eta) d, delta_orig = d, alpha =
  # min((1 - beta eta) / (2 - beta eta), alpha_max) and the new point is x + c d with
  # c = (1 - alpha)(beta eta + eta (1 - beta eta)) + alpha eta < eta. alpha_max = 0.02 binds.
  beta = 0.9
  for alpha_max in (0.1, 0.02):
    alpha = min((1 - beta * eta) / (2 - beta * eta), alpha_max)
    c = (1 - alpha) * (beta * eta + eta * (1 - beta * eta)) + alpha * eta
    out2 = jax.jit(attacks.fab(norm=norm, num_steps=2, alpha_max=alpha_max, beta=beta,
                               bounds=bounds), static_argnums=0)(f, x, y, None)
    np.testing.assert_allclose(out2.info['norm'], c * dists.min(1), rtol=1e-5)

  # More steps: FAB's best point closes in on the boundary from outside (never below the
  # exact minimal distance, within 1% of it after 20 steps).
  out20 = jax.jit(attacks.fab(norm=norm, num_steps=20, bounds=bounds),
                  static_argnums=0)(f, x, y, None)
  ratio = np.asarray(out20.info['norm']) / dists.min(1)
  assert np.all(ratio >= 1 - 1e-5) and np.all(ratio <= 1.01), ratio


def test_affine_binary_single_logit_step_direction():
  # One-logit model f(x) = <w, x> + b: the L2 step is along -sign(f) w, the L_inf step
  # along -sign(f) sign(w), with lengths eta |f| / ||w||_2 and eta |f| / ||w||_1.
  w = jax.random.normal(jax.random.key(6), (5,))
  f = lambda x: jnp.dot(x, w, precision='highest')[:, None] + 0.2
  x = 0.1 * jax.random.normal(jax.random.key(7), (6, 5))
  fx = np.asarray(f(x))[:, 0]
  y = jnp.asarray(fx > 0, jnp.int32)
  for norm, direction, dual in (('l2', np.asarray(w), np.linalg.norm(w)),
                                ('linf', np.sign(w), np.abs(w).sum())):
    out = attacks.fab(norm=norm, num_steps=1, bounds=(-10.0, 10.0))(
        f, x, y, None)
    want = -1.05 * (fx / dual)[:, None] * direction[None] / (
        np.linalg.norm(w) if norm == 'l2' else 1.0)
    np.testing.assert_allclose(out.x_adv - x, want, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- models


@pytest.fixture(scope='module')
def blob_mlp(adam_fit):
  """A 12-32-5 tanh MLP fitted on 5 Gaussian blobs (saturating: linearisation is poor)."""
  k = jax.random.split(jax.random.key(1), 5)
  c, d, n = 5, 12, 564
  centers = 2.0 * jax.random.normal(k[0], (c, d))
  y = jax.random.randint(k[1], (n,), 0, c)
  x = centers[y] + jax.random.normal(k[2], (n, d))
  params = [(jax.random.normal(k[3], (d, 32)) / np.sqrt(d), jnp.zeros(32)),
            (jax.random.normal(k[4], (32, c)) / np.sqrt(32), jnp.zeros(c))]

  def apply(p, v):
    return jnp.tanh(v.reshape((v.shape[0], -1)) @ p[0][0] + p[0][1]) @ p[1][0] + p[1][1]

  params = adam_fit(lambda p: common.cross_entropy(apply(p, x[:500]), y[:500]).mean(),
                    params, 200)
  f = lambda v: apply(params, v)
  xt, yt = x[500:], y[500:]
  assert float(jnp.mean(common.predict(f(xt)) == yt)) > 0.9
  return f, xt, yt, (-12.0, 12.0)


@pytest.mark.parametrize('norm', ['l2', 'linf'])
def test_fab_distance_not_above_deepfool(blob_mlp, norm):
  f, x, y, bounds = blob_mlp
  ok = np.asarray(common.predict(f(x)) == y)
  df = jax.jit(attacks.deepfool(norm=norm, bounds=bounds),
               static_argnums=0)(f, x, y, None)
  assert bool(jnp.all(df.info['success']))
  out = jax.jit(attacks.fab(norm=norm, num_steps=50, bounds=bounds),
                static_argnums=0)(f, x, y, None)
  d_df = _np_norm(df.x_adv - x, norm)
  d_fab = np.asarray(out.info['norm'])
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_allclose(_np_norm(out.x_adv - x, norm), d_fab, rtol=1e-5, atol=1e-6)
  assert np.mean(d_fab[ok] <= d_df[ok]) >= 0.9, np.round(d_fab / d_df, 3)
  assert np.median(d_fab[ok] / d_df[ok]) < 0.9


def test_fab_t_eps_success_and_weak_attack(blob_mlp):
  f, x, y, bounds = blob_mlp
  eps = 1.0
  out = jax.jit(attacks.fab_t(norm='linf', eps=eps, num_steps=30, num_target_classes=3,
                              bounds=bounds), static_argnums=0)(f, x, y, KEY)
  xa, info = out.x_adv, out.info
  nrm = np.asarray(info['norm'])
  succ = np.asarray(info['success'])
  pred = np.asarray(jax.jit(f)(xa)).argmax(1)
  # success = a misclassified point within eps was found; then x_adv is that point.
  np.testing.assert_array_equal(succ, nrm <= eps)
  assert np.all(pred[succ] != np.asarray(y)[succ])
  np.testing.assert_array_equal(np.asarray(xa)[~succ], np.asarray(x)[~succ])
  assert float(common.norm(xa - x, 'linf').max()) <= eps * (1 + 1e-6)
  np.testing.assert_array_equal(info['targets'], top_other_classes(f(x), y, 3))
  np.testing.assert_array_equal(info['gradients'], 3 * 30)
  assert 0 < succ.mean() < 1
  # FAB-T breaks at least as many points at eps as FGSM.
  fgsm = attacks.fgsm(eps=eps, bounds=bounds)(f, x, y, KEY).x_adv
  succ_fgsm = np.asarray(common.predict(f(fgsm)) != y)
  assert succ.mean() >= succ_fgsm.mean(), (succ.mean(), succ_fgsm.mean())
  # The minimal-norm mode (no eps) finds the same distances; thresholding them at eps
  # gives the eps-bounded success.
  free = jax.jit(attacks.fab_t(norm='linf', num_steps=30, num_target_classes=3,
                               bounds=bounds), static_argnums=0)(f, x, y, KEY)
  np.testing.assert_allclose(free.info['norm'], nrm, rtol=1e-6)
  assert bool(jnp.all(free.info['success']))
  np.testing.assert_allclose(free.x_adv, info['x_best'], atol=1e-6)


def test_vmap_over_eps(blob_mlp):
  f, x, y, bounds = blob_mlp
  x, y = x[:16], y[:16]
  eps = jnp.array([0.0, 0.5, 1.0, 3.0])
  run = lambda e: attacks.fab(norm='l2', eps=e, num_steps=10, bounds=bounds)(f, x, y, None)
  out = jax.jit(jax.vmap(run))(eps)
  base = np.asarray(out.info['norm'][0])
  for i, e in enumerate(np.asarray(eps)):
    np.testing.assert_array_equal(out.info['success'][i], base <= e)
    assert float(common.norm(out.x_adv[i] - x, 'l2').max()) <= e * (1 + 1e-6) + 1e-7
  assert np.asarray(out.info['success'][-1]).mean() > np.asarray(out.info['success'][0]).mean()


def test_restarts_bounds_shapes_and_batch_sizes():
  # Any input shape and box; restarts keep the best over runs, so more restarts are never
  # worse (the first run is the deterministic one from x).
  k1, k2, k3 = jax.random.split(jax.random.key(8), 3)
  W1 = jax.random.normal(k1, (12, 16)) / 3
  W2 = jax.random.normal(k2, (16, 4)) / 2
  f = lambda v: jnp.tanh(v.reshape(v.shape[0], -1) @ W1) @ W2
  lo, hi = -2.0, 3.0
  for bsz, all_restarts in ((1, (3,)), (5, (1, 3))):
    x = jax.random.uniform(k3, (bsz, 2, 3, 2), minval=lo, maxval=hi)
    y = jnp.argmax(f(x), 1)
    outs = {}
    for restarts in all_restarts:
      atk = attacks.fab(norm='linf', num_steps=15, restarts=restarts, bounds=(lo, hi))
      outs[restarts] = jax.jit(atk, static_argnums=0)(f, x, y, KEY)
      xa = outs[restarts].x_adv
      assert xa.shape == x.shape and xa.dtype == x.dtype
      assert float(xa.min()) >= lo and float(xa.max()) <= hi
      assert bool(jnp.all(jnp.argmax(f(xa), 1) != y))
    np.testing.assert_array_equal(outs[3].info['gradients'], 3 * 15 * 3)
  assert np.all(np.asarray(outs[3].info['norm']) <= np.asarray(outs[1].info['norm']) + 1e-6)
  assert np.any(np.asarray(outs[3].info['norm']) < np.asarray(outs[1].info['norm']) - 1e-4)


def test_clean_errors_and_zero_gradients():
  W = jax.random.normal(jax.random.key(9), (4, 3))
  f = lambda v: v @ W
  x = jax.random.uniform(jax.random.key(10), (6, 4))
  pred = jnp.argmax(f(x), 1)
  y = jnp.where(jnp.arange(6) < 2, (pred + 1) % 3, pred)       # first two already wrong
  out = attacks.fab(norm='l1', eps=0.5, num_steps=5)(f, x, y, None)
  np.testing.assert_array_equal(out.x_adv[:2], x[:2])
  np.testing.assert_array_equal(out.info['norm'][:2], 0.0)
  assert bool(jnp.all(out.info['success'][:2]))
  # A model with zero input gradients gives FAB nothing to follow: no movement, no NaN.
  g = lambda v: jax.lax.stop_gradient(v) @ W
  out = attacks.fab_t(norm='linf', num_steps=5, num_target_classes=2)(
      g, x, pred, None)
  np.testing.assert_array_equal(out.x_adv, x)
  assert np.all(np.isinf(np.asarray(out.info['norm'])))
  assert not bool(jnp.any(out.info['success']))


# --------------------------------------------------------------------------- AutoAttack


def test_auto_attack_fab_t_stage(blob_mlp):
  assert attacks.auto_attack_stage_names(num_classes=10) == [
      'apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert attacks.auto_attack_stage_names(num_classes=10, fab_stage='pgd-t-margin')[2] == (
      'pgd-t-margin')
  with pytest.raises(ValueError, match='fab_stage'):
    attacks.auto_attack(eps=0.1, fab_stage='fab')
  with pytest.raises(ValueError, match='fab_stage'):
    attacks.run_auto_attack(lambda v: v, jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32), KEY,
                            eps=0.1, fab_stage='fab')
  f, x, y, bounds = blob_mlp
  eps = 3.5
  name, stage = aa_lib.stages(eps=eps, norm='l2', version='standard', bounds=bounds,
                              num_classes=5)[2]
  assert name == 'fab-t'
  out = jax.jit(stage, static_argnums=0)(f, x[:24], y[:24], KEY)
  s = np.asarray(out.info['success'])
  assert 0 < s.mean() < 1
  np.testing.assert_array_equal(s, np.asarray(out.info['norm']) <= eps)
  assert np.all(np.asarray(common.predict(f(out.x_adv)))[s] != np.asarray(y[:24])[s])
  assert float(common.norm(out.x_adv - x[:24], 'l2').max()) <= eps * (1 + 1e-6)
  np.testing.assert_array_equal(out.info['gradients'], 4 * 100)      # min(9, C - 1) targets


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize('factory,kw,name', [
    (attacks.fab, dict(norm='l0'), 'norm'),
    (attacks.fab, dict(eps=-0.1), 'eps'),
    (attacks.fab, dict(num_steps=0), 'num_steps'),
    (attacks.fab, dict(restarts=0), 'restarts'),
    (attacks.fab, dict(alpha_max=1.5), 'alpha_max'),
    (attacks.fab, dict(eta=0.9), 'eta'),
    (attacks.fab, dict(beta=1.0), 'beta'),
    (attacks.fab, dict(beta=0.0), 'beta'),
    (attacks.fab, dict(bounds=(1.0, 0.0)), 'bounds'),
    (attacks.fab_t, dict(num_target_classes=0), 'num_target_classes'),
    (attacks.fab_t, dict(num_steps=2.5), 'num_steps'),
])
def test_bad_hyperparameters(factory, kw, name):
  with pytest.raises(ValueError, match=name):
    factory(**kw)


def test_bad_calls():
  f = lambda v: v @ jnp.ones((3, 4))
  x, y = jnp.full((2, 3), 0.5), jnp.array([0, 1])
  with pytest.raises(ValueError, match='num_target_classes=4'):
    attacks.fab_t(num_target_classes=4)(f, x, y, KEY)
  with pytest.raises(ValueError, match='restarts=2'):
    attacks.fab(restarts=2)(f, x, y, None)
  with pytest.raises(ValueError, match='outside bounds'):
    attacks.fab()(f, x + 1.0, y, None)
