"""Config of experiments/witches_brew.py. Variants: ``full`` (the default), ``budget5`` (5% budget), ``finetuning`` and ``transfer``
(the authors' other two victim scenarios), ``runner_up``
(each target's adversarial label is the crafting model's runner-up class, the closest pair,
instead of the paper's random class) and ``smoke`` (an MLP, seconds).

The full variant is sized for about 30 minutes on a shared 2-core CPU (the committed run:
crafting 8 minutes, the 10 victims 18 minutes, at a load of 8-12): the reference CNN at half
width ((16, 32) / 64) trained 3 epochs on a 10,000-image FMNIST subset; 4 targets, each with
100 poisons (the paper's 1% budget) within the paper's eps = 16/255, crafted by 100
signed-Adam steps (the paper: 250) with 2 restarts (the paper: 8), no augmentation; 2 victim
seeds per poisoned set plus 2 clean victims, all 10 as one ``fit_many`` program.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.defense_cnn(c, features=(16, 32), dense=64, n_train=10_000, n_test=2_000, epochs=3)
  c.model = 'cnn'
  c.num_targets = 4
  c.num_seeds = 2                  # victims retrained from scratch per poisoned set
  c.adversarial = 'random'         # adversarial label: 'random' (the paper) or 'runner_up'
  # Witches' Brew (Geiping et al. 2021): the paper's budget and eps
  c.fraction = 0.01
  c.eps = 16 / 255
  c.num_steps = 100
  c.restarts = 2
  c.step_size = 0.4 * 16 / 255     # the authors' 0.1 in CIFAR-normalised units (std ~0.25)
  # the victims (the authors' --scenario): 'from-scratch' (the paper's headline setting),
  # 'finetuning' (start from the crafting model) or 'transfer' (its features frozen, a fresh
  # head; the poisons then match the head's gradient); the last two train victim_epochs
  # epochs at victim_learning_rate
  c.scenario = 'from-scratch'
  # diagnostic: the target's p(adversarial) after probe_steps plain GD steps on the poisons
  # alone vs on their clean bases, from the crafting model (what the poisons carry, undiluted)
  c.probe_steps = 20
  c.probe_learning_rate = 0.01
  c.victim_epochs = 1
  c.victim_learning_rate = 1e-4


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model = 'mlp'                  # no convolutions: one compiled crafting program
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (16,)})
  c.n_train, c.n_test, c.epochs, c.batch_size = 600, 100, 1, 64
  c.num_targets, c.num_seeds = 2, 1
  c.fraction = 0.02
  c.num_steps, c.restarts = 4, 2


def _runner_up(c: ml_collections.ConfigDict) -> None:
  # the closest pairs: each target's adversarial label is the crafting model's runner-up
  c.adversarial = 'runner_up'


def _budget5(c: ml_collections.ConfigDict) -> None:
  # five times the paper's budget: 500 poisons, half of the adversarial class in the subset
  c.fraction = 0.05


def _finetuning(c: ml_collections.ConfigDict) -> None:
  c.scenario = 'finetuning'        # one epoch at a tenth of the training learning rate


def _transfer(c: ml_collections.ConfigDict) -> None:
  c.scenario = 'transfer'
  c.victim_epochs = 10             # a linear head on 64 features: converged in 10 epochs
  c.victim_learning_rate = 1e-3


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='witches_brew', default=_default,
                    variants={'smoke': _smoke, 'runner_up': _runner_up, 'budget5': _budget5,
                              'finetuning': _finetuning, 'transfer': _transfer})
