"""Clipped gradients with the batch sharded over 4 (fake CPU) devices equal the unsharded
ones: the ghost path under plain GSPMD jit, both paths with ``mesh=`` (shard_map). (Run in
a subprocess: XLA_FLAGS must be set before JAX starts.) The vmap path under plain GSPMD
with a batch-sharded conv input gave wrong per-example gradients with jax 0.10 on CPU,
which is why ``clipped_grad`` takes ``mesh=``."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxsec import losses
    from jaxsec.privacy import clipping
    assert len(jax.devices()) == 4, jax.devices()
    class M(nn.Module):
      @nn.compact
      def __call__(self, x):
        x = jnp.tanh(nn.Conv(3, (3, 3))(x)).reshape(x.shape[0], -1)
        return nn.Dense(3)(x)
    m = M()
    params = m.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 1))
    y = jnp.arange(8, dtype=jnp.int32) % 3
    lf = clipping.from_model(m.apply, losses.cross_entropy)
    mesh = Mesh(np.array(jax.devices()), ('data',))
    xs = jax.device_put(x, NamedSharding(mesh, P('data')))
    ys = jax.device_put(y, NamedSharding(mesh, P('data')))
    cases = [('ghost', None), ('ghost', mesh), ('vmap', mesh)]
    for method, msh in cases:
      f = jax.jit(clipping.clipped_grad(lf, 0.5, method=method, mesh=msh))
      b, ib = f(params, xs, ys, mask=jnp.ones(8).at[3].set(0.0))
      ref = jax.jit(clipping.clipped_grad(lf, 0.5, method='vmap'))
      a, ia = ref(params, x, y, mask=jnp.ones(8).at[3].set(0.0))
      np.testing.assert_allclose(ia.norms, ib.norms, rtol=1e-5, atol=1e-6)
      for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
    print('OK')
''')


def test_sharded_batch_matches_unsharded():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
  out = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0 and 'OK' in out.stdout, out.stderr[-3000:]
