"""Label-consistent backdoor (Turner, Tsipras & Madry 2019): the authors' trigger, the
contract (labels kept, only target-class rows touched) and both hardenings."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks import poisoning

# the authors' bottom-right trigger, transcribed from their (row, col) -> value list
_AUTHORS_BOTTOM_RIGHT = {(-1, -1): 1, (-1, -2): -1, (-1, -3): 1, (-2, -1): -1, (-2, -2): 1,
                         (-2, -3): -1, (-3, -1): 1, (-3, -2): -1, (-3, -3): -1}
_AUTHORS_TOP_LEFT = {(0, 0): 1, (0, 1): -1, (0, 2): -1, (1, 0): -1, (1, 1): 1, (1, 2): -1,
                     (2, 0): 1, (2, 1): -1, (2, 2): 1}


def _images(n=40, k=4, seed=0):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(0.2 + 0.6 * rng.rand(n, 6, 6, 1).astype(np.float32)),
          jnp.asarray((np.arange(n) % k).astype(np.int32)))


def test_pattern_trigger_is_the_authors():
  x = jnp.full((2, 6, 7, 3), 0.5)
  full = np.asarray(poisoning.pattern_trigger(x))
  expect = np.full((2, 6, 7, 3), 0.5, np.float32)
  for (r, c), v in _AUTHORS_BOTTOM_RIGHT.items():
    expect[:, r, c] = 1.0 if v > 0 else 0.0            # 255 * v, clipped to [0, 255]
  np.testing.assert_allclose(full, expect)
  small = np.asarray(poisoning.pattern_trigger(x, amplitude=16 / 255, all_corners=True))
  expect = np.full((2, 6, 7, 3), 0.5, np.float32)
  for (r, c), v in _AUTHORS_BOTTOM_RIGHT.items():
    expect[:, r, c] += v * 16 / 255
  for (r, c), v in _AUTHORS_TOP_LEFT.items():
    expect[:, r, c] += v * 16 / 255
  assert np.all(small[:, :3, -3:] != 0.5) and np.all(small[:, -3:, :3] != 0.5)
  np.testing.assert_allclose(small[:, :3, :3], expect[:, :3, :3], atol=1e-6)
  np.testing.assert_allclose(small[:, -3:, -3:], expect[:, -3:, -3:], atol=1e-6)
  # four corners: a horizontal flip of a triggered image is a triggered image
  z = jax.random.uniform(jax.random.key(0), (3, 8, 8))
  trig = functools.partial(poisoning.pattern_trigger, amplitude=0.3, all_corners=True)
  np.testing.assert_allclose(np.asarray(trig(z))[:, :, ::-1], np.asarray(trig(z[:, :, ::-1])))
  with pytest.raises(ValueError, match='amplitude'):
    poisoning.pattern_trigger(x, amplitude=2.0)


def test_contract_labels_kept_and_only_target_rows_poisoned():
  x, y = _images()
  trig = functools.partial(poisoning.apply_trigger, size=2)
  atk = poisoning.clean_label_backdoor(fraction=0.15, target_label=1, num_classes=4,
                                       trigger=trig)
  out = atk(x, y, jax.random.key(0))
  mask = np.asarray(out.info['poison_mask'])
  assert out.x.shape == x.shape and mask.sum() == 6
  np.testing.assert_array_equal(np.asarray(out.y), np.asarray(y))          # labels kept
  assert np.all(np.asarray(y)[mask] == 1)
  np.testing.assert_array_equal(np.asarray(out.x)[~mask], np.asarray(x)[~mask])
  np.testing.assert_allclose(np.asarray(out.x)[mask], np.asarray(trig(x[mask])))
  inj = poisoning.clean_label_backdoor(fraction=0.15, target_label=1, num_classes=4,
                                       mode='inject')(x, y, jax.random.key(0))
  assert inj.x.shape == (46, 6, 6, 1) and np.all(np.asarray(inj.y[40:]) == 1)
  np.testing.assert_array_equal(np.asarray(inj.x[:40]), np.asarray(x))
  with pytest.raises(ValueError, match='target_label'):
    poisoning.clean_label_backdoor(fraction=0.3, target_label=1, num_classes=4)(
        x, y, jax.random.key(0))
  with pytest.raises(ValueError, match='at most one'):
    poisoning.clean_label_backdoor(fraction=0.1, target_label=1, num_classes=4,
                                   attack=attacks.pgd(eps=0.1), logits_fn=lambda z: z,
                                   interpolation=0.3)


def test_adversarial_hardening_stays_in_budget():
  x, y = _images()
  w = jnp.asarray(np.random.RandomState(1).randn(36, 4).astype(np.float32))
  logits_fn = lambda z: z.reshape((z.shape[0], -1)) @ w
  eps = 0.1
  pgd = attacks.pgd(eps=eps, step_size=0.03, num_steps=5)
  out = poisoning.clean_label_backdoor(fraction=0.2, target_label=2, num_classes=4,
                                       attack=pgd, logits_fn=logits_fn)(
                                           x, y, jax.random.key(3))
  idx = np.asarray(out.info['base_index'])
  hard = np.asarray(out.info['hardened'])
  assert np.abs(hard - np.asarray(x)[idx]).max() <= eps + 1e-6
  assert np.abs(hard - np.asarray(x)[idx]).max() > 0.5 * eps
  np.testing.assert_allclose(np.asarray(out.x)[idx],
                             np.asarray(poisoning.apply_trigger(jnp.asarray(hard))))
  pred = np.argmax(np.asarray(logits_fn(jnp.asarray(hard))), 1)
  np.testing.assert_array_equal(np.asarray(out.info['hardening_success']), pred != 2)
  np.testing.assert_array_equal(np.asarray(out.y), np.asarray(y))


def test_interpolation_towards_another_class():
  x, y = _images()
  tau = 0.3
  for latent in (None, (lambda z: 2.0 * z + 1.0, lambda h: (h - 1.0) / 2.0)):
    out = poisoning.clean_label_backdoor(fraction=0.1, target_label=0, num_classes=4,
                                         interpolation=tau, latent=latent)(
                                             x, y, jax.random.key(4))
    idx = np.asarray(out.info['base_index'])
    other = (np.asarray(out.info['hardened']) - (1 - tau) * np.asarray(x)[idx]) / tau
    # every partner is a training image of another class
    dist = np.abs(other[:, None] - np.asarray(x)[None]).reshape(len(idx), x.shape[0], -1)
    match = dist.max(-1).argmin(1)
    assert np.all(dist.max(-1).min(1) < 1e-4)
    assert np.all(np.asarray(y)[match] != 0) and np.all(np.asarray(y)[idx] == 0)
