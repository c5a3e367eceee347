"""C&W L2 / L_inf / L0 against closed forms on linear models."""
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks.evasion import cw
from jaxsec.attacks.evasion.cw import (carlini_wagner_l0, carlini_wagner_l2,
                                       carlini_wagner_linf, from_box, to_box)

W = jax.random.normal(jax.random.key(3), (8, 4))
BIAS = jax.random.normal(jax.random.key(4), (4,))


def linear(x):
  return x.reshape(x.shape[0], -1) @ W + BIAS


def _points(bounds, b=5):
  lo, hi = bounds
  return 0.5 * (lo + hi) + 0.02 * (hi - lo) * jax.random.normal(jax.random.key(5), (b, 8))


def _pairwise(x, y, dual):
  """Exact distance (in the dual norm of `dual`) to the boundary with each class j."""
  z = linear(x)
  zy = jnp.take_along_axis(z, y[:, None], 1)
  dw = W[:, y].T[:, :, None] - W[None]                 # [B, 8, C]
  n = jnp.linalg.norm(dw, axis=1) if dual == 2 else jnp.sum(jnp.abs(dw), axis=1)
  d = jnp.where(jax.nn.one_hot(y, 4) > 0, jnp.inf, (zy - z) / n)
  runner = jnp.argmax(jnp.where(jax.nn.one_hot(y, 4) > 0, -jnp.inf, z), 1)
  return jnp.min(d, 1), jnp.take_along_axis(d, runner[:, None], 1)[:, 0]


def test_change_of_variables_roundtrip_any_bounds():
  for lo, hi in [(0.0, 1.0), (-1.0, 2.0)]:
    x = jnp.linspace(lo, hi, 11)
    np.testing.assert_allclose(to_box(from_box(x, lo, hi), lo, hi), x, atol=2e-6 * (hi - lo))


@pytest.mark.parametrize('bounds', [(0.0, 1.0), (-1.0, 2.0)])
def test_l2_binary_linear_is_exact_minimal_distance(bounds):
  w = jax.random.normal(jax.random.key(0), (8,))
  f = lambda x: (x @ w)[:, None] - 0.1 * (bounds[0] + bounds[1]) * jnp.sum(w)
  x = _points(bounds)
  fx = f(x)[:, 0]
  y = (fx > 0).astype(jnp.int32)
  out = jax.jit(carlini_wagner_l2(initial_const=1.0, num_steps=300, num_binary_steps=8,
                                  bounds=bounds), static_argnums=0)(f, x, y, None)
  exact = jnp.abs(fx) / jnp.linalg.norm(w)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all((f(out.x_adv)[:, 0] > 0) != (y == 1)))
  np.testing.assert_allclose(out.info['l2'], exact, rtol=0.03)
  assert float(out.x_adv.min()) >= bounds[0] and float(out.x_adv.max()) <= bounds[1]


def test_l2_multiclass_between_exact_minimum_and_runner_up_boundary():
  # C&W's f_6 follows the runner-up class, so it finds the boundary towards it (a local
  # minimum when another class is nearer): never below the exact minimum, and within a
  # few % of the runner-up distance.
  x = _points((0.0, 1.0), b=6)
  y = jnp.argmax(linear(x), 1)
  out = carlini_wagner_l2(initial_const=1.0, num_steps=300, num_binary_steps=8)(linear, x, y, None)
  exact, runner = _pairwise(x, y, 2)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(out.info['l2'] >= exact * (1 - 1e-4)))
  assert bool(jnp.all(out.info['l2'] <= runner * 1.03))
  np.testing.assert_array_equal(out.info['gradients'], out.info['steps'])


def test_l2_targeted_with_confidence():
  x = _points((-1.0, 2.0), b=4)
  t = (jnp.argmax(linear(x), 1) + 1) % 4
  kappa = 0.5
  out = carlini_wagner_l2(targeted=True, confidence=kappa, initial_const=1.0, num_steps=200,
                          num_binary_steps=5, bounds=(-1.0, 2.0))(
                              linear, x, t, None)
  z = linear(out.x_adv)
  zt = jnp.take_along_axis(z, t[:, None], 1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(t, 4) > 0, -jnp.inf, z), 1)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(zt - kappa > other - 1e-5))
  assert float(out.x_adv.min()) >= -1.0 and float(out.x_adv.max()) <= 2.0


