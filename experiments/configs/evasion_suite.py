"""Config of experiments/evasion_suite.py.

Variants: ``full`` (the default), ``smoke``, ``mnist``, ``cifar10``.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn(c)
  c.test_subset = 0              # 0 = the whole test split (clean accuracy, image pool)
  c.attack_batch = 100
  c.fgsm_eps = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
  c.fgsm_examples = 1000
  c.rho_examples = 500           # DeepFool vs FGSM line search
  c.line_search_grid = 60        # geometric eps grid in [1e-3, 1] ...
  c.line_search_bisect = 12      # ... then bisection
  c.fgsm_fool_rate = 0.9         # the single-eps FGSM protocol (see fgsm_single_eps)
  c.deepfool = ml_collections.ConfigDict({'num_classes': 10, 'overshoot': 0.02,
                                          'max_iter': 50})
  c.jsma_examples = 100
  c.jsma = ml_collections.ConfigDict({'theta': 1.0, 'gamma': 0.145})
  c.cw_examples = 100
  # The budget of Carlini & Wagner's reference code as CleverHans / Foolbox default it
  # (9 binary-search steps x 1000 Adam steps, lr 0.01, c0 = 1e-3): ~10 min on 2 CPU cores.
  c.cw = ml_collections.ConfigDict({'num_binary_steps': 9, 'num_steps': 1000,
                                    'initial_const': 1e-3, 'learning_rate': 0.01,
                                    'confidence': 0.0})
  c.square = ml_collections.ConfigDict({'examples': 200, 'eps': 0.1, 'num_queries': 5000,
                                        'p_init': 0.8, 'apgd_steps': 100, 'batch': 200})
  c.ckpt_dir = ''     # checkpoints (resumed); '': <temp dir>/jaxsec_<study>/<variant>; None: none


def _smoke(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn_smoke(c)
  c.test_subset = 500
  c.attack_batch = 8
  c.fgsm_eps = (0.0, 0.1, 0.3)
  c.fgsm_examples = 16
  c.rho_examples = 16
  c.line_search_grid = 10
  c.line_search_bisect = 4
  c.deepfool.max_iter = 10
  c.jsma_examples = 4
  c.jsma.gamma = 0.05
  c.cw_examples = 8
  c.cw.num_binary_steps = 2
  c.cw.num_steps = 10
  c.square.update({'examples': 8, 'num_queries': 100, 'apgd_steps': 10, 'batch': 8})
  c.ckpt_dir = None


def _mnist(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'mnist'


def _cifar10(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'cifar10'
  c.model = 'resnet'
  c.model_kwargs = ml_collections.ConfigDict({'widths': (16, 32, 64),
                                              'blocks_per_stage': 2})
  c.num_epochs = 30
  c.fgsm_eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
  c.attack_batch = 50


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='evasion_suite', default=_default,
                    variants={'smoke': _smoke, 'mnist': _mnist, 'cifar10': _cifar10})
