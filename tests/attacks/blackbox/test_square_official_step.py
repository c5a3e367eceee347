"""One L_inf Square step replayed against a numpy transcription of AutoAttack's official
``square.py`` (``attack_single_run``, norm 'Linf') with the randomness injected: window
position and per-channel signs, the ``p_selection`` schedule, the window side, the update
``clip(clip_ball(x_best + 2 eps sign))`` and the acceptance (``loss < loss_min`` or
``margin <= 0``)."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion import common

sq_lib = importlib.import_module('jaxsec.attacks.blackbox.square')


def official_p_selection(p_init, it, n_queries, rescale):
  if rescale:
    it = int(it / n_queries * 10000)
  for lo, hi, k in ((10, 50, 2), (50, 200, 4), (200, 500, 8), (500, 1000, 16),
                    (1000, 2000, 32), (2000, 4000, 64), (4000, 6000, 128),
                    (6000, 8000, 256)):
    if lo < it <= hi:
      return p_init / k
  return p_init / 512 if it > 8000 else p_init


def official_margin_and_loss(z, y, loss):
  u = np.arange(z.shape[0])
  zs = z - z.max(1, keepdims=True)
  xent = -(zs[u, y] - np.log(np.exp(zs).sum(1)))
  y_corr = z[u, y].copy()
  zz = z.copy()
  zz[u, y] = -np.inf
  margin = y_corr - zz.max(-1)
  return margin, (-xent if loss == 'ce' else margin)


def official_linf_step(f, x, y, x_best, margin_min, loss_min, i_iter, *, eps, p_init,
                       n_queries, vh, vw, sign, loss, rescale=True):
  """numpy transcription of one iteration of the official L_inf loop (NHWC; ``vh``,
  ``vw`` and the per-channel ``sign`` [C] injected; batch-shared, as officially)."""
  x_best, margin_min, loss_min = x_best.copy(), margin_min.copy(), loss_min.copy()
  _, h, w, c = x.shape
  idx = np.nonzero(margin_min > 0.0)[0]
  x_curr, x_best_curr, y_curr = x[idx], x_best[idx], y[idx]
  p = official_p_selection(p_init, i_iter, n_queries, rescale)
  s = max(int(round(math.sqrt(p * h * w * c / c))), 1)
  new_deltas = np.zeros((h, w, c))
  new_deltas[vh:vh + s, vw:vw + s, :] = 2.0 * eps * sign
  x_new = np.minimum(np.maximum(x_best_curr + new_deltas, x_curr - eps), x_curr + eps)
  x_new = np.clip(x_new, 0.0, 1.0)
  margin, l = official_margin_and_loss(f(x_new), y_curr, loss)
  improved = l < loss_min[idx]
  loss_min[idx] = np.where(improved, l, loss_min[idx])
  improved = improved | (margin <= 0.0)
  margin_min[idx] = np.where(improved, margin, margin_min[idx])
  x_best[idx] = np.where(improved[:, None, None, None], x_new, x_best_curr)
  return x_best, margin_min, loss_min, s, improved


def _model(x_best, a):
  """Per-row logits ``[0, a u - 0.1, -0.05 - 20 a u]``, ``u = sum(z) - sum(x_best)``: at
  the current point class 0 wins by 0.05; a proposal that raises ``u`` a little makes
  class 1 win while class 2 collapses, which raises ``p_0``: a success that does not lower
  the 'ce' loss (``log p_y``)."""
  u0 = x_best.reshape(x_best.shape[0], -1).sum(1)

  def f(z):
    u = z.reshape(z.shape[0], -1).sum(1) - u0
    return np.stack([np.zeros_like(u), a * u - 0.1, -0.05 - 20 * a * u], 1)
  return f


@pytest.mark.parametrize('loss', ['margin', 'ce'])
@pytest.mark.parametrize('i_iter', [0, 7, 30])
def test_linf_step_matches_official(loss, i_iter):
  h = w_ = 6
  c = 2
  rng = np.random.default_rng(100 + i_iter)
  n, eps, p_init, n_queries = 64, 0.1, 0.8, 1000
  x = rng.uniform(size=(n, h, w_, c))
  y = np.zeros(n, np.int64)
  # A current point in the ball (a previous accepted vertex pattern, clipped to the box).
  x_best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=x.shape), 0.0, 1.0)
  p = sq_lib.p_selection(p_init, i_iter, n_queries)
  assert p == official_p_selection(p_init, i_iter, n_queries, True)
  side, _ = sq_lib._linf_window(p, h, w_)
  f_np = _model(x_best, 0.6 / (eps * side * side * c))
  margin_min, loss_min = official_margin_and_loss(f_np(x_best), y, loss)
  assert (margin_min > 0).all()                # every point still robust
  vh, vw = rng.integers(0, h - side), rng.integers(0, w_ - side)   # official range
  sign = np.array([1.0, -1.0]) if i_iter == 30 else rng.choice([-1.0, 1.0], size=c)
  ref_best, ref_margin, _, ref_s, ref_acc = official_linf_step(
      f_np, x, y, x_best, margin_min, loss_min, i_iter, eps=eps, p_init=p_init,
      n_queries=n_queries, vh=vh, vw=vw, sign=sign, loss=loss)
  assert side == ref_s

  with jax.enable_x64(True):
    xj, xbj = jnp.asarray(x), jnp.asarray(x_best)
    b = x.shape[0]
    x_new = jax.vmap(lambda a, bb: sq_lib.linf_window_update(
        a, bb, vh, vw, side, side, jnp.asarray(sign), eps=eps, bounds=(0.0, 1.0)))(xj, xbj)
    scores = f_np(np.asarray(x_new))
    l_new = sq_lib._loss_fn(loss, False)(jnp.asarray(scores), jnp.asarray(y))
    succ = common.success(jnp.asarray(scores), jnp.asarray(y), False)
    accept, _ = sq_lib.accept_proposal(l_new, jnp.asarray(loss_min), succ,
                                       jnp.ones((b,), bool))
    got = np.asarray(common.select(accept, x_new, xbj))
  np.testing.assert_allclose(got, ref_best, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(accept), ref_acc)
  assert ref_acc.any() and not ref_acc.all()
  if loss == 'ce':   # the case that separates the official rule from "improved only"
    improved = np.asarray(l_new) < loss_min
    assert (ref_acc & ~improved).any()


def test_autoattack_square_stage_uses_the_unrescaled_schedule():
  # AutoAttack builds SquareAttack(resc_schedule=False): p halves after raw iteration 10.
  for i in (0, 6, 10, 11, 50, 51, 4001):
    assert sq_lib.p_selection(0.8, i, 5000, rescale=False) == official_p_selection(
        0.8, i, 5000, False)
  assert sq_lib.p_selection(0.8, 6, 5000, rescale=False) == 0.8
  assert sq_lib.p_selection(0.8, 6, 5000) == 0.4               # the rescaled default
  from jaxsec.attacks.evasion import autoattack
  stage = autoattack._square_stage(0.1, 'linf', (0.0, 1.0))
  w = jax.random.normal(jax.random.key(1), (16, 4))
  f = lambda z: z.reshape(z.shape[0], -1) @ w
  x = jax.random.uniform(jax.random.key(2), (4, 4, 4, 1))
  y = common.predict(f(x))
  key = jax.random.key(3)
  got = stage(f, x, y, key).x_adv
  mk = lambda r: sq_lib.square(eps=0.1, rescale_schedule=r, bounds=(0.0, 1.0))(f, x, y, key).x_adv
  np.testing.assert_array_equal(got, mk(False))
  assert not np.array_equal(got, mk(True))
