"""Config of experiments/ksl_poisoning.py. Variants: ``full`` (the default) and ``smoke``.

scikit-learn's 8x8 digits, 1 vs 7 (a stand-in for the paper's MNIST-1-7, which is not
bundled), pixels in [0, 1]; the paper's settings where they carry over: 3% poison (and 10%),
defender's radii at the 90th percentile, MNIST-1-7's weight decay 0.01, decoy-loss cap
0.25, burn-in 0.33 (its ``burn_frac`` for MNIST-1-7), AdaGrad step 0.03.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.pair = (1, 7)
  c.n_test = 120                  # the rest of the pair's ~360 images train
  c.n_train = 0                   # 0 = all the rest
  c.num_splits = 5                # random train / test splits (seeds seed .. seed + 4)
  c.fractions = (0.03, 0.1)       # poison budgets (the paper's 3%, and 10%)
  c.l2 = 0.01                     # victim's weight decay (C = 1 / (n l2))
  c.tol = 1e-5                    # SMO tolerance
  c.bounds = (0.0, 1.0)
  c.percentile = 90.0             # defender's sphere / slab radii on clean data
  c.empirical_fraction = 0.05     # data-dependent sphere / slab: drop 5% per class each
  c.attacks = ('flipped_copies', 'alfa', 'biggio', 'influence', 'kkt', 'minmax')
  c.quantiles = (0.05, 0.1, 0.15, 0.25)   # decoy grid (the authors' MNIST-1-7 tapes,
  c.repeats = (1, 3, 8, 25)               # thinned)
  c.kkt_splits = 3
  c.kkt_steps = 100
  c.minmax_steps = 100
  c.burn_frac = 0.33
  c.rho_max = 0.25
  c.eta = 0.03
  c.bound_steps = 300
  c.influence_steps = 100
  c.influence_step_size = 0.1
  c.biggio_steps = 50
  c.biggio_step_size = 0.2


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.n_train = 60
  c.num_splits = 1
  c.fractions = (0.05,)
  c.attacks = ('flipped_copies', 'influence', 'kkt', 'minmax')  # the label flips and
  c.quantiles = (0.2,)                                        # Biggio run as in 'full'
  c.repeats = (8,)
  c.kkt_splits = 2
  c.kkt_steps = 4
  c.minmax_steps = 4
  c.bound_steps = 3
  c.influence_steps = 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='ksl_poisoning', default=_default, variants={'smoke': _smoke})
