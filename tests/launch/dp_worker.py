"""One process of the 2-process data-parallel step (tests/launch/test_distributed.py).

    python -m tests.launch.dp_worker <process_id> <coordinator host:port> <num_processes>

Each process holds only its slice of the global batch; one SGD step of a linear model on the
mean squared error runs as one jitted program over the global mesh (the gradient's mean is
a cross-process all-reduce). Prints the new weights and what JAX saw, as one JSON line.
"""
import json
import sys

import numpy as np

from launch import distributed

LR = 0.5


def data(n=8, d=3):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + rng.normal(size=n)).astype(np.float32)
  w = rng.normal(size=(d,)).astype(np.float32)
  return x, y, w


def sgd_step(w, x, y):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  loss = lambda w: jnp.mean((x @ w - y) ** 2)
  return w - LR * jax.grad(loss)(w)


def main(argv):
  pid, addr, n = int(argv[1]), argv[2], int(argv[3])
  initialised = distributed.initialize_from_flags_or_env(addr, n, pid)
  import jax  # pylint: disable=g-import-not-at-top
  from jax import sharding  # pylint: disable=g-import-not-at-top
  x, y, w = data()
  mesh = sharding.Mesh(np.array(jax.devices()), ('data',))
  per = x.shape[0] // jax.process_count()
  mine = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
  batch = sharding.NamedSharding(mesh, sharding.PartitionSpec('data'))
  xg = jax.make_array_from_process_local_data(batch, x[mine], x.shape)
  yg = jax.make_array_from_process_local_data(batch, y[mine], y.shape)
  replicated = sharding.NamedSharding(mesh, sharding.PartitionSpec())
  wg = jax.device_put(w, replicated)
  new = jax.jit(sgd_step, out_shardings=replicated)(wg, xg, yg)
  print(json.dumps({'w': np.asarray(new.addressable_data(0)).tolist(),
                    'initialised': initialised, 'process_count': jax.process_count(),
                    'device_count': jax.device_count(),
                    'local_rows': int(xg.addressable_data(0).shape[0])}), flush=True)


if __name__ == '__main__':
  main(sys.argv)
