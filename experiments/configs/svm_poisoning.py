"""Config of experiments/svm_poisoning.py. Variants: ``full`` (the default), ``smoke``.

Biggio, Nelson & Laskov (ICML 2012): one poison point moved by gradient ascent, a linear
and an RBF SVM, C = 1 (the paper's) and C = 100 (a control: a point's weight is at most C).
``digits``: scikit-learn's 8x8 digits in [0, 1] on the paper's MNIST pairs (a pair has ~360
images: 100 train / ``n_val`` / the rest test); ``fashion_mnist``: Fashion-MNIST pairs at
the paper's 28x28 resolution (100 / 500 from the training split, the pair's test split for
test); ``gaussian2d``: the paper's Figure 1 (two Gaussians, 25 training points per class,
RBF gamma = 0.5), with the validation-loss surface on a grid. ``rbf_gamma``: a number, or
'scale' = 1 / (d var(x)) over the data set's pixels (scikit-learn's rule, fixed per data
set so every draw targets the same kernel).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.datasets = ('gaussian2d', 'digits', 'fashion_mnist')
  c.kernels = ('linear', 'rbf')
  c.Cs = (1.0, 100.0)               # 1: the paper's; 100: the bounded-influence control
  c.runs = 5                        # random train / validation draws per pair
  c.n_train = 100
  c.eval_every = 10                 # retrain and score the path every this many steps
  c.tol = 1e-5                      # SMO tolerance of every retraining
  c.digits = ml_collections.ConfigDict({
      'pairs': ((7, 1), (9, 8), (4, 0)), 'n_val': 130, 'n_test': 0, 'rbf_gamma': 'scale',
      'steps': 200, 'step_size': 0.25, 'bounds': (0.0, 1.0)})
  c.fashion_mnist = ml_collections.ConfigDict({
      'pairs': ((1, 4), (5, 8), (2, 3)), 'n_val': 500, 'n_test': 0, 'rbf_gamma': 'scale',
      'steps': 300, 'step_size': 0.05, 'bounds': (0.0, 1.0)})
  # The paper's Figure 1: mu = (-1.5, 0) / (1.5, 0), identity covariance, 25 + 25 training
  # points, 500 validation points, the attack inside [-5, 5]^2; one draw (runs = 1).
  c.gaussian2d = ml_collections.ConfigDict({
      'pairs': ((0, 1),), 'n_val': 500, 'n_test': 1000, 'rbf_gamma': 0.5, 'steps': 100,
      'step_size': 0.1, 'bounds': (-5.0, 5.0), 'n_train': 50, 'runs': 1, 'grid': 41})


def _smoke(c: ml_collections.ConfigDict) -> None:
  # The two-Gaussian problem with the RBF kernel only (the image loaders are tested without
  # training); 6 steps scored every 2 plus the clean SVM = 5 retrainings, as many as one
  # grid row of the 5x5 surface: both share one compiled program.
  c.datasets = ('gaussian2d',)
  c.kernels = ('rbf',)           # the linear attack is tested in tests/attacks
  c.Cs = (1.0,)
  c.eval_every = 2
  c.gaussian2d.steps = 6
  c.gaussian2d.step_size = 0.5
  c.gaussian2d.n_val = 100
  c.gaussian2d.n_test = 100
  c.gaussian2d.n_train = 20
  c.gaussian2d.grid = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='svm_poisoning', default=_default,
                    variants={'smoke': _smoke})
