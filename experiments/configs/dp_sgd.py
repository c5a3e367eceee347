"""Config of experiments/dp_sgd.py. Variants: ``full`` (the default), ``mnist``, ``smoke``."""
import ml_collections

from experiments.configs import base
from experiments.dp_sgd import NAME


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'tempered_cnn'          # or 'cnn' (jaxsec.models.CNN)
  c.activation = 'tanh'
  c.cnn_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 32})
  c.epsilons = (3.0, 1.0, 2.0, 8.0)   # the headline eps = 3 first (results land per eps)
  c.delta = 1e-5
  c.accountant = 'pld'
  # Tramer & Boneh 2021's FMNIST setting (their Table 9): batch 2048, 40 epochs, lr 4,
  # momentum 0.9, C = 0.1. Per epsilon; steps = epochs * N / batch = 1172 steps of ~2400
  # padded examples: GPU-scale (the committed runs took 11-17 s each on one H200; on 2
  # CPU cores about 4 s per step of 708 examples under load, so hours per epsilon).
  c.expected_batch_size = 2048
  c.epochs = (40, 40, 40, 40)
  c.learning_rate = 4.0
  c.momentum = 0.9
  c.l2_norm_clip = 0.1
  c.method = 'auto'                 # ghost where eligible, else vmap; or 'vmap' | 'ghost'
  c.microbatch_size = 0             # 0 = whole batch at once
  c.train_subset = 0
  c.test_subset = 0
  c.nonprivate_epochs = 20          # non-private reference (same model, Adam)
  c.steps_per_call = 20
  c.output_name = NAME
  c.ckpt_dir = ''     # checkpoints (resumed); '': <temp dir>/jaxsec_<study>/<variant>; None: none


def _mnist(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'mnist'
  c.epsilons = (0.5, 2.0, 8.0)
  c.expected_batch_size = 1024
  c.epochs = (5, 10, 15)
  c.output_name = NAME + '_mnist'


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.epsilons = (3.0,)
  c.epochs = (2,)
  c.expected_batch_size = 64
  c.train_subset = 512
  c.test_subset = 256
  c.nonprivate_epochs = 1
  c.steps_per_call = 16
  c.learning_rate = 1.0
  c.accountant = 'rdp'    # fast; the full run uses PLD
  c.ckpt_dir = None


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dp_sgd', default=_default,
                    variants={'mnist': _mnist, 'smoke': _smoke})
