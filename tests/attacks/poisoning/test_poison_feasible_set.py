"""The sphere + slab feasible set (Koh, Steinhardt & Liang 2022): agreement with the
sanitisers, and exactness of its projection and linear minimiser (variational inequality
against random feasible points, a closed form)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.poisoning import feasible_set as fsl
from jaxsec.defenses.data import sanitize


def _data(n=40, d=5, seed=0):
  rng = np.random.RandomState(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.clip(0.5 + 0.2 * rng.randn(n, d) + 0.15 * (2 * y[:, None] - 1), 0, 1)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def _feasible_points(fs, y, m, seed):
  """Random points of F_y by rejection (independent of the solvers): the centroid plus a
  random direction scaled into the ball, kept when the sanitiser keeps them."""
  rng = np.random.RandomState(seed)
  d = fs.centroids.shape[1]
  u = rng.randn(20 * m, d)
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  rho = float(fs.sphere_radii[y]) * rng.rand(20 * m, 1) ** (1.0 / 3)
  q = jnp.asarray(np.asarray(fs.centroids[y]) + rho * u, jnp.float32)
  keep = np.asarray(fsl.feasible_mask(fs, q, jnp.full((q.shape[0],), y, jnp.int32), rtol=0.0))
  return q[np.flatnonzero(keep)[:m]]


def test_radii_are_clean_percentiles_and_scores_match_the_sanitisers():
  x, y = _data()
  fs = fsl.feasible_set(x, y, percentile=80.0)
  mu = np.stack([np.asarray(x)[np.asarray(y) == k].mean(0) for k in (0, 1)])
  np.testing.assert_allclose(np.asarray(fs.centroids), mu, rtol=1e-5, atol=1e-6)
  sph, slb = (np.asarray(a) for a in fsl.distances(fs.centroids, fs.direction, x, y))
  for k in (0, 1):
    np.testing.assert_allclose(float(fs.sphere_radii[k]), np.percentile(sph[y == k], 80),
                               rtol=1e-5)
    np.testing.assert_allclose(float(fs.slab_radii[k]), np.percentile(slb[y == k], 80),
                               rtol=1e-5)
  r = float(fs.sphere_radii.max())
  np.testing.assert_array_equal(
      np.asarray(sanitize.sphere(x, y, num_classes=2, radius=r, centroids=fs.centroids)),
      sph <= r)
  # the slab sanitiser drops, per class, the points with the largest slab distance here
  keep = np.asarray(sanitize.slab(x, y, num_classes=2, fraction=0.25, centroids=fs.centroids))
  for k in (0, 1):
    cls = np.flatnonzero(np.asarray(y) == k)
    dropped = cls[np.argsort(-slb[cls], kind='stable')[:5]]
    np.testing.assert_array_equal(np.flatnonzero(~keep[cls]), np.sort(np.searchsorted(
        cls, dropped)))
  mask = np.asarray(fsl.feasible_mask(fs, x, y))
  np.testing.assert_array_equal(mask, (sph <= np.asarray(fs.sphere_radii)[y] + 1e-4 *
                                       np.asarray(fs.sphere_radii)[y]) &
                                (slb <= np.asarray(fs.slab_radii)[y] + 1e-4 *
                                 np.asarray(fs.sphere_radii)[y]))


@pytest.mark.parametrize('with_half', [False, True])
def test_projection_satisfies_the_variational_inequality(with_half):
  x, y = _data()
  fs = fsl.feasible_set(x, y, percentile=70.0, bounds=(0.0, 1.0))
  rng = np.random.RandomState(3)
  a = jnp.asarray(rng.randn(5), jnp.float32)
  beta = float(a @ fs.centroids[1]) + 0.05          # the centroid is feasible
  p = fs.centroids[1] + 1.5 * jnp.asarray(rng.randn(8, 5), jnp.float32)
  if with_half:
    z, ok = jax.vmap(lambda q: fsl.project_point(fs, q, 1, a, beta))(p)
  else:
    z, ok = fsl.project(fs, p, jnp.ones(8, jnp.int32))
  assert bool(jnp.all(ok))
  assert bool(jnp.all(fsl.feasible_mask(fs, z, jnp.ones(8, jnp.int32))))
  q = _feasible_points(fs, 1, 400, seed=4)
  if with_half:
    assert float(jnp.max(z @ a)) <= beta + 1e-5
    q = q[np.asarray(q @ a) <= beta]
  assert q.shape[0] > 50
  # z = P(p)  <=>  <p - z, q - z> <= 0 for every feasible q
  vi = jnp.einsum('id,jd->ij', p - z, q) - jnp.sum((p - z) * z, 1)[:, None]
  assert float(vi.max()) <= 1e-4
  # a feasible point projects onto itself
  z2, _ = fsl.project(fs, q[:5], jnp.ones(5, jnp.int32))
  np.testing.assert_allclose(np.asarray(z2), np.asarray(q[:5]), atol=1e-5)


def test_linear_minimizer_closed_form_and_optimality():
  x, y = _data()
  fs = fsl.feasible_set(x, y, percentile=90.0)            # no input box
  v = fs.direction
  u = jnp.asarray(np.random.RandomState(5).randn(5), jnp.float32)
  u = u - (u @ v) * v                                      # orthogonal to the slab
  z, ok = fsl.linear_minimizer(fs, u, 0)
  expect = fs.centroids[0] - fs.sphere_radii[0] * u / jnp.linalg.norm(u)
  assert bool(ok)
  np.testing.assert_allclose(np.asarray(z), np.asarray(expect), atol=2e-4)
  # all constraints, a random objective: no feasible point does better
  fsb = fsl.feasible_set(x, y, percentile=90.0, bounds=(0.0, 1.0))
  u2 = jnp.asarray(np.random.RandomState(6).randn(5), jnp.float32)
  z2, ok2 = fsl.linear_minimizer(fsb, u2, 1)
  assert bool(ok2) and bool(fsl.feasible_mask(fsb, z2[None], jnp.ones(1, jnp.int32))[0])
  q = _feasible_points(fsb, 1, 500, seed=7)
  assert float(z2 @ u2) <= float(jnp.min(q @ u2)) + 1e-4


def test_empty_intersection_is_reported():
  x, y = _data()
  fs = fsl.feasible_set(x, y, percentile=90.0, bounds=(0.0, 1.0))
  a = jnp.ones(5, jnp.float32)
  _, ok = fsl.project_point(fs, fs.centroids[1], 1, a, -1.0)   # sum(x) <= -1 misses [0,1]^d
  assert not bool(ok)


def test_bad_arguments():
  x, y = _data()
  with pytest.raises(ValueError, match='percentile'):
    fsl.feasible_set(x, y, percentile=0.0)
  with pytest.raises(ValueError, match='both classes'):
    fsl.feasible_set(x, jnp.zeros_like(y))
  with pytest.raises(ValueError, match='bounds'):
    fsl.feasible_set(x, y, bounds=(1.0, 0.0))
