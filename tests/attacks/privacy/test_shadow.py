"""Shadow models from fit_many equal separately trained ones; Shokri's pipeline works."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import metrics
from jaxsec import train
from jaxsec.attacks import privacy as priv
from jaxsec.attacks.privacy import _nets


def test_shadow_models_equal_separately_trained():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  in_masks, out_masks = priv.shokri_masks(jax.random.key(1), 64, num_shadow=3,
                                          shadow_size=10)
  assert not (in_masks.sum(0) > 1).any() and not (in_masks & out_masks).any()
  assert (in_masks.sum(1) == 10).all() and (out_masks.sum(1) == 10).all()
  init_fn = lambda k: _nets.mlp_init(k, (5, 8, 2))
  kw = dict(optimizer=optax.sgd(0.1), batch_size=5, num_epochs=2)
  many = priv.train_shadow_models(_nets.mlp_apply, init_fn, x, y, in_masks,
                                  key=jax.random.key(2), **kw)
  init_keys, train_keys = priv.shadow_keys(jax.random.key(2), 3)
  for m in range(3):
    one = train.fit(_nets.mlp_apply, init_fn(init_keys[m]), x, y,
                    indices=np.nonzero(in_masks[m])[0], key=train_keys[m], **kw)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b)[m], rtol=1e-5, atol=1e-6)
  cm = priv.complementary_membership(jax.random.key(3), 6, 12)
  assert (cm.sum(1) == 6).all() and (cm.sum(0) == 3).all()
  cm = priv.complementary_membership(jax.random.key(3), 6, 11)   # odd n
  assert (cm.sum(1) == 5).all() and cm.sum(0).max() == 3 and cm.sum() == 30
  with pytest.raises(ValueError, match='disjoint examples'):
    priv.shokri_masks(jax.random.key(0), 10, num_shadow=3, shadow_size=2)


def test_shokri_attack_learns_confidence_gap():
  rng = np.random.default_rng(0)
  c, k, n = 3, 4, 300

  def fake_logits(member, labels):
    # Members: the true class dominates by a large margin; non-members: a small one.
    margin = np.where(member, 6.0, 1.0) + rng.normal(0, 0.7, member.shape)
    z = rng.normal(0, 0.3, (member.shape[0], c))
    z[np.arange(member.shape[0]), labels] += margin
    return z.astype(np.float32)

  y = rng.integers(0, c, n).astype(np.int32)
  in_masks = np.zeros((k, n), bool)
  out_masks = np.zeros((k, n), bool)
  for m in range(k):
    perm = rng.permutation(n)
    in_masks[m, perm[:100]] = True
    out_masks[m, perm[100:200]] = True
  logits = np.stack([fake_logits(in_masks[m], y) for m in range(k)])
  rl, ry, rm = priv.shokri_records(logits, y, in_masks, out_masks)
  assert rl.shape == (800, 3) and rm.sum() == 400
  feats = priv.attack_features(rl, top_k=2, order='sorted')
  assert feats.shape == (800, 2) and bool(jnp.all(feats[:, 0] >= feats[:, 1]))
  raw = priv.attack_features(rl, transform='logprob')
  np.testing.assert_allclose(raw, jax.nn.log_softmax(rl), rtol=1e-6)
  st = priv.attack_features(rl, ry, order='sorted+true', transform='logprob')
  np.testing.assert_allclose(st[:, 0], raw[np.arange(800), ry], rtol=1e-6)
  atk = priv.fit_shokri_attack(rl, ry, rm, num_classes=c, key=jax.random.key(0),
                               num_epochs=15, batch_size=32, hidden=(16,))
  assert jax.tree.leaves(atk.params)[0].shape[0] == c   # one attack model per class
  target_member = rng.random(n) < 0.5
  target_logits = fake_logits(target_member, y)
  s = priv.shokri_scores(atk, target_logits, y)
  assert metrics.auc(np.asarray(s), target_member) > 0.9