@pytest.mark.parametrize('bounds', [(0.0, 1.0), (-1.0, 2.0)])
def test_linf_between_exact_minimum_and_runner_up_over_decrease(bounds):
  x = _points(bounds, b=4)
  y = jnp.argmax(linear(x), 1)
  out = jax.jit(carlini_wagner_linf(num_steps=100, bounds=bounds),
                static_argnums=0)(linear, x, y, None)
  exact, runner = _pairwise(x, y, 1)
  linf = jnp.max(jnp.abs(out.x_adv - x), 1)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(jnp.argmax(linear(out.x_adv), 1) != y))
  assert bool(jnp.all(linf >= exact * (1 - 1e-4)))
  # tau shrinks by 0.9 per success, so the last success is within 1/0.9 of the optimum
  # (plus the width-relative stopping threshold 1/256).
  assert bool(jnp.all(linf <= runner / 0.9 + (bounds[1] - bounds[0]) / 256))
  assert float(out.x_adv.min()) >= bounds[0] and float(out.x_adv.max()) <= bounds[1]


def _exact_l0(x, y, lo, hi):
  """Minimal number of features to change to leave class y (brute force over subsets)."""
  z = np.asarray(linear(x))
  Wn = np.asarray(W)
  best = []
  for i in range(x.shape[0]):
    xi = np.asarray(x[i])
    found = None
    for k in range(1, 9):
      for S in itertools.combinations(range(8), k):
        for j in range(4):
          if j == y[i]:
            continue
          dw = Wn[:, j] - Wn[:, y[i]]           # gain of class j over y per unit change
          gain = sum(max(dw[s] * (hi - xi[s]), dw[s] * (lo - xi[s])) for s in S)
          if z[i, j] - z[i, y[i]] + gain > 1e-6:
            found = k
            break
        if found:
          break
      if found:
        break
    best.append(found)
  return np.array(best)


def test_l0_reaches_exact_minimal_feature_count_on_linear():
  x = _points((0.0, 1.0), b=4)
  y = np.asarray(jnp.argmax(linear(x), 1))
  out = jax.jit(carlini_wagner_l0(num_steps=200, initial_const=1e-2),
                static_argnums=0)(linear, x, jnp.asarray(y), None)
  exact = _exact_l0(x, y, 0.0, 1.0)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(jnp.argmax(linear(out.x_adv), 1) != y))
  assert np.all(np.asarray(out.info['l0']) >= exact)
  assert np.all(np.asarray(out.info['l0']) <= exact + 1)
  np.testing.assert_array_equal(out.info['l0'], out.info['features_changed'])
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0


def test_l0_image_pixels_group_channels():
  key = jax.random.key(11)
  Wi = jax.random.normal(key, (2 * 2 * 3, 3))
  f = lambda x: x.reshape(x.shape[0], -1) @ Wi
  x = jax.random.uniform(jax.random.key(12), (2, 2, 2, 3), minval=0.3, maxval=0.7)
  y = jnp.argmax(f(x), 1)
  out = carlini_wagner_l0(num_steps=100, initial_const=1e-2, bounds=(-1.0, 2.0))(f, x, y, None)
  assert bool(jnp.all(out.info['success']))
  assert bool(jnp.all(out.info['l0'] <= 4)) and bool(jnp.all(out.info['l0'] >= 1))
  assert bool(jnp.all(out.info['features_changed'] <= 3 * out.info['l0']))


@pytest.mark.parametrize('factory,kw,match', [
    (carlini_wagner_l2, dict(confidence=-1.0), r'confidence=-1\.0 must be >= 0'),
    (carlini_wagner_l2, dict(initial_const=0.0), r'initial_const=0\.0 must be > 0'),
    (carlini_wagner_l2, dict(num_binary_steps=0), r'num_binary_steps=0 must be >= 1'),
    (carlini_wagner_l2, dict(num_steps=0), r'num_steps=0 must be >= 1'),
    (carlini_wagner_l2, dict(learning_rate=0.0), r'learning_rate=0\.0 must be > 0'),
    (carlini_wagner_l2, dict(bounds=(0, 0)), r'bounds=\(0\.0, 0\.0\) must satisfy low < high'),
    (carlini_wagner_l2, dict(targeted='yes'), r"targeted='yes' must be a bool"),
    (carlini_wagner_linf, dict(decrease_factor=1.0), r'decrease_factor=1\.0 must be < 1'),
    (carlini_wagner_linf, dict(const_factor=1.0), r'const_factor=1\.0 must be > 1'),
    (carlini_wagner_linf, dict(min_tau=0.5, initial_tau=0.1),
     r'min_tau=0\.5 must be <= initial_tau=0\.1'),
    (carlini_wagner_linf, dict(abort_early=False), r'abort_early=False is not supported'),
    (carlini_wagner_l0, dict(max_rounds=0), r'max_rounds=0 must be >= 1'),
    (carlini_wagner_l0, dict(largest_const=-1.0), r'largest_const=-1\.0 must be > 0'),
    (carlini_wagner_l0, dict(abort_early=False), r'abort_early=False is not supported'),
])
def test_bad_hyperparameters(factory, kw, match):
  with pytest.raises(ValueError, match=match):
    factory(**kw)


