"""Config of experiments/privacy_membership.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (256,)})
  c.pool_size = 10000          # candidate examples; the target trains on half
  c.num_shadow = 64            # LiRA shadow models (balanced membership over the pool)
  c.num_epochs = 30
  c.batch_size = 64
  c.learning_rate = 1e-3
  c.shokri_num_shadow = 4      # Shokri shadow models on disjoint partitions
  c.shokri_attack_epochs = 30
  c.shokri_hidden = (64,)
  c.shokri_transform = 'prob'
  c.shokri_order = 'raw'         # Shokri's prediction vector; 'sorted' is also reported
  c.label_only_max_shift = 1
  c.noise_sigma = 0.15
  c.noise_samples = 16
  c.sweep_sizes = (250, 500, 1000, 2000, 4000)
  c.sweep_steps = 2000
  c.sweep_eval = 2000          # non-members (test images) per sweep model
  c.fprs = (0.001, 0.01)
  c.cache_dir = 'workdir/cache'  # stage cache (resume after a cut-off); None: <workdir>/.cache


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (16,)})
  c.pool_size = 256
  c.num_shadow = 4
  c.num_epochs = 2
  c.batch_size = 32
  c.shokri_num_shadow = 2
  c.shokri_attack_epochs = 2
  c.shokri_hidden = (8,)
  c.noise_samples = 2
  c.sweep_sizes = (64, 128)
  c.sweep_steps = 8
  c.sweep_eval = 128
  c.cache_dir = None


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='privacy_membership', default=_default,
                    variants={'smoke': _smoke})
