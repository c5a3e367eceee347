"""FGM-L1 box-awareness, MI-FGSM momentum beyond step 1, PGD restarts, bad call inputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks.evasion import common

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------- FGM-L1 box


@pytest.mark.parametrize('x0,w,moved,sign', [
    ([1.0, 0.5, 0.5], [3.0, 1.0, -0.5], 1, 1.0),     # top coordinate at hi, g > 0
    ([0.5, 0.0, 0.5], [0.5, -3.0, 1.0], 2, 1.0),     # top coordinate at lo, g < 0
    ([0.5, 1.0, 0.5], [0.5, -3.0, 1.0], 1, -1.0),    # at hi but g < 0: it can move
])
def test_fgm_l1_skips_coordinates_blocked_by_the_box(x0, w, moved, sign):
  # Single-logit model, y = 0: the CE gradient is p_1 * w, so sign(g) = sign(w).
  f = lambda x: x @ jnp.asarray(w)[:, None]
  x = jnp.asarray([x0])
  eps = 0.1
  xa = attacks.fgm(eps=eps, norm='l1')(f, x, jnp.zeros(1, jnp.int32), KEY).x_adv
  expected = np.array([x0])
  expected[0, moved] += sign * eps
  np.testing.assert_allclose(xa, expected, atol=1e-6)
  assert float(common.norm(xa - x, 'l1')[0]) == pytest.approx(eps, rel=1e-5)


def test_fgm_l1_all_blocked_returns_x():
  f = lambda x: x @ jnp.asarray([1.0, 2.0])[:, None]
  x = jnp.ones((1, 2))
  xa = attacks.fgm(eps=0.1, norm='l1')(f, x, jnp.zeros(1, jnp.int32), KEY).x_adv
  np.testing.assert_array_equal(xa, x)


# ----------------------------------------------------------------------------- MI-FGSM


def _mi_fgsm_reference(f, x, y, eps, steps, decay, momentum=True):
  """Dong et al. (2018), Alg. 1, in float64 numpy; gradients of the CE from jax.grad."""
  grad = jax.grad(lambda z: jnp.sum(common.cross_entropy(f(z), y)))
  alpha = eps / steps
  xk, m = np.asarray(x), np.zeros_like(np.asarray(x))
  for _ in range(steps):
    g = np.asarray(grad(jnp.asarray(xk)))
    g1 = g / np.abs(g).sum(axis=1, keepdims=True)
    m = decay * m + g1 if momentum else g1
    xk = np.clip(np.clip(xk + alpha * np.sign(m), x - eps, x + eps), 0.0, 1.0)
  return xk


@pytest.mark.parametrize('decay', [1.0, 0.5])
def test_mi_fgsm_later_steps_follow_the_momentum_recurrence(decay):
  # s(x) = sum_i c_i (x_i - t_i)^2 with y = 1: the attack pulls x towards t and overshoots,
  # so the raw gradient flips sign while the accumulated momentum does not (yet).
  rng = np.random.default_rng(0)
  x = rng.uniform(0.2, 0.8, (3, 8))
  t = x + rng.choice([-1.0, 1.0], x.shape) * rng.uniform(0.01, 0.06, x.shape)
  c = rng.uniform(0.5, 2.0, 8)
  eps, steps = 0.12, 4
  with jax.enable_x64(True):
    f = lambda z: jnp.sum(jnp.asarray(c) * (z - jnp.asarray(t)) ** 2, -1, keepdims=True)
    xj, y = jnp.asarray(x), jnp.ones(3, jnp.int32)
    got = np.asarray(attacks.mi_fgsm(eps=eps, num_steps=steps, decay=decay)(f, xj, y, KEY).x_adv)
    want = _mi_fgsm_reference(f, xj, y, eps, steps, decay)
    no_momentum = _mi_fgsm_reference(f, xj, y, eps, steps, decay, momentum=False)
  assert np.abs(want - no_momentum).max() > 1e-3      # the momentum term matters here
  np.testing.assert_allclose(got, want, atol=1e-9)


# ----------------------------------------------------------------------------- PGD restarts


def test_pgd_restarts_without_random_start_is_refused():
  with pytest.raises(ValueError, match='restarts=3 needs random_start=True'):
    attacks.pgd(eps=0.1, restarts=3, random_start=False)
  attacks.pgd(eps=0.1, restarts=1, random_start=False)       # one deterministic run: fine
  attacks.pgd(eps=0.1, restarts=3, random_start=True)


# ----------------------------------------------------------------------------- bad inputs


def _two_class(x):
  return x @ jnp.asarray([[1.0, -1.0], [0.5, 2.0]])


ATTACKS = {
    'pgd': attacks.pgd(eps=0.1, num_steps=2),
    'fgsm': attacks.fgsm(eps=0.1),
    'fgm_l1': attacks.fgm(eps=0.1, norm='l1'),
    'bim': attacks.bim(eps=0.1, num_steps=2),
    'mi_fgsm': attacks.mi_fgsm(eps=0.1, num_steps=2),
    'cw_l2': attacks.carlini_wagner_l2(num_steps=2, num_binary_steps=1),
}


@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_nan_inputs_and_out_of_range_labels_are_refused(name):
  atk = ATTACKS[name]
  x = jnp.full((2, 2), 0.5)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    atk(_two_class, x.at[1, 0].set(jnp.nan), jnp.zeros(2, jnp.int32), KEY)
  with pytest.raises(ValueError, match=r'y contains label 7; expected labels in \[0, 2\)'):
    atk(_two_class, x, jnp.array([0, 7], jnp.int32), KEY)
  with pytest.raises(ValueError, match=r'y contains label -1'):
    atk(_two_class, x, jnp.array([-1, 0], jnp.int32), KEY)
  single = lambda z: z[:, :1] - 0.5                      # one logit: 2 classes
  atk(single, x, jnp.array([0, 1], jnp.int32), KEY)
  with pytest.raises(ValueError, match=r'y contains label 2; expected labels in \[0, 2\)'):
    atk(single, x, jnp.array([2, 1], jnp.int32), KEY)


def test_value_checks_are_skipped_under_jit():
  atk = jax.jit(ATTACKS['pgd'], static_argnums=0)
  x = jnp.full((2, 2), 0.5)
  out = atk(_two_class, x.at[1, 0].set(jnp.nan), jnp.zeros(2, jnp.int32), KEY)
  assert out.x_adv.shape == (2, 2)
  assert atk(_two_class, x, jnp.array([0, 7], jnp.int32), KEY).x_adv.shape == (2, 2)

  # Concrete labels, a model closing over traced parameters (as in adversarial training).
  @jax.jit
  def outer(w):
    f = lambda z: z @ w
    return ATTACKS['fgsm'](f, x, jnp.array([0, 1], jnp.int32), KEY).x_adv
  assert outer(jnp.eye(2)).shape == (2, 2)
