"""common.fori_loop: unrolling short attack loops on CPU changes speed, not results."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import attacks
from jaxsec import models
from jaxsec.attacks.evasion import common


def test_fori_loop_unrolled_equals_loop(monkeypatch):
  body = lambda i, c: c * 1.5 + jnp.sin(c) + i
  x = jnp.linspace(-1.0, 1.0, 7)
  monkeypatch.setattr(common, '_CPU_UNROLL_MAX', 32)
  a = jax.jit(lambda v: common.fori_loop(0, 5, body, v))(x)
  monkeypatch.setattr(common, '_CPU_UNROLL_MAX', 0)
  b = jax.jit(lambda v: common.fori_loop(0, 5, body, v))(x)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  # Zero-trip loops return init untouched in both forms.
  monkeypatch.setattr(common, '_CPU_UNROLL_MAX', 32)
  np.testing.assert_array_equal(np.asarray(common.fori_loop(3, 3, body, x)), np.asarray(x))


def test_unrolled_steps_counts_against_the_limit():
  """A short loop is unrolled on CPU unless ``unrolled_steps`` (e.g. restarts x steps)
  exceeds the limit; the value is the same either way."""
  body = lambda i, c: c * 1.5 + jnp.sin(c) + i
  x = jnp.linspace(-1.0, 1.0, 7)
  short = lambda v: common.fori_loop(0, 3, body, v)
  long = lambda v: common.fori_loop(0, 3, body, v, unrolled_steps=common._CPU_UNROLL_MAX + 1)
  assert 'unroll=3' in str(jax.make_jaxpr(short)(x))      # the whole loop unrolled
  assert 'unroll=1' in str(jax.make_jaxpr(long)(x))       # a rolled loop
  np.testing.assert_allclose(jax.jit(short)(x), jax.jit(long)(x), rtol=1e-6)


def test_pgd_same_with_and_without_unrolling(monkeypatch):
  m = models.get('cnn', features=(4, 8), dense=16)
  p = models.init(m, jax.random.key(0), (1, 28, 28, 1))
  f = models.logits_fn(m, p)
  x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
  y = jnp.arange(8) % 10
  outs = []
  for unroll_max in (32, 0):
    monkeypatch.setattr(common, '_CPU_UNROLL_MAX', unroll_max)
    atk = attacks.pgd(eps=0.1, step_size=0.02, num_steps=6, restarts=2)
    outs.append(np.asarray(jax.jit(atk, static_argnums=0)(f, x, y, jax.random.key(2)).x_adv))
  # Same iterates up to float reassociation: a sign flip of a ~0 gradient coordinate can
  # move a pixel by one step, so compare the fraction of pixels that agree.
  assert np.mean(np.abs(outs[0] - outs[1]) < 1e-5) > 0.999


def test_unroll_limit_is_not_read_from_the_environment():
  """No environment knob: the unrolling limit is a module constant, the same in a
  process started with the old ``JAXSEC_CPU_UNROLL_MAX`` variable set."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAXSEC_CPU_UNROLL_MAX='0', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', 'from jaxsec.attacks.evasion import common; '
                        'print(common._CPU_UNROLL_MAX)'], env=env, capture_output=True,
                       text=True, check=True)
  assert int(out.stdout.strip()) == common._CPU_UNROLL_MAX == 32
