"""Defenses (survey §3), grouped by where they plug in.

* :mod:`jaxsec.defenses.training` -- training-time defenses: objective transformations
  (``objective(apply_fn, params, x, y, key) -> [B]``, see ``jaxsec.train``) for
  regularisers, adversarial training, TRADES and distillation, interval bound propagation
  (verified L_inf robustness and IBP training), and Deep Partition Aggregation (certified
  against poisoning).
* :mod:`jaxsec.defenses.inference` -- inference-time defenses that wrap ``logits_fn``:
  preprocessors (feature squeezing, the denoising autoencoder), detectors, and randomized
  smoothing (certified L2 prediction).
* :mod:`jaxsec.defenses.data` -- data defenses (``sanitize``, ``activation_clustering``): a
  data set to a keep-mask.
* :mod:`jaxsec.defenses.model` -- model defenses against backdoors: inspect or repair a
  trained model (Neural Cleanse, fine-pruning).

The public functions are re-exported here flat. Byzantine-robust aggregators are federated
pieces and live in :mod:`jaxsec.federated.aggregators`.
"""
from jaxsec.defenses import data
from jaxsec.defenses import inference
from jaxsec.defenses import model
from jaxsec.defenses import training
from jaxsec.defenses.data import (activation_clustering, activation_clusters,
                                  empirical_mean_test, knn_label_sanitize, knn_relabel,
                                  noise_augment, precision_recall, robust_pca, roni, slab,
                                  spectral_signatures, sphere)
# Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019); PREDICT
# is jaxsec.defenses.inference.smoothing.predict (a generic name kept in its module).
from jaxsec.defenses.inference import (Certificate, bit_depth_reduction, certified_accuracy,
                                       certify, defended, defended_success, detection_report,
                                       detector_aware_pgd, detector_training_set,
                                       evasion_success, feature_squeezing_score,
                                       gaussian_augmentation, learned_score, median_filter,
                                       preprocessed, strip_entropy, strip_score,
                                       strip_threshold, threshold_at_fpr)
# Model defenses; prune / unlearn (generic names) stay jaxsec.defenses.model.prune / .unlearn.
from jaxsec.defenses.model import (anomaly_index, dormant_units, fine_prune,
                                   neural_cleanse_detect, neural_cleanse_stamp,
                                   reverse_triggers)
# Training-time defenses; Deep Partition Aggregation's (Levine & Feizi 2021) names are
# prefixed dpa_ (smoothing owns certify / certified_accuracy / Certificate), interval bound
# propagation's (Gowal et al. 2018) ibp_ (adversarial owns worst_case_logits).
from jaxsec.defenses.training import (adversarial_training, at_temperature, contractive,
                                      decoupled_weight_decay, deep_contractive, deployed,
                                      distillation_objective, dpa_certified_accuracy,
                                      dpa_certify, dpa_partition, dpa_train, dpa_vote_counts,
                                      ensemble_adversarial_training, fast_adversarial_training,
                                      fgsm_adversarial_training, ibp_fit_scheduled,
                                      ibp_margin_bounds, ibp_objective, ibp_schedule,
                                      ibp_scheduled_objective, ibp_verified,
                                      ibp_verified_accuracy, ibp_worst_case_logits,
                                      input_gradient_regularization, interval_bounds,
                                      jacobian_frobenius_sq, l1_penalty, l2_penalty,
                                      linear_adversarial_training, pgd_adversarial_training,
                                      soft_labels, temperature_cross_entropy, trades,
                                      trades_attack, weight_penalty, worst_case_logits)

__all__ = [
    'data', 'inference', 'model', 'training',
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
    'empirical_mean_test', 'knn_label_sanitize', 'knn_relabel', 'noise_augment',
    'precision_recall', 'robust_pca', 'roni', 'slab', 'spectral_signatures', 'sphere',
    'Certificate', 'certified_accuracy', 'certify', 'gaussian_augmentation',
    'dpa_certified_accuracy', 'dpa_certify', 'dpa_partition', 'dpa_train', 'dpa_vote_counts',
    'ibp_fit_scheduled', 'ibp_margin_bounds', 'ibp_objective', 'ibp_schedule',
    'ibp_scheduled_objective', 'ibp_verified', 'ibp_verified_accuracy',
    'ibp_worst_case_logits', 'interval_bounds',
    'activation_clustering', 'activation_clusters', 'strip_entropy', 'strip_score',
    'strip_threshold', 'anomaly_index', 'dormant_units', 'fine_prune', 'neural_cleanse_detect',
    'neural_cleanse_stamp', 'reverse_triggers',
]
