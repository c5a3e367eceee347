"""White-box evasion attacks (survey §2.4(1)).

Every attack is a factory with keyword-only hyperparameters that returns the pure function
``attack(logits_fn, x, y, key) -> AttackOutput(x_adv, info, budget)``
(:class:`jaxsec.attacks.base.AttackOutput`; ``budget`` 'fixed' or 'minimal').

Gradient attacks: :func:`fgsm`, :func:`fgm`, :func:`bim`, :func:`mi_fgsm`, :func:`pgd`,
:func:`apgd`, :func:`apgd_t`, the ensemble :func:`auto_attack` / :func:`run_auto_attack`;
minimal-perturbation and other attacks: :func:`lbfgs`, :func:`jsma` (and :func:`jsma_add_only`, Grosse et al.
2017: binary features, additions only), :func:`deepfool`,
:func:`carlini_wagner_l2`, :func:`carlini_wagner_linf`, :func:`carlini_wagner_l0`,
:func:`fab`, :func:`fab_t` (FAB, Croce & Hein 2020, minimal L_inf / L2 / L1 distance),
:func:`ead` (elastic-net, Chen et al. 2018), :func:`fmn` (Fast Minimum-Norm, Pintor et al.
2021, L0 / L1 / L2 / L_inf), :func:`ddn` (Decoupled Direction and Norm, Rony et al. 2019, L2),
:func:`universal_perturbation` (Algorithm 1, DeepFool steps),
:func:`universal_perturbation_sgd` (Shafahi 2020, stochastic PGD); adaptive-attack wrappers: :func:`eot`,
:func:`eot_logits_fn`, :func:`bpda`, :func:`bpda_logits_fn`; physical-world attacks:
:func:`adversarial_patch` (Brown et al. 2017), :func:`rp2` (Eykholt et al. 2018),
:func:`physical_transform`; transfer-oriented iterative attacks: :func:`transfer_ifgsm`
(MI-FGSM with DI, TI, SI, NI and VMI, composable; Xie et al. 2019, Dong et al. 2019,
Lin et al. 2020, Wang & He 2021); gradient-descent evasion with a mimicry (kernel-density)
term against SVMs and any differentiable discriminant: :func:`mimicry_evasion` (Biggio et
al., ECML PKDD 2013; L1 / L2 / L_inf budget, box, add-only).

Bad input: every entry point that takes ``(x, y)`` refuses, on concrete (eager) inputs,
non-finite ``x``, ``x`` outside ``bounds`` and labels outside the model's classes
(:func:`common.check_call`); under ``jit`` these value checks are skipped.
"""
from jaxsec.attacks.evasion import common
from jaxsec.attacks.evasion.adaptive import bpda, bpda_logits_fn, eot, eot_logits_fn
from jaxsec.attacks.evasion.autoattack import (auto_attack, auto_attack_stage_names,
                                               run_auto_attack)
from jaxsec.attacks.evasion.autopgd import apgd, apgd_t
from jaxsec.attacks.evasion.cw import (carlini_wagner_l0, carlini_wagner_l2,
                                       carlini_wagner_linf)
from jaxsec.attacks.evasion.ddn import ddn
from jaxsec.attacks.evasion.deepfool import deepfool
from jaxsec.attacks.evasion.ead import ead
from jaxsec.attacks.evasion.fab import fab, fab_t
from jaxsec.attacks.evasion.fmn import fmn
from jaxsec.attacks.evasion.gradient import bim, fgm, fgsm, mi_fgsm
from jaxsec.attacks.evasion.jsma import jsma
from jaxsec.attacks.evasion.jsma_binary import jsma_add_only
from jaxsec.attacks.evasion.lbfgs import lbfgs
from jaxsec.attacks.evasion.mimicry import mimicry_evasion
from jaxsec.attacks.evasion.pgd import pgd
from jaxsec.attacks.evasion.physical import adversarial_patch, physical_transform, rp2
from jaxsec.attacks.evasion.transfer import transfer_ifgsm
from jaxsec.attacks.evasion.universal import universal_perturbation, universal_perturbation_sgd

__all__ = ['common', 'fgsm', 'fgm', 'bim', 'mi_fgsm', 'pgd', 'apgd', 'apgd_t',
           'auto_attack', 'auto_attack_stage_names', 'run_auto_attack', 'eot',
           'eot_logits_fn', 'bpda',
           'bpda_logits_fn', 'lbfgs', 'jsma', 'jsma_add_only', 'deepfool', 'fab', 'fab_t', 'ead', 'fmn', 'ddn', 'carlini_wagner_l2',
           'carlini_wagner_linf', 'carlini_wagner_l0', 'universal_perturbation',
           'universal_perturbation_sgd', 'adversarial_patch', 'rp2', 'physical_transform',
           'transfer_ifgsm', 'mimicry_evasion']
