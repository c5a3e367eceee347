"""DeepFool: exact one-step closed forms on affine classifiers, bounds, validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion.deepfool import deepfool


def _affine_binary(w, b):
  return lambda x: (x.reshape(x.shape[0], -1) @ w)[:, None] + b   # one logit


@pytest.mark.parametrize('norm', ['l2', 'linf'])
@pytest.mark.parametrize('bounds', [(0.0, 1.0), (-1.0, 2.0)])
def test_affine_binary_one_step_closed_form(norm, bounds):
  key = jax.random.key(0)
  w = jax.random.normal(key, (6,))
  lo, hi = bounds
  mid = 0.5 * (lo + hi)
  x = mid + 0.05 * (hi - lo) * jax.random.normal(jax.random.key(1), (5, 6))
  f = _affine_binary(w, 0.1 - mid * jnp.sum(w))   # both classes occur among the 5 points
  fx = f(x)[:, 0]
  y = (fx > 0).astype(jnp.int32)
  eta = 0.02
  out = jax.jit(deepfool(norm=norm, overshoot=eta, bounds=bounds),
                static_argnums=0)(f, x, y, None)
  dual = jnp.linalg.norm(w) if norm == 'l2' else jnp.sum(jnp.abs(w))
  expected = (1 + eta) * (jnp.abs(fx) / dual + 1e-4)
  r = (out.x_adv - x).reshape(5, -1)
  got = jnp.linalg.norm(r, axis=1) if norm == 'l2' else jnp.max(jnp.abs(r), axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  np.testing.assert_allclose(out.info[norm], got, rtol=1e-5)
  np.testing.assert_array_equal(out.info['steps'], 1)
  assert bool(jnp.all(out.info['success']))
  # direction: the L2 step is along -sign(f) w, the L_inf step is -sign(f) sign(w).
  want_dir = -jnp.sign(fx)[:, None] * (w[None] if norm == 'l2' else jnp.sign(w)[None])
  cos = jnp.sum(r * want_dir, 1) / (jnp.linalg.norm(r, axis=1) * jnp.linalg.norm(want_dir, axis=1))
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi


def test_affine_multiclass_finds_nearest_boundary():
  # Linear 4-class model: the L2 distance to the boundary with class j is
  # (z_y - z_j) / ||w_y - w_j||; one DeepFool step goes to the nearest one exactly.
  W = jax.random.normal(jax.random.key(3), (8, 4))
  bias = jax.random.normal(jax.random.key(4), (4,))
  f = lambda x: x @ W + bias
  x = 0.5 + 0.02 * jax.random.normal(jax.random.key(5), (7, 8))
  z = f(x)
  y = jnp.argmax(z, 1)
  out = deepfool(norm='l2', overshoot=0.0)(f, x, y, None)
  zy = jnp.take_along_axis(z, y[:, None], 1)
  diffw = jnp.linalg.norm(W[:, y].T[:, :, None] - W[None], axis=1)   # [B, C]
  dist = jnp.where(jax.nn.one_hot(y, 4) > 0, jnp.inf, (zy - z) / diffw)
  expected = jnp.min(dist, 1) + 1e-4
  np.testing.assert_allclose(jnp.linalg.norm(out.x_adv - x, axis=1), expected, rtol=1e-4)
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(out.info['gradients'], 3)


def test_mlp_success_bounds_and_batch_sizes():
  k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
  W1 = jax.random.normal(k1, (12, 16)) / 3
  W2 = jax.random.normal(k2, (16, 5)) / 3
  f = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ W1) @ W2
  for bounds, bsz in [((0.0, 1.0), 1), ((-1.0, 2.0), 4)]:
    lo, hi = bounds
    x = jax.random.uniform(k3, (bsz, 3, 4), minval=lo, maxval=hi)
    y = jnp.argmax(f(x), 1)
    for norm in ('l2', 'linf'):
      atk = jax.jit(deepfool(norm=norm, num_classes=3, bounds=bounds),
                    static_argnums=0)
      out = atk(f, x, y, jax.random.key(0))
      assert out.x_adv.shape == x.shape
      assert float(out.x_adv.min()) >= lo - 1e-6 and float(out.x_adv.max()) <= hi + 1e-6
      pred = jnp.argmax(f(out.x_adv), 1)
      np.testing.assert_array_equal(out.info['success'], pred != y)
      assert bool(jnp.all(out.info['success']))
      assert bool(jnp.all(out.info['gradients'] == 2 * out.info['steps']))


def test_already_misclassified_is_unchanged():
  f = lambda x: jnp.stack([x[:, 0], -x[:, 0]], 1)
  x = jnp.array([[0.7, 0.2], [0.3, 0.9]])
  y = jnp.array([1, 0])            # example 0 predicted 0 (wrong), example 1 predicted 0
  out = deepfool()(f, x, y, None)
  np.testing.assert_array_equal(out.x_adv[0], x[0])
  assert int(out.info['steps'][0]) == 0 and bool(out.info['success'][0])


@pytest.mark.parametrize('kw', [dict(norm='l1'), dict(num_classes=1), dict(overshoot=-0.1),
                                dict(max_iter=0), dict(bounds=(1.0, 0.0))])
def test_bad_hyperparameters(kw):
  with pytest.raises(ValueError):
    deepfool(**kw)
