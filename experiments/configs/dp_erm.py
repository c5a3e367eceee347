"""Config of experiments/dp_erm.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.datasets = ('breast_cancer', 'digits')
  c.regularization = {'breast_cancer': 1e-2, 'digits': 3e-2}
  c.loss = 'logistic'
  c.epsilons = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
  c.methods = ('objective', 'output')
  c.reps = 20


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.datasets = ('breast_cancer',)
  c.epsilons = (0.1, 10.0)
  c.reps = 3


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dp_erm', default=_default,
                    variants={'smoke': _smoke})
