"""Config of experiments/evasion_min_norm.py.

Variants: ``full`` (the default), ``smoke``.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn(c)            # the evasion suite's model, data and training
  c.test_subset = 0
  c.examples = 100                 # correctly classified test images attacked
  c.attack_batch = 100
  # (label, attack, norm, keyword arguments): every attack runs on the same images.
  c.attacks = (
      ('DeepFool', 'deepfool', 'l2', {'num_classes': 10, 'overshoot': 0.02, 'max_iter': 50}),
      ('C&W-L2', 'cw_l2', 'l2', {'num_binary_steps': 5, 'num_steps': 200,
                                 'initial_const': 0.1, 'learning_rate': 0.01}),
      ('DDN', 'ddn', 'l2', {'num_steps': 100}),
      ('FMN-L2', 'fmn', 'l2', {'num_steps': 100}),
      ('EAD (EN rule)', 'ead', 'l2', {'beta': 1e-3, 'decision_rule': 'en',
                                      'num_binary_steps': 5, 'num_steps': 200,
                                      'initial_const': 0.1}),
      ('DeepFool-Linf', 'deepfool', 'linf', {'num_classes': 10, 'overshoot': 0.02,
                                             'max_iter': 50}),
      ('FMN-Linf', 'fmn', 'linf', {'num_steps': 100}),
      ('EAD (L1 rule)', 'ead', 'l1', {'beta': 1e-2, 'decision_rule': 'l1',
                                      'num_binary_steps': 5, 'num_steps': 200,
                                      'initial_const': 0.1}),
      ('FMN-L1', 'fmn', 'l1', {'num_steps': 100}),
      ('FMN-L0', 'fmn', 'l0', {'num_steps': 100}),
  )
  c.ckpt_dir = ''     # checkpoints (resumed); '': <temp dir>/jaxsec_<study>/<variant>; None: none


def _smoke(c: ml_collections.ConfigDict) -> None:
  base.reference_cnn_smoke(c)
  c.test_subset = 200
  c.examples = 6
  c.attack_batch = 6
  c.attacks = tuple((label, kind, norm, _shrink(kw)) for label, kind, norm, kw in c.attacks)
  c.ckpt_dir = None


def _shrink(kw: dict) -> dict:
  kw = dict(kw)
  for k, v in (('num_steps', 5), ('max_iter', 5), ('num_binary_steps', 2)):
    if k in kw:
      kw[k] = v
  return kw


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='evasion_min_norm', default=_default,
                    variants={'smoke': _smoke})
