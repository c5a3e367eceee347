"""Min-max and influence attacks (Koh, Steinhardt & Liang 2022): the poison stays inside
the defender's bounds, the certified bound dominates what an attack reaches, and the
influence gradient matches finite differences of the retrained SVM."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.poisoning import decoy as decoy_lib
from jaxsec.attacks.poisoning import feasible_set as fsl
from jaxsec.attacks.poisoning import influence
from jaxsec.attacks.poisoning import minmax


def _blob(n=40, d=4, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.clip(0.5 + 0.2 * rng.randn(n, d) + 0.15 * (2 * y[:, None] - 1), 0, 1)
  return x.astype(np.float32), y


@pytest.mark.slow
def test_minmax_points_are_feasible_capped_and_below_the_certified_bound():
  x, y = (jnp.asarray(a) for a in _blob(40))
  fs = fsl.feasible_set(x, y, percentile=85.0, bounds=(0.0, 1.0))
  keep = fsl.feasible_mask(fs, x, y).astype(jnp.float32)
  l2 = 0.05
  s = decoy_lib.fit_svm(x, y, l2=l2, n=40, weight=keep)
  w_d, b_d = 0.5 * s.w, s.b + 0.3
  path = minmax.minmax_path(fs, x, y, keep, s.w, s.b, w_d, b_d, jnp.asarray(0.05),
                            jnp.asarray(0.25), jnp.asarray(0.03), num_steps=6, l2=l2,
                            use_decoy=True)
  ok = np.asarray(path.ok)
  assert ok.any()
  cap = decoy_lib.hinge_losses(w_d, b_d, path.x, path.y)
  assert float(jnp.max(jnp.where(path.ok, cap, 0.0))) <= 0.25 + 1e-4
  assert bool(jnp.all(fsl.feasible_mask(fs, path.x[ok], path.y[ok])))
  xp, yp = minmax.take_points(path, 2, burn_frac=0.33)
  bound, free = minmax.certified_bound(fs, x, y, fraction=0.05, l2=l2, weight=keep,
                                       num_steps=6)
  assert free.bound.shape == (6,) and bool(jnp.all(free.ok))
  # U(w, b) >= the victim's minimal objective on clean + any feasible poison
  xa, ya = jnp.concatenate([x, xp]), jnp.concatenate([y, yp])
  wa = jnp.concatenate([keep, jnp.ones(2)])
  s2 = decoy_lib.fit_svm(xa, ya, l2=l2, n=40, weight=wa)
  reached = float(decoy_lib.objective(s2.w, s2.b, xa, ya, l2=l2, n=40, weight=wa))
  clean = float(decoy_lib.objective(s.w, s.b, x, y, l2=l2, n=40, weight=keep))
  assert clean <= reached <= bound + 1e-5
  # the free path's first bound is U at the clean optimum: clean + eps max_F hinge
  np.testing.assert_allclose(float(free.bound[0]),
                             clean + 0.05 * max(float(free.loss[0]), 0.0), rtol=1e-5)


def test_influence_gradient_matches_finite_differences():
  x, y = _blob(30, 3)
  xv, yv = _blob(40, 3, seed=3)
  with jax.enable_x64(True):
    x64, xv64 = jnp.asarray(x, jnp.float64), jnp.asarray(xv, jnp.float64)
    yj, yvj = jnp.asarray(y), jnp.asarray(yv)
    w = jnp.ones(30, jnp.float64)
    xp, xn = x64[0], x64[1]           # class-0 point labelled 1, class-1 point labelled 0

    @jax.jit
    def grad_at(p, q):
      return influence.influence_gradient(x64, yj, w, p, q, 2.0, 1.0, xv64, yvj, l2=0.05,
                                          tol=1e-11)

    loss, gp, gn, sol = grad_at(xp, xn)
    assert float(jnp.linalg.norm(gp)) > 1e-4 and float(sol.alpha[-2]) > 0
    h = 1e-6
    for j in range(3):
      e = jnp.zeros(3, jnp.float64).at[j].set(h)
      fd_p = (grad_at(xp + e, xn)[0] - grad_at(xp - e, xn)[0]) / (2 * h)
      fd_n = (grad_at(xp, xn + e)[0] - grad_at(xp, xn - e)[0]) / (2 * h)
      np.testing.assert_allclose(float(gp[j]), float(fd_p), rtol=1e-4, atol=1e-8)
      np.testing.assert_allclose(float(gn[j]), float(fd_n), rtol=1e-4, atol=1e-8)
    # two weighted points train the same SVM as the explicit copies
    xa = jnp.concatenate([x64, xp[None], xp[None], xn[None]])
    ya = jnp.concatenate([yj, jnp.asarray([1, 1, 0], yj.dtype)])
    ref = decoy_lib.fit_svm(xa, ya, l2=0.05, n=30, tol=1e-11)
    np.testing.assert_allclose(np.asarray(sol.w), np.asarray(ref.w), atol=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match='step_size'):
    influence.influence_attack(fraction=0.1, step_size=0.0)
  with pytest.raises(ValueError, match='rho_max'):
    minmax.minmax_attack(fraction=0.1, rho_max=-1.0)
  with pytest.raises(ValueError, match='burn_frac'):
    minmax.minmax_attack(fraction=0.1, burn_frac=1.0)
