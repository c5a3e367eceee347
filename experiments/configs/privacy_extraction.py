"""Config of experiments/privacy_extraction.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.linear_epochs = 100
  c.random_eval = 5000                  # random inputs for agreement
  c.mlp_hidden = (32,)
  c.mlp_epochs = 100
  c.mlp_budgets = (65, 200, 650, 2000, 6500)
  c.mlp_sub_steps = 2000
  c.cnn_dataset = 'fashion_mnist'
  c.target_model = 'cnn'
  c.target_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.target_train = 20000
  c.target_epochs = 3
  c.sub_model = 'cnn'
  c.sub_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 64})
  c.budgets = (100, 300, 1000, 3000)
  c.sub_steps = 400
  c.sub_batch = 64
  c.jacobian_seed_per_class = 10
  c.jacobian_rounds = 5
  c.jacobian_lambda = 0.1
  c.eval_size = 5000


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.linear_epochs = 5
  c.random_eval = 200
  c.mlp_hidden = (8,)
  c.mlp_epochs = 2
  c.mlp_budgets = (65,)
  c.mlp_sub_steps = 10
  c.target_model = c.sub_model = 'mlp'     # the smoke test stays fast to compile
  c.target_kwargs = ml_collections.ConfigDict({'hidden': (8,)})
  c.target_train = 512
  c.target_epochs = 1
  c.sub_kwargs = ml_collections.ConfigDict({'hidden': (8,)})
  c.budgets = (20,)
  c.sub_steps = 4
  c.sub_batch = 16
  c.jacobian_seed_per_class = 1
  c.jacobian_rounds = 2
  c.eval_size = 200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='privacy_extraction', default=_default,
                    variants={'smoke': _smoke})
