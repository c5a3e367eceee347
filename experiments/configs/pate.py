"""Config of experiments/pate.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.num_teachers = 250
  c.teacher_hidden = (128,)
  c.teacher_epochs = 40
  c.teacher_batch = 24
  c.student_hidden = (256,)
  c.student_epochs = 40
  c.student_batch = 32
  c.public_pool = 9000
  c.delta = 1e-5
  c.settings = [
      {'mechanism': 'lnmax', 'gamma': 0.05, 'num_queries': 100},
      {'mechanism': 'gnmax', 'sigma': 40.0, 'num_queries': 100},
      {'mechanism': 'gnmax', 'sigma': 40.0, 'num_queries': 300},
      {'mechanism': 'gnmax', 'sigma': 40.0, 'num_queries': 1000},
      {'mechanism': 'confident_gnmax', 'sigma1': 150.0, 'sigma': 40.0, 'threshold': 200.0,
       'num_queries': 1000},
      {'mechanism': 'confident_gnmax', 'sigma1': 150.0, 'sigma': 40.0, 'threshold': 200.0,
       'num_queries': 3000},
      {'mechanism': 'confident_gnmax', 'sigma1': 150.0, 'sigma': 40.0, 'threshold': 200.0,
       'num_queries': 9000},
      # PATE 2018 Table 2's MNIST budget (appended: the settings above keep their keys)
      {'mechanism': 'confident_gnmax', 'sigma1': 150.0, 'sigma': 40.0, 'threshold': 200.0,
       'num_queries': 640},
  ]
  # (the full variant)
  c.train_subset = 0


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.num_teachers = 10
  c.teacher_hidden = (16,)
  c.teacher_epochs = 2
  c.teacher_batch = 16
  c.student_hidden = (16,)
  c.student_epochs = 2
  c.public_pool = 200
  c.train_subset = 1000
  c.settings = [
      {'mechanism': 'gnmax', 'sigma': 2.0, 'num_queries': 50},
      {'mechanism': 'confident_gnmax', 'sigma1': 3.0, 'sigma': 2.0, 'threshold': 6.0,
       'num_queries': 100, 'max_answers': 40},
      {'mechanism': 'lnmax', 'gamma': 0.5, 'num_queries': 20},
  ]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='pate', default=_default,
                    variants={'smoke': _smoke})
