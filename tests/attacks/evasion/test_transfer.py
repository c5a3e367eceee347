"""transfer_ifgsm (DI, TI, NI, SI, VMI over MI-FGSM) against a NumPy transcription of the
authors' update steps (Dong et al.'s TI-DIM code, Lin et al.'s SI-NI code, Wang & He's VT
code) on a tiny two-layer tanh network with hand-written backpropagation.

The random draws (DI's per-example size / offsets, VMI's neighbours) are taken from the
same keys as the attack (``fold_in(key, t)`` per step, ``fold_in(., 0)`` for the gradient
point, ``split(fold_in(., j + 1))`` for neighbour ``j``); everything else -- the resize /
pad / resize transform, its transpose, the gradients, the kernel, the update rule -- is
NumPy in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsec import attacks
from jaxsec.attacks.evasion import transfer

KEY = jax.random.key(3)
SHAPE = (3, 8, 8, 2)
_R = np.random.default_rng(0)
W1 = _R.normal(size=(int(np.prod(SHAPE[1:])), 6)).astype(np.float32) * 0.3
W2 = _R.normal(size=(6, 4)).astype(np.float32)
X = jax.random.uniform(jax.random.key(1), SHAPE, jnp.float32, 0.05, 0.95)


def model(x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ W1) @ W2


Y = jnp.argmax(model(X), -1)


# ------------------------------------------------------------------ NumPy transcription


def np_ce_grad(x, y):
  """d/dx of the per-example cross-entropy of the tanh network (float64 backprop)."""
  xf = x.reshape(x.shape[0], -1)
  h = np.tanh(xf @ W1.astype(np.float64))
  z = h @ W2.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dz = p - np.eye(z.shape[1])[y]
  dh = dz @ W2.T.astype(np.float64)
  return ((dh * (1 - h * h)) @ W1.T.astype(np.float64)).reshape(x.shape)


def np_gkern(kernlen, nsig=3):          # Dong et al.'s gkern
  x = np.linspace(-nsig, nsig, kernlen)
  k = np.outer(stats.norm.pdf(x), stats.norm.pdf(x))
  return k / k.sum()


def np_depthwise_same(g, k):            # tf.nn.depthwise_conv2d(..., padding='SAME')
  r = k.shape[0] // 2
  gp = np.pad(g, ((0, 0), (r, r), (r, r), (0, 0)))
  out = np.zeros_like(g)
  for a in range(k.shape[0]):
    for b in range(k.shape[1]):
      out += k[a, b] * gp[:, a:a + g.shape[1], b:b + g.shape[2], :]
  return out


def np_resize_nearest(img, oh, ow):     # TF1 resize_images NEAREST_NEIGHBOR
  ih, iw = img.shape[:2]
  ri = np.minimum(np.floor(np.arange(oh, dtype=np.float32)   # TF's float32 scale
                           * (np.float32(ih) / np.float32(oh))).astype(int), ih - 1)
  ci = np.minimum(np.floor(np.arange(ow, dtype=np.float32)
                           * (np.float32(iw) / np.float32(ow))).astype(int), iw - 1)
  return img[ri][:, ci]


def np_di(img, grow, top, left, pad):   # VT's input_diversity for one image
  h, w = img.shape[:2]
  r = np_resize_nearest(img, h + grow, w + grow)
  c = np.pad(r, ((top, pad - grow - top), (left, pad - grow - left), (0, 0)))
  return np_resize_nearest(c, h, w)


def np_di_matrix(h, w, grow, top, left, pad):
  """DI as a linear map on one channel: column q = DI(e_q)."""
  cols = []
  for q in range(h * w):
    e = np.zeros((h * w, 1))
    e[q] = 1.0
    cols.append(np_di(e.reshape(h, w, 1), grow, top, left, pad).reshape(-1))
  return np.stack(cols, 1)


def np_point_grad(z, y, m, di):
  """sum_i grad_z CE(DI(z / 2^i)) with di = None or per-example (apply, grow, top, left,
  pad); the gradient through DI is its transpose."""
  g = np.zeros_like(z)
  for i in range(m):
    s = 0.5 ** i
    u = z * s
    if di is None:
      g += s * np_ce_grad(u, y)
      continue
    apply, grow, top, left, pad = di
    mats = [np_di_matrix(z.shape[1], z.shape[2], grow[b], top[b], left[b], pad)
            if apply[b] else np.eye(z.shape[1] * z.shape[2]) for b in range(z.shape[0])]
    t = np.stack([np.einsum('pq,qc->pc', mats[b], u[b].reshape(-1, z.shape[3]))
                  .reshape(z.shape[1:]) for b in range(z.shape[0])])
    gt = np_ce_grad(t, y)
    g += s * np.stack([np.einsum('pq,pc->qc', mats[b], gt[b].reshape(-1, z.shape[3]))
                       .reshape(z.shape[1:]) for b in range(z.shape[0])])
  return g


# The reference's draws, jitted once (eager jax.random is slow to dispatch).
_draws = jax.jit(transfer.diversity_draws, static_argnums=(1, 2, 3))
_uniform = jax.jit(lambda k, r: jax.random.uniform(k, SHAPE, jnp.float32, -r, r))
_split_in = jax.jit(lambda k, j: jax.random.split(jax.random.fold_in(k, j)))


def np_attack(x, y, *, eps, num_steps, decay=1.0, p=0.0, resize=transfer.DI_RESIZE,
              kernel=None, m=1, nesterov=False, n=0, beta=1.5, key=KEY, bounds=(0.0, 1.0)):
  x = np.asarray(x, np.float64)
  y = np.asarray(y)
  step = eps / num_steps
  size = int(np.prod(x.shape[1:]))
  pad = transfer.diversity_pad(x.shape[1], x.shape[2], resize)

  def draws(k):
    if p == 0:
      return None
    a, g, t, l = (np.asarray(v) for v in _draws(k, x.shape[0], p, pad))
    return a, g, t, l, pad

  xa, mom, var = x.copy(), np.zeros_like(x), np.zeros_like(x)
  for t in range(num_steps):
    kt = jax.random.fold_in(key, t)
    z = xa + decay * step * size * mom if nesterov else xa
    g = np_point_grad(z, y, m, draws(jax.random.fold_in(kt, 0)))
    c = g + var
    if kernel is not None:
      c = np_depthwise_same(c, kernel)
    mom = decay * mom + c / np.abs(c).reshape(len(c), -1).sum(1)[:, None, None, None]
    if n:
      tot = np.zeros_like(x)
      for j in range(n):
        kn, kd = _split_in(kt, j + 1)
        r = jnp.float32(beta) * jnp.float32(eps)
        u = np.asarray(_uniform(kn, r), np.float64)
        tot += np_point_grad(xa + u, y, m, draws(kd))
      var = tot / n - g
    xa = np.clip(np.clip(xa + step * np.sign(mom), x - eps, x + eps), *bounds)
  return xa


# ------------------------------------------------------------------ tests


VARIANTS = {
    'mi': {},
    'di': dict(diversity_prob=1.0, diversity_resize=1.5),
    'ti': dict(ti_kernel=3),
    'ni': dict(nesterov=True),
    'si': dict(si_copies=3),
    'ni_si': dict(nesterov=True, si_copies=3),
    'vmi': dict(vmi_neighbours=3, vmi_beta=1.5),
    'di_ti_mi': dict(diversity_prob=0.5, diversity_resize=1.5, ti_kernel=5),
    'vmi_di_ti_si': dict(vmi_neighbours=2, diversity_prob=0.5, diversity_resize=1.5,
                         ti_kernel=3, si_copies=2),
    'vni_di_ti_si': dict(vmi_neighbours=2, diversity_prob=0.7, diversity_resize=1.5,
                         ti_kernel=3, si_copies=2, nesterov=True),
}
_NP_NAMES = dict(diversity_prob='p', diversity_resize='resize', si_copies='m',
                 vmi_neighbours='n', vmi_beta='beta')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow)
                                  if n.startswith('vni') else n for n in sorted(VARIANTS)])
def test_update_matches_numpy_transcription(name):
  kw = VARIANTS[name]
  eps, steps = 0.3, 2                    # large steps: every coordinate moves
  out = attacks.transfer_ifgsm(eps=eps, num_steps=steps, **kw)(model, X, Y, KEY)
  ref_kw = {_NP_NAMES.get(k, k): v for k, v in kw.items()}
  if 'ti_kernel' in ref_kw:
    ref_kw['kernel'] = np_gkern(ref_kw.pop('ti_kernel'))
  ref = np_attack(X, Y, eps=eps, num_steps=steps, **ref_kw)
  np.testing.assert_allclose(np.asarray(out.x_adv), ref, atol=1e-5)
  assert int(out.info['gradients'][0]) == steps * kw.get('si_copies', 1) * (
      1 + kw.get('vmi_neighbours', 0))
  if name != 'mi':   # teeth: each option changes the first two iterates here
    assert np.abs(ref - np_attack(X, Y, eps=eps, num_steps=steps)).max() > 0.1


@pytest.mark.parametrize('targeted', [False, True])
def test_all_options_off_is_mi_fgsm_exactly(targeted):
  y = (Y + 1) % 4 if targeted else Y
  a = attacks.transfer_ifgsm(eps=0.1, num_steps=4, decay=0.8, targeted=targeted)
  b = attacks.mi_fgsm(eps=0.1, num_steps=4, decay=0.8, targeted=targeted)
  np.testing.assert_array_equal(a(model, X, y, None).x_adv, b(model, X, y, None).x_adv)


def test_ti_with_a_delta_kernel_is_no_ti():
  plain = attacks.transfer_ifgsm(eps=0.1, num_steps=3, nesterov=True)(model, X, Y, KEY)
  for k in (np.ones((1, 1)), np.pad(np.ones((1, 1)), 1)):
    ti = attacks.transfer_ifgsm(eps=0.1, num_steps=3, nesterov=True, ti_kernel=k)
    np.testing.assert_array_equal(ti(model, X, Y, KEY).x_adv, plain.x_adv)


def test_si_with_one_copy_is_plain_and_a_scale_invariant_model_ignores_copies():
  kw = dict(eps=0.1, num_steps=1, diversity_prob=0.5, diversity_resize=1.5)
  plain = attacks.transfer_ifgsm(**kw)(model, X, Y, KEY).x_adv
  np.testing.assert_array_equal(
      attacks.transfer_ifgsm(si_copies=1, **kw)(model, X, Y, KEY).x_adv, plain)
  # J(x / 2^i) = J(x) for a model of x / ||x||: SI's sum is m times the gradient.
  inv = lambda x: model(x / jnp.linalg.norm(x.reshape(x.shape[0], -1), axis=1)[:, None,
                                                                               None, None])
  one = attacks.transfer_ifgsm(eps=0.1, num_steps=1)(inv, X, Y, None).x_adv
  five = attacks.transfer_ifgsm(eps=0.1, num_steps=1, si_copies=5)(
      inv, X, Y, None).x_adv
  np.testing.assert_allclose(five, one, atol=1e-6)


def test_di_probability_zero_is_plain_and_di_transform_matches_numpy():
  plain = attacks.transfer_ifgsm(eps=0.1, num_steps=2)(model, X, Y, KEY).x_adv
  np.testing.assert_array_equal(
      attacks.transfer_ifgsm(eps=0.1, num_steps=2, diversity_prob=0.0)(model, X, Y,
                                                                        KEY).x_adv, plain)
  img = np.asarray(X[0])
  pad = 3
  for grow in range(pad):
    for top in range(pad - grow):
      for left in range(pad - grow):
        got = transfer.diverse_input(X[0], jnp.int32(grow), jnp.int32(top),
                                     jnp.int32(left), pad)
        np.testing.assert_array_equal(got, np_di(img, grow, top, left, pad))


def test_di_draws_cover_the_reference_ranges():
  a, g, t, l = (np.asarray(v) for v in transfer.diversity_draws(KEY, 4000, 0.5, 3))
  assert abs(a.mean() - 0.5) < 0.03
  assert set(g.tolist()) == {0, 1, 2}
  assert (t >= 0).all() and (l >= 0).all() and (t < 3 - g).all() and (l < 3 - g).all()
  assert set(t[g == 0].tolist()) == {0, 1, 2}
  # Xie et al.'s 299 -> [299, 330) in 330 and the 28 px scaling.
  assert transfer.diversity_pad(299, 299) == 31 and transfer.diversity_pad(28, 28) == 3


def test_gaussian_kernel_is_gkern_and_scaled_sizes():
  np.testing.assert_allclose(transfer.gaussian_kernel(15), np_gkern(15), rtol=1e-6)
  assert transfer.scaled_kernel_size(299) == 15
  assert transfer.scaled_kernel_size(28) == 3 and transfer.scaled_kernel_size(224) == 11


def test_di_examples_do_not_depend_on_the_other_examples():
  atk = attacks.transfer_ifgsm(eps=0.1, num_steps=1, diversity_prob=0.5,
                               diversity_resize=1.5)
  a = atk(model, X, Y, KEY).x_adv
  b = atk(model, X.at[1:].set(0.5), Y, KEY).x_adv
  np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize('name', ['mi', 'ni_si', pytest.param('vni_di_ti_si',
                                                              marks=pytest.mark.slow)])
def test_ball_box_jit_and_traced_eps(name):
  kw = VARIANTS[name]
  atk = attacks.transfer_ifgsm(eps=0.2, num_steps=2, step_size=0.5, bounds=(0.1, 0.9),
                               **kw)
  x = jnp.clip(X, 0.1, 0.9)
  out = atk(model, x, Y, KEY)
  d = np.asarray(out.x_adv - x)
  assert np.abs(d).max() <= 0.2 + 1e-6
  assert float(out.x_adv.min()) >= 0.1 and float(out.x_adv.max()) <= 0.9
  assert out.budget == 'fixed'
  np.testing.assert_array_equal(
      np.asarray(out.info['success']), np.asarray(jnp.argmax(model(out.x_adv), -1) != Y))
  jitted = jax.jit(atk, static_argnums=0)(model, x, Y, KEY)
  np.testing.assert_allclose(jitted.x_adv, out.x_adv, atol=1e-6)
  sweep = jax.jit(jax.vmap(lambda e: attacks.transfer_ifgsm(
      eps=e, num_steps=2, **kw)(model, x, Y, KEY).x_adv))(jnp.array([0.0, 0.05]))
  np.testing.assert_array_equal(sweep[0], x)
  assert np.abs(np.asarray(sweep[1] - x)).max() <= 0.05 + 1e-6


@pytest.mark.parametrize('kw,match', [
    (dict(eps=-0.1), 'eps=-0.1'),
    (dict(num_steps=0), 'num_steps=0'),
    (dict(step_size=0.0), 'step_size=0.0'),
    (dict(decay=-1.0), 'decay=-1.0'),
    (dict(diversity_prob=1.5), 'diversity_prob=1.5'),
    (dict(diversity_resize=1.0), 'diversity_resize=1.0'),
    (dict(ti_kernel=4), 'ti_kernel=4'),
    (dict(ti_kernel=0), 'ti_kernel=0'),
    (dict(ti_kernel=np.ones((2, 3))), r'ti_kernel with shape \(2, 3\)'),
    (dict(ti_kernel=np.full((3, 3), np.nan)), r'ti_kernel with shape \(3, 3\)'),
    (dict(si_copies=0), 'si_copies=0'),
    (dict(nesterov=1), 'nesterov=1'),
    (dict(vmi_neighbours=-1), 'vmi_neighbours=-1'),
    (dict(vmi_beta=0.0), 'vmi_beta=0.0'),
    (dict(loss='mse'), 'mse'),
    (dict(bounds=(1.0, 0.0)), 'bounds'),
])
def test_bad_hyperparameters(kw, match):
  kw = {'eps': 0.1, **kw}
  with pytest.raises(ValueError, match=match):
    attacks.transfer_ifgsm(**kw)


def test_bad_call_inputs():
  flat = X.reshape(X.shape[0], -1)
  f = lambda z: model(z.reshape(SHAPE[0], *SHAPE[1:]))
  with pytest.raises(ValueError, match=r'x has shape \(3, 128\); DI and TI need images'):
    attacks.transfer_ifgsm(eps=0.1, ti_kernel=3)(f, flat, Y, KEY)
  with pytest.raises(ValueError, match='key=None'):
    attacks.transfer_ifgsm(eps=0.1, vmi_neighbours=2)(model, X, Y, None)
  with pytest.raises(ValueError, match='non-finite'):
    attacks.transfer_ifgsm(eps=0.1)(model, X.at[0, 0, 0, 0].set(jnp.nan), Y, KEY)
  with pytest.raises(ValueError, match='y contains label 9'):
    attacks.transfer_ifgsm(eps=0.1)(model, X, Y.at[0].set(9), KEY)


@pytest.mark.slow
def test_three_dimensional_images_and_channels_are_supported():
  # [B, H, W] images (no channel axis) give the same result as [B, H, W, 1].
  x3 = X[..., 0]
  f3 = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ W1[::2]) @ W2
  f4 = lambda z: f3(z[..., 0])
  kw = dict(eps=0.1, num_steps=1, diversity_prob=0.5, diversity_resize=1.5, ti_kernel=3)
  a = attacks.transfer_ifgsm(**kw)(f3, x3, Y, KEY).x_adv
  b = attacks.transfer_ifgsm(**kw)(f4, x3[..., None], Y, KEY).x_adv
  np.testing.assert_allclose(a, b[..., 0], atol=1e-6)
