"""Config of experiments/blackbox.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn(c)   # the oracle: evasion_suite's reference CNN and training
  # The substitute (the paper's reference code: a 200-200 MLP, Adam 1e-3, 10 epochs).
  c.substitute = ml_collections.ConfigDict({
      'hidden': (200, 200), 'train_epochs': 10, 'batch_size': 32, 'learning_rate': 1e-3,
      'num_aug_epochs': 6, 'lam': 0.1, 'lam_periods': (0, 3), 'jacobian': 'probs'})
  c.seed_size = 150
  c.eval_size = 1000
  c.fgsm_eps = (0.1, 0.3)
  c.attack_batch = 500
  # HopSkipJumpAttack (L2) against DeepFool and C&W L2 on the same images.
  c.hsja_examples = 50
  c.hsja_budgets = (1000, 5000)
  # eval_batch: random vectors per example per query batch; B_t = 100 sqrt(t) is rarely a
  # multiple of it, and the unused part of the last chunk is computed but not counted.
  c.hsja = ml_collections.ConfigDict({'num_iterations': 200, 'init_num_evals': 100,
                                      'max_num_evals': 10000, 'gamma': 1.0,
                                      'eval_batch': 20})
  c.deepfool = ml_collections.ConfigDict({'num_classes': 10, 'overshoot': 0.02,
                                          'max_iter': 50})
  # C&W L2 with a reduced budget (the reference 9 x 1000 Adam steps take too long on this
  # CPU): 5 x 200 steps, starting at c = 1 with a larger Adam step (0.05).
  c.cw = ml_collections.ConfigDict({'num_binary_steps': 5, 'num_steps': 200,
                                    'initial_const': 1.0, 'learning_rate': 0.05,
                                    'confidence': 0.0})
  c.ckpt_dir = None   # training checkpoints (resumed); None: none


def _smoke(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn_smoke(c)
  c.substitute.hidden = (32,)
  c.substitute.train_epochs = 2
  c.substitute.num_aug_epochs = 3
  c.substitute.lam_periods = (0,)
  c.seed_size = 20
  c.eval_size = 40
  c.attack_batch = 40
  c.hsja_examples = 4
  c.hsja_budgets = (150, 400)
  c.deepfool.max_iter = 10
  c.cw.num_binary_steps = 2
  c.cw.num_steps = 10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='blackbox', default=_default,
                    variants={'smoke': _smoke})