def _tanh_mlp(key, d_in=12, h=16, c=5):
  k1, k2 = jax.random.split(key)
  w1 = jax.random.normal(k1, (d_in, h)) / np.sqrt(d_in)
  w2 = jax.random.normal(k2, (h, c)) / np.sqrt(h)
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2 * 4.0


_PRIVATE = {carlini_wagner_l2: cw._carlini_wagner_l2,
            carlini_wagner_linf: cw._carlini_wagner_linf,
            carlini_wagner_l0: cw._carlini_wagner_l0}


def _forced(public, loop, **kw):
  """The attack of ``public(**kw)`` with its internal loop form forced ('host' / 'program')."""
  args = {k: p.default for k, p in inspect.signature(public).parameters.items()}
  return _PRIVATE[public](loop, **{**args, **kw})


@pytest.mark.parametrize('factory', [carlini_wagner_l2, carlini_wagner_linf,
                                     carlini_wagner_l0])
def test_loop_form_is_not_a_public_argument(factory):
  """The host-vs-program choice is a backend detail picked inside the attack."""
  assert 'loop' not in inspect.signature(factory).parameters
  with pytest.raises(TypeError, match='loop'):
    factory(loop='host')
  with pytest.raises(ValueError, match="loop='gpu' is not one of"):
    _forced(factory, 'gpu')


def test_eager_cpu_call_takes_the_host_loop(monkeypatch):
  """'auto' (the only public mode) picks the host loop for an eager call on CPU and the
  program under jit; both give the program's result."""
  seen = []
  real = cw._loop_mode
  monkeypatch.setattr(cw, '_loop_mode', lambda *a: seen.append(real(*a)) or seen[-1])
  f = _tanh_mlp(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 12))
  y = jnp.argmax(f(x), -1)
  att = carlini_wagner_l2(num_steps=10, num_binary_steps=2, initial_const=0.05)
  att(f, x, y)
  jax.jit(att, static_argnums=0)(f, x, y)
  assert seen == ['host', 'program']


@pytest.mark.parametrize('num_steps,abort_early,nbs', [
    (26, True, 3),      # every 2: blocks 1 + 12 x 2 + a tail of 1
    (150, True, 10),    # every 15: blocks of 5 + a tail of 4; the >= 10 rounds rule
    (7, False, 2),      # every 1, no early abort
    (110, True, 2),     # every 11: unaligned blocks of 10 (idle steps after the stop)
])
def test_l2_host_loop_is_the_program_loop(num_steps, abort_early, nbs):
  f = _tanh_mlp(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (9, 12))
  y = jnp.argmax(f(x), -1)
  kw = dict(num_steps=num_steps, abort_early=abort_early, num_binary_steps=nbs,
            initial_const=0.05, learning_rate=0.05, bounds=(0.0, 1.0))
  with jax.enable_x64(True):                      # no rounding between the two compilations
    x64 = x.astype(jnp.float64)
    host = _forced(carlini_wagner_l2, 'host', **kw)(f, x64, y)
    prog = _forced(carlini_wagner_l2, 'program', **kw)(f, x64, y)
  assert prog.x_adv.dtype == jnp.float64
  # The two loops run the same steps and stop at the same step: all counts agree exactly.
  np.testing.assert_array_equal(host.info['steps'], prog.info['steps'])
  np.testing.assert_array_equal(host.info['success'], prog.info['success'])
  np.testing.assert_allclose(host.x_adv, prog.x_adv, rtol=0, atol=1e-12)
  np.testing.assert_allclose(host.info['const'], prog.info['const'], rtol=1e-12)
  assert host.info['success'].any()
  if abort_early:       # examples stopped at different steps: the abort path is covered
    assert len(np.unique(host.info['steps'])) > 1
    assert host.info['steps'].min() < nbs * num_steps
  else:
    np.testing.assert_array_equal(host.info['steps'], nbs * num_steps)


