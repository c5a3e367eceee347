"""Bandits (Ilyas, Engstrom & Madry, ICLR 2019): one step against a NumPy transcription of
the authors' ``make_adversarial_examples`` step, exact query counts, the threat model,
success on the linear test bed against the closed-form best L_inf attack, bad input."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec.attacks import blackbox
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common
from tests.attacks.blackbox.linear_model import KEY, assert_factory_refuses
from tests.attacks.blackbox.linear_model import assert_linf_fixed_budget_run
from tests.attacks.blackbox.linear_model import SCORE_BASED_BAD_HYPERPARAMETERS
from tests.attacks.blackbox.linear_model import assert_refuses_bad_input
from tests.attacks.blackbox.linear_model import W as _W
from tests.attacks.blackbox.linear_model import binary as _binary
from tests.attacks.blackbox.linear_model import clean_batch as _clean_batch

# The package re-exports the factory under the module's name: fetch the module itself.
bandits_lib = importlib.import_module('jaxsec.attacks.blackbox.bandits')

# A three-class linear model on 5 x 5 x 1 images, for the tiled (data-prior) step.
_WI = 0.2 * np.random.default_rng(7).normal(size=(25, 3))   # CE of order 1


def _image_model(x):
  return x.reshape((x.shape[0], -1)) @ jnp.asarray(_WI, x.dtype)


# --------------------------------------------------------------------------- the authors'


def _np_norm(t):
  n = np.sqrt((t ** 2).reshape(t.shape[0], -1).sum(1)).reshape((-1,) + (1,) * (t.ndim - 1))
  return n + (n == 0) * 1e-8


def _np_upsample(p, size):
  """torch.nn.Upsample(size, mode='nearest') on NHWC: src = floor(dst * in / out)."""
  ih = np.minimum(np.floor(np.arange(size[0]) * (p.shape[1] / size[0])).astype(int),
                  p.shape[1] - 1)
  iw = np.minimum(np.floor(np.arange(size[1]) * (p.shape[2] / size[1])).astype(int),
                  p.shape[2] - 1)
  return p[:, ih][:, :, iw]


def _np_ce(x, y):
  z = x.reshape(x.shape[0], -1) @ _WI
  z = z - z.max(1, keepdims=True)
  return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


def _authors_step(image, orig, prior, u, y, *, mode, fd_eta, exploration, online_lr,
                  image_lr, eps):
  """The body of the authors' loop (non-NES branch) in float64 NumPy, line by line."""
  size = image.shape[1:3]
  dim = prior[0].size
  exp_noise = exploration * u / dim ** 0.5
  q1 = _np_upsample(prior + exp_noise, size)
  q2 = _np_upsample(prior - exp_noise, size)
  l1 = _np_ce(image + fd_eta * q1 / _np_norm(q1), y)
  l2 = _np_ce(image + fd_eta * q2 / _np_norm(q2), y)
  est_deriv = (l1 - l2) / (fd_eta * exploration)
  est_grad = est_deriv.reshape(-1, 1, 1, 1) * exp_noise
  if mode == 'l2':                                    # gd_prior_step
    prior = prior + online_lr * est_grad
  else:                                               # eg_step
    real_x = (prior + 1) / 2
    pos = real_x * np.exp(online_lr * est_grad)
    neg = (1 - real_x) * np.exp(-online_lr * est_grad)
    prior = pos / (pos + neg) * 2 - 1
  g = _np_upsample(prior, size)
  if mode == 'l2':                                    # l2_image_step, l2_proj
    new_im = image + image_lr * g / _np_norm(g)
    delta = new_im - orig
    out = (_np_norm(delta) > eps).astype(float)
    new_im = (orig + eps * delta / _np_norm(delta)) * out + new_im * (1 - out)
  else:                                               # linf_step, linf_proj
    new_im = orig + np.clip(image + image_lr * np.sign(g) - orig, -eps, eps)
  return np.clip(new_im, 0, 1), prior


@pytest.mark.parametrize('mode, eps', [('linf', 0.05), ('l2', 0.3)])
def test_one_step_matches_the_authors_update(mode, eps):
  # 5 x 5 images, tiles of 2 pixels: a 3 x 3 prior upsampled with the nearest rule
  # (rows 0,0,1,1,2), a prior that is already non-zero (the time prior), a moved iterate.
  rng = np.random.default_rng(0)
  b = 4
  orig = rng.uniform(0.2, 0.8, size=(b, 5, 5, 1))
  image = np.clip(orig + rng.uniform(-eps / 10, eps / 10, size=orig.shape), 0, 1)
  prior = rng.uniform(-0.6, 0.6, size=(b, 3, 3, 1))
  u = rng.normal(size=prior.shape)
  y = np.argmax(orig.reshape(b, -1) @ _WI, 1)
  hyper = dict(bandits_lib.DEFAULTS[mode])
  want_x, want_v = _authors_step(image, orig, prior, u, y, mode=mode, eps=eps, **hyper)

  # In float64: the finite difference of the L2 defaults (fd_eta = 0.01, a prior change
  # of order 1e-6) is below float32's resolution of the loss.
  with jax.enable_x64(True):
    loss_fn = estimators.attack_loss('ce', False)
    gain = estimators.sample_losses(_image_model, lambda z, t: -loss_fn(z, t),
                                    jnp.asarray(y))
    got_x, got_v = bandits_lib.bandit_step(
        gain, jnp.asarray(image), jnp.asarray(orig), jnp.asarray(prior), jnp.asarray(u),
        norm=mode, eps=eps, bounds=(0.0, 1.0), **hyper)
    assert got_x.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got_v) - prior, want_v - prior, rtol=1e-7,
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(got_x), want_x, rtol=1e-9, atol=1e-12)
  assert np.all(np.abs(want_v - prior) > 0) and np.any(np.abs(want_x - image) > 1e-3)


