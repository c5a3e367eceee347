"""APGD (Croce & Hein 2020), APGD-T and the AutoAttack-style ensemble."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxsec import attacks
from jaxsec.attacks.evasion import autopgd as apgd_lib
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)


@pytest.fixture(scope='module')
def digits_mlp(adam_fit):
  """A 64-32-10 ReLU MLP fitted on sklearn digits in [0, 1] (about 90% test accuracy)."""
  d = load_digits()
  x = jnp.asarray(d.data / 16.0, jnp.float32)
  y = jnp.asarray(d.target, jnp.int32)
  ks = jax.random.split(jax.random.key(0), 2)
  params = [(jax.random.normal(ks[0], (64, 32)) / 8.0, jnp.zeros(32)),
            (jax.random.normal(ks[1], (32, 10)) / np.sqrt(32), jnp.zeros(10))]

  def apply(p, x):
    h = jax.nn.relu(x.reshape((x.shape[0], -1)) @ p[0][0] + p[0][1])
    return h @ p[1][0] + p[1][1]

  params = adam_fit(lambda p: common.cross_entropy(apply(p, x[:1500]), y[:1500]).mean(),
                    params, 300)
  f = lambda x: apply(params, x)
  xt, yt = x[1500:1628], y[1500:1628]
  assert float(jnp.mean(common.predict(f(xt)) == yt)) > 0.8
  return f, xt, yt


def _robust_acc(f, xa, y):
  return float(jnp.mean(common.predict(f(xa)) == y))


def test_checkpoints_follow_the_paper():
  # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 -> w_j = ceil(p_j * 100).
  assert apgd_lib.checkpoints(100, 'paper') == [22, 41, 57, 70, 80, 87, 93, 99]
  assert apgd_lib.checkpoints(10, 'paper') == [3, 5, 6, 7, 8, 9, 10]
  assert apgd_lib.checkpoints(1, 'paper') == [1]


def _official_checkpoints(n_iter):
  """Transcription of the official autopgd_base.py loop (init_hyperparam, counter3 / k)."""
  n_iter_2 = max(int(0.22 * n_iter), 1)
  n_iter_min = max(int(0.06 * n_iter), 1)
  size_decr = max(int(0.03 * n_iter), 1)
  k, counter3, out = n_iter_2 + 0, 0, []
  for i in range(n_iter):
    counter3 += 1
    if counter3 == k:
      out.append(i + 1)          # the check after computing x^(i+1)
      k = max(k - size_decr, n_iter_min)
      counter3 = 0
  return out


@pytest.mark.parametrize('n', [10, 50, 100, 1, 2, 7, 33, 250])
def test_checkpoints_default_to_the_official_schedule(n):
  assert apgd_lib.checkpoints(n) == _official_checkpoints(n)
  assert apgd_lib.checkpoints(n, 'official') == _official_checkpoints(n)
  assert len(apgd_lib.checkpoints(10)) == 9 and apgd_lib.checkpoints(50) == [11, 21, 30, 38, 45]


def test_checkpoint_conditions_by_hand():
  red = apgd_lib.checkpoint_reduce
  f = jnp.array
  # condition 1: 16 increases of 22 steps is < 0.75 * 22 = 16.5 -> halve; 17 is not.
  assert bool(red(f(16.0), 22.0, 0.75, f(True), f(0.0), f(1.0)))
  assert not bool(red(f(17.0), 22.0, 0.75, f(True), f(0.0), f(1.0)))
  # condition 2: many increases but f_max unchanged and no halving last time -> halve.
  assert bool(red(f(20.0), 22.0, 0.75, f(False), f(1.0), f(1.0)))
  # ... unless the step was halved at the previous checkpoint.
  assert not bool(red(f(20.0), 22.0, 0.75, f(True), f(1.0), f(1.0)))
  # ... or f_max improved.
  assert not bool(red(f(20.0), 22.0, 0.75, f(False), f(1.0), f(1.5)))


@pytest.mark.parametrize('schedule,n_ck', [('paper', 7), ('official', 9)])
def test_step_halves_at_every_checkpoint_once_optimum_is_reached(schedule, n_ck):
  # Linear binary model: the first step of size 2 eps lands on the optimal corner
  # x - eps sign(w); afterwards the objective is constant, so condition (1) halves the
  # step at each of the 7 (paper) / 9 (official) checkpoints of N = 10, and the iterate is
  # the exact optimum.
  w = jnp.array([1.0, -2.0, 0.5, 3.0])
  f = lambda x: x @ w[:, None]
  x = jnp.full((3, 4), 0.5)
  y = jnp.ones(3, jnp.int32)
  eps = 0.1
  obj = common.objective('ce', False)
  x_out, s, v, st = apgd_lib.apgd_run(
      f, x, y, KEY, eps=eps, p='linf', num_steps=10, obj=obj,
      success_fn=lambda lg: common.success(lg, y, False), bounds=(0.0, 1.0), rho=0.75,
      alpha=0.75, return_state=True, schedule=schedule)
  np.testing.assert_allclose(x_out, x - eps * np.sign(w)[None], atol=1e-6)
  np.testing.assert_allclose(st['eta'], 2 * eps / 2 ** n_ck, rtol=1e-6)


def test_dlr_targeted_formula():
  z = jnp.array([[1.0, 4.0, 2.0, 0.5, 3.0]])
  # sorted: 4, 3, 2, 1, .5 -> z_pi1 - (z_pi3 + z_pi4)/2 = 4 - 1.5 = 2.5
  np.testing.assert_allclose(common.targeted_dlr_loss(z, jnp.array([1]), jnp.array([4])),
                             [-(4.0 - 3.0) / 2.5], rtol=1e-6)
  np.testing.assert_allclose(common.dlr_loss(z, jnp.array([2])), [-(2.0 - 4.0) / 2.0],
                             rtol=1e-6)
  # top other classes by rank, excluding the label
  np.testing.assert_array_equal(apgd_lib.top_other_classes(z, jnp.array([1]), 3),
                                [[4, 2, 0]])


def test_apgd_at_least_as_strong_as_pgd(digits_mlp):
  f, x, y = digits_mlp
  norm, eps = 'linf', 0.1
  n = 20
  pgd = attacks.pgd(eps=eps, num_steps=n, norm=norm)
  ap = attacks.apgd(eps=eps, num_steps=n, norm=norm)
  xa_p = jax.jit(pgd, static_argnums=0)(f, x, y, KEY).x_adv
  out = jax.jit(ap, static_argnums=0)(f, x, y, KEY)
  ra_p, ra_a = _robust_acc(f, xa_p, y), _robust_acc(f, out.x_adv, y)
  clean = _robust_acc(f, x, y)
  assert ra_a <= ra_p + 1.0 / len(y), (ra_a, ra_p)
  assert ra_a < clean
  assert float(common.norm(out.x_adv - x, norm).max()) <= eps * (1 + 1e-5)
  assert 0.0 <= float(out.x_adv.min()) and float(out.x_adv.max()) <= 1.0
  np.testing.assert_array_equal(out.info['success'], common.predict(f(out.x_adv)) != y)
  np.testing.assert_array_equal(out.info['gradients'], n + 1)


def test_apgd_targeted_reaches_target_and_odd_bounds():
  k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
  W1 = jax.random.normal(k1, (8, 16))
  W2 = jax.random.normal(k2, (16, 5))
  f = lambda x: jnp.tanh(x @ W1) @ W2
  x = jax.random.uniform(k3, (12, 8), minval=-2.0, maxval=3.0)
  t = common.predict(f(jax.random.uniform(jax.random.key(4), (12, 8), minval=-2, maxval=3)))
  atk = attacks.apgd(eps=5.0, num_steps=30, loss='dlr', targeted=True, bounds=(-2, 3))
  out = jax.jit(atk, static_argnums=0)(f, x, t, KEY)
  assert float(out.x_adv.min()) >= -2 and float(out.x_adv.max()) <= 3
  assert float(jnp.mean(common.predict(f(out.x_adv)) == t)) == 1.0
  assert bool(out.info['success'].all())


def test_apgd_l2_vmap_over_eps(digits_mlp):
  f, x, y = digits_mlp
  x, y = x[:32], y[:32]
  eps = jnp.array([0.0, 0.5, 1.0, 2.0])
  xa = jax.jit(jax.vmap(lambda e: attacks.apgd(eps=e, norm='l2', num_steps=10)(
      f, x, y, KEY).x_adv))(eps)
  ra = []
  for i, e in enumerate(np.asarray(eps)):
    assert float(common.norm(xa[i] - x, 'l2').max()) <= e * (1 + 1e-5) + 1e-6
    assert 0.0 <= float(xa[i].min()) and float(xa[i].max()) <= 1.0
    ra.append(_robust_acc(f, xa[i], y))
  assert ra[0] == _robust_acc(f, x, y) and ra[-1] < ra[0]
  single = attacks.apgd(eps=1.0, norm='l2', num_steps=10)(f, x, y, KEY).x_adv
  np.testing.assert_allclose(xa[2], single, atol=1e-5)


def test_apgd_t_and_auto_attack_stages(digits_mlp):
  f, x, y = digits_mlp
  eps = 0.1
  aa = attacks.auto_attack(eps=eps, version='jaxsec-fast')
  out = jax.jit(aa, static_argnums=0)(f, x, y, KEY)
  assert attacks.auto_attack_stage_names(num_classes=10, version='jaxsec-fast') == [
      'apgd-ce', 'apgd-t']
  rob = np.asarray(out.info['robust_per_stage']).mean(1)
  final = _robust_acc(f, out.x_adv, y)
  np.testing.assert_allclose(final, rob[-1], atol=1e-7)
  # Ensemble robust accuracy is <= the robust accuracy of every single stage.
  clean = np.asarray(out.info['clean_correct'])
  for s in np.asarray(out.info['stage_success']):
    assert final <= float(np.mean(clean & ~s)) + 1e-7
  assert np.all(np.diff(rob) <= 0)
  assert float(jnp.abs(out.x_adv - x).max()) <= eps + 1e-6
  # APGD-T breaks points that APGD-CE leaves robust on this model.
  assert rob[1] < rob[0]


def test_run_auto_attack_host_driver(digits_mlp):
  f, x, y = digits_mlp
  x, y = x[:40], y[:40]
  res = attacks.run_auto_attack(f, x, y, KEY, eps=0.1, version='jaxsec-fast', batch_size=64)
  names = [s['name'] for s in res['stages']]
  assert names == ['apgd-ce', 'apgd-t']
  accs = [s['robust_accuracy'] for s in res['stages']]
  assert accs[0] <= res['clean_accuracy'] and accs[1] <= accs[0]
  assert res['robust_accuracy'] == pytest.approx(accs[-1])
  # The second stage only attacked the points the first one left robust.
  assert res['stages'][1]['attacked'] == round(accs[0] * len(y))
  assert float(np.abs(res['x_adv'] - np.asarray(x)).max()) <= 0.1 + 1e-6
  np.testing.assert_array_equal(res['success'], np.asarray(common.predict(
      f(jnp.asarray(res['x_adv'])))) != np.asarray(y))


@pytest.mark.parametrize('factory,kw,name', [
    (attacks.apgd, dict(eps=0.1, norm='l0'), 'norm'),
    (attacks.apgd, dict(eps=0.1, rho=1.5), 'rho'),
    (attacks.apgd, dict(eps=0.1, alpha=0.0), 'alpha'),
    (attacks.apgd, dict(eps=0.1, loss='hinge'), 'loss'),
    (attacks.apgd, dict(eps=-1.0), 'eps'),
    (attacks.apgd, dict(eps=0.1, restarts=0), 'restarts'),
    (attacks.apgd, dict(eps=0.1, schedule='ceil'), 'schedule'),
    (attacks.apgd, dict(eps=0.1, eot_iter=0), 'eot_iter'),
    (attacks.apgd_t, dict(eps=0.1, num_target_classes=0), 'num_target_classes'),
    (attacks.auto_attack, dict(eps=0.1, version='fast'), 'jaxsec-fast'),
    (attacks.auto_attack, dict(eps=0.1, version='plus2'), 'version'),
    (attacks.auto_attack, dict(eps=0.1, norm='l0'), 'norm'),
])
def test_bad_hyperparameters(factory, kw, name):
  with pytest.raises(ValueError, match=name):
    factory(**kw)


def test_apgd_t_too_many_targets():
  f = lambda x: x @ jnp.ones((3, 4))
  with pytest.raises(ValueError, match='num_target_classes'):
    attacks.apgd_t(eps=0.1, num_target_classes=4)(f, jnp.zeros((1, 3)), jnp.array([0]), KEY)


@pytest.mark.parametrize('factory', [attacks.apgd_t, attacks.fab_t])
def test_first_target_picks_the_ranked_target(digits_mlp, factory):
  f, x, y = digits_mlp
  x, y = x[:8], y[:8]
  kw = dict(eps=0.1, num_steps=2)
  full = factory(num_target_classes=4, **kw)(f, x, y, KEY)
  for j in (0, 2, 3):
    one = factory(num_target_classes=1, first_target=j, **kw)(f, x, y, KEY)
    np.testing.assert_array_equal(one.info['targets'][:, 0], full.info['targets'][:, j])
  with pytest.raises(ValueError, match='first_target'):
    factory(num_target_classes=2, first_target=8, **kw)(f, x, y, KEY)
  with pytest.raises(ValueError, match='first_target'):
    factory(first_target=-1, eps=0.1)


def test_run_auto_attack_runs_targets_only_on_points_still_robust(digits_mlp):
  # Official APGD-T / FAB-T: target j + 1 only attacks what targets 0..j left robust.
  f, x, y = digits_mlp
  x, y = x[:64], y[:64]
  res = attacks.run_auto_attack(f, x, y, KEY, eps=0.12, version='standard', batch_size=64)
  st = {s['name']: s for s in res['stages']}
  assert [s['name'] for s in res['stages']] == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  for name in ('apgd-t', 'fab-t'):
    per = st[name]['attacked_per_target']
    assert st[name]['target_runs'] == 9 and len(per) == 9
    assert per[0] == st[name]['attacked']
    assert all(b <= a for a, b in zip(per, per[1:], strict=False))
    # What the next stage attacks is what the last target left robust.
  assert st['fab-t']['attacked'] == round(st['apgd-t']['robust_accuracy'] * len(y))
  per = st['apgd-t']['attacked_per_target']
  assert per[-1] < per[0]              # on this model APGD-T breaks points along the way
  assert st['apgd-t']['gradients'] == 101 * sum(per)    # and spends nothing on them after
  assert res['robust_accuracy'] == pytest.approx(st['square']['robust_accuracy'])


# --------------------------------------------------------------------------- reference replay


def _tanh_net(seed=0, d=6, h=8, c=4):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(d, h)) * 1.5, rng.normal(size=(h, c)) * 1.5


def _np_ce_and_grad(x, y, w1, w2):
  """Per-example CE of softmax(tanh(x w1) w2) and its input gradient (numpy, float64)."""
  hid = np.tanh(x @ w1)
  z = hid @ w2
  zs = z - z.max(1, keepdims=True)
  p = np.exp(zs) / np.exp(zs).sum(1, keepdims=True)
  loss = -np.log(p[np.arange(len(y)), y])
  dz = p - np.eye(z.shape[1])[y]
  return loss, z, ((dz @ w2.T) * (1 - hid ** 2)) @ w1.T


def _official_apgd_linf(x, y, x_init, eps, n_iter, w1, w2, rho=0.75):
  """numpy transcription of autopgd_base.APGDAttack.attack_single_run (Linf, CE, eot 1).

  Returns the final x_adv, x_best, loss_best, step_size, and how many resets moved the
  iterate (x_best != x_adv at a reduction)."""
  n_iter_2 = max(int(0.22 * n_iter), 1)
  n_iter_min = max(int(0.06 * n_iter), 1)
  size_decr = max(int(0.03 * n_iter), 1)
  x_adv = np.clip(x_init, 0.0, 1.0)
  x_best = x_adv.copy()
  loss_steps = np.zeros([n_iter, x.shape[0]])
  loss_indiv, _, grad = _np_ce_and_grad(x_adv, y, w1, w2)
  grad_best = grad.copy()
  loss_best = loss_indiv.copy()
  step_size = 2.0 * eps * np.ones([x.shape[0], 1])
  x_adv_old = x_adv.copy()
  k = n_iter_2 + 0
  counter3 = 0
  loss_best_last_check = loss_best.copy()
  reduced_last_check = np.ones_like(loss_best)
  moved_resets = 0
  for i in range(n_iter):
    grad2 = x_adv - x_adv_old
    x_adv_old = x_adv.copy()
    a = 0.75 if i > 0 else 1.0
    x_adv_1 = x_adv + step_size * np.sign(grad)
    x_adv_1 = np.clip(np.minimum(np.maximum(x_adv_1, x - eps), x + eps), 0.0, 1.0)
    x_adv_1 = np.clip(np.minimum(np.maximum(
        x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps), 0.0, 1.0)
    x_adv = x_adv_1 + 0.
    loss_indiv, _, grad = _np_ce_and_grad(x_adv, y, w1, w2)
    y1 = loss_indiv.copy()
    loss_steps[i] = y1 + 0
    ind = y1 > loss_best
    x_best[ind] = x_adv[ind].copy()
    grad_best[ind] = grad[ind].copy()
    loss_best[ind] = y1[ind] + 0
    counter3 += 1
    if counter3 == k:
      t = np.zeros(x.shape[0])
      for counter5 in range(k):           # check_oscillation (note the [-1] index at i=k-1)
        t += (loss_steps[i - counter5] > loss_steps[i - counter5 - 1])
      fl_oscillation = (t <= k * rho * np.ones_like(t)).astype(float)
      fl_reduce_no_impr = (1. - reduced_last_check) * (loss_best_last_check >= loss_best)
      fl_oscillation = np.maximum(fl_oscillation, fl_reduce_no_impr)
      reduced_last_check = fl_oscillation.copy()
      loss_best_last_check = loss_best.copy()
      if fl_oscillation.sum() > 0:
        r = fl_oscillation > 0
        step_size[r] /= 2.0
        moved_resets += int(np.sum(np.any(x_adv[r] != x_best[r], axis=1)))
        x_adv[r] = x_best[r].copy()
        grad[r] = grad_best[r].copy()
      k = max(k - size_decr, n_iter_min)
      counter3 = 0
  return x_adv, x_best, loss_best, step_size[:, 0], moved_resets


@pytest.mark.parametrize('n_iter', [10, 23])
def test_apgd_replays_the_official_loop(n_iter):
  # Same start, same model, float64: APGD's final iterate (after the last reset), best point,
  # best loss and step size equal the numpy transcription of the official loop, on a run
  # whose checkpoints halve the step and move the iterate back to the best point.
  w1, w2 = _tanh_net()
  rng = np.random.default_rng(1)
  b, d, eps = 16, 6, 0.3
  x = rng.uniform(0.2, 0.8, size=(b, d))
  y = rng.integers(0, 4, size=b)
  t = 2 * rng.uniform(size=(b, d)) - 1                       # the official Linf start
  x_init = np.clip(x + eps * t / (np.abs(t).max(1, keepdims=True) + 1e-12), 0.0, 1.0)
  ref = _official_apgd_linf(x, y, x_init, eps, n_iter, w1, w2)
  assert ref[4] > 0                 # resets that move the iterate happen on this problem
  with jax.enable_x64(True):
    f = lambda z: jnp.tanh(z @ jnp.asarray(w1)) @ jnp.asarray(w2)
    yj = jnp.asarray(y, jnp.int32)
    _, _, _, st = apgd_lib.apgd_run(
        f, jnp.asarray(x), yj, KEY, eps=eps, p='linf', num_steps=n_iter,
        obj=common.objective('ce', False), success_fn=lambda lg: common.success(lg, yj, False),
        bounds=(0.0, 1.0), rho=0.75, alpha=0.75, return_state=True,
        x_init=jnp.asarray(x_init))
    np.testing.assert_allclose(st['x_cur'], ref[0], atol=1e-12)
    np.testing.assert_allclose(st['x_max'], ref[1], atol=1e-12)
    np.testing.assert_allclose(st['f_max'], ref[2], rtol=1e-10)
    np.testing.assert_allclose(st['eta'], ref[3], rtol=1e-12)


def test_reduction_resets_the_iterate_and_gradient_to_the_best_point():
  # After a checkpoint that halves the step, the iterate and its gradient are those of the
  # best point (N = 10: the official schedule checks at step 10, the last one). A large
  # step on a 1-d concave objective overshoots, so the last iterate is not the best one.
  f = lambda x: -(x - 0.37) ** 2 * 10.0
  obj = lambda lg, y: lg[:, 0]
  x = jnp.array([[0.5], [0.45], [0.2], [0.3]])
  y = jnp.zeros(4, jnp.int32)
  for schedule in ('official', 'paper'):
    _, _, _, st = apgd_lib.apgd_run(
        f, x, y, KEY, eps=0.3, p='linf', num_steps=10, obj=obj,
        success_fn=lambda lg: jnp.zeros(lg.shape[0], bool), bounds=(0.0, 1.0), rho=0.75,
        alpha=0.75, return_state=True, random_start=False, schedule=schedule)
    red = np.asarray(st['reduced_last'])
    assert red.any()
    np.testing.assert_array_equal(np.asarray(st['x_cur'])[red], np.asarray(st['x_max'])[red])
    np.testing.assert_array_equal(np.asarray(st['g'])[red], np.asarray(st['g_max'])[red])
    np.testing.assert_array_equal(np.asarray(st['f_max'])[red], np.asarray(obj(
        f(st['x_cur']), y))[red])