def test_l2_loop_auto_falls_back_to_the_program_under_transformations():
  f = _tanh_mlp(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 12))
  y = jnp.argmax(f(x), -1)
  kw = dict(num_steps=20, num_binary_steps=2, initial_const=0.05, learning_rate=0.05)
  eager = carlini_wagner_l2(**kw)(f, x, y)                        # auto: host on CPU
  jitted = jax.jit(carlini_wagner_l2(**kw), static_argnums=0)(f, x, y)
  np.testing.assert_allclose(eager.x_adv, jitted.x_adv, atol=1e-5)
  # logits_fn closing over traced parameters, with concrete x: auto still works.
  w = jax.random.normal(jax.random.key(2), (12, 5))
  att = carlini_wagner_l2(**kw)
  got = jax.jit(lambda w: att(lambda z: z @ w, x, y))(w)
  want = _forced(carlini_wagner_l2, 'program', **kw)(lambda z: z @ w, x, y)
  np.testing.assert_allclose(got.x_adv, want.x_adv, atol=1e-5)
  with pytest.raises(ValueError, match="loop='host' needs concrete x and y"):
    jax.jit(_forced(carlini_wagner_l2, 'host', **kw), static_argnums=0)(f, x, y)
  with pytest.raises(ValueError, match="loop='host' needs a hashable logits_fn"):
    jax.jit(lambda w: _forced(carlini_wagner_l2, 'host', **kw)(lambda z: z @ w, x, y))(w)


@pytest.mark.parametrize('which', ['linf', 'l0'])
def test_linf_l0_host_loop_is_the_program_loop(which):
  f = _tanh_mlp(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (6, 12))
  y = jnp.argmax(f(x), -1)
  if which == 'linf':
    make = lambda loop: _forced(carlini_wagner_linf, loop, num_steps=13, initial_const=0.1,
                                min_tau=1 / 16, learning_rate=0.05)
  else:
    make = lambda loop: _forced(carlini_wagner_l0, loop, num_steps=13, initial_const=0.1,
                                learning_rate=0.05)
  with jax.enable_x64(True):
    x64 = x.astype(jnp.float64)
    host, prog = make('host')(f, x64, y), make('program')(f, x64, y)
  # Blocks of 10 overrun the program's last step: harmless, the state machine is idle.
  # Counts and decisions agree exactly; floats to the last bits (the two compilations
  # fuse differently).
  for k in prog.info:
    if jnp.issubdtype(prog.info[k].dtype, jnp.floating):
      np.testing.assert_allclose(host.info[k], prog.info[k], rtol=1e-12, atol=1e-12,
                                 err_msg=k)
    else:
      np.testing.assert_array_equal(host.info[k], prog.info[k], err_msg=k)
  np.testing.assert_allclose(host.x_adv, prog.x_adv, rtol=0, atol=1e-12)
  assert prog.info['success'].any() and len(np.unique(prog.info['steps'])) > 1
  if which == 'linf':
    assert prog.info['steps'].max() % 10 != 0    # here the last block did overrun


def test_linf_l0_loop_auto_under_jit_with_traced_closure():
  x = jax.random.uniform(jax.random.key(1), (3, 12))
  w = jax.random.normal(jax.random.key(2), (12, 5))
  y = jnp.argmax(x @ w, -1)
  for factory in (carlini_wagner_linf, carlini_wagner_l0):
    att = factory(num_steps=5, initial_const=0.1, learning_rate=0.05)
    got = jax.jit(lambda w, att=att: att(lambda z: z @ w, x, y))(w)        # auto -> the program
    want = _forced(factory, 'program', num_steps=5, initial_const=0.1,
                   learning_rate=0.05)(lambda z: z @ w, x, y)
    np.testing.assert_allclose(got.x_adv, want.x_adv, atol=1e-5)
    host = _forced(factory, 'host', num_steps=5, initial_const=0.1, learning_rate=0.05)
    with pytest.raises(ValueError, match="loop='host' needs a hashable logits_fn"):
      jax.jit(lambda w, host=host: host(lambda z: z @ w, x, y))(w)
