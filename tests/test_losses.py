"""Per-example losses, checked against NumPy formulas with and without jit (chex.variants)."""
import chex
import jax
import numpy as np
from absl.testing import absltest

from jaxsec import losses


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


class LossesTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.logits = np.asarray(jax.random.normal(jax.random.key(0), (5, 4)), np.float32)
    self.labels = np.array([0, 3, 1, 2, 3])

  @chex.variants(with_jit=True, without_jit=True)
  def test_cross_entropy(self):
    got = self.variant(losses.cross_entropy)(self.logits, self.labels)
    chex.assert_shape(got, (5,))
    want = -_log_softmax(self.logits)[np.arange(5), self.labels]
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_binary_cross_entropy_of_one_logit(self):
    z, y = self.logits[:, :1], self.labels % 2
    got = self.variant(losses.cross_entropy)(z, y)
    chex.assert_shape(got, (5,))
    want = np.log1p(np.exp(-z[:, 0])) + (1 - y) * z[:, 0]     # -log sigmoid(+-z)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_multiclass_hinge(self):
    got = self.variant(losses.hinge)(self.logits, self.labels)
    chex.assert_shape(got, (5,))
    want = [max(0.0, 1.0 + max(np.delete(z, t)) - z[t])
            for z, t in zip(self.logits, self.labels, strict=True)]
    chex.assert_trees_all_close(got, np.asarray(want, np.float32), atol=1e-6)


if __name__ == '__main__':
  absltest.main()
