"""EOT ascends the mean per-draw loss gradient (Athalye et al. 2018), checked in closed form."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)
S = 16


def _problem():
  """A linear 3-class model behind random input dropout (keep 1/2, rescaled by 2)."""
  w = np.asarray(jax.random.normal(jax.random.key(1), (6, 3)), np.float64) * 2.0
  b = np.array([0.3, -0.2, 0.1])
  logits_fn = lambda x: x @ jnp.asarray(w, x.dtype) + jnp.asarray(b, x.dtype)
  transform = lambda x, k: x * 2.0 * jax.random.bernoulli(k, 0.5, x.shape)
  x = np.asarray(jax.random.uniform(jax.random.key(2), (4, 6), minval=0.3, maxval=0.7))
  y = np.array([0, 1, 2, 1])
  return w, b, logits_fn, transform, x, y


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _closed_form(w, b, x, y, masks):
  """Per-draw CE gradient m * (W (softmax(z_s) - e_y)): its mean, and the gradient of the
  CE of the mean logits (output averaging)."""
  onehot = np.eye(w.shape[1])[y]
  per = [m * ((_softmax((m * x) @ w + b) - onehot) @ w.T) for m in masks]
  mbar = np.mean(masks, 0)
  zbar = (mbar * x) @ w + b
  return np.mean(per, 0), mbar * ((_softmax(zbar) - onehot) @ w.T)


def _masks(transform, x, keys):
  return [np.asarray(transform(jnp.ones_like(jnp.asarray(x)), k), np.float64) for k in keys]


@pytest.mark.parametrize('resample', ['fixed', 'per_input'])
def test_eot_gradient_is_the_mean_per_draw_loss_gradient(resample):
  w, b, logits_fn, transform, x, y = _problem()
  f = attacks.eot_logits_fn(logits_fn, transform, num_samples=S, key=KEY, resample=resample)
  xj, yj = jnp.asarray(x), jnp.asarray(y, jnp.int32)
  keys = (jax.random.split(KEY, S) if resample == 'fixed'
          else jax.random.split(jax.random.fold_in(KEY, attacks.evasion.adaptive._input_seed(
              xj)), S))
  mean_grad, out_grad = _closed_form(w, b, x, y, _masks(transform, x, keys))
  vg = jax.jit(lambda a, c: common.value_and_grad(f, common.cross_entropy)(a, c))
  v, logits, g = vg(xj, yj)
  np.testing.assert_allclose(g, mean_grad, rtol=1e-4, atol=1e-6)
  # The two estimators really differ here (so the check above can fail).
  rel = np.linalg.norm(out_grad - mean_grad) / np.linalg.norm(mean_grad)
  assert rel > 0.1, rel
  # Value and logits are the averaged model's.
  np.testing.assert_allclose(logits, f(xj), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, common.cross_entropy(f(xj), yj), rtol=1e-5, atol=1e-6)


def test_eot_fgm_l2_steps_along_the_mean_per_draw_gradient():
  w, b, logits_fn, transform, x, y = _problem()
  eps = 0.01
  atk = attacks.eot(attacks.fgm(eps=eps, norm='l2'), transform, num_samples=S,
                    resample='fixed')
  xa = jax.jit(atk, static_argnums=0)(logits_fn, jnp.asarray(x), jnp.asarray(y, jnp.int32),
                                      KEY).x_adv
  k_eot = jax.random.split(KEY)[0]
  mean_grad, _ = _closed_form(w, b, x, y, _masks(transform, x, jax.random.split(k_eot, S)))
  d = mean_grad / np.linalg.norm(mean_grad, axis=1, keepdims=True)
  np.testing.assert_allclose((np.asarray(xa) - x) / eps, d, atol=1e-4)


def test_eot_averaged_output_option_is_the_gradient_of_the_mean_output():
  w, b, logits_fn, transform, x, y = _problem()
  f = attacks.eot_logits_fn(logits_fn, transform, num_samples=S, key=KEY, resample='fixed',
                            gradient='averaged_output')
  _, out_grad = _closed_form(w, b, x, y, _masks(transform, x, jax.random.split(KEY, S)))
  _, _, g = common.value_and_grad(f, common.cross_entropy)(jnp.asarray(x),
                                                          jnp.asarray(y, jnp.int32))
  np.testing.assert_allclose(g, out_grad, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="gradient='mean' is not one of"):
    attacks.eot_logits_fn(logits_fn, transform, num_samples=2, key=KEY, gradient='mean')
  with pytest.raises(ValueError, match="gradient='mean' is not one of"):
    attacks.eot(attacks.fgsm(eps=0.1), transform, num_samples=2, gradient='mean')
