"""Model inversion, attribute inference, property inference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import privacy as priv
from jaxsec.attacks.privacy import _nets


def test_model_inversion_raises_confidence_within_bounds():
  w = jax.random.normal(jax.random.key(0), (16, 3))
  logits_fn = lambda x: x.reshape((x.shape[0], -1)) @ w
  x0 = jnp.full((3, 4, 4, 1), 0.5)
  y = jnp.array([0, 1, 2])
  p0 = jax.nn.softmax(logits_fn(x0))[jnp.arange(3), y]
  out = priv.model_inversion(num_steps=60, step_size=0.5, cost='neg_log_prob',
                             tv_weight=1e-3, denoise_every=10)(
      logits_fn, x0, y, jax.random.key(0))
  assert isinstance(out, priv.InversionOutput)   # one return type, no return_info flag
  x, info = out
  assert info is out.info and set(info) == {'cost', 'confidence'}
  assert float(x.min()) >= 0 and float(x.max()) <= 1
  p = jax.nn.softmax(logits_fn(x))[jnp.arange(3), y]
  np.testing.assert_allclose(p, out.info['confidence'], rtol=1e-5)
  assert bool(jnp.all(p > p0)) and float(p.min()) > 0.9
  # On a linear model d(-log p_c)/dx = -sum_{j != c} p_j (w_c - w_j): a pixel whose target
  # weight beats every other class's only ever increases, one that loses to all decreases.
  out2 = priv.model_inversion(num_steps=50, step_size=1.0, cost='neg_log_prob')(
      logits_fn, x0, y, jax.random.key(0))
  wn = np.asarray(w)
  for c in range(3):
    others = np.delete(wn, c, axis=1)
    up, down = wn[:, c] > others.max(1), wn[:, c] < others.min(1)
    xc = np.asarray(out2.x[c]).reshape(-1)
    assert np.all(xc[up] > 0.5) and np.all(xc[down] < 0.5)
  with pytest.raises(ValueError, match='cost'):
    priv.model_inversion(cost='l1')
  with pytest.raises(TypeError, match='return_info'):
    priv.model_inversion(return_info=True)


def test_attribute_inference_map_beats_base_rate():
  rng = np.random.default_rng(0)
  n = 200
  s = rng.choice([-1.0, 1.0], n, p=[0.7, 0.3])           # sensitive feature
  other = rng.normal(size=n)
  y = (3 * s + 0.3 * other > 0).astype(np.int32)
  x = np.stack([s, other], 1).astype(np.float32)
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), 6 * v[:, 0] + 0.6 * v[:, 1]], 1)
  res = priv.attribute_inference(logits_fn, x, y, feature=0, candidates=[-1.0, 1.0],
                                 prior=[0.7, 0.3])
  assert res.base_rate_value == -1.0
  assert np.mean(res.values == s) == 1.0 > np.mean(s == res.base_rate_value)
  x_hidden = x.copy()
  x_hidden[:, 0] = 123.0   # the attack never reads the hidden column
  res2 = priv.attribute_inference(logits_fn, x_hidden, y, feature=0, candidates=[-1.0, 1.0],
                                  prior=[0.7, 0.3])
  np.testing.assert_array_equal(res.values, res2.values)
  with pytest.raises(ValueError, match='prior'):
    priv.attribute_inference(logits_fn, x, y, feature=0, candidates=[-1, 1], prior=[1, 1])


def test_parameter_features_permutation_invariant():
  p = _nets.mlp_init(jax.random.key(0), (5, 7, 3))
  p['b0'] = jax.random.normal(jax.random.key(1), (7,))
  perm = np.random.default_rng(0).permutation(7)
  q = {'w0': p['w0'][:, perm], 'b0': p['b0'][perm], 'w1': p['w1'][perm], 'b1': p['b1']}
  x = jax.random.normal(jax.random.key(2), (4, 5))
  np.testing.assert_allclose(_nets.mlp_apply(p, x), _nets.mlp_apply(q, x), rtol=1e-5,
                             atol=1e-6)
  fp = priv.parameter_features(p, num_quantiles=8, stacked=False)
  fq = priv.parameter_features(q, num_quantiles=8, stacked=False)
  np.testing.assert_allclose(fp, fq, rtol=1e-6)
  assert fp.shape == (4 * 10,)
  # Output layer kept per class (tree order: b0, b1, w0, w1 -> not a head-last order here,
  # so build one explicitly): permuting hidden units still leaves the features unchanged,
  # permuting classes changes them.
  head_p = {'a': p['w0'], 'b': p['b0'], 'c_bias': p['b1'], 'd_kernel': p['w1']}
  head_q = {'a': q['w0'], 'b': q['b0'], 'c_bias': q['b1'], 'd_kernel': q['w1']}
  gp = priv.parameter_features(head_p, num_quantiles=4, stacked=False, output_leaves=2)
  gq = priv.parameter_features(head_q, num_quantiles=4, stacked=False, output_leaves=2)
  np.testing.assert_allclose(gp, gq, rtol=1e-6)
  assert gp.shape == (2 * 6 + 3 + 3 * (4 + 2),)
  swapped = dict(head_p, d_kernel=head_p['d_kernel'][:, ::-1])
  assert not np.allclose(gp, priv.parameter_features(swapped, num_quantiles=4, stacked=False,
                                                     output_leaves=2))


def test_property_masks_and_meta_classifier():
  has = np.r_[np.ones(100, bool), np.zeros(300, bool)]
  masks, labels = priv.property_masks(jax.random.key(0), has, num_models=6, size=50,
                                      fraction_with=0.6, fraction_without=0.1)
  assert (masks.sum(1) == 50).all()
  np.testing.assert_array_equal(labels, [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(masks[:, :100].sum(1), [30, 30, 30, 5, 5, 5])
  rng = np.random.default_rng(0)
  lab = np.r_[np.ones(40), np.zeros(40)].astype(np.int32)
  feats = rng.normal(size=(80, 6)).astype(np.float32)
  feats[:, 2] += 2.0 * lab
  meta = priv.fit_meta_classifier(feats, lab, key=jax.random.key(0), num_epochs=60)
  s = np.asarray(priv.meta_scores(meta, feats))
  assert np.mean((s > 0) == lab) > 0.85
