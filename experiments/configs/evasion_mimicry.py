"""Config of experiments/evasion_mimicry.py. Variants: ``full`` (the default) and ``smoke``.

scikit-learn digits, 3 (malicious) vs 7 (benign); L1 budgets on 64 pixels in [0, 1] (the
mean L1 distance from a test 3 to its nearest training 7 is about 11.5). ``lams`` per
classifier: 0 (no mimicry) and values of the order of the discriminant's range over the
malicious digits (SVMs about 1-3, the MLP's logit margin larger).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.d_max = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
  c.max_attacked = 0                 # malicious test digits attacked (0 = all)
  c.svm_c = 1.0
  c.rbf_gammas = ml_collections.ConfigDict({'rbf_svm': 'scale', 'rbf_svm_narrow': 1.0})
  c.mlp_hidden = (32,)
  c.mlp_lr = 0.1                     # full-batch GD with momentum 0.9
  c.mlp_steps = 300
  c.lams = ml_collections.ConfigDict({
      'linear_svm': (0.0, 5.0, 20.0), 'rbf_svm': (0.0, 5.0, 20.0),
      'rbf_svm_narrow': (0.0, 5.0, 20.0), 'mlp': (0.0, 20.0, 100.0)})
  c.bandwidth = 2.0                  # Gaussian kernel h: exp(-||x - x_i||^2 / h^2)
  c.step_size = 0.1                  # Algorithm 1's t (an L2 length)
  c.max_steps = 500
  c.tol = 1e-6
  c.judge_k = 5


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.d_max = (0.0, 4.0)
  c.rbf_gammas = ml_collections.ConfigDict({'rbf_svm_narrow': 1.0})
  c.max_attacked = 6
  c.mlp_steps = 100
  c.lams = ml_collections.ConfigDict({'linear_svm': (0.0, 20.0), 'rbf_svm_narrow': (0.0, 5.0),
                                      'mlp': (0.0, 20.0)})
  c.max_steps = 40
  c.step_size = 0.15


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='evasion_mimicry', default=_default,
                    variants={'smoke': _smoke})
