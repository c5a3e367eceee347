"""White-box evasion attacks (survey §2.4(1)).

Every attack is a factory with keyword-only hyperparameters that returns the pure function
``attack(logits_fn, x, y, key) -> x_adv`` (or ``AttackOutput`` with ``return_info=True``).
"""
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.adaptive import bpda, bpda_logits_fn, eot, eot_logits_fn
from jaxsec.attacks.evasion.autopgd import apgd, apgd_t
from jaxsec.attacks.evasion.autoattack import auto_attack, run_auto_attack
from jaxsec.attacks.evasion.gradient import bim, fgm, fgsm, mi_fgsm
from jaxsec.attacks.evasion.pgd import pgd

__all__ = ['common', 'fgsm', 'fgm', 'bim', 'mi_fgsm', 'pgd', 'apgd', 'apgd_t',
           'auto_attack', 'run_auto_attack', 'eot', 'eot_logits_fn', 'bpda', 'bpda_logits_fn']

# Attacks written in parallel by another engineer (issue 3, part B); exported when present.
try:
  from jaxsec.attacks.evasion.lbfgs import lbfgs
  __all__.append('lbfgs')
except ImportError:
  pass
try:
  from jaxsec.attacks.evasion.jsma import jsma
  __all__.append('jsma')
except ImportError:
  pass
try:
  from jaxsec.attacks.evasion.deepfool import deepfool
  __all__.append('deepfool')
except ImportError:
  pass
try:
  from jaxsec.attacks.evasion.cw import (carlini_wagner_l0, carlini_wagner_l2,
                                         carlini_wagner_linf)
  __all__ += ['carlini_wagner_l2', 'carlini_wagner_linf', 'carlini_wagner_l0']
except ImportError:
  pass
try:
  from jaxsec.attacks.evasion.universal import universal_perturbation
  __all__.append('universal_perturbation')
except ImportError:
  pass
