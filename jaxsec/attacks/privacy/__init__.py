"""Privacy attacks: membership inference, model inversion, attribute and property inference,
model extraction, gradient inversion (survey §2.5-2.6).

Membership inference scores follow one convention, larger = member; evaluate them with
``jaxsec.metrics`` (ROC, AUC, TPR at fixed FPR). Shadow models of every attack are trained as
one ``jaxsec.train.fit_many`` program.
"""
from jaxsec.attacks.privacy.extraction import Counter
from jaxsec.attacks.privacy.extraction import ExtractionResult
from jaxsec.attacks.privacy.extraction import extract_logistic_binary
from jaxsec.attacks.privacy.extraction import extract_softmax_regression
from jaxsec.attacks.privacy.extraction import jacobian_extraction
from jaxsec.attacks.privacy.extraction import knockoff_extraction
from jaxsec.attacks.privacy.extraction import linear_logits
from jaxsec.attacks.privacy.extraction import retrain_extraction
from jaxsec.attacks.privacy.gradient_inversion import GradientInversionResult
from jaxsec.attacks.privacy.gradient_inversion import batch_gradient
from jaxsec.attacks.privacy.gradient_inversion import dlg
from jaxsec.attacks.privacy.gradient_inversion import idlg_labels
from jaxsec.attacks.privacy.gradient_inversion import match_batch
from jaxsec.attacks.privacy.gradient_inversion import total_variation
from jaxsec.attacks.privacy.inversion import AttributeInference
from jaxsec.attacks.privacy.inversion import attribute_inference
from jaxsec.attacks.privacy.inversion import gaussian_blur
from jaxsec.attacks.privacy.inversion import InversionOutput
from jaxsec.attacks.privacy.inversion import model_inversion
from jaxsec.attacks.privacy.lira import LiraStats
from jaxsec.attacks.privacy.lira import lira_fit
from jaxsec.attacks.privacy.lira import lira_offline_scores
from jaxsec.attacks.privacy.lira import lira_online_scores
from jaxsec.attacks.privacy.lira import lira_scores
from jaxsec.attacks.privacy.lira import shadow_confidences
from jaxsec.attacks.privacy.membership import SCORES
from jaxsec.attacks.privacy.membership import augmentation_robustness_scores
from jaxsec.attacks.privacy.membership import calibrate_threshold
from jaxsec.attacks.privacy.membership import confidence_score
from jaxsec.attacks.privacy.membership import cross_entropy_loss
from jaxsec.attacks.privacy.membership import entropy_score
from jaxsec.attacks.privacy.membership import gap_scores
from jaxsec.attacks.privacy.membership import logit_confidence
from jaxsec.attacks.privacy.membership import loss_score
from jaxsec.attacks.privacy.membership import modified_entropy_score
from jaxsec.attacks.privacy.membership import noise_robustness_scores
from jaxsec.attacks.privacy.membership import score
from jaxsec.attacks.privacy.membership import threshold_predict
from jaxsec.attacks.privacy.membership import translations
from jaxsec.attacks.privacy.membership import true_class_confidence_score
from jaxsec.attacks.privacy.membership import yeom_threshold
from jaxsec.attacks.privacy.property_inference import MetaClassifier
from jaxsec.attacks.privacy.property_inference import fit_meta_classifier
from jaxsec.attacks.privacy.property_inference import meta_scores
from jaxsec.attacks.privacy.property_inference import parameter_features
from jaxsec.attacks.privacy.property_inference import property_masks
from jaxsec.attacks.privacy.shadow import ShokriAttack
from jaxsec.attacks.privacy.shadow import attack_features
from jaxsec.attacks.privacy.shadow import complementary_membership
from jaxsec.attacks.privacy.shadow import fit_shokri_attack
from jaxsec.attacks.privacy.shadow import shadow_keys
from jaxsec.attacks.privacy.shadow import shokri_masks
from jaxsec.attacks.privacy.shadow import shokri_records
from jaxsec.attacks.privacy.shadow import shokri_scores
from jaxsec.attacks.privacy.shadow import train_shadow_models

__all__ = (
    # membership inference: scores and threshold attacks (Yeom 2018, Song-Mittal 2021)
    'logit_confidence', 'loss_score', 'cross_entropy_loss', 'confidence_score',
    'true_class_confidence_score', 'entropy_score', 'modified_entropy_score', 'SCORES',
    'score', 'yeom_threshold', 'threshold_predict', 'calibrate_threshold',
    # label-only (Choquette-Choo 2021)
    'translations', 'augmentation_robustness_scores', 'noise_robustness_scores',
    'gap_scores',
    # shadow models and Shokri 2017
    'shadow_keys', 'train_shadow_models', 'complementary_membership', 'shokri_masks', 'shokri_records',
    'attack_features', 'ShokriAttack', 'fit_shokri_attack', 'shokri_scores',
    # LiRA (Carlini 2022)
    'LiraStats', 'lira_fit', 'lira_online_scores', 'lira_offline_scores', 'lira_scores',
    'shadow_confidences',
    # model inversion and attribute inference (Fredrikson 2015 / 2014)
    'InversionOutput', 'model_inversion', 'gaussian_blur', 'AttributeInference', 'attribute_inference',
    # model extraction (Tramer 2016, Papernot 2017, KnockoffNets)
    'Counter', 'extract_logistic_binary', 'extract_softmax_regression', 'linear_logits',
    'retrain_extraction', 'ExtractionResult', 'knockoff_extraction',
    'jacobian_extraction',
    # property inference (Ateniese 2015)
    'property_masks', 'parameter_features', 'MetaClassifier', 'fit_meta_classifier',
    'meta_scores',
    # gradient inversion (DLG 2019, iDLG 2020)
    'batch_gradient', 'idlg_labels', 'total_variation', 'GradientInversionResult', 'dlg',
    'match_batch',
)
