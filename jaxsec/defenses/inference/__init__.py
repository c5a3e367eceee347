"""Inference-time defenses: they change how a trained model is queried.

Each one wraps a ``logits_fn: x -> [B, K]`` or reads its outputs, and a defended model is
again a ``logits_fn``, so every attack runs against it (adaptive attacks such as BPDA and
EOT are wrappers too): :mod:`preprocessors` (feature-squeezing squeezers,
:func:`preprocessed`), :mod:`dae` (the denoising-autoencoder preprocessor), and
:mod:`detectors` (a score function plus a threshold, merged with the classifier into one
``logits_fn`` with a reject class by :func:`defended`). :mod:`smoothing` is certified
prediction (randomized smoothing, Cohen, Rosenfeld & Kolter 2019): PREDICT / CERTIFY over
Gaussian noise around a ``logits_fn``; its training-side piece,
:func:`gaussian_augmentation`, is an objective transformation like those of
:mod:`jaxsec.defenses.training`. PREDICT stays ``smoothing.predict`` (a generic name). :mod:`strip` is STRIP (Gao et al.
2019), a detector score function against backdoor triggers.
"""
from jaxsec.defenses.inference import dae
from jaxsec.defenses.inference import detectors
from jaxsec.defenses.inference import preprocessors
from jaxsec.defenses.inference import smoothing
from jaxsec.defenses.inference import strip
from jaxsec.defenses.inference.detectors import (defended, defended_success, detection_report,
                                                 detector_aware_pgd, detector_training_set,
                                                 evasion_success, feature_squeezing_score,
                                                 learned_score, threshold_at_fpr)
from jaxsec.defenses.inference.preprocessors import (bit_depth_reduction, median_filter,
                                                     preprocessed)
from jaxsec.defenses.inference.smoothing import (Certificate, certified_accuracy, certify,
                                                 gaussian_augmentation)
from jaxsec.defenses.inference.strip import strip_entropy, strip_score, strip_threshold

__all__ = [
    'dae', 'detectors', 'preprocessors', 'smoothing', 'strip',
    'defended', 'defended_success', 'detection_report', 'detector_aware_pgd',
    'detector_training_set', 'evasion_success', 'feature_squeezing_score', 'learned_score',
    'threshold_at_fpr',
    'bit_depth_reduction', 'median_filter', 'preprocessed',
    'Certificate', 'certified_accuracy', 'certify', 'gaussian_augmentation',
    'strip_entropy', 'strip_score', 'strip_threshold',
]
