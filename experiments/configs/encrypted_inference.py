"""Config of experiments/encrypted_inference.py. Variants: ``full`` (the default) and
``smoke``.

The full run trains the square-activation MLP (196 -> 64 -> 10 on 2x2-average-pooled
FMNIST) for 3 epochs on the whole training set, measures plaintext accuracy on the whole test
set, then runs CKKS inference on ``n_ckks = 100`` and three-party MPC on ``n_mpc = 30`` test
images (about 10 minutes on a shared 2-core CPU; CKKS is the bulk at a few seconds per
query). CryptoNets measures 8192 images per batch; see the study's docstring for why fewer
here.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.n_train = 0                    # the whole training set
  c.n_test = 0                     # the whole test set (plaintext accuracy)
  c.pool = 2                       # client-side average pooling: 28x28 -> 14x14
  c.hidden = 64                    # one hidden layer of square activations
  c.epochs = 3
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.n_ckks = 100                   # test images run under CKKS (one ciphertext each)
  c.n_mpc = 30                     # test images run under three-party MPC
  c.ckks = ml_collections.ConfigDict({
      'poly_modulus_degree': 8192,
      'coeff_mod_bit_sizes': (60, 40, 40, 40, 38),
      'global_scale_bits': 40})
  c.mpc = ml_collections.ConfigDict({'bit_length': 64, 'frac_bits': 24})


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.n_train, c.n_test, c.hidden, c.epochs, c.batch_size = 512, 64, 8, 1, 64
  c.n_ckks, c.n_mpc = 3, 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='encrypted_inference', default=_default,
                    variants={'smoke': _smoke})
