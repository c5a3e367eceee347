"""Config of experiments/privacy_inversion.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dlg_batch_sizes = (1, 2, 4, 8)
  c.dlg_trials = 2
  c.dlg_steps = 300
  c.dlg_mlp_hidden = (256,)
  c.dlg_cnn_kwargs = ml_collections.ConfigDict({'features': (12, 12), 'dense': 64})
  c.inv_train = 20000
  c.inv_epochs = 5
  c.inv_mlp_hidden = (256,)
  c.inv_steps = 500
  c.inv_step_size = 0.1
  c.inv_tv = 0.003
  c.inv_denoise_every = 50
  c.attr_epochs = 200
  c.prop_num_models = 128
  c.prop_test_models = 32
  c.prop_size = 1000
  c.prop_with = 0.2
  c.prop_without = 0.1
  c.prop_hidden = (32,)
  c.prop_epochs = 10
  c.prop_meta_epochs = 300


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.dlg_batch_sizes = (1,)
  c.dlg_trials = 1
  c.dlg_steps = 3
  c.dlg_mlp_hidden = (8,)
  c.dlg_cnn_kwargs = ml_collections.ConfigDict({'features': (2, 2), 'dense': 8})
  c.inv_train = 512
  c.inv_epochs = 1
  c.inv_mlp_hidden = (8,)
  c.inv_steps = 3
  c.inv_denoise_every = 2
  c.attr_epochs = 2
  c.prop_num_models = 8
  c.prop_test_models = 4
  c.prop_size = 64
  c.prop_hidden = (4,)
  c.prop_epochs = 1
  c.prop_meta_epochs = 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='privacy_inversion', default=_default,
                    variants={'smoke': _smoke})