@pytest.mark.parametrize('mode', ['linf', 'l2'])
def test_the_attacks_first_step_is_the_authors_step_from_a_zero_prior(mode):
  # The engine's draw is exploration_noise(example_keys(key), 0, prior shape).
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(0.2, 0.8, size=(3, 5, 5, 1)), jnp.float32)
  y = jnp.argmax(_image_model(x), -1)
  eps = 0.05 if mode == 'linf' else 0.3
  out = blackbox.bandits(eps=eps, norm=mode, num_steps=1, tile_size=2)(
      _image_model, x, y, KEY)
  pshape = bandits_lib.prior_shape(x.shape, 2)
  assert pshape == (3, 3, 3, 1)
  u = bandits_lib.exploration_noise(estimators.example_keys(KEY, 3), 0, pshape, jnp.float32)
  xn = np.asarray(x, np.float64)
  want, _ = _authors_step(xn, xn, np.zeros(pshape), np.asarray(u, np.float64),
                          np.asarray(y), mode=mode, eps=eps, **bandits_lib.DEFAULTS[mode])
  np.testing.assert_allclose(np.asarray(out.x_adv), want, atol=2e-5)
  np.testing.assert_array_equal(out.info['queries'], 4)


def test_exponentiated_gradient_step_stays_finite_where_the_literal_form_overflows():
  # online_lr * g = 200: exp overflows float32 (inf / inf); tanh(artanh(v) + 200) = 1.
  gain = lambda pts: jnp.stack([jnp.full(pts.shape[0], 1e3), jnp.zeros(pts.shape[0])], 1)
  x = jnp.full((1, 4), 0.5)
  _, v = bandits_lib.bandit_step(gain, x, x, jnp.zeros((1, 4)), jnp.ones((1, 4)),
                                 norm='linf', eps=0.1, fd_eta=0.1, exploration=1.0,
                                 online_lr=1.0, image_lr=0.01, bounds=(0.0, 1.0))
  assert np.all(np.isfinite(np.asarray(v))) and np.all(np.asarray(v) == 1.0)


# --------------------------------------------------------------------------- the attack


@pytest.mark.slow
def test_linf_bandits_ball_box_exact_queries_and_success():
  x, y = _clean_batch()
  # online_lr scaled to D = 10 (the default 100 is for ImageNet's 268,203 prior entries;
  # here it saturates the prior at +-1 within a step, as the authors' code would).
  atk = blackbox.bandits(eps=0.1, num_steps=100, online_lr=1.0)
  out = jax.jit(atk, static_argnums=0)(_binary, x, y, KEY)
  # Success against the closed-form best attack; 1 clean query, then 3 per step.
  succ, q = assert_linf_fixed_budget_run(out, x, y, 0.1, num_steps=100, per_step=3)
  assert np.all(q[succ] < 1 + 3 * 100)


@pytest.mark.slow
def test_l2_bandits_projects_and_succeeds_where_the_l2_best_attack_does():
  x, y = _clean_batch(b=12, seed=3)
  eps = 0.3
  out = jax.jit(blackbox.bandits(eps=eps, norm='l2', num_steps=60), static_argnums=0)(
      _binary, x, y, KEY)
  assert np.all(np.asarray(common.norm(out.x_adv - x, 'l2')) <= eps + 1e-5)
  assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
  # Without the box the best L2 attack moves eps along -+w: margin |w.x - b0| / ||w||_2.
  dist = np.abs(np.asarray(x @ _W - 0.5 * jnp.sum(_W))) / float(jnp.linalg.norm(_W))
  succ = np.asarray(out.info['success'])
  assert not np.any(succ & (dist > eps))
  assert succ.sum() >= np.sum(dist < 0.8 * eps)
  q = np.asarray(out.info['queries'])
  assert np.all((q - 1) % 3 == 0) and np.all(q <= 1 + 3 * 60)


def test_tiled_prior_is_constant_on_tiles():
  v = jnp.arange(2 * 3 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 3, 1)
  up = np.asarray(bandits_lib.upsample(v, (2, 5, 5, 1)))
  np.testing.assert_array_equal(up[:, :, :, 0][0, :, 0], [0, 0, 3, 3, 6])
  np.testing.assert_array_equal(up[0, 0, :, 0], [0, 0, 1, 1, 2])
  assert bandits_lib.prior_shape((2, 5, 5, 1), 1) == (2, 5, 5, 1)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize('kw, match', SCORE_BASED_BAD_HYPERPARAMETERS + [
    (dict(eps=0.1, tile_size=0), r'tile_size=0 must be >= 1'),
    (dict(eps=0.1, image_lr=0.0), r'image_lr=0.0 must be > 0'),
    (dict(eps=0.1, online_lr=-1.0), r'online_lr=-1.0 must be > 0'),
    (dict(eps=0.1, fd_eta=0.0), r'fd_eta=0.0 must be > 0'),
    (dict(eps=0.1, exploration=float('nan')), r'exploration=nan must be finite'),
    (dict(eps=0.1, targeted=1), r"targeted=1 must be a bool"),
])
def test_bad_hyperparameters_raise_at_factory_time(kw, match):
  assert_factory_refuses(blackbox.bandits, kw, match)


def test_bad_input_raises_before_querying():
  assert_refuses_bad_input(blackbox.bandits(eps=0.1, num_steps=1))
  x, y = _clean_batch(b=2)
  with pytest.raises(ValueError, match=r'tile_size=2 needs images \[B, H, W, C\]; x has '
                                       r'shape \(2, 10\)'):
    blackbox.bandits(eps=0.1, num_steps=1, tile_size=2)(_binary, x, y, KEY)
