"""Config of experiments/transferability.py. Variants: ``full`` (the default) and ``smoke``.

The full run trains four FMNIST models (logistic regression, MLP, two reference CNNs) for
2 epochs on 10,000 training images and crafts five attacks on each for 300 test images:
about 10-15 minutes on an idle 2-core CPU (VMI's 20 neighbours dominate).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.mlp_hidden = (256, 128)
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.n_train = 10_000
  c.epochs = 2
  c.n_test = 300
  c.attack_batch = 300
  c.eps = 0.1
  c.num_steps = 10
  c.diversity_prob = 0.5            # Xie et al.
  c.si_copies = 5                   # Lin et al.
  c.vmi_neighbours = 20             # Wang & He
  c.vmi_beta = 1.5
  c.attacks = ('I-FGSM', 'MI-FGSM', 'DI-TI-MI', 'NI-SI', 'VMI')


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.mlp_hidden = (16,)
  c.n_train, c.n_test, c.epochs, c.batch_size, c.attack_batch = 256, 8, 1, 64, 8
  c.num_steps, c.si_copies, c.vmi_neighbours = 2, 2, 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='transferability', default=_default,
                    variants={'smoke': _smoke})
