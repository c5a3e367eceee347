"""The main job (README command (a)): train the reference model, clean and robust accuracy.

Variants: ``full`` (default; the committed docs/results/main/), ``smoke`` (seconds, the tests),
``mnist``, ``cifar10`` (a ResNet). ``model`` is ``'cnn'`` or ``'mlp'`` with its
``model_kwargs`` (``MODEL_KWARGS`` holds both reference sizes); ``get_hyper`` sweeps 3 seeds x
the 2 models on the smoke variant.

Vectorised axes (issue 12 item 4): ``eps`` is a tuple that every run attacks as one vmapped
program (one compiled PGD over the whole grid); ``seeds`` (a tuple, default ``()``: train
``seed`` only) trains one model per seed as one ``jaxsec.train.fit_many`` program and
replaces ``seed``. ``get_hyper`` uses both: 2 points (one per model), each 3 seeds x the eps
grid, and ``launch.sweep``'s table has one row per (model, seed, eps).
"""
import ml_collections

from experiments.configs import base

# The two reference models main trains: full-size and smoke-size keyword arguments.
MODEL_KWARGS = {
    'full': {'cnn': {'features': (32, 64), 'dense': 128}, 'mlp': {'hidden': (256, 256)}},
    'smoke': {'cnn': {'features': (4, 8), 'dense': 32}, 'mlp': {'hidden': (32,)}},
}


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'fashion_mnist'
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict(MODEL_KWARGS['full']['cnn'])
  c.batch_size = 128
  c.num_epochs = 6
  c.learning_rate = 1.5e-3
  c.train_subset = 0          # 0 = the whole training split
  c.eval_subset = 0           # clean accuracy on this many test images (0 = all)
  c.attack_subset = 1000      # robust accuracy on the first N test images
  c.attack_batch = 250
  c.eps = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)  # eps=0 is the clean accuracy (not attacked)
  c.seeds = ()                # vectorised seed axis: () trains `seed`; (0, 1, 2) 3 models at once
  c.pgd_steps = 20
  c.pgd_rel_step = 2.5        # step size = rel_step * eps / steps (Madry et al.)
  c.grid_eps = 0.1
  # Survey Table 1 measured on this model: the other attack families of jaxsec run against
  # the trained model (each row says its setting). Sizes keep the whole job within 15
  # minutes on 2 CPU cores.
  c.table = ml_collections.ConfigDict({
      'enabled': True, 'eps': 0.1, 'num_images': 500, 'apgd_steps': 100,
      'autoattack_version': 'standard', 'cw_images': 200, 'cw_binary_steps': 5,
      'cw_steps': 100, 'jsma_images': 100, 'deepfool_images': 500,
      'universal_fit_images': 1000, 'universal_max_passes': 2, 'universal_sgd_steps': 200,
      'surrogate_epochs': 2, 'surrogate_train': 20000,
      'mia_members': 5000, 'extraction_queries': 5000, 'extraction_epochs': 4})


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict(MODEL_KWARGS['smoke']['cnn'])
  c.num_epochs = 1
  c.train_subset = 2048
  c.eval_subset = 500
  c.attack_subset = 64
  c.attack_batch = 32
  c.eps = (0.0, 0.1, 0.3)
  c.pgd_steps = 3
  c.table.update({'num_images': 16, 'apgd_steps': 5, 'autoattack_version': 'jaxsec-fast',
                  'cw_images': 8, 'cw_binary_steps': 2, 'cw_steps': 5, 'jsma_images': 4,
                  'deepfool_images': 16, 'universal_fit_images': 32,
                  'universal_max_passes': 1, 'universal_sgd_steps': 5, 'surrogate_epochs': 1,
                  'surrogate_train': 512, 'mia_members': 256, 'extraction_queries': 256,
                  'extraction_epochs': 1})


def _mnist(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'mnist'


def _cifar10(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'cifar10'
  c.model = 'resnet'
  c.model_kwargs = ml_collections.ConfigDict({'widths': (16, 32, 64), 'blocks_per_stage': 2})
  c.num_epochs = 30
  c.eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)


def _gpu(c: ml_collections.ConfigDict) -> None:
  c.resources.gpus = 1.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='main', default=_default,
                    variants={'smoke': _smoke, 'mnist': _mnist, 'cifar10': _cifar10,
                              'gpu': _gpu})


def get_hyper(h):
  """3 seeds x the 2 reference models x the eps grid, on the smoke variant
  (``--config=...main.py:smoke``): the models are 2 Ray tasks; the seeds (one ``fit_many``
  program) and the eps grid (one vmapped attack) are vectorised inside each. Replace
  ``h.vectorized('config.seeds', ...)`` by ``h.sweep('config.seed', [0, 1, 2])`` for one
  task per seed (the table is the same, up to float reassociation in training).
  """
  return h.product([
      h.vectorized('config.seeds', [0, 1, 2]),
      h.vectorized('config.eps', [0.0, 0.1, 0.3]),
      h.zip([h.sweep('config.model', ['cnn', 'mlp']),
             h.sweep('config.model_kwargs', [MODEL_KWARGS['smoke']['cnn'],
                                             MODEL_KWARGS['smoke']['mlp']])]),
  ])
