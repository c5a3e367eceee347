"""Interval bound propagation: sound bounds for jaxsec's models (sampled points inside the
box), the closed form of one affine layer, eps = 0 gives the logits, elision at least as
tight as the naive margin, the objective and schedules, and a tiny IBP training run whose
verified accuracy (a lower bound) rises from 0 and stays below PGD accuracy (an upper
bound)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import attacks, losses, models, train
from jaxsec.defenses.training import ibp

_MODELS = {
    'mlp': (dict(hidden=(16, 12)), (3, 8, 8, 1)),
    'cnn': (dict(features=(4, 6), dense=16), (3, 8, 8, 1)),
    'tempered_cnn': (dict(activation='tanh'), (3, 16, 16, 1)),   # reduce_window max-pool
    'logreg': ({}, (3, 8, 8, 1)),
}


# One compiled program per model (the eager interpreter dispatches op by op).
_bounds = jax.jit(ibp.interval_bounds, static_argnums=0)
_margins = jax.jit(ibp.margin_bounds, static_argnums=0, static_argnames='elide')


def _logits(m, p, x) -> jax.Array:
  out = m.apply(p, x)
  assert isinstance(out, jax.Array)
  return out


def _model(name, key=0):
  kwargs, shape = _MODELS[name]
  m = models.get(name, num_classes=5, **kwargs)
  return m, models.init(m, jax.random.key(key), (1,) + shape[1:]), shape


@pytest.mark.parametrize('name', ['cnn', 'logreg', 'mlp'])
def test_eps_zero_bounds_are_the_logits(name):
  m, p, shape = _model(name)
  x = jax.random.uniform(jax.random.key(1), shape)
  lo, hi = _bounds(m.apply, p, x, x)
  z = _logits(m, p, x)
  np.testing.assert_allclose(lo, z, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hi, z, rtol=1e-5, atol=1e-5)
  wc = jax.jit(lambda q, xx: ibp.worst_case_logits(m.apply, q, xx, jnp.arange(3), eps=0.0))
  np.testing.assert_allclose(wc(p, x),
                             z - z[jnp.arange(3), jnp.arange(3)][:, None], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('name', sorted(_MODELS))
def test_sampled_points_lie_inside_the_bounds(name):
  """Soundness: f(x') in [l, u] and every margin >= its (elided and naive) lower bound for
  random x' in the box, its corners included."""
  m, p, shape = _model(name)
  x = jax.random.uniform(jax.random.key(1), shape)
  y = jnp.arange(shape[0]) % 5
  lower, upper = jnp.clip(x - 0.05, 0, 1), jnp.clip(x + 0.05, 0, 1)
  lo, hi = _bounds(m.apply, p, lower, upper)
  u = jax.random.uniform(jax.random.key(2), (64,) + shape)
  u = u.at[:16].set(jnp.round(u[:16]))                        # corners of the box
  pts = lower + (upper - lower) * u
  z = jax.vmap(lambda xx: _logits(m, p, xx))(pts)                # [64, B, C]
  assert bool(jnp.all(z >= lo - 1e-5)) and bool(jnp.all(z <= hi + 1e-5))
  assert float(jnp.max(hi - lo)) > 0.0
  margins = jnp.take_along_axis(z, jnp.broadcast_to(y[None, :, None], z.shape[:2] + (1,)),
                                axis=-1) - z
  for elide in (True, False):
    mb = _margins(m.apply, p, lower, upper, y, elide=elide)
    assert bool(jnp.all(margins >= mb - 1e-5)), elide


def test_one_dense_layer_is_the_closed_form():
  kw, kb, kx = jax.random.split(jax.random.key(0), 3)
  w, b = jax.random.normal(kw, (7, 4)), jax.random.normal(kb, (4,))
  apply_fn = lambda p, x: x @ p['w'] + p['b']
  x = jax.random.uniform(kx, (5, 7))
  r = jnp.linspace(0.0, 0.3, 7)
  lo, hi = ibp.interval_bounds(apply_fn, {'w': w, 'b': b}, x - r, x + r)
  mid, rad = x @ w + b, r @ jnp.abs(w)
  np.testing.assert_allclose(lo, mid - rad, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hi, mid + rad, rtol=1e-5, atol=1e-5)
  # Elided margins of one affine layer are exact: (w_y - w_j) x - |w_y - w_j| r.
  y = jnp.array([0, 1, 2, 3, 0])
  mb = ibp.margin_bounds(apply_fn, {'w': w, 'b': b}, x - r, x + r, y)
  wd = w[:, y].T[:, :, None] - w[None]                        # [B, D, C]
  want = (jnp.einsum('bd,bdc->bc', x, wd) - r @ jnp.abs(wd) + b[y][:, None] - b)
  want = want * (1 - jax.nn.one_hot(y, 4))
  np.testing.assert_allclose(mb, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['mlp', 'cnn'])
def test_elision_is_at_least_as_tight_as_naive(name):
  m, p, shape = _model(name)
  x = jax.random.uniform(jax.random.key(3), shape)
  y = jnp.arange(shape[0])
  lower, upper = jnp.clip(x - 0.1, 0, 1), jnp.clip(x + 0.1, 0, 1)
  elided = ibp.margin_bounds(m.apply, p, lower, upper, y)
  naive = ibp.margin_bounds(m.apply, p, lower, upper, y, elide=False)
  assert bool(jnp.all(elided >= naive - 1e-5))
  assert float(jnp.sum(elided - naive)) > 1e-3                # strictly tighter somewhere
  assert bool(jnp.all(ibp.verified(m.apply, p, x, y, 0.1)
                      >= ibp.verified(m.apply, p, x, y, 0.1, elide=False)))


def test_unsupported_layers_are_refused_by_name():
  class Gn(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.GroupNorm(num_groups=2)(nn.Dense(4)(x)))
  m = Gn()
  p = m.init(jax.random.key(0), jnp.zeros((1, 5)))
  x = jnp.zeros((2, 5))
  with pytest.raises(ValueError, match="'rsqrt'"):
    ibp.interval_bounds(m.apply, p, x, x + 0.1)
  leaky = lambda p, x: jax.nn.leaky_relu(x @ p)               # written with a comparison
  with pytest.raises(ValueError, match="primitive 'ge'"):
    ibp.interval_bounds(leaky, jnp.ones((5, 3)), x, x + 0.1)
  with pytest.raises(ValueError, match="primitive 'integer_pow'"):
    ibp.interval_bounds(lambda p, x: (x @ p) ** -1, jnp.ones((5, 3)), x - 0.1, x + 0.1)


def test_nonlinear_elementwise_rules_are_sound():
  """Even powers, abs and products of two intervals (rules beyond the monotone ones)."""
  def f(p, x):
    h = x @ p
    return jnp.concatenate([h ** 2, jnp.abs(h), h * jnp.tanh(h), h ** 3], axis=-1)
  w = jax.random.normal(jax.random.key(0), (4, 3))
  x = jax.random.normal(jax.random.key(1), (5, 4)) * 0.3
  lo, hi = ibp.interval_bounds(f, w, x - 0.2, x + 0.2)
  u = jax.random.uniform(jax.random.key(2), (200,) + x.shape)
  z = jax.vmap(lambda xx: f(w, xx))(x - 0.2 + 0.4 * u)
  assert bool(jnp.all(z >= lo - 1e-5)) and bool(jnp.all(z <= hi + 1e-5))
  assert bool(jnp.all(lo[:, :6] >= 0.0))     # squares and absolute values stay >= 0


def test_bad_input_raises_naming_the_value():
  m, p, shape = _model('mlp')
  x = jnp.full(shape, 0.5)
  with pytest.raises(ValueError, match='eps=-0.1'):
    ibp.verified(m.apply, p, x, jnp.zeros(3, int), -0.1)
  with pytest.raises(ValueError, match='kappa=1.5'):
    ibp.ibp_objective(eps=0.1, kappa=1.5)
  with pytest.raises(ValueError, match='kappa=-0.5'):
    ibp.ibp_objective(eps=0.1, kappa=-0.5)
  with pytest.raises(ValueError, match='eps=-1.0'):
    ibp.ibp_objective(eps=-1.0)
  with pytest.raises(ValueError, match=r'lower > upper at index \(0, 2, 1, 0\): lower=0.5'):
    ibp.interval_bounds(m.apply, p, x, x.at[0, 2, 1, 0].set(0.2))
  with pytest.raises(ValueError, match='ramp_steps=-1'):
    ibp.ibp_schedule(0, eps_train=0.1, warmup_steps=0, ramp_steps=-1)
  with pytest.raises(ValueError, match='kappa_final=2.0'):
    ibp.scheduled_objective(eps_test=0.1, warmup_steps=0, ramp_steps=5, kappa_final=2.0)


def test_schedule_ramps_eps_and_kappa_after_warmup():
  sched = jax.jit(lambda s: ibp.ibp_schedule(s, eps_train=0.2, warmup_steps=10,
                                             ramp_steps=20))
  got = np.array([sched(s) for s in (0, 10, 20, 30, 100)])
  np.testing.assert_allclose(got, [[0, 1], [0, 1], [0.1, 0.75], [0.2, 0.5], [0.2, 0.5]],
                             rtol=1e-6, atol=1e-7)


def test_objective_kappa_one_is_plain_and_traced_settings_differentiate():
  m, p, shape = _model('cnn')
  x = jax.random.uniform(jax.random.key(4), shape)
  y = jnp.array([0, 1, 2])
  key = jax.random.key(5)
  plain = train.supervised(losses.cross_entropy)(m.apply, p, x, y, key)
  np.testing.assert_allclose(ibp.ibp_objective(eps=0.1, kappa=1.0)(m.apply, p, x, y, key),
                             plain, rtol=1e-5)
  robust = ibp.ibp_objective(eps=0.1, kappa=0.0)(m.apply, p, x, y, key)
  want = losses.cross_entropy(ibp.worst_case_logits(m.apply, p, x, y, eps=0.1), y)
  np.testing.assert_allclose(robust, want, rtol=1e-5)
  assert bool(jnp.all(robust >= plain - 1e-5))                # an upper bound of the loss
  objective_at = ibp.scheduled_objective(eps_test=0.1, warmup_steps=1, ramp_steps=2)
  g = jax.jit(jax.grad(lambda q, s: objective_at(s)(m.apply, q, x, y, key).mean()))(
      p, jnp.int32(2))
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
  assert float(sum(jnp.abs(a).sum() for a in jax.tree.leaves(g))) > 0


def _digits():
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  x = (np.asarray(x) / 16.0).astype(np.float32)
  y = np.asarray(y).astype(np.int32)
  return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.mark.slow
def test_ibp_training_gives_verified_accuracy_below_pgd_accuracy():
  x, y, xt, yt = _digits()
  m = models.get('mlp', num_classes=10, hidden=(64,))
  p0 = models.init(m, jax.random.key(0), (1, 64))
  eps = 0.1
  normal = train.fit(m.apply, p0, x, y, optimizer=optax.adam(1e-2), key=jax.random.key(1),
                     batch_size=64, num_steps=300).params
  objective_at = ibp.scheduled_objective(eps_test=eps, warmup_steps=50, ramp_steps=200)
  seen = []                                       # progress: one call per epoch (21 batches)
  robust = ibp.fit_scheduled(m.apply, p0, x, y, objective_at=objective_at,
                             optimizer=optax.adam(1e-2), key=jax.random.key(1),
                             batch_size=64, num_steps=300,
                             progress=lambda done, total: seen.append((done, total))).params
  assert seen == [(e, 15) for e in range(1, 16)]
  pgd = attacks.pgd(eps=eps, step_size=eps / 4, num_steps=20)
  acc = {}
  for name, p in (('normal', normal), ('ibp', robust)):
    clean = np.mean(np.asarray(jnp.argmax(_logits(m, p, xt), -1)) == yt)
    x_adv = pgd(lambda z, p=p: m.apply(p, z), jnp.asarray(xt), jnp.asarray(yt),
                jax.random.key(3)).x_adv
    pgd_ok = np.asarray(jnp.argmax(_logits(m, p, x_adv), -1)) == yt
    ver = np.asarray(ibp.verified(m.apply, p, xt, yt, eps))
    assert not np.any(ver & ~pgd_ok), name                    # verified => PGD fails
    assert ibp.verified_accuracy(m.apply, p, xt, yt, eps, batch_size=128) == ver.mean()
    acc[name] = (clean, pgd_ok.mean(), ver.mean())
  assert acc['normal'][0] > 0.85 and acc['ibp'][0] > 0.8, acc
  assert acc['normal'][2] < 0.05, acc
  assert acc['ibp'][2] > 0.4, acc
  assert acc['ibp'][2] <= acc['ibp'][1] and acc['normal'][2] <= acc['normal'][1], acc


def test_objective_plugs_into_fit_with_a_dropout_training_pass():
  """A constant-eps IBP objective is an ordinary objective for train.fit, also with a
  training-mode pass (the dropout mask is a constant of the bounded function)."""
  m = models.get('mlp', num_classes=3, hidden=(8,), dropout=0.2)
  p0 = models.init(m, jax.random.key(0), (1, 6))
  x = jax.random.uniform(jax.random.key(1), (32, 6))
  y = jnp.arange(32) % 3
  train_apply = lambda p, xx, k: m.apply(p, xx, train=True, rngs={'dropout': k})
  res = train.fit(m.apply, p0, x, y, optimizer=optax.adam(1e-2), key=jax.random.key(2),
                  batch_size=16, num_steps=4, train_apply_fn=train_apply,
                  objective=ibp.ibp_objective(eps=0.05, kappa=0.5))
  assert np.all(np.isfinite(res.history['loss']))
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(res.params),
                                                    jax.tree.leaves(p0), strict=True))


def test_one_logit_binary_model():
  """Binary logistic regression (one logit): verified iff the logit keeps its sign over
  the box; the worst-case logit is the interval's end that maximises the loss."""
  w = jnp.array([[1.0], [-2.0], [0.5]])
  apply_fn = lambda p, x: x @ p + 0.1
  x = jnp.array([[0.5, 0.2, 0.4], [0.1, 0.4, 0.1], [0.5, 0.5, 0.5]])
  y = jnp.array([1, 0, 1])
  z = apply_fn(w, x)[:, 0]                                    # 0.5, -0.55, -0.15
  eps = 0.05
  spread = eps * jnp.abs(w).sum()                             # 0.175
  np.testing.assert_allclose(ibp.worst_case_logits(apply_fn, w, x, y, eps=eps)[:, 0],
                             jnp.where(y == 1, z - spread, z + spread), rtol=1e-5)
  np.testing.assert_array_equal(ibp.verified(apply_fn, w, x, y, eps), [True, True, False])
