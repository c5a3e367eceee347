"""Trains a small fixed problem with fit / fit_many, with or without a mesh; used by
tests/test_train.py in a subprocess with 8 fake CPU devices."""
import sys

import jax
import numpy as np
import optax

from jaxsec import data
from jaxsec import models
from jaxsec import train


def problem():
  x, y = data.load('digits', 'train')
  m = models.get('mlp', num_classes=10, hidden=(32,))
  return x, y, m


def run(mesh_shape=None):
  x, y, m = problem()
  mesh = None
  if mesh_shape is not None:
    devs = np.asarray(jax.devices()[:mesh_shape[0] * mesh_shape[1]]).reshape(mesh_shape)
    mesh = jax.sharding.Mesh(devs, ('model', 'data'))
  p = models.init(m, jax.random.key(0), (1, 64))
  one = train.fit(m.apply, p, x, y, optimizer=optax.sgd(0.05), key=jax.random.key(1),
                  batch_size=64, num_epochs=2, mesh=mesh)
  keys = jax.random.split(jax.random.key(2), 4)
  ps = train.init_many(lambda k: models.init(m, k, (1, 64)), keys)
  idx = data.shards(jax.random.key(3), x.shape[0], 4)
  many = train.fit_many(m.apply, ps, x, y, masks=data.masks_from_indices(idx, x.shape[0]),
                        optimizer=optax.sgd(0.05), keys=keys, batch_size=32, num_epochs=2,
                        mesh=mesh)
  flat = {f'one{i}': np.asarray(a) for i, a in enumerate(jax.tree.leaves(one.params))}
  flat.update({f'many{i}': np.asarray(a) for i, a in enumerate(jax.tree.leaves(many.params))})
  return flat


if __name__ == '__main__':
  out = run((4, 2) if sys.argv[2] == 'mesh' else None)
  out['num_devices'] = np.asarray(len(jax.devices()))
  np.savez(sys.argv[1], **out)
