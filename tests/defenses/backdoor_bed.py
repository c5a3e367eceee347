"""A BadNets-backdoored model on scikit-learn's digits, shared by the backdoor-defense tests.

8x8 digits scaled to [0, 1] and upsampled to 16x16 (each pixel a 2x2 block, so that the
trigger is a small part of the image), with a channel axis, a 3x3 white trigger in the bottom-right
corner (``attacks.poisoning.badnets``), target label 0, 5% of the training set poisoned, and
an MLP with one 256-unit hidden layer (its penultimate activations via ``models.feature_fn``).
Trained once per test process (``bed()`` is cached); a few seconds on one core.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

from jaxsec import models
from jaxsec import train
from jaxsec.attacks import poisoning

TARGET = 0
SIZE = 3


class Bed(NamedTuple):
  model: object
  params: object
  x: np.ndarray          # poisoned training set
  y: np.ndarray
  poison: np.ndarray     # its poison mask
  x_test: np.ndarray     # clean held-out images
  y_test: np.ndarray


def trigger(x):
  return poisoning.apply_trigger(jnp.asarray(x), size=SIZE, value=1.0)


def attack_success(apply_fn, params, x, y):
  """Share of the non-target test images that the trigger sends to the target."""
  other = y != TARGET
  pred = np.argmax(np.asarray(apply_fn(params, trigger(x[other]))), -1)
  return float(np.mean(pred == TARGET))


def accuracy(apply_fn, params, x, y):
  return float(np.mean(np.argmax(np.asarray(apply_fn(params, jnp.asarray(x))), -1) == y))


@functools.lru_cache(maxsize=None)
def bed(fraction=0.05, epochs=30, hidden=256):
  d = datasets.load_digits()
  x = np.kron(d.images / 16.0, np.ones((2, 2))).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  perm = np.random.RandomState(0).permutation(len(y))
  x, y = x[perm], y[perm]
  xtr, ytr, xte, yte = x[:1200], y[:1200], x[1200:], y[1200:]
  atk = poisoning.badnets(fraction=fraction, target_label=TARGET, num_classes=10, size=SIZE)
  po = atk(jnp.asarray(xtr), jnp.asarray(ytr), jax.random.key(1))
  model = models.get('mlp', num_classes=10, hidden=(hidden,))
  p0 = models.init(model, jax.random.key(2), (1, 16, 16, 1))

  params = train.fit(model.apply, p0, po.x, po.y, optimizer=optax.adam(3e-3),
                     key=jax.random.key(3), num_epochs=epochs, batch_size=64).params
  return Bed(model, params, np.asarray(po.x), np.asarray(po.y),
             np.asarray(po.info['poison_mask']), xte, yte)
