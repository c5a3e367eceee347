"""Per-example clipping: equals a loop of single-example grads then clip; ghost == vmap."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import losses
from jaxsec.privacy import clipping


class _ConvNet(nn.Module):
  """Exercises strides, dilation, explicit / VALID / SAME padding, no-bias, Dense on [B,T,D]."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(3, (3, 3), strides=2, padding='SAME', name='c0')(x))
    x = jnp.tanh(nn.Conv(4, (3, 3), padding='VALID', kernel_dilation=2, use_bias=False,
                         name='c1')(x))
    x = jnp.tanh(nn.Conv(2, (2, 2), padding=((1, 0), (0, 1)), strides=(1, 2),
                         name='c2')(x))
    x = x.reshape(x.shape[0], -1, 2)            # [B, T, 2]: Dense with T > 1 rows
    x = jnp.tanh(nn.Dense(5, name='seq')(x)).reshape(x.shape[0], -1)
    return nn.Dense(3, name='head')(x)


class _Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x)))


def _setup(model, shape, n=5, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = model.init(k1, jnp.zeros((1,) + shape))
  x = jax.random.normal(k2, (n,) + shape)
  y = jnp.arange(n, dtype=jnp.int32) % 3
  return params, x, y, clipping.from_model(model.apply, losses.cross_entropy)


def _loop_reference(lf, params, x, y, c, mask):
  """Loop over examples: grad of one example, clip, sum (no vmap)."""
  total = jax.tree_util.tree_map(jnp.zeros_like, params)
  norms = []
  grad_one = jax.jit(jax.grad(lambda p, xi, yi: lf(p, xi, yi)[0]))
  for i in range(x.shape[0]):
    g = grad_one(params, x[i:i + 1], y[i:i + 1])
    n = float(np.sqrt(sum(np.sum(np.asarray(l) ** 2) for l in jax.tree_util.tree_leaves(g))))
    norms.append(n * mask[i])
    f = mask[i] * min(1.0, c / n)
    total = jax.tree_util.tree_map(lambda t, l, f=f: t + f * l, total, g)
  return total, np.array(norms)


def _maxdiff(a, b):
  return max(float(jnp.max(jnp.abs(u - v))) for u, v in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


@functools.lru_cache(maxsize=None)
def _conv_case():
  params, x, y, lf = _setup(_ConvNet(), (12, 12, 2))
  mask = np.array([1., 1., 0., 1., 1.])
  c = 0.3   # below every norm here, so clipping is active
  ref, ref_norms = _loop_reference(lf, params, x, y, c, mask)
  return params, x, y, lf, ref, ref_norms, mask, c


@pytest.mark.parametrize('method,micro', [('vmap', None), ('vmap', 2), ('ghost', None),
                                          ('ghost', 3)])
def test_clipped_equals_loop_of_single_grads(method, micro):
  params, x, y, lf, ref, ref_norms, mask, c = _conv_case()
  fn = jax.jit(clipping.clipped_grad(lf, c, method=method, microbatch_size=micro))
  got, info = fn(params, x, y, mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(info.norms), ref_norms, rtol=2e-5, atol=1e-6)
  assert (ref_norms[mask > 0] > c).all()
  assert _maxdiff(got, ref) < 1e-5
  # each clipped contribution has norm min(C, ||g||): the sum's norm is at most 4 C
  assert float(clipping.tree_norm(got)) <= 4 * c + 1e-5


def test_ghost_equals_vmap_mlp_and_large_clip():
  params, x, y, lf = _setup(_Mlp(), (6,), n=7, seed=3)
  a, ia = jax.jit(clipping.clipped_grad(lf, 100.0))(params, x, y)
  b, ib = jax.jit(clipping.clipped_grad(lf, 100.0, method='ghost'))(params, x, y)
  np.testing.assert_allclose(ia.norms, ib.norms, rtol=1e-5)
  # C above every norm: no clipping, the sum equals the plain gradient of the summed loss
  g = jax.grad(lambda p: jnp.sum(lf(p, x, y)))(params)
  assert _maxdiff(a, g) < 1e-5 and _maxdiff(b, g) < 1e-5
  np.testing.assert_allclose(ia.factors, 1.0)


class _IntKernelConv(nn.Module):
  """A 1-D conv written with an int kernel_size (flax reads ``3`` as ``(3,)``)."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(3, kernel_size=3, strides=2, name='c')(x))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_ghost_accepts_int_kernel_size():
  # Ghost clipping used len(kernel_size) and crashed (TypeError) on an int kernel_size.
  params, x, y, lf = _setup(_IntKernelConv(), (10, 2), n=4, seed=1)
  a, ia = jax.jit(clipping.clipped_grad(lf, 0.1, method='vmap'))(params, x, y)
  b, ib = jax.jit(clipping.clipped_grad(lf, 0.1, method='ghost'))(params, x, y)
  np.testing.assert_allclose(ia.norms, ib.norms, rtol=1e-5)
  assert (np.asarray(ia.norms) > 0.1).all()
  assert _maxdiff(a, b) < 1e-5


def test_traced_clip_norm_under_vmap():
  params, x, y, lf = _setup(_Mlp(), (6,))
  fn = clipping.clipped_grad(lf, method='ghost')
  cs = jnp.array([0.01, 0.1, 10.0])
  norms = jax.jit(jax.vmap(
      lambda c: clipping.tree_norm(fn(params, x, y, l2_norm_clip=c)[0])))(cs)
  ref_fn = jax.jit(lambda c: clipping.tree_norm(
      clipping.clipped_grad(lf)(params, x, y, l2_norm_clip=c)[0]))
  for c, n in zip(cs, norms, strict=True):
    np.testing.assert_allclose(n, ref_fn(c), rtol=1e-5)


def test_ghost_rejects_unsupported_layers():
  class WithNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.LayerNorm()(nn.Dense(3)(x)))
  params, x, y, lf = _setup(WithNorm(), (4,))
  with pytest.raises(ValueError, match='LayerNorm'):
    clipping.clipped_grad(lf, 1.0, method='ghost')(params, x, y)


def test_ghost_rejects_shared_layer():
  class Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
      d = nn.Dense(4)
      return d(jnp.tanh(d(x)))
  params, x, y, lf = _setup(Shared(), (4,))
  with pytest.raises(ValueError, match='more than once'):
    clipping.clipped_grad(lf, 1.0, method='ghost')(params, x, y)


def test_bad_inputs():
  lf = lambda w, x: (x @ w) ** 2
  with pytest.raises(ValueError, match='l2_norm_clip'):
    clipping.clipped_grad(lf, -1.0)
  with pytest.raises(ValueError, match='method'):
    clipping.clipped_grad(lf, 1.0, method='loop')
  with pytest.raises(ValueError, match='mask'):
    clipping.clipped_grad(lf, 1.0)(jnp.ones(2), jnp.ones((3, 2)), mask=jnp.ones(4))
  with pytest.raises(ValueError, match='l2_norm_clip must be given'):
    clipping.clipped_grad(lf)(jnp.ones(2), jnp.ones((3, 2)))


def test_linear_closed_form():
  # squared loss (w.x - y)^2 has per-example gradient 2 (w.x - y) x: closed-form clip.
  w = jnp.array([1.0, -2.0])
  x = jnp.array([[1.0, 0.0], [0.0, 3.0], [0.5, 0.5]])
  y = jnp.zeros(3)
  lf = lambda w, x, y: (x @ w - y) ** 2
  g, info = clipping.clipped_grad(lf, 1.0)(w, x, y)
  per = 2 * (x @ w - y)[:, None] * x
  norms = np.linalg.norm(per, axis=1)
  np.testing.assert_allclose(info.norms, norms, rtol=1e-6)
  expect = (per * np.minimum(1, 1.0 / norms)[:, None]).sum(0)
  np.testing.assert_allclose(g, expect, rtol=1e-6)


def _wd_loss(lf, lam=0.3):
  """Weight decay inside the per-example loss (on a kernel and on a zero-initialised bias)."""
  def loss(p, x, y):
    q = p['params']
    reg = jnp.sum(q['Dense_0']['kernel'] ** 2) + jnp.sum(q['Dense_1']['bias'] ** 2)
    return lf(p, x, y) + 0.5 * lam * reg
  return loss


class _Tied(nn.Module):
  """Tied weights: the decoder reuses the encoder's kernel outside the encoder's call."""

  @nn.compact
  def __call__(self, x):
    enc = nn.Dense(4, name='enc')
    h = jnp.tanh(enc(x))
    return h @ enc.variables['params']['kernel'].T


def test_ghost_refuses_weight_decay_inside_loss():
  params, x, y, lf = _setup(_Mlp(), (6,), n=5, seed=1)
  wd = _wd_loss(lf)
  _, ref = jax.jit(clipping.clipped_grad(wd, 1.0))(params, x, y)     # vmap: exact
  # the old ghost path silently dropped the decay term: its norms were the plain loss's
  _, plain = jax.jit(clipping.clipped_grad(lf, 1.0))(params, x, y)
  assert float(jnp.max(jnp.abs(ref.norms - plain.norms))) > 1e-2
  with pytest.raises(ValueError, match=r'Dense_0/kernel.*Dense_1/bias'):
    jax.jit(clipping.clipped_grad(wd, 1.0, method='ghost'))(params, x, y)
  # the zero-initialised bias alone changes no norm at init, and is refused all the same:
  # the check is structural (which parameters the loss reaches), not numerical
  lf_b = lambda p, x, y: lf(p, x, y) + jnp.sum(p['params']['Dense_1']['bias'] ** 2)
  with pytest.raises(ValueError, match='Dense_1/bias') as err:
    clipping.clipped_grad(lf_b, 1.0, method='ghost')(params, x, y)
  assert 'Dense_0' not in str(err.value)


def test_ghost_refuses_tied_weights():
  params, x, y, lf = _setup(_Tied(), (3,), n=5, seed=2)
  with pytest.raises(ValueError, match='enc/kernel') as err:
    clipping.clipped_grad(lf, 1.0, method='ghost')(params, x, y)
  assert 'enc/bias' not in str(err.value)
  # under microbatching and jit too
  with pytest.raises(ValueError, match='enc/kernel'):
    jax.jit(clipping.clipped_grad(lf, 1.0, method='ghost', microbatch_size=2))(params, x, y)


class _WideMlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name='head')(jnp.tanh(nn.Dense(48, name='hidden')(x)))


def _shapes_in_jaxpr(fn, *args):
  shapes = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      for v in eqn.outvars:
        shapes.add(tuple(getattr(v.aval, 'shape', ())))
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (tuple, list)) else (p,)):
          inner = getattr(sub, 'jaxpr', None)
          if inner is not None:
            walk(getattr(inner, 'jaxpr', inner))
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes


def test_default_method_routes_eligible_models_to_ghost_and_stays_exact():
  """clipped_grad's default ('auto'): a flax Dense / Conv model goes to ghost clipping
  (no [B, in, out] per-example kernel gradient is ever formed, which is what made the vmap
  default slower than Opacus hooks on the dp_speed CNN); the clipped sum and norms equal
  the per-example (vmap) path. Ineligible losses (weight decay in the loss, non-flax
  params) fall back to vmap, exactly."""
  params, x, y, lf = _setup(_WideMlp(), (40,), n=6)
  mask = jnp.array([1, 1, 0, 1, 1, 1], jnp.float32)
  c = 0.3
  default = clipping.clipped_grad(lf, c)
  per_example_kernel = (6, 40, 48)
  assert per_example_kernel in _shapes_in_jaxpr(
      lambda p: clipping.clipped_grad(lf, c, method='vmap')(p, x, y, mask=mask), params)
  assert per_example_kernel not in _shapes_in_jaxpr(
      lambda p: default(p, x, y, mask=mask), params)
  assert clipping.auto_method(lf, params, x, y) == 'ghost'
  g_auto, i_auto = jax.jit(default)(params, x, y, mask=mask)
  g_vmap, i_vmap = clipping.clipped_grad(lf, c, method='vmap')(params, x, y, mask=mask)
  assert _maxdiff(g_auto, g_vmap) < 1e-5
  np.testing.assert_allclose(i_auto.norms, i_vmap.norms, rtol=1e-5, atol=1e-6)
  # conv models are eligible too (ghost == vmap there: test_ghost_* above)
  cparams, cx, cy, clf = _setup(_ConvNet(), (9, 9, 2), n=4)
  assert clipping.auto_method(clf, cparams, cx, cy) == 'ghost'
  # ineligible: weight decay inside the loss -> vmap, bit for bit
  decayed = lambda p, xx, yy: lf(p, xx, yy) + 1e-2 * jnp.sum(p['params']['head']['kernel'] ** 2)
  assert clipping.auto_method(decayed, params, x, y) == 'vmap'
  a = clipping.clipped_grad(decayed, c)(params, x, y, mask=mask)[0]
  b = clipping.clipped_grad(decayed, c, method='vmap')(params, x, y, mask=mask)[0]
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)
  # non-flax loss -> vmap
  lin = lambda w, xx, yy: (xx @ w - yy) ** 2
  assert clipping.auto_method(lin, jnp.ones(40), x, y.astype(jnp.float32)) == 'vmap'
  with pytest.raises(ValueError, match="method='fast'"):
    clipping.clipped_grad(lf, c, method='fast')
