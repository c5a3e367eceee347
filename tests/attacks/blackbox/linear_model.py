"""The tiny score-based attack test bed shared by the SPSA, NES and SimBA tests: a two-class
linear model on D = 10 features whose decision boundary passes near x = 0.5."""
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
