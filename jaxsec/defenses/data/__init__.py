"""Data defenses: they act on the training set before any model is trained.

Each sanitiser maps a data set ``(x, y)`` (or features of it) to a boolean keep-mask
``[N]`` (``True`` = keep); :func:`precision_recall` scores a mask against the
``poison_mask`` that a poisoning attack reports. See :mod:`sanitize` for the methods and
their papers (sphere / slab, k-NN label sanitisation, RONI, spectral signatures, robust
PCA, the empirical-mean drift test). :func:`noise_augment` (noise injection) is the one
data defense that returns an augmented data set instead of a mask.
:mod:`activation_clustering` (Chen et al. 2019) clusters the penultimate activations of
each class against backdoors, beside spectral signatures.
"""
from jaxsec.defenses.data import activation_clustering as activation_clustering_lib
from jaxsec.defenses.data import sanitize
from jaxsec.defenses.data.activation_clustering import (activation_clustering,
                                                        activation_clusters)
from jaxsec.defenses.data.sanitize import (empirical_mean_test, knn_label_sanitize,
                                           knn_relabel, noise_augment, precision_recall,
                                           robust_pca, roni, slab,
                                           spectral_signature_scores, spectral_signatures,
                                           sphere)

__all__ = ['activation_clustering_lib', 'sanitize', 'activation_clustering',
           'activation_clusters', 'empirical_mean_test', 'knn_label_sanitize', 'knn_relabel',
           'noise_augment', 'precision_recall', 'robust_pca', 'roni', 'slab',
           'spectral_signature_scores', 'spectral_signatures', 'sphere']
