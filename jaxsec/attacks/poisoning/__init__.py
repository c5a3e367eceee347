"""Training-data poisoning: attacks map a dataset to a dataset,
``(x, y, key) -> PoisonOutput(x', y', info)`` (see :mod:`jaxsec.attacks.poisoning.base`).

Label flips (random, ALFA, farthest/nearest-first) keep the size ``n``; injection attacks
append ``round(fraction * n)`` poison rows (see each factory); Witches' Brew (gradient
matching) and the label-consistent backdoor perturb training images in place and keep their
labels. The attacks of Koh, Steinhardt & Liang (influence, KKT, improved min-max) stay inside
the sphere + slab feasible set (``feasible_set``) of a defender's clean-data bounds, with
decoy parameters from ``decoy``. ``learners`` holds the exact, differentiable SVM / logistic regression /
unrolled-GD learners the gradient attacks go through.
"""
from jaxsec.attacks.poisoning import decoy
from jaxsec.attacks.poisoning import feasible_set
from jaxsec.attacks.poisoning import learners
from jaxsec.attacks.poisoning.backdoor import apply_trigger
from jaxsec.attacks.poisoning.backdoor import badnets
from jaxsec.attacks.poisoning.backdoor import feature_collision
from jaxsec.attacks.poisoning.backdoor import feature_collision_point
from jaxsec.attacks.poisoning.base import PoisonOutput
from jaxsec.attacks.poisoning.base import num_poison
from jaxsec.attacks.poisoning.bilevel import bilevel_poisoning
from jaxsec.attacks.poisoning.bilevel import flipped_copies
from jaxsec.attacks.poisoning.centroid import CentroidState
from jaxsec.attacks.poisoning.centroid import centroid_init
from jaxsec.attacks.poisoning.centroid import centroid_poisoning
from jaxsec.attacks.poisoning.centroid import centroid_stream
from jaxsec.attacks.poisoning.centroid import centroid_update
from jaxsec.attacks.poisoning.centroid import greedy_attack_point
from jaxsec.attacks.poisoning.clean_label import clean_label_backdoor
from jaxsec.attacks.poisoning.clean_label import pattern_trigger
from jaxsec.attacks.poisoning.gradient_matching import alignment_loss
from jaxsec.attacks.poisoning.gradient_matching import brew
from jaxsec.attacks.poisoning.gradient_matching import gradient_matching_loss
from jaxsec.attacks.poisoning.gradient_matching import random_translate_flip
from jaxsec.attacks.poisoning.gradient_matching import witches_brew
from jaxsec.attacks.poisoning.influence import influence_attack
from jaxsec.attacks.poisoning.kkt import kkt_attack
from jaxsec.attacks.poisoning.label_flip import alfa
from jaxsec.attacks.poisoning.label_flip import distance_label_flip
from jaxsec.attacks.poisoning.label_flip import random_label_flip
from jaxsec.attacks.poisoning.minmax import certified_bound
from jaxsec.attacks.poisoning.minmax import minmax_attack
from jaxsec.attacks.poisoning.signature import conjunction_signature
from jaxsec.attacks.poisoning.signature import signature_matches
from jaxsec.attacks.poisoning.signature import signature_noise_poisoning
from jaxsec.attacks.poisoning.svm_gradient import svm_poisoning
from jaxsec.attacks.poisoning.svm_gradient import svm_poisoning_gradient
from jaxsec.attacks.poisoning.svm_gradient import validation_hinge

__all__ = [
    'CentroidState',
    'PoisonOutput',
    'alfa',
    'alignment_loss',
    'apply_trigger',
    'badnets',
    'bilevel_poisoning',
    'brew',
    'centroid_init',
    'centroid_poisoning',
    'centroid_stream',
    'centroid_update',
    'certified_bound',
    'clean_label_backdoor',
    'conjunction_signature',
    'distance_label_flip',
    'feature_collision',
    'feature_collision_point',
    'flipped_copies',
    'gradient_matching_loss',
    'greedy_attack_point',
    'influence_attack',
    'kkt_attack',
    'learners',
    'minmax_attack',
    'num_poison',
    'pattern_trigger',
    'random_label_flip',
    'random_translate_flip',
    'signature_matches',
    'signature_noise_poisoning',
    'svm_poisoning',
    'svm_poisoning_gradient',
    'validation_hinge',
    'witches_brew',
]
