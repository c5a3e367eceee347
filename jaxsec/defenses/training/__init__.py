"""Training-time defenses: they change how the model is trained, not how it is queried.

Each one plugs into ``jaxsec.train.fit`` / ``fit_many``. Loss transformations map a
training objective (``objective(apply_fn, params, x, y, key) -> [B]``, given as
``objective=``, or a per-example ``loss(logits, y)`` or its name, given as ``loss=``; see
:func:`adversarial.resolve_objective`) to a new objective, so they compose with each other:
:mod:`adversarial` (adversarial training, TRADES), :mod:`regularizers` (weight penalties,
contractive and input-gradient penalties) and :mod:`distillation` (defensive
distillation). :mod:`partition_aggregation` (Deep Partition Aggregation, Levine & Feizi
2021) is a training procedure: ``k`` models trained on content-hash partitions of the data,
whose plurality vote carries a certified count of tolerated poisoned training points;
:mod:`bagging` (Jia, Cao & Gong 2021) is its randomised sibling: models on bags drawn with
replacement, certified by Clopper-Pearson bounds on the vote shares.
:mod:`ibp` (interval bound propagation, Gowal et al. 2018) bounds a model's logits over an
L_inf box (verified robustness) and trains against those bounds.

``distillation`` here is the module; its objective is re-exported as
``distillation_objective``. DPA's names are prefixed ``dpa_`` (``certify`` and
``certified_accuracy`` are randomized smoothing's in :mod:`jaxsec.defenses.inference`).
IBP's names are prefixed ``ibp_`` where they could clash (``ibp_worst_case_logits``: the
affine closed form ``worst_case_logits`` is adversarial training's).
"""
from jaxsec.defenses.training import adversarial
from jaxsec.defenses.training import bagging
from jaxsec.defenses.training import distillation
from jaxsec.defenses.training import ibp
from jaxsec.defenses.training import partition_aggregation
from jaxsec.defenses.training import regularizers
from jaxsec.defenses.training.adversarial import (adversarial_training,
                                                  ensemble_adversarial_training,
                                                  fast_adversarial_training,
                                                  fgsm_adversarial_training,
                                                  linear_adversarial_training,
                                                  pgd_adversarial_training, resolve_objective,
                                                  trades, trades_attack, worst_case_logits)
from jaxsec.defenses.training.distillation import (at_temperature, deployed, distillation as
                                                   distillation_objective, soft_labels,
                                                   temperature_cross_entropy)
from jaxsec.defenses.training.ibp import (
    fit_scheduled as ibp_fit_scheduled, ibp_objective, ibp_schedule, interval_bounds,
    margin_bounds as ibp_margin_bounds, scheduled_objective as ibp_scheduled_objective,
    verified as ibp_verified, verified_accuracy as ibp_verified_accuracy,
    worst_case_logits as ibp_worst_case_logits)
from jaxsec.defenses.training.partition_aggregation import (
    certified_accuracy as dpa_certified_accuracy, certify as dpa_certify,
    partition as dpa_partition, train as dpa_train, vote_counts as dpa_vote_counts)
from jaxsec.defenses.training.regularizers import (contractive, decoupled_weight_decay,
                                                   deep_contractive,
                                                   input_gradient_regularization,
                                                   jacobian_frobenius_sq, l1_penalty,
                                                   l2_penalty, weight_penalty)

__all__ = [
    'adversarial', 'distillation', 'ibp', 'partition_aggregation', 'regularizers',
    'adversarial_training', 'ensemble_adversarial_training', 'fast_adversarial_training',
    'fgsm_adversarial_training', 'linear_adversarial_training', 'pgd_adversarial_training',
    'resolve_objective', 'trades', 'trades_attack', 'worst_case_logits',
    'at_temperature', 'deployed', 'distillation_objective', 'soft_labels',
    'temperature_cross_entropy',
    'dpa_certified_accuracy', 'dpa_certify', 'dpa_partition', 'dpa_train', 'dpa_vote_counts',
    'ibp_fit_scheduled', 'ibp_margin_bounds', 'ibp_objective', 'ibp_schedule',
    'ibp_scheduled_objective', 'ibp_verified', 'ibp_verified_accuracy',
    'ibp_worst_case_logits', 'interval_bounds',
    'contractive', 'decoupled_weight_decay', 'deep_contractive',
    'input_gradient_regularization', 'jacobian_frobenius_sq', 'l1_penalty', 'l2_penalty',
    'weight_penalty',
]
