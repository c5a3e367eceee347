"""Config of experiments/evasion_proxy.py.

Variants: ``full`` (the default), ``smoke``, ``sharp``, ``fmnist``.
"""
import ml_collections

from experiments.configs import base
from experiments.configs import evasion_suite as suite
from experiments.evasion_proxy import _CNN, _LENET

# The softmax-Jacobian ablation added in 'sharp' and 'fmnist'.
_WITH_PROBS = (('increase', 1.0, 'logits'), ('decrease', -1.0, 'logits'),
               ('increase_probs', 1.0, 'probs'))


def _default(c: ml_collections.ConfigDict) -> None:
  c.dataset = 'digits28'
  c.digits28 = ml_collections.ConfigDict({'size': 20, 'pad': 4, 'test_fraction': 0.25,
                                          'contrast': None})
  c.models = ml_collections.ConfigDict({'cnn': _CNN, 'lenet': _LENET})
  c.bounds = (0.0, 1.0)
  c.batch_size = 64
  c.num_epochs = 30
  c.learning_rate = 1e-3
  c.attack_batch = 100
  c.jsma_examples = 100
  c.jsma_gamma = 0.145
  # (name, theta, jacobian); the softmax-Jacobian ablation runs in 'sharp' and 'fmnist'.
  c.jsma_variants = (('increase', 1.0, 'logits'), ('decrease', -1.0, 'logits'))
  c.rho_examples = 200
  c.line_search_grid = 60
  c.line_search_bisect = 12
  c.deepfool = ml_collections.ConfigDict({'num_classes': 10, 'overshoot': 0.02,
                                          'max_iter': 50})
  c.unboxed_margin = 1.0
  c.ckpt_dir = None   # training checkpoints (resumed); None: none


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.models = ml_collections.ConfigDict({'cnn': {'features': (4, 8), 'dense': 32}})
  c.num_epochs = 3
  c.attack_batch = 8
  c.jsma_examples = 6
  c.jsma_gamma = 0.05
  c.jsma_variants = (('increase', 1.0, 'logits'), ('decrease', -1.0, 'logits'))
  c.rho_examples = 8
  c.line_search_grid = 10
  c.line_search_bisect = 4
  c.deepfool.max_iter = 10


def _sharp(c: ml_collections.ConfigDict) -> None:
  c.digits28.contrast = (0.80, 0.92)
  c.models = ml_collections.ConfigDict({'lenet': _LENET})
  c.jsma_variants = _WITH_PROBS


def _fmnist(c: ml_collections.ConfigDict) -> None:
  s = suite.get_config()
  c.dataset = 'fashion_mnist'
  c.models = ml_collections.ConfigDict({'cnn': s.model_kwargs.to_dict()})
  c.batch_size = s.batch_size
  c.num_epochs = s.num_epochs
  c.learning_rate = s.learning_rate
  c.jsma_gamma = s.jsma.gamma
  c.jsma_variants = _WITH_PROBS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='evasion_proxy', default=_default,
                    variants={'smoke': _smoke, 'sharp': _sharp, 'fmnist': _fmnist})
