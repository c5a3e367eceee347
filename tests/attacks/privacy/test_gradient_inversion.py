"""DLG recovers one example from a linear model's gradient; iDLG labels are exact."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import metrics
from jaxsec.attacks import privacy as priv
from jaxsec.attacks.privacy import _nets


def _linear_apply(params, x):
  return x.reshape((x.shape[0], -1)) @ params['w'] + params['b']


def test_dlg_recovers_single_example_on_linear_model():
  key = jax.random.key(0)
  params = {'w': jax.random.normal(key, (12, 3)), 'b': jnp.zeros(3)}
  x = jax.random.uniform(jax.random.key(1), (1, 12, 12, 1))[:, :2, :6]  # [1, 2, 6, 1]
  y = jnp.array([2])
  g = priv.batch_gradient(_linear_apply, params, x, y)
  # iDLG: the label is read off the gradient, then the input is the unique exact match.
  rec = priv.dlg(num_steps=30, label_mode='idlg')(
      _linear_apply, params, g, jax.random.key(3), x_shape=x.shape, num_classes=3,
      last_weight_grad=g['w'])
  np.testing.assert_allclose(rec.x, x, atol=1e-4)
  np.testing.assert_array_equal(rec.labels, [[0, 0, 1]])
  assert float(rec.loss[-1]) < 1e-8 < float(rec.loss[0])
  assert float(metrics.psnr(rec.x, x)[0]) > 70
  # DLG: joint soft labels only reach the one-hot label in the limit, so convergence is
  # slower, but the example and label are recovered.
  rec = priv.dlg(num_steps=30, label_mode='joint')(
      _linear_apply, params, g, jax.random.key(3), x_shape=x.shape, num_classes=3)
  np.testing.assert_allclose(rec.x, x, atol=1e-2)
  assert int(jnp.argmax(rec.labels[0])) == 2
  assert float(metrics.psnr(rec.x, x)[0]) > 40


def test_dlg_adam_and_given_labels_reduce_gradient_distance():
  params = _nets.mlp_init(jax.random.key(0), (8, 6, 3))
  params = jax.tree.map(lambda a: a, params)
  x = jax.random.uniform(jax.random.key(1), (2, 2, 4, 1))
  y = jnp.array([0, 1])
  g = priv.batch_gradient(_nets.mlp_apply, params, x, y)
  rec = priv.dlg(num_steps=20, optimizer='adam', learning_rate=0.05, label_mode='given',
                 distance='cosine', tv_weight=1e-3, init='uniform')(
      _nets.mlp_apply, params, g, jax.random.key(3), x_shape=x.shape, num_classes=3, y=y)
  assert rec.x.shape == x.shape and float(rec.loss[-1]) < float(rec.loss[0])
  assert float(rec.x.min()) >= 0 and float(rec.x.max()) <= 1
  np.testing.assert_array_equal(rec.labels, jax.nn.one_hot(y, 3))
  with pytest.raises(ValueError, match='given'):
    priv.dlg(label_mode='given')(_nets.mlp_apply, params, g, jax.random.key(0),
                                 x_shape=x.shape, num_classes=3)
  with pytest.raises(ValueError, match='label_mode'):
    priv.dlg(label_mode='guess')


def test_idlg_label_recovery_exact():
  params = _nets.mlp_init(jax.random.key(0), (20, 16, 10))   # ReLU: features >= 0
  xs = jax.random.normal(jax.random.key(1), (20, 20))
  ys = jax.random.randint(jax.random.key(2), (20,), 0, 10)
  grad = jax.jit(lambda x, y: priv.batch_gradient(_nets.mlp_apply, params, x, y))
  for i in range(20):
    g = grad(xs[i:i + 1], ys[i:i + 1])
    assert int(priv.idlg_labels(g['w1'])[0]) == int(ys[i])
    # Same from the transposed layout [C, features].
    assert int(priv.idlg_labels(g['w1'].T, class_axis=0)[0]) == int(ys[i])
  # Batch heuristic with distinct labels.
  g = priv.batch_gradient(_nets.mlp_apply, params, xs[:3], jnp.array([1, 4, 7]))
  assert sorted(np.asarray(priv.idlg_labels(g['w1'], batch_size=3)).tolist()) == [1, 4, 7]


def test_match_batch():
  x = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 1))
  perm = priv.match_batch(x[[2, 0, 1]], x)
  np.testing.assert_array_equal(x[[2, 0, 1]][perm], x)
