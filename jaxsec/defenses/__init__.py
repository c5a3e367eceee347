"""Defenses (survey §3): loss transformations, logits wrappers, detectors, data masks.

Training-time defenses are objective transformations (``objective(apply_fn, params, x, y,
key) -> [B]``, see ``jaxsec.train``): regularisers, adversarial training, TRADES,
distillation. Inference-time defenses wrap ``logits_fn``: preprocessors (feature
squeezing, the denoising autoencoder) and detectors. Data defenses (``sanitize``) map a
data set to a keep-mask. Byzantine-robust aggregators are federated pieces and live in
:mod:`jaxsec.federated.aggregators`.
"""
from jaxsec.defenses import adversarial
from jaxsec.defenses import dae
from jaxsec.defenses import detectors
from jaxsec.defenses import distillation
from jaxsec.defenses import preprocessors
from jaxsec.defenses import regularizers
from jaxsec.defenses.adversarial import (adversarial_training, ensemble_adversarial_training,
                                         fast_adversarial_training, fgsm_adversarial_training,
                                         linear_adversarial_training, pgd_adversarial_training,
                                         trades, trades_attack, worst_case_logits)
from jaxsec.defenses.detectors import (defended, defended_success, detection_report,
                                       detector_aware_pgd, detector_training_set,
                                       evasion_success,
                                       feature_squeezing_score, learned_score,
                                       threshold_at_fpr)
from jaxsec.defenses.distillation import (at_temperature, deployed, distillation as
                                          distillation_objective, soft_labels,
                                          temperature_cross_entropy)
from jaxsec.defenses.preprocessors import bit_depth_reduction, median_filter, preprocessed
from jaxsec.defenses.regularizers import (contractive, decoupled_weight_decay,
                                          deep_contractive, input_gradient_regularization,
                                          jacobian_frobenius_sq, l1_penalty, l2_penalty,
                                          weight_penalty)

__all__ = [
    'adversarial', 'dae', 'detectors', 'distillation', 'preprocessors', 'regularizers',
    'adversarial_training', 'ensemble_adversarial_training', 'fast_adversarial_training',
    'fgsm_adversarial_training', 'linear_adversarial_training', 'pgd_adversarial_training',
    'trades', 'trades_attack', 'worst_case_logits',
    'defended', 'defended_success', 'detection_report', 'detector_aware_pgd',
    'detector_training_set', 'evasion_success',
    'feature_squeezing_score', 'learned_score', 'threshold_at_fpr',
    'at_temperature', 'deployed', 'distillation_objective', 'soft_labels',
    'temperature_cross_entropy',
    'bit_depth_reduction', 'median_filter', 'preprocessed',
    'contractive', 'decoupled_weight_decay', 'deep_contractive',
    'input_gradient_regularization', 'jacobian_frobenius_sq', 'l1_penalty', 'l2_penalty',
    'weight_penalty',
]

# Training-data sanitisation (survey 3.1(1)).
from jaxsec.defenses import sanitize  # noqa: F401
from jaxsec.defenses.sanitize import (empirical_mean_test, knn_label_sanitize,  # noqa: F401
                                      knn_relabel, noise_augment, precision_recall,
                                      robust_pca, roni, slab, spectral_signatures, sphere)
__all__ += ['sanitize', 'empirical_mean_test', 'knn_label_sanitize', 'knn_relabel',
            'noise_augment', 'precision_recall', 'robust_pca', 'roni', 'slab',
            'spectral_signatures', 'sphere']

# Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019);
# PREDICT is jaxsec.defenses.smoothing.predict (a generic name kept in its module).
from jaxsec.defenses import smoothing  # noqa: E402,F401
from jaxsec.defenses.smoothing import (Certificate, certified_accuracy,  # noqa: E402,F401
                                       certify, gaussian_augmentation)
__all__ += ['smoothing', 'Certificate', 'certified_accuracy', 'certify',
            'gaussian_augmentation']

# Certified poisoning defense: Deep Partition Aggregation (Levine & Feizi 2021); the
# names are prefixed (smoothing owns certify / certified_accuracy / Certificate).
from jaxsec.defenses import partition_aggregation  # noqa: E402,F401
from jaxsec.defenses.partition_aggregation import (  # noqa: E402,F401
    certified_accuracy as dpa_certified_accuracy, certify as dpa_certify,
    partition as dpa_partition, train as dpa_train, vote_counts as dpa_vote_counts)
__all__ += ['partition_aggregation', 'dpa_certified_accuracy', 'dpa_certify', 'dpa_partition',
            'dpa_train', 'dpa_vote_counts']
