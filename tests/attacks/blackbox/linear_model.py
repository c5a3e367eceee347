"""The tiny black-box attack test bed: a two-class linear model on D = 10 features whose
decision boundary passes near x = 0.5 (SPSA, NES, Bandits, SimBA tests), a three-class one
with its closed-form minimal L2 / L_inf distances (Boundary Attack, RayS tests), a random
quadratic loss with its analytic gradient (the gradient-estimator tests), and the checks
those tests share."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.blackbox import estimators
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


def reachable(x, y, eps):
  """Exact: some point of the L_inf ball ∩ [0, 1] is misclassified by ``binary`` (the
  closed-form best attack x + eps sign(w) towards the other class, clipped; what PGD reaches
  on this model: its sign step is constant)."""
  s = jnp.where(y[:, None] == 1, -jnp.sign(W), jnp.sign(W))
  return np.asarray(common.margin(binary(jnp.clip(x + eps * s, 0.0, 1.0)), y) < 0)


SCORE_BASED_BAD_HYPERPARAMETERS = [
    # (factory kwargs, ValueError match) every eps-ball score-based attack with a loss
    # choice refuses (NES, Bandits).
    (dict(eps=-1.0), r'eps=-1.0 must be >= 0'),
    (dict(eps=0.1, num_steps=0), r'num_steps=0 must be >= 1'),
    (dict(eps=0.1, norm='l1'), r"norm='l1' is not one of"),
    (dict(eps=0.1, loss='cw'), r"loss='cw' is not one of"),
]


def assert_linf_fixed_budget_run(out, x, y, eps, num_steps, per_step):
  """The checks a fixed-budget L_inf score-based attack on ``binary`` passes: ball and box,
  ``success`` equal to misclassification at ``x_adv``, success only where ``reachable`` and
  on all reachable examples but at most one (as PGD), and the query count: one clean query,
  then ``per_step`` per step until success or the ``num_steps`` budget. Returns
  (success, queries) as NumPy arrays."""
  assert out.budget == 'fixed' and out.x_adv.shape == x.shape
  assert float(jnp.max(jnp.abs(out.x_adv - x))) <= eps + 1e-6
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  succ = np.asarray(out.info['success'])
  np.testing.assert_array_equal(succ, np.asarray(common.predict(binary(out.x_adv)) != y))
  reach = reachable(x, y, eps)
  assert 0 < reach.sum() < len(y)
  assert not np.any(succ & ~reach)
  assert succ.sum() >= reach.sum() - 1
  q = np.asarray(out.info['queries'])
  assert np.all((q - 1) % per_step == 0)
  np.testing.assert_array_equal(q[~succ], 1 + num_steps * per_step)
  np.testing.assert_array_equal(q[np.asarray(common.predict(binary(x)) != y)], 1)
  return succ, q


def assert_factory_refuses(factory, kw, match):
  """``factory(**kw)`` raises a ValueError matching ``match``: bad hyperparameters are
  refused when the attack is built, before any model or data."""
  with pytest.raises(ValueError, match=match):
    factory(**kw)


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


def multiclass_batch(b=16, seed=2):
  """``clean_batch``'s points labelled by ``multiclass``."""
  x, _ = clean_batch(b=b, seed=seed)
  return x, common.predict(multiclass(x))


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


def run_minimal_and_check(factory, norm, query_checkpoints):
  """Runs the decision-based minimal-norm attack ``factory(max_queries=query_checkpoints[-1],
  query_checkpoints=query_checkpoints)`` (jitted) on ``multiclass_batch()`` and checks what
  any such attack must give (``norm`` 'l2' or 'linf'): every example succeeds, its distance
  never beats ``minimal_distance``, the distances at the checkpoints do not increase and end
  at the result, the box, ``success`` equal to misclassification at ``x_adv``, and exactly
  ``max_queries`` queries. Returns (x, out) and, as NumPy, (distance / closed form,
  distance_at_queries, closed form, distance)."""
  x, y = multiclass_batch()
  max_queries = query_checkpoints[-1]
  out = jax.jit(factory(max_queries=max_queries, query_checkpoints=query_checkpoints),
                static_argnums=0)(multiclass, x, y, KEY)
  exact = np.asarray(minimal_distance(x, y, norm))
  dist = np.asarray(out.info['distance'])
  succ = np.asarray(out.info['success'])
  assert succ.all() and out.budget == 'minimal'
  ratio = dist / exact
  assert np.all(ratio >= 1 - 1e-4)                     # a lower bound, never beaten
  at = np.asarray(out.info['distance_at_queries'])
  assert at.shape == (len(y), len(query_checkpoints)) and np.all(np.diff(at, axis=1) <= 0)
  np.testing.assert_allclose(at[:, -1], dist)
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  np.testing.assert_array_equal(succ, np.asarray(common.predict(multiclass(out.x_adv)) != y))
  np.testing.assert_array_equal(out.info['queries'], max_queries)
  return x, out, ratio, at, exact, dist


def quadratic_loss(rng):
  """A random convex quadratic on 6 features, q(z) = 0.5 z'Az + c'z with A = M M' / 6 (M and
  c drawn from ``rng``), as the attacks' per-sample loss: the model [q(z), 0] with y = 0 has
  the untargeted margin loss q (batch of 2). Returns (loss, q, grad q, A)."""
  m = rng.normal(size=(6, 6))
  a = jnp.asarray(m @ m.T / 6, jnp.float32)
  c = jnp.asarray(rng.normal(size=6), jnp.float32)
  q = lambda z: 0.5 * jnp.einsum('...i,ij,...j->...', z, a, z) + z @ c
  query = lambda z: jnp.stack([q(z), jnp.zeros(z.shape[0])], axis=1)
  f = estimators.sample_losses(query, estimators.attack_loss('margin', False),
                               jnp.zeros(2, jnp.int32))
  return f, q, lambda z: z @ a + c, a
