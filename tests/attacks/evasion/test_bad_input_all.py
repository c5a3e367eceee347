"""Every public attack entry point that takes ``(x, y)`` refuses NaN / inf inputs and labels
outside the model's classes on concrete (eager) inputs (issue 14, "Bad input accepted
silently"); entry points without labels refuse non-finite inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import attacks
from jaxsec.attacks import blackbox

KEY = jax.random.key(0)
SHAPE = (2, 4, 4, 1)          # tiny images: every attack (patches, Square windows) accepts them
_W = {k: jnp.asarray(np.random.default_rng(k).normal(size=(16, k)), jnp.float32)
      for k in (2, 4)}


def _model(k):
  return lambda x: x.reshape((x.shape[0], -1)) @ _W[k]


def _randomised(x, key):          # (x, key) -> logits, for eot()
  return _model(2)(x) + 0.01 * jax.random.normal(key, (x.shape[0], 2))


def _call(atk):
  return lambda f, x, y: atk(f, x, y, KEY)


def _auto(f, x, y):
  return attacks.run_auto_attack(f, x, y, KEY, eps=0.1, version='jaxsec-fast')


def _transfer(f, x, y):
  return blackbox.transfer_attack(attacks.fgsm(eps=0.1), lambda p, z: f(z), None,
                                  lambda z: jnp.argmax(f(z), -1), x, y, KEY)


_MASK = jnp.ones(SHAPE[1:3])
# name -> (number of classes of the model, call(logits_fn, x, y)); the model has 4 classes
# where the attack needs them (DLR, targets).
CALLS = {
    'apgd': (2, _call(attacks.apgd(eps=0.1, num_steps=2))),
    'apgd_l1': (2, _call(attacks.apgd(eps=1.0, norm='l1', num_steps=2))),
    'apgd_t': (4, _call(attacks.apgd_t(eps=0.1, num_steps=2, num_target_classes=2))),
    'auto_attack': (4, _call(attacks.auto_attack(eps=0.1, version='jaxsec-fast'))),
    'run_auto_attack': (4, _auto),
    'fab': (2, _call(attacks.fab(num_steps=2))),
    'fab_t': (4, _call(attacks.fab_t(num_steps=2, num_target_classes=2))),
    'deepfool': (2, _call(attacks.deepfool(num_classes=2, max_iter=2))),
    'jsma': (2, _call(attacks.jsma(gamma=0.2))),
    'jsma_add_only': (2, _call(attacks.jsma_add_only(max_changes=2))),
    'ead': (2, _call(attacks.ead(num_steps=2, num_binary_steps=1))),
    'fmn': (2, _call(attacks.fmn(num_steps=2))),
    'ddn': (2, _call(attacks.ddn(num_steps=2))),
    'transfer_ifgsm': (2, _call(attacks.transfer_ifgsm(
        eps=0.1, num_steps=2, diversity_prob=0.5, ti_kernel=3, si_copies=2, nesterov=True,
        vmi_neighbours=2))),
    'lbfgs': (2, _call(attacks.lbfgs(num_search_steps=1, max_iter=2))),
    'cw_linf': (2, _call(attacks.carlini_wagner_linf(num_steps=2))),
    'cw_l0': (2, _call(attacks.carlini_wagner_l0(num_steps=2, max_rounds=1))),
    'universal': (2, _call(attacks.universal_perturbation(
        xi=0.1, num_classes=2, max_passes=1, max_iter_df=2).attack)),
    'universal_sgd': (2, _call(attacks.universal_perturbation_sgd(
        xi=0.1, num_steps=2).attack)),
    'patch': (2, _call(attacks.adversarial_patch(size=0.25, num_steps=2).attack)),
    'patch_fit': (2, _call(attacks.adversarial_patch(size=0.25, num_steps=2).fit)),
    'rp2': (2, _call(attacks.rp2(mask=_MASK, num_steps=2, num_samples=1).attack)),
    'rp2_fit': (2, _call(attacks.rp2(mask=_MASK, num_steps=2, num_samples=1).fit)),
    'apgd_eot': (2, lambda f, x, y: attacks.apgd(eps=0.1, num_steps=2, eot_iter=2)(
        lambda z, k: f(z) + 0.01 * jax.random.normal(k, (z.shape[0], f(z).shape[1])),
        x, y, KEY).x_adv),
    'auto_attack_rand': (4, lambda f, x, y: attacks.auto_attack(eps=0.1, version='rand')(
        lambda z, k: f(z), x, y, KEY).x_adv),
    'run_auto_attack_rand': (4, lambda f, x, y: attacks.run_auto_attack(
        lambda z, k: f(z), x, y, KEY, eps=0.1, version='rand')),
    'eot_pgd': (2, lambda f, x, y: attacks.eot(attacks.pgd(eps=0.1, num_steps=2),
                                               num_samples=2)(_randomised, x, y, KEY).x_adv),
    'square': (2, _call(blackbox.square(eps=0.1, num_queries=3))),
    'bandits': (2, _call(blackbox.bandits(eps=0.1, num_steps=1, tile_size=2))),
    'hop_skip_jump': (2, _call(blackbox.hop_skip_jump(num_iterations=1, init_num_evals=2,
                                                      max_num_evals=2))),
    'boundary_attack': (2, _call(blackbox.boundary_attack(num_steps=1, init_num_tries=1))),
    'rays': (2, _call(blackbox.rays(max_queries=3))),
    'transfer_attack': (2, _transfer),
}


@pytest.mark.parametrize('name', sorted(CALLS))
def test_attack_refuses_nan_input_and_out_of_range_label(name):
  k, call = CALLS[name]
  f = _model(k)
  x = jnp.full(SHAPE, 0.5)
  y = jnp.zeros(SHAPE[0], jnp.int32)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    call(f, x.at[1, 2, 3, 0].set(jnp.nan), y)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    call(f, x.at[0, 0, 0, 0].set(jnp.inf), y)
  with pytest.raises(ValueError, match=rf'y contains label 7; expected labels in \[0, {k}\)'):
    call(f, x, y.at[1].set(7))
  with pytest.raises(ValueError, match=r'y contains label -1'):
    call(f, x, y.at[0].set(-1))


def test_label_free_entry_points_refuse_nan_input():
  f = _model(2)
  x = jnp.full(SHAPE, 0.5).at[1, 2, 3, 0].set(jnp.nan)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    attacks.universal_perturbation(xi=0.1, num_classes=2, max_passes=1).fit(f, x, KEY)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    attacks.universal_perturbation_sgd(xi=0.1, num_steps=2).fit(f, x, KEY)
  run = blackbox.substitute_training(substitute_apply=lambda p, z: f(z),
                                     substitute_init=lambda k: None, num_aug_epochs=1,
                                     train_epochs=1)
  with pytest.raises(ValueError, match=r'x_seed contains 1 non-finite values'):
    run(lambda z: jnp.argmax(f(z), -1), x, KEY)


def test_label_only_oracle_skips_the_class_check():
  # HSJA's query_fn may answer labels [N]: the number of classes is then unknown and the
  # class check is skipped (the finite check still runs).
  from jaxsec.attacks.evasion import common
  labels = lambda z: jnp.argmax(_model(2)(z), -1)
  x = jnp.full(SHAPE, 0.5)
  common.check_call(x, jnp.array([0, 7], jnp.int32), (0.0, 1.0), labels)
  with pytest.raises(ValueError, match=r'x contains 1 non-finite values'):
    common.check_call(x.at[0, 0, 0, 0].set(jnp.nan), jnp.zeros(2, jnp.int32), (0.0, 1.0),
                      labels)
  with pytest.raises(ValueError, match=r'y contains label 7'):
    common.check_call(x, jnp.array([0, 7], jnp.int32), (0.0, 1.0), _model(2))
