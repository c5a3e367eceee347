"""Projections onto the L2 and L1 balls (with a box), against NumPy, with and without jit."""
import chex
import jax
import numpy as np
from absl.testing import absltest

from jaxsec.attacks.evasion import common


def _l1_box_reference(v, eps, lo, hi):
  """Bisection on the KKT multiplier: d = sign(v) clip(|v| - lam, 0, cap), sum |d| = eps."""
  cap = np.maximum(np.where(v >= 0, hi, -lo), 0.0)
  d = lambda lam: np.sign(v) * np.clip(np.abs(v) - lam, 0.0, cap)
  if np.abs(d(0.0)).sum() <= eps:
    return d(0.0)
  a, b = 0.0, float(np.abs(v).max())
  for _ in range(100):
    m = 0.5 * (a + b)
    a, b = (m, b) if np.abs(d(m)).sum() > eps else (a, m)
  return d(0.5 * (a + b))


class ProjectionsTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    k1, k2 = jax.random.split(jax.random.key(0))
    self.delta = np.asarray(jax.random.normal(k1, (4, 3, 5)), np.float64).astype(np.float32)
    self.lo = -np.asarray(jax.random.uniform(k2, (4, 3, 5)), np.float32)
    self.hi = 0.5 + 0.0 * self.lo

  @chex.variants(with_jit=True, without_jit=True)
  def test_l2(self):
    eps = np.array([0.5, 1.0, 100.0, 2.0], np.float32)
    got = self.variant(common.project_l2)(self.delta, eps)
    chex.assert_shape(got, self.delta.shape)
    n = np.linalg.norm(self.delta.reshape(4, -1), axis=1)
    want = self.delta * np.minimum(1.0, eps / n)[:, None, None]
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_l1_with_box(self):
    eps = np.array([0.5, 2.0, 100.0, 0.0], np.float32)
    got = self.variant(common.project_l1)(self.delta, eps, self.lo, self.hi)
    chex.assert_shape(got, self.delta.shape)
    chex.assert_tree_all_finite(got)
    want = [_l1_box_reference(v.ravel().astype(np.float64), e, lo.ravel(), hi.ravel())
            .reshape(v.shape)
            for v, e, lo, hi in zip(self.delta, eps, self.lo, self.hi, strict=True)]
    chex.assert_trees_all_close(got, np.asarray(want, np.float32), atol=1e-5)


if __name__ == '__main__':
  absltest.main()
