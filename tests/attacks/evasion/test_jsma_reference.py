"""JSMA against a line-by-line NumPy transcription of CleverHans v3 ``jsma_symbolic``.

The reference (``cleverhans/attacks/saliency_map_method.py``, the authors' implementation of
Papernot et al. 2016, Algorithm 3 with pairs) runs on a tiny two-layer ReLU network whose
Jacobian is written out in NumPy, and the test compares every iterate with
``jaxsec.attacks.evasion.jsma``: iterate ``k`` of ours is the attack run with a budget of
exactly ``2k`` features (``gamma * n = 2k``), since the budget only decides when to stop.

Two places where the reference is not copied verbatim, both documented in ``jsma.py``:

* Empty saliency map (no pair satisfies the sign conditions). CleverHans's product-form
  argmax then returns index 0, i.e. the "pair" (0, 0): it keeps modifying feature 0 and
  spends iterations (cleverhans-lab/cleverhans#221); ``empty_map='cleverhans'`` reproduces
  that. ``'first_pair'`` keeps going with the first two features of the search domain (the
  argmax of the all-zero map restricted to the domain: jaxsec's default
  ``empty_map='continue'``), ``'stop'`` stops the example (jaxsec's ``empty_map='stop'``).
  The tests check ours against 'first_pair' and 'stop' at every iterate, and that both
  differ from 'cleverhans' only on examples whose saliency map went empty.
* Decreasing variant: CleverHans writes ``max(clip_min, x - to_mod * theta)``, which for the
  decreasing variant's ``theta < 0`` *increases* the features; the paper moves them by
  ``theta``, so the reference uses ``x + to_mod * theta`` for both variants.
"""
import numpy as np
import pytest
import jax.numpy as jnp

from jaxsec.attacks.evasion.jsma import jsma

N_FEATURES, HIDDEN, CLASSES, BATCH = 16, 12, 4, 12


