"""One return type for every poisoning attack: PoisonOutput(x', y', info), no flag."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import poisoning
from jaxsec.attacks.poisoning import PoisonOutput

FACTORIES = [poisoning.random_label_flip, poisoning.alfa, poisoning.distance_label_flip,
             poisoning.badnets, poisoning.feature_collision, poisoning.flipped_copies,
             poisoning.bilevel_poisoning, poisoning.svm_poisoning,
             poisoning.centroid_poisoning, poisoning.signature_noise_poisoning]


@pytest.mark.parametrize('factory', FACTORIES, ids=lambda f: f.__name__)
def test_no_return_info_flag(factory):
  assert 'return_info' not in inspect.signature(factory).parameters


def _data(n=24):
  x = jax.random.uniform(jax.random.key(0), (n, 4, 4, 1))
  y = (jnp.arange(n) % 2).astype(jnp.int32)
  return x, y


@pytest.mark.parametrize('make', [
    lambda: poisoning.random_label_flip(fraction=0.25),
    lambda: poisoning.flipped_copies(fraction=0.25),
    lambda: poisoning.badnets(fraction=0.25, target_label=0, num_classes=2),
    lambda: poisoning.badnets(fraction=0.25, target_label=0, num_classes=2, mode='inject'),
])
def test_always_poison_output_with_a_poison_mask(make):
  x, y = _data()
  out = make()(x, y, jax.random.key(1))
  assert isinstance(out, PoisonOutput)
  x2, y2, info = out                                   # the documented unpacking
  assert x2 is out.x and y2 is out.y and info is out.info
  mask = np.asarray(info['poison_mask'])
  assert mask.shape == (x2.shape[0],) == (y2.shape[0],) and mask.sum() == 6
  changed = (np.asarray(y2[:len(y)]) != np.asarray(y)) | np.any(
      np.asarray(x2[:len(y)]) != np.asarray(x), axis=(1, 2, 3))
  assert not changed[~mask[:len(y)]].any()             # only the marked rows differ
