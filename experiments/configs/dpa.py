"""Config of experiments/dpa.py (``run(config, workdir)``).

    python -m experiments.run --config=experiments/configs/dpa.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/dpa.py:smoke --workdir=/tmp/s

Variants: ``full`` (the default), ``cpu`` (MLP base models, minutes on a CPU; the committed
docs/results/dpa.json) and ``smoke``. Any field: ``:smoke,key=value`` or
``--config.key=value``.

Deviation from Levine & Feizi (2021): a small CNN (paper: Network-in-Network) trained
``epochs`` = 20 Adam epochs per part (paper: 200 SGD epochs with augmentation), FMNIST
with k = 50 and 250 (the paper's MNIST runs use k = 1200, 3000).

Cost: 960 steps of 50 CNNs (k = 50) and 180 steps of 250 CNNs (k = 250), batch 32, then
(50 + 250) x 10,000 test forward passes. Extrapolated from a 6,000-image probe on the
shared (load ~6) 2-core CPU: about 3.9 s per k = 50 step, so roughly 2.5 h on CPU; run
it on an accelerator.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict({'features': (16, 32), 'dense': 64})
  c.num_partitions = (50, 250)
  c.capacity_factor = 1.3        # every part padded to ceil(1.3 N / k) rows (fixed in advance)
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.epochs = 20
  c.n_train = 0                  # the whole training set
  c.n_test = 0                   # the whole test set
  c.eval_batch = 1000
  c.table_budgets = (0, 5, 10, 15, 20, 25, 50, 75, 100, 125)
  # Bagging (Jia et al. 2021), the paper's MNIST setting: 1,000 models, k = 30 / 100.
  c.bagging_subsample_sizes = (30, 100)
  c.bagging_num_models = 1000
  c.bagging_epochs = 100          # full-bag steps (batch = k)
  c.bagging_learning_rate = 1e-2
  c.bagging_alpha = 1e-3          # divided by the number of test points (simultaneous)
  c.bagging_budgets = (0, 100, 200, 300, 400, 500, 600, 800, 1000)


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (16,)})
  c.num_partitions = (4, 8)
  c.capacity_factor = 2.0
  c.n_train, c.n_test, c.epochs, c.batch_size = 400, 64, 2, 16
  c.eval_batch = 64
  c.table_budgets = (0, 1, 2, 4)
  c.bagging_subsample_sizes = (8,)
  c.bagging_num_models = 16
  c.bagging_epochs = 2
  c.bagging_budgets = (0, 1, 5)


def _cpu(c: ml_collections.ConfigDict) -> None:
  # The curve's shape on a CPU in minutes: the same k, data, schedule and certificate, with
  # one-hidden-layer MLP base models in place of the CNN (the CNN run is ~2.5 h here).
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'hidden': (256,)})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dpa', default=_default,
                    variants={'smoke': _smoke, 'cpu': _cpu})
