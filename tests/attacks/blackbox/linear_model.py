"""The tiny black-box attack test bed: a two-class linear model on D = 10 features whose
decision boundary passes near x = 0.5 (SPSA, NES, SimBA tests), and a three-class one with
its closed-form minimal L2 / L_inf distances (Boundary Attack, RayS tests)."""
import jax
import jax.numpy as jnp
import pytest

from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)
D = 10
W = jax.random.normal(jax.random.key(1), (D,))
B0 = 0.5 * jnp.sum(W)          # the clean point x = 0.5 sits near the boundary


def binary(x):
  """Two-class linear model: logits [0, w.x - b0] (class 1 iff w.x > b0)."""
  z = x.reshape((x.shape[0], -1)) @ W - B0
  return jnp.stack([jnp.zeros_like(z), z], axis=1)


def clean_batch(b=24, seed=2):
  x = jnp.clip(0.5 + 0.15 * jax.random.normal(jax.random.key(seed), (b, D)), 0.0, 1.0)
  return x, common.predict(binary(x))


def assert_refuses_bad_input(atk):
  """A non-finite x and a label outside the model's two classes raise before any query."""
  x = jnp.full((2, D), 0.5)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    atk(binary, x.at[1, 3].set(jnp.inf), jnp.zeros(2, jnp.int32), KEY)
  with pytest.raises(ValueError, match=r'y contains label 2'):
    atk(binary, x, jnp.array([2, 0], jnp.int32), KEY)


# A K = 3 class linear model for the decision-based (minimal-norm) attacks: logits x W3 + c3.
W3 = jax.random.normal(jax.random.key(3), (D, 3))
C3 = -0.5 * jnp.sum(W3, axis=0)          # x = 0.5 sits where the three logits meet


def multiclass(x):
  return x.reshape((x.shape[0], -1)) @ W3 + C3


def minimal_distance(x, y, q):
  """The exact minimal distance to misclassification of ``multiclass`` without a box:
  ``min_{j != y} (z_y - z_j) / ||w_y - w_j||_q*`` (dual norm q* = 1 for L_inf, 2 for L2), a
  lower bound of the minimal distance inside any box."""
  z = multiclass(x)
  zy = jnp.take_along_axis(z, y[:, None], axis=1)
  wd = W3[:, y].T[:, :, None] - W3[None, :, :]                 # [B, D, K]: w_y - w_j
  dual = jnp.sum(jnp.abs(wd), axis=1) if q == 'linf' else jnp.linalg.norm(wd, axis=1)
  ratio = (zy - z) / jnp.where(dual > 0, dual, 1.0)
  ratio = jnp.where(jnp.arange(3)[None, :] == y[:, None], jnp.inf, ratio)
  return jnp.min(ratio, axis=1)
