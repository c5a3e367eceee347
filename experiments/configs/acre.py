"""Config of experiments/acre.py. Variants: ``full`` (the default) and ``smoke``.

Synthetic binary features (class-conditional Bernoulli words, a stand-in for Lowd & Meek's
spam features, which are not bundled), a LinearSVC per dimension; ``n_instances`` positive
test instances attacked per dimension. Deviation: the paper's experiments attack naive
Bayes and maxent spam filters on 23,000-word vocabularies; here the dimension is swept
(10 .. 1000) against a linear SVM to read the query growth.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dims = (10, 30, 100, 300, 1000)
  c.n_train = 2000                 # training instances per dimension (half per class)
  c.n_test = 400
  c.n_instances = 20               # positive instances attacked per dimension
  c.informative = 0.3              # fraction of features whose rate differs between classes
  c.svm_c = 1.0                    # LinearSVC's C
  c.eps = 0.1                      # continuous ACRE: (1 + eps)-approximation
  c.delta = 1e-6                   # continuous ACRE: smallest relevant relative weight


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.dims = (10, 30)
  c.n_train, c.n_test, c.n_instances = 300, 60, 3


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='acre', default=_default, variants={'smoke': _smoke})
