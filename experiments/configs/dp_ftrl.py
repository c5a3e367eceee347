"""Config of experiments/dp_ftrl.py. Variants: ``full`` (the default), ``smoke``.

The full run must fit about 30 minutes on 2 shared CPU cores, so it is short in *epochs*
(EPOCHS = 5 below, for all methods; DP-SGD and DP-FTRL took 17.5 minutes there), never
unequal: all methods see the whole training split with the same model, batch, clip,
learning rate and momentum at the same (eps, delta). The published comparisons train for
10-100 epochs on accelerators; a longer run is ``:epochs=E`` (all noises recalibrated).
"""
import ml_collections

from experiments.configs import base
from experiments.dp_ftrl import NAME

#: epochs of both methods in the full variant (shrunk for 2 CPU cores; see docstring)
EPOCHS = 5


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'tempered_cnn'          # the dp_sgd study's model
  c.activation = 'tanh'
  c.cnn_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 32})
  c.mlp_hidden = (32,)              # used only with model='mlp' (the smoke variant)
  c.methods = ('dp_ftrl', 'dp_sgd', 'banded_mf')
  # each seed: its own initialisation (key(seed)) and training randomness (key(seed + 1));
  # every method of a seed starts from the same weights
  c.seeds = (0, 1)
  # BandMF: numbers of bands tried (each needs N // b >= batch_size); the one with the
  # smallest prefix-sum RMSE at its calibrated noise is trained (experiments/dp_ftrl.py)
  c.mf_bands = (1, 2, 4, 8, 16, 32, 64, 120)
  c.mf_optimizer_steps = 250        # jax_privacy's default L-BFGS steps per strategy
  c.epsilon = 3.0
  c.delta = 1e-5
  c.accountant = 'pld'              # DP-SGD's training sigma
  c.report_accountants = ('rdp', 'pld')   # DP-SGD sigmas calibrated and reported
  c.batch_size = 500                # DP-SGD: expected Poisson batch; DP-FTRL: fixed batch
  c.epochs = EPOCHS
  c.learning_rate = 2.0
  c.momentum = 0.9
  c.l2_norm_clip = 0.1
  c.train_subset = 0
  c.test_subset = 0
  c.steps_per_call = 10
  c.output_name = NAME


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.epochs = 2
  c.batch_size = 64
  c.train_subset = 512
  c.test_subset = 256
  c.model = 'mlp'                   # seconds to compile; the full run uses the CNN
  c.learning_rate = 1.0
  c.steps_per_call = 16
  c.accountant = 'rdp'
  c.report_accountants = ('rdp',)
  c.mf_bands = (1, 2)
  c.mf_optimizer_steps = 10
  c.seeds = (0,)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dp_ftrl', default=_default, variants={'smoke': _smoke})
