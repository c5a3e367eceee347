"""The linear multiclass test bed shared by the minimal-norm attack tests (EAD, FMN, DDN).

For logits ``z = x W + b`` and a box far from ``x``, the smallest perturbation in norm ``p``
that makes class ``j`` beat the label ``y`` is ``(z_y - z_j) / ||w_y - w_j||_q`` (``q`` dual
to ``p``: L2 -> L2, L_inf -> L1, L1 -> L_inf), and the minimal untargeted distance is the
minimum over ``j != y``. For a target ``t`` that formula is a lower bound on the distance
to the region where ``t`` wins (``t`` must also beat the other classes).

Beside it, a small tanh MLP inside the box [0, 1] for the box and success-at-``x_adv``
checks, where no closed form is needed.
"""
import jax
import jax.numpy as jnp
import numpy as np

D, C = 20, 5
W = jax.random.normal(jax.random.key(1), (D, C))
BIAS = 0.3 * jax.random.normal(jax.random.key(2), (C,))
FAR = (-10.0, 10.0)          # a box that no minimal perturbation reaches
_DUAL = {'l2': 2, 'linf': 1, 'l1': np.inf}


def linear(x):
  return x.reshape((x.shape[0], -1)) @ W + BIAS


def batch(b=8, seed=3):
  x = 0.5 + 0.05 * jax.random.normal(jax.random.key(seed), (b, D))
  return x, jnp.argmax(linear(x), 1)


def pair_distances(x, y, p):
  """[B, C]: ``(z_y - z_j) / ||w_y - w_j||_q`` (``inf`` at ``j = y``)."""
  z = linear(x)
  zy = jnp.take_along_axis(z, y[:, None], 1)
  dw = W[:, y].T[:, :, None] - W[None]                  # [B, D, C]
  n = jnp.linalg.norm(dw, ord=_DUAL[p], axis=1)
  return jnp.where(jax.nn.one_hot(y, C) > 0, jnp.inf, (zy - z) / n)


def closed_form(x, y, p):
  """[B]: the exact minimal untargeted ``p``-distance (box ignored)."""
  return jnp.min(pair_distances(x, y, p), 1)


def dist(d, p):
  f = d.reshape((d.shape[0], -1))
  return {'l2': jnp.linalg.norm(f, axis=1), 'linf': jnp.max(jnp.abs(f), 1),
          'l1': jnp.sum(jnp.abs(f), 1), 'l0': jnp.sum(f != 0, 1).astype(f.dtype)}[p]


def assert_near_minimal(x_adv, x, y, p, factor, target=None):
  """Never below the closed form (float32 rounding aside), at most ``factor`` above it."""
  ref = (closed_form(x, y, p) if target is None
         else jnp.take_along_axis(pair_distances(x, y, p), target[:, None], 1)[:, 0])
  ratio = np.asarray(dist(x_adv - x, p) / ref)
  assert np.all(ratio >= 1 - 1e-4), ratio
  if target is None:
    assert np.all(ratio <= factor), ratio
  return ratio


def mlp_batch():
  """A tanh MLP (12 -> 16 -> 4 classes) and 6 inputs [3, 4] uniform in [0, 1] with their
  predicted labels: (model, x, y)."""
  k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
  w1 = jax.random.normal(k1, (12, 16)) / 2
  w2 = jax.random.normal(k2, (16, 4))
  f = lambda v: jnp.tanh(v.reshape(v.shape[0], -1) @ w1) @ w2
  x = jax.random.uniform(k3, (6, 3, 4))
  return f, x, jnp.argmax(f(x), 1)


def assert_box_and_success(out, f, x, y, failures_return_x):
  """``x_adv`` inside [0, 1], ``success`` equal to misclassification by ``f`` at ``x_adv``,
  at least one success, and (``failures_return_x``) ``x`` itself where the attack failed."""
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  np.testing.assert_array_equal(out.info['success'], jnp.argmax(f(out.x_adv), 1) != y)
  assert bool(jnp.any(out.info['success']))
  if failures_return_x:
    x_back = jnp.where(out.info['success'][:, None, None], x, out.x_adv)
    np.testing.assert_array_equal(x_back, x)
