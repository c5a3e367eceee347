"""Config of experiments/backdoor_detection.py. Variants: ``full`` (the default), ``turner_at``,
``turner_pgd_at`` and ``smoke``.

The full variant plants two backdoors, each in its own reference CNN (about 16 minutes each
on a shared 2-core CPU at a load of 6-12, the committed run 33 minutes in all; training about
3, Neural Cleanse about 6, the clean-label attacker's own CNN 4 more): trained 3 epochs on a
20,000-image FMNIST subset, target label 0, the same 3x3 white patch and the same 600 poison
images (3%) for BadNets (relabelled images of other classes) and for the clean-label backdoor
(target-class images, labels kept, first moved by L_inf PGD with eps 32/255 against a
separately trained CNN). Neural Cleanse with 50 epochs of 10 steps of 32 images from
lambda = 1e-2 (the authors: lambda = 1e-3, until their early stop on the whole clean set),
STRIP with 20 overlays (ART's default; the paper uses up to 100).

``turner_at`` runs only the clean-label backdoor, its poisons made by the same PGD against an
adversarially trained CNN (Turner et al.'s choice) and writes
docs/results/backdoor_detection_turner_at.json: the attacker's CNN is trained 3 epochs by fast
adversarial training (FGSM from a random start, step 1.25 eps, Wong, Rice & Kolter 2020; the
one-cycle learning rate of experiments/defense_adv_training.py) at L_inf eps 0.1, the FMNIST
radius of Song, Shokri & Mittal 2019 and of the adversarial-training study: a change of 25/255
per pixel that keeps FMNIST's garments recognisable, below the poisons' 32/255 as Turner et
al.'s robust CIFAR model (8/255) is below their poisons' 16 and 32/255. Fast AT is the
cheaper of the library's two (Madry's PGD-AT: ``cl_at_method='pgd'``, ``cl_at_steps=3``,
``cl_at_step_size=0.0833``, about 2x a standard CNN's training here against about 1.5x). The
standard CNN is trained too (restored from the full run's checkpoint when there is one) to
report both models' clean and PGD-10 accuracy. ``turner_pgd_at`` is the same with Madry's
PGD-AT (7 steps of 2.5 eps / 7) and writes backdoor_detection_turner_pgd_at.json. Measured
on the shared 2-core CPU: ``turner_at`` about 5 minutes at a light load, ``turner_pgd_at``
20 minutes at a load of 5-7 (its adversarial CNN 7 of them).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  # training subset (poisoned in place); test subset: the defender's clean data + evaluation
  base.defense_cnn(c, n_train=20_000, n_test=3_000, epochs=3)
  c.n_defense = 1_000               # of n_test: the defender's clean data (NC, STRIP, repair)
  c.attacks = ('badnets', 'clean_label')
  c.target = 0
  c.trigger_size = 3
  # BadNets (Gu et al. 2017)
  c.poison_fraction = 0.03
  # clean-label backdoor (Turner et al. 2019): as many poisons as BadNets, all of the target
  # class, hardened by L_inf PGD against a CNN trained separately on the clean subset
  c.cl_poison_fraction = 0.03
  c.cl_hardening = 'pgd'            # 'pgd', 'interpolation' or 'none'
  c.cl_eps = 32 / 255
  c.cl_norm = 'linf'
  c.cl_pgd_steps = 20
  c.cl_interpolation = 0.3          # tau, for cl_hardening='interpolation'
  c.cl_trigger = 'patch'            # BadNets' patch; 'pattern': the authors' 3x3 pattern
  c.cl_amplitude = 1.0              # of the pattern (the authors' reduced one: 16/255 ...)
  c.cl_all_corners = False          # the pattern in all four corners
  # the attacker's CNN for cl_hardening='pgd': 'standard' (plain training) or 'adversarial'
  # (adversarially trained, Turner et al.; defenses.training.adversarial)
  c.cl_surrogate = 'standard'
  c.cl_at_method = 'fast'           # 'fast' (FGSM-RS, Wong et al. 2020) or 'pgd' (Madry et al.)
  c.cl_at_eps = 0.1                 # L_inf radius of the adversarial training
  c.cl_at_step_size = 0.125         # fast: Wong et al.'s 1.25 eps; pgd: e.g. 2.5 eps / steps
  c.cl_at_steps = 3                 # PGD steps of cl_at_method='pgd'
  c.cl_at_eval_n = 1_000            # evaluation images for the surrogates' PGD accuracy
  c.cl_at_eval_steps = 10           # PGD steps (step eps / 4, random start) of that check
  # activation clustering (Chen et al. 2019) and spectral signatures (Tran et al. 2018)
  c.ac_dims = 10
  c.ac_reduce = 'ica'
  c.ac_criterion = 'silhouette'
  c.spectral_removal = 1.5          # remove 1.5 x the per-class poison bound (Tran et al.)
  # STRIP (Gao et al. 2019)
  c.strip_samples = 20
  c.strip_frr = 0.01
  # Neural Cleanse (Wang et al. 2019)
  c.nc_epochs = 50
  c.nc_steps_per_epoch = 10
  c.nc_batch = 32
  c.nc_init_cost = 1e-2             # the authors' 1e-3 needs more epochs than the budget
  c.unlearn_epochs = 2
  c.unlearn_learning_rate = 1e-3
  # fine-pruning (Liu et al. 2018)
  c.prune_fraction = 0.9            # cap on the pruned share of the 128 penultimate units
  c.prune_max_drop = 0.04           # the paper's stopping rule: 4% clean accuracy
  c.finetune_epochs = 10
  c.finetune_learning_rate = 1e-3


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.n_train, c.n_test, c.n_defense, c.epochs, c.batch_size = 1024, 300, 100, 1, 64
  c.poison_fraction = c.cl_poison_fraction = 0.05
  c.cl_pgd_steps = 3
  c.cl_at_eval_n, c.cl_at_eval_steps = 200, 3
  c.ac_dims = 4
  c.strip_samples = 4
  c.nc_epochs, c.nc_steps_per_epoch, c.nc_batch = 2, 2, 16
  c.unlearn_epochs = c.finetune_epochs = 1


def _turner_at(c: ml_collections.ConfigDict) -> None:
  c.attacks = ('clean_label',)
  c.cl_surrogate = 'adversarial'


def _turner_pgd_at(c: ml_collections.ConfigDict) -> None:
  # the same with Madry et al.'s PGD-AT (7 steps of 2.5 eps / 7, random start), the kind of
  # robust model Turner et al. used, in place of fast AT
  _turner_at(c)
  c.cl_at_method = 'pgd'
  c.cl_at_steps = 7
  c.cl_at_step_size = 2.5 * 0.1 / 7


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='backdoor_detection', default=_default,
                    variants={'smoke': _smoke, 'turner_at': _turner_at,
                              'turner_pgd_at': _turner_pgd_at})
