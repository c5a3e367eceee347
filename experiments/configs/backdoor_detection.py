"""Config of experiments/backdoor_detection.py. Variants: ``full`` (the default) and ``smoke``.

The full variant takes about 15-20 minutes on a shared 2-core CPU (training about 4, Neural
Cleanse about 8): the reference CNN trained 3 epochs on a 20,000-image FMNIST subset with 3%
BadNets poison (a 3x3 white patch, target label 0), Neural Cleanse with 50 epochs of 10
steps of 32 images from lambda = 1e-2 (the authors: lambda = 1e-3, until their early stop on
the whole clean set), STRIP with 20 overlays (ART's default; the paper uses up to 100).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  # training subset (poisoned in place); test subset: the defender's clean data + evaluation
  base.defense_cnn(c, n_train=20_000, n_test=3_000, epochs=3)
  c.n_defense = 1_000               # of n_test: the defender's clean data (NC, STRIP, repair)
  # BadNets (Gu et al. 2017)
  c.poison_fraction = 0.03
  c.target = 0
  c.trigger_size = 3
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
  c.poison_fraction = 0.05
  c.ac_dims = 4
  c.strip_samples = 4
  c.nc_epochs, c.nc_steps_per_epoch, c.nc_batch = 2, 2, 16
  c.unlearn_epochs = c.finetune_epochs = 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='backdoor_detection', default=_default,
                    variants={'smoke': _smoke})
