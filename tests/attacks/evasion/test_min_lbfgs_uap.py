"""L-BFGS (Szegedy) and universal perturbations on linear problems with closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.base import FittedAttack
from jaxsec.attacks.evasion.lbfgs import lbfgs
from jaxsec.attacks.evasion.universal import universal_perturbation
from jaxsec.attacks.evasion.universal import universal_perturbation_sgd

w = jax.random.normal(jax.random.key(3), (6,))


@pytest.mark.parametrize('bounds', [(0.0, 1.0), (-1.0, 2.0)])
def test_lbfgs_near_minimal_on_linear(bounds):
  lo, hi = bounds
  mid = 0.5 * (lo + hi)
  f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), (x - mid) @ w - 0.2], 1)
  x = mid + 0.05 * (hi - lo) * jax.random.normal(jax.random.key(5), (4, 6))
  fx = (x - mid) @ w - 0.2
  y = (fx > 0).astype(jnp.int32)
  exact = jnp.abs(fx) / jnp.linalg.norm(w)
  atk = jax.jit(lbfgs(targeted=True, num_search_steps=8, max_iter=50, bounds=bounds),
                static_argnums=0)
  out = atk(f, x, 1 - y, None)            # target: the other class
  assert bool(jnp.all(out.info['success']))
  np.testing.assert_array_equal(jnp.argmax(f(out.x_adv), 1), 1 - y)
  assert bool(jnp.all(out.info['l2'] >= exact * (1 - 1e-4)))
  assert bool(jnp.all(out.info['l2'] <= exact * 1.06))
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi
  assert bool(jnp.all(out.info['gradients'] >= out.info['steps']))


def test_lbfgs_untargeted_multiclass():
  W = jax.random.normal(jax.random.key(1), (6, 3))
  f = lambda x: x @ W
  x = jax.random.uniform(jax.random.key(2), (3, 6), minval=0.4, maxval=0.6)
  y = jnp.argmax(f(x), 1)
  out = lbfgs(num_search_steps=4, max_iter=30)(f, x, y, None)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(jnp.argmax(f(out.x_adv), 1) != y))


def _toy(n=60):
  xs = jax.random.uniform(jax.random.key(8), (n, 6), minval=0.3, maxval=0.7)
  b = jnp.max(xs @ w) + 0.05                 # every point is class 0
  f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), x @ w - b], 1)
  return xs, f, -(xs @ w - b)                # margins |f(x)|


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_uap_reaches_fooling_rate_on_linear(norm):
  xs, f, margin = _toy()
  dual = jnp.sum(jnp.abs(w)) if norm == 'linf' else jnp.linalg.norm(w)
  # The best universal v (xi * sign(w) or xi * w/||w||) fools exactly the points with
  # margin < xi * dual; give it radius for 90% of the points, ask for 80%.
  xi = float(jnp.quantile(margin, 0.9) / dual)
  atk = universal_perturbation(xi=xi, norm=norm, delta=0.2)
  if norm == 'l2':     # the standard signature: fit on the batch, apply to it
    out = jax.jit(atk.attack, static_argnums=0)(f, xs, jnp.zeros(60, jnp.int32),
                                                jax.random.key(0))
    v, fr = out.info['perturbation'], out.info['fooling_rate']
    np.testing.assert_allclose(fr, jnp.mean(out.info['fooled']), atol=1e-6)
    np.testing.assert_allclose(out.x_adv, jnp.clip(xs + v, 0.0, 1.0))
  else:                # fit / apply
    v, info = jax.jit(atk.fit, static_argnums=0)(f, xs, jax.random.key(0))
    fr = info['fooling_rate']
    np.testing.assert_allclose(fr, jnp.mean(jnp.argmax(f(atk.apply(xs, v)), 1) != 0),
                               atol=1e-6)
  assert float(fr) >= 0.8
  vn = jnp.max(jnp.abs(v)) if norm == 'linf' else jnp.linalg.norm(v)
  assert float(vn) <= xi * (1 + 1e-5)
  # v transfers to fresh points of the same distribution (all of class 0).
  fresh = jax.random.uniform(jax.random.key(9), (200, 6), minval=0.3, maxval=0.7)
  fresh = fresh[(fresh @ w) < jnp.max(xs @ w) + 0.05]
  fooled = jnp.argmax(f(atk.apply(fresh, v)), 1) != 0
  assert float(jnp.mean(fooled)) >= 0.6


def test_uap_bounds_and_stops_at_max_passes():
  xs, f, margin = _toy(20)
  lo, hi = -1.0, 2.0
  atk = universal_perturbation(xi=1e-3, norm='linf', max_passes=2, bounds=(lo, hi))
  out = atk.attack(f, xs, jnp.zeros(20, jnp.int32), jax.random.key(1))
  assert int(out.info['passes']) == 2               # cannot reach 80% with a tiny radius
  assert float(out.x_adv.min()) >= lo and float(out.x_adv.max()) <= hi


@pytest.mark.parametrize('factory', [universal_perturbation, universal_perturbation_sgd])
def test_uap_is_a_fitted_attack(factory):
  """A named tuple of pure functions (optax's pattern), not a closure with attributes."""
  atk = factory(xi=0.1)
  assert isinstance(atk, FittedAttack) and atk._fields == ('fit', 'apply', 'attack')
  assert not hasattr(atk.attack, 'fit')


@pytest.mark.parametrize('factory,kw', [
    (lbfgs, dict(initial_const=0.0)), (lbfgs, dict(num_search_steps=0)),
    (lbfgs, dict(max_iter=0)), (lbfgs, dict(bounds=(1, 0))), (lbfgs, dict(targeted=1)),
    (universal_perturbation, dict(xi=0.0)), (universal_perturbation, dict(xi=0.1, norm='l1')),
    (universal_perturbation, dict(xi=0.1, delta=1.0)),
    (universal_perturbation, dict(xi=0.1, max_passes=0)),
    (universal_perturbation, dict(xi=0.1, num_classes=1)),
])
def test_bad_hyperparameters(factory, kw):
  with pytest.raises(ValueError):
    factory(**kw)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_uap_sgd_finds_the_optimal_direction_on_linear(norm):
  """All points are class 0 of a linear model: the best universal v is xi * sign(w) (L_inf)
  or xi * w / ||w|| (L2), which fools exactly the points with margin < xi * ||w||_dual."""
  xs, f, margin = _toy()
  dual = jnp.sum(jnp.abs(w)) if norm == 'linf' else jnp.linalg.norm(w)
  xi = float(jnp.quantile(margin, 0.9) / dual)
  atk = universal_perturbation_sgd(xi=xi, norm=norm, num_steps=60, batch_size=16)
  v, info = jax.jit(atk.fit, static_argnums=0)(f, xs, jax.random.key(0))
  best = xi * (jnp.sign(w) if norm == 'linf' else w / jnp.linalg.norm(w))
  np.testing.assert_allclose(np.asarray(v), np.asarray(best), atol=1e-5 * (1 + xi))
  # Fooled exactly where the closed form says (points whose clip(x+v) stays inside the box).
  expected = float(jnp.mean(margin < xi * dual))
  assert abs(float(info['fooling_rate']) - expected) <= 1 / 60 + 1e-6
  vn = jnp.max(jnp.abs(v)) if norm == 'linf' else jnp.linalg.norm(v)
  assert float(vn) <= xi * (1 + 1e-5)


def test_uap_sgd_standard_signature_bounds_and_clamp():
  k = jax.random.key(3)
  W = jax.random.normal(k, (6, 4))
  f = lambda x: x @ W
  x = jax.random.uniform(jax.random.key(4), (32, 6), minval=-1.0, maxval=2.0)
  atk = universal_perturbation_sgd(xi=0.3, num_steps=20, loss_clamp=2.0, bounds=(-1.0, 2.0))
  out = jax.jit(atk.attack, static_argnums=0)(f, x, jnp.argmax(f(x), 1), jax.random.key(5))
  assert float(jnp.max(jnp.abs(out.x_adv - x))) <= 0.3 + 1e-6
  assert float(out.x_adv.min()) >= -1.0 and float(out.x_adv.max()) <= 2.0
  np.testing.assert_allclose(float(out.info['fooling_rate']), float(jnp.mean(out.info['fooled'])),
                             atol=1e-6)
  with pytest.raises(ValueError, match='xi'):
    universal_perturbation_sgd(xi=0.0)
  with pytest.raises(ValueError, match='loss_clamp'):
    universal_perturbation_sgd(xi=0.1, loss_clamp=-1.0)
  with pytest.raises(ValueError, match='norm'):
    universal_perturbation_sgd(xi=0.1, norm='l1')
