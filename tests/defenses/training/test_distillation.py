"""Defensive distillation: temperature loss, and the T = 1 confident-teacher limit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import losses
from jaxsec.defenses.training import distillation as dist


def _student(p, x):
  return x @ p


def test_temperature_cross_entropy():
  z = jnp.array([[1.0, 2.0, -1.0], [0.0, 0.0, 3.0]])
  y = jnp.array([1, 0])
  np.testing.assert_allclose(dist.temperature_cross_entropy(4.0)(z, y),
                             losses.cross_entropy(z / 4.0, y), rtol=1e-6)
  np.testing.assert_allclose(dist.at_temperature(lambda x: x, 4.0)(z), z / 4.0)


def test_t1_confident_teacher_equals_one_hot_training():
  """softmax(c * z_teacher) -> one-hot(argmax) as c grows: the distillation loss and its
  gradient converge to those of hard-label training on the teacher's argmax."""
  x = jax.random.normal(jax.random.key(0), (8, 5))
  teacher_w = jax.random.normal(jax.random.key(1), (5, 4))
  w = jax.random.normal(jax.random.key(2), (5, 4))
  hard = jnp.argmax(x @ teacher_w, axis=1)
  y_unused = jnp.zeros(8, jnp.int32)
  want = losses.cross_entropy(x @ w, hard)
  g_want = jax.grad(lambda q: jnp.mean(losses.cross_entropy(x @ q, hard)))(w)
  prev = None
  for scale in (1.0, 10.0, 1e4):
    teacher = lambda z, s=scale: s * (z @ teacher_w)
    obj = dist.distillation(teacher, temperature=1.0)
    got = obj(_student, w, x, y_unused, None)
    err = float(jnp.max(jnp.abs(got - want)))
    if prev is not None:
      assert err <= prev + 1e-7
    prev = err
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  g = jax.jit(jax.grad(lambda q: jnp.mean(obj(_student, q, x, y_unused, None))))(w)
  np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-6)


def test_distillation_at_t_uses_soft_labels_and_stops_teacher_gradient():
  x = jax.random.normal(jax.random.key(0), (4, 3))
  tw = jax.random.normal(jax.random.key(1), (3, 5))
  w = jax.random.normal(jax.random.key(2), (3, 5))
  T = 20.0
  obj = dist.distillation(lambda z: z @ tw, temperature=T)
  soft = jax.nn.softmax((x @ tw) / T)
  want = -jnp.sum(soft * jax.nn.log_softmax((x @ w) / T), axis=1)
  np.testing.assert_allclose(obj(_student, w, x, jnp.zeros(4, jnp.int32), None), want,
                             rtol=1e-5)
  np.testing.assert_allclose(dist.soft_labels(lambda z: z @ tw, x, T), soft, rtol=1e-6)
  # mixing in hard labels
  y = jnp.array([0, 1, 2, 3])
  mix = dist.distillation(lambda z: z @ tw, temperature=T, hard_label_weight=0.25)
  np.testing.assert_allclose(mix(_student, w, x, y, None),
                             0.75 * want + 0.25 * losses.cross_entropy((x @ w) / T, y),
                             rtol=1e-5)


def test_deployed_is_t1_logits_and_bad_args():
  np.testing.assert_allclose(dist.deployed(_student, jnp.eye(2))(jnp.ones((1, 2))),
                             jnp.ones((1, 2)))
  with pytest.raises(ValueError, match='temperature'):
    dist.distillation(lambda z: z, temperature=0.0)
  with pytest.raises(ValueError, match='hard_label_weight'):
    dist.distillation(lambda z: z, temperature=2.0, hard_label_weight=2.0)