def _params(seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(N_FEATURES, HIDDEN)) / np.sqrt(N_FEATURES),
          0.1 * rng.normal(size=HIDDEN),
          rng.normal(size=(HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
          0.1 * rng.normal(size=CLASSES))


def _mlp_np(params, x, jacobian):
  """Outputs [B, C] and their Jacobian [C, B, n] (logits, or softmax probabilities)."""
  w1, b1, w2, b2 = params
  h = x @ w1 + b1
  z = np.maximum(h, 0.0) @ w2 + b2
  dz = np.einsum('ih,bh,hc->cbi', w1, (h > 0).astype(x.dtype), w2)
  if jacobian == 'logits':
    return z, dz
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  mix = np.einsum('bj,jbi->bi', p, dz)                # sum_j p_j dz_j
  return p, p.T[:, :, None] * (dz - mix[None])      # dp_c = p_c (dz_c - sum_j p_j dz_j)


def _mlp_jax(params):
  w1, b1, w2, b2 = [jnp.asarray(p, jnp.float32) for p in params]
  return lambda x: jnp.maximum(x.reshape(x.shape[0], -1) @ w1 + b1, 0.0) @ w2 + b2


def cleverhans_jsma(model, x, y_target, *, theta, gamma, clip_min, clip_max, empty_map):
  """CleverHans v3 ``jsma_symbolic`` in NumPy on flat ``x`` [B, n], one-hot ``y_target``.

  Returns the list of iterates (``x`` first) and, per example, whether its saliency map was
  ever found empty while it was still being modified.
  """
  b, nb_features = x.shape
  nb_classes = y_target.shape[1]
  max_iters = np.floor(nb_features * gamma / 2)
  increase = bool(theta > 0)
  zero_diagonal = np.ones((nb_features, nb_features))
  np.fill_diagonal(zero_diagonal, 0)
  if increase:
    domain_in = (x < clip_max).astype(np.float64)
  else:
    domain_in = (x > clip_min).astype(np.float64)
  x_in, i_in, cond_in = x.copy(), 0, True
  iterates, went_empty = [x_in.copy()], np.zeros(b, bool)
  while i_in < max_iters and cond_in:
    preds, grads = model(x_in)
    preds_onehot = np.eye(nb_classes)[np.argmax(preds, axis=1)]
    target_class = y_target.T.reshape(nb_classes, -1, 1)
    other_classes = (target_class != 1).astype(np.float64)
    grads_target = np.sum(grads * target_class, axis=0)
    grads_other = np.sum(grads * other_classes, axis=0)
    # Features outside the domain are pushed out of the sign conditions.
    increase_coef = (4 * int(increase) - 2) * (domain_in == 0).astype(np.float64)
    target_tmp = grads_target - increase_coef * np.max(np.abs(grads_target), axis=1,
                                                       keepdims=True)
    target_sum = target_tmp[:, :, None] + target_tmp[:, None, :]
    other_tmp = grads_other + increase_coef * np.max(np.abs(grads_other), axis=1,
                                                     keepdims=True)
    other_sum = other_tmp[:, :, None] + other_tmp[:, None, :]
    if increase:
      scores_mask = (target_sum > 0) & (other_sum < 0)
    else:
      scores_mask = (target_sum < 0) & (other_sum > 0)
    scores = scores_mask * (-target_sum * other_sum) * zero_diagonal
    best = np.argmax(scores.reshape(-1, nb_features * nb_features), axis=1)
    p1 = best % nb_features
    p2 = best // nb_features
    mod_not_done = np.sum(y_target * preds_onehot, axis=1) == 0
    cond = mod_not_done & (np.sum(domain_in, axis=1) >= 2)
    empty = ~np.any((scores_mask * zero_diagonal).reshape(b, -1) > 0, axis=1)
    went_empty |= cond & empty
    if empty_map == 'stop':
      cond = cond & ~empty
    elif empty_map == 'first_pair':
      first_two = np.argsort(domain_in <= 0, axis=1, kind='stable')[:, :2]
      p1 = np.where(empty, first_two[:, 1], p1)
      p2 = np.where(empty, first_two[:, 0], p2)
    to_mod = (np.eye(nb_features)[p1] + np.eye(nb_features)[p2]) * cond[:, None]
    domain_in = domain_in - to_mod
    if increase:
      x_in = np.minimum(clip_max, x_in + to_mod * theta)
    else:
      x_in = np.maximum(clip_min, x_in + to_mod * theta)
    i_in += 1
    cond_in = np.any(cond)
    iterates.append(x_in.copy())
  return iterates, went_empty


def _problem(seed, theta):
  rng = np.random.default_rng(100 + seed)
  params = _params(seed)
  x = rng.uniform(0.1, 0.9, size=(BATCH, N_FEATURES))
  x[:, 3] = 1.0 if theta > 0 else 0.0       # saturated: outside the initial search domain
  pred = np.argmax(_mlp_np(params, x, 'logits')[0], 1)
  t = (pred + rng.integers(1, CLASSES, size=BATCH)) % CLASSES
  return params, x, t


def _ours_after(params, x, t, k, *, theta, jacobian, empty_map, with_info=False):
  """Our attack stopped after at most k pair moves (a budget of exactly 2k features)."""
  gamma = min((2 * k + 0.5) / N_FEATURES, 1.0)
  out = jsma(theta=theta, gamma=gamma, jacobian=jacobian, empty_map=empty_map)(
      _mlp_jax(params), jnp.asarray(x.reshape(BATCH, 4, 4), jnp.float32), jnp.asarray(t))
  x_adv = np.asarray(out.x_adv).reshape(BATCH, N_FEATURES)
  return (x_adv, out.info) if with_info else x_adv


_MODES = {'continue': 'first_pair', 'stop': 'stop'}   # ours -> the reference's rule


@pytest.mark.parametrize('empty_map', ['continue', 'stop'])
@pytest.mark.parametrize('jacobian', ['logits', 'probs'])
@pytest.mark.parametrize('theta', [1.0, -1.0])
@pytest.mark.parametrize('seed', [0, 1])
def test_iterates_match_cleverhans_transcription(seed, theta, jacobian, empty_map):
  params, x, t = _problem(seed, theta)
  model = lambda v: _mlp_np(params, v, jacobian)
  ref, _ = cleverhans_jsma(model, x, np.eye(CLASSES)[t], theta=theta, gamma=1.0,
                           clip_min=0.0, clip_max=1.0, empty_map=_MODES[empty_map])
  assert len(ref) > 2                                     # the attack really iterates
  for k in range(1, N_FEATURES // 2 + 1):
    want = ref[min(k, len(ref) - 1)]
    got = _ours_after(params, x, t, k, theta=theta, jacobian=jacobian, empty_map=empty_map)
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f'iterate {k}')


def test_default_is_continue():
  params, x, t = _problem(0, 1.0)
  f = _mlp_jax(params)
  xj = jnp.asarray(x, jnp.float32)
  np.testing.assert_array_equal(jsma(gamma=1.0)(f, xj, jnp.asarray(t)).x_adv,
                                jsma(gamma=1.0, empty_map='continue')(f, xj, jnp.asarray(t)).x_adv)


@pytest.mark.parametrize('theta', [1.0, -1.0])
def test_differs_from_cleverhans_only_where_the_saliency_map_went_empty(theta):
  params, x, t = _problem(0, theta)
  model = lambda v: _mlp_np(params, v, 'logits')
  ch, went_empty = cleverhans_jsma(model, x, np.eye(CLASSES)[t], theta=theta, gamma=1.0,
                                   clip_min=0.0, clip_max=1.0, empty_map='cleverhans')
  _, empty_stop = cleverhans_jsma(model, x, np.eye(CLASSES)[t], theta=theta, gamma=1.0,
                                  clip_min=0.0, clip_max=1.0, empty_map='stop')
  assert np.array_equal(went_empty, empty_stop)   # the same examples hit an empty map
  for mode in ('stop', 'continue'):
    ours, info = _ours_after(params, x, t, N_FEATURES // 2, theta=theta, jacobian='logits',
                             empty_map=mode, with_info=True)
    differ = np.any(np.abs(ours - ch[-1]) > 1e-6, axis=1)
    assert not np.any(differ & ~went_empty)
    np.testing.assert_array_equal(np.asarray(info['empty_map_iterations']) > 0, went_empty)
    if theta > 0 and mode == 'stop':
      # In this problem the empty map really happens, and CleverHans's fallback pair (0, 0)
      # then moves feature 0, which our attack leaves alone.
      assert differ.any()
      assert np.all(ch[-1][differ, 0] == 1.0) and np.all(ours[differ, 0] < 1.0)


@pytest.mark.parametrize('theta', [1.0, -1.0])
def test_stop_is_continue_restricted_to_examples_without_an_empty_map(theta):
  # The two rules agree up to the first empty map, so one 'continue' run tells what 'stop'
  # would have given: success_stop = success_continue & (empty_map_iterations == 0).
  params, x, t = _problem(0, theta)
  k = N_FEATURES // 2
  x_c, info_c = _ours_after(params, x, t, k, theta=theta, jacobian='logits',
                            empty_map='continue', with_info=True)
  x_s, info_s = _ours_after(params, x, t, k, theta=theta, jacobian='logits',
                            empty_map='stop', with_info=True)
  clean = np.asarray(info_c['empty_map_iterations']) == 0
  assert (~clean).any()                               # the rule matters in this problem
  np.testing.assert_array_equal(np.asarray(info_s['success']),
                                np.asarray(info_c['success']) & clean)
  np.testing.assert_array_equal(x_s[clean], x_c[clean])
  np.testing.assert_array_equal(np.asarray(info_s['empty_map_iterations']), ~clean)
