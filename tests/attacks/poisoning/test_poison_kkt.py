"""KKT attack and decoys (Koh, Steinhardt & Liang 2022): on a case with an exact solution
the poison makes the retrained SVM land on the decoy; the solver's optimality conditions;
decoys against a transcription of the authors' generateTheta; the attack's contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.poisoning import decoy as decoy_lib
from jaxsec.attacks.poisoning import feasible_set as fsl
from jaxsec.attacks.poisoning import kkt


def _line_data():
  """Class 1 at (a, +-0.5), a in {1, 2, 3}; class 0 mirrored through the origin."""
  pos = np.array([[a, s] for a in (1.0, 2.0, 3.0) for s in (0.5, -0.5)], np.float32)
  x = np.concatenate([pos, -pos])
  y = np.array([1] * 6 + [0] * 6, np.int32)
  return jnp.asarray(x), jnp.asarray(y)


def test_zero_residual_poison_makes_the_victim_land_on_the_decoy():
  # Decoy w = (0.6, 0), b = 0 with l2 = 1: the clean margins are 0.6, 1.2, 1.8 (none at 1);
  # one copy each of x_+ = (1.6, 0) and x_- = -x_+ (margin 0.96) makes it optimal, so the
  # KKT problem has residual 0 and the SVM trained on clean + poison returns w_d.
  x, y = _line_data()
  fs = fsl.feasible_set(x, y, percentile=100.0)
  w_d, b_d = jnp.asarray([0.6, 0.0]), jnp.asarray(0.0)
  g, g_b = kkt.target_gradient(w_d, b_d, x, y, l2=1.0)
  np.testing.assert_allclose(np.asarray(g), [-1 / 3 + 0.6, 0.0], atol=1e-6)
  sol = jax.jit(lambda: kkt.kkt_poison(fs, w_d, b_d, g, g_b, 1 / 12, 1 / 12,
                                       num_steps=300))()
  assert bool(sol.ok) and float(sol.residual) < 1e-3 and abs(float(sol.bias_residual)) < 1e-6
  xa = jnp.concatenate([x, sol.x_pos[None], sol.x_neg[None]])
  ya = jnp.concatenate([y, jnp.asarray([1, 0], jnp.int32)])
  assert bool(jnp.all(fsl.feasible_mask(fs, xa[12:], ya[12:])))
  s = decoy_lib.fit_svm(xa, ya, l2=1.0, n=12, tol=1e-6)
  np.testing.assert_allclose(np.asarray(s.w), np.asarray(w_d), atol=5e-3)
  np.testing.assert_allclose(
      float(decoy_lib.objective(s.w, s.b, xa, ya, l2=1.0, n=12)),
      float(decoy_lib.objective(w_d, b_d, xa, ya, l2=1.0, n=12)), atol=1e-4)


def _blob(n=40, d=4, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.clip(0.5 + 0.2 * rng.randn(n, d) + 0.2 * (2 * y[:, None] - 1), 0, 1)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def test_solution_is_blockwise_optimal_when_the_decoy_is_unreachable():
  # Minimiser of a convex smooth function over a product of convex sets <=> each block is
  # the projection of its own gradient step (exact block minimisation gives the same point).
  x, y = _blob()
  fs = fsl.feasible_set(x, y, percentile=80.0, bounds=(0.0, 1.0))
  w_d = jnp.asarray([2.0, -1.0, 1.0, 0.5])
  b_d = jnp.asarray(-1.0)
  g, g_b = kkt.target_gradient(w_d, b_d, x, y, l2=0.05)
  ep, en = 3 / 40, 1 / 40
  sol = jax.jit(lambda: kkt.kkt_poison(fs, w_d, b_d, g, g_b, ep, en, num_steps=500))()
  assert float(sol.residual) > 1e-2          # not reachable: the test is about optimality
  bp, _ = fsl.project_point(fs, (g + en * sol.x_neg) / ep, 1, w_d, 1.0 - b_d)
  bn, _ = fsl.project_point(fs, (ep * sol.x_pos - g) / en, 0, -w_d, 1.0 + b_d)
  np.testing.assert_allclose(np.asarray(sol.x_pos), np.asarray(bp), atol=2e-3)
  np.testing.assert_allclose(np.asarray(sol.x_neg), np.asarray(bn), atol=2e-3)
  # and no block move lowers the residual
  r_best = jnp.linalg.norm(g - ep * bp + en * sol.x_neg)
  assert float(sol.residual) <= float(r_best) + 1e-4


def test_decoys_match_a_transcription_of_generate_theta():
  x, y = _blob(30, 3)
  xv, yv = _blob(30, 3, seed=1)
  dec = decoy_lib.decoy_parameters(x, y, xv, yv, l2=0.1, quantiles=(0.3,), repeats=(2,),
                                   tol=1e-6)
  clean = decoy_lib.fit_svm(x, y, l2=0.1, n=30, tol=1e-6)
  xn, yn, xvn, yvn = (np.asarray(a) for a in (x, y, xv, yv))
  margins = (2 * yvn - 1) * (xvn @ np.asarray(clean.w) + float(clean.b))
  tar = margins < np.quantile(margins, 0.3)
  xa = np.concatenate([xn] + [xvn[tar]] * 2)
  ya = np.concatenate([yn] + [1 - yvn[tar]] * 2).astype(np.int32)
  ref = decoy_lib.fit_svm(jnp.asarray(xa), jnp.asarray(ya), l2=0.1, n=30, tol=1e-6)
  np.testing.assert_allclose(np.asarray(dec.w[0]), np.asarray(ref.w), atol=1e-3)
  err = np.mean(((xvn @ np.asarray(ref.w) + float(ref.b)) > 0) != yvn)
  np.testing.assert_allclose(float(dec.val_error[0]), err)


def test_pareto_front():
  keep = decoy_lib.pareto_front([0.3, 0.2, 0.3, 0.1, 0.25], [0.5, 0.2, 0.4, 0.1, 0.45])
  np.testing.assert_array_equal(keep, [False, True, True, True, False])


def test_bad_arguments():
  with pytest.raises(ValueError, match='fraction'):
    kkt.kkt_attack(fraction=1.5)
  with pytest.raises(ValueError, match='num_splits'):
    kkt.kkt_attack(fraction=0.1, num_splits=0)
  with pytest.raises(ValueError, match='percentile'):
    kkt.kkt_attack(fraction=0.1, percentile=120.0)
  with pytest.raises(ValueError, match='repeats'):
    decoy_lib.decoy_parameters(jnp.zeros((4, 2)), jnp.asarray([0, 1, 0, 1]),
                               jnp.zeros((4, 2)), jnp.asarray([0, 1, 0, 1]), l2=0.1,
                               repeats=(0,))
