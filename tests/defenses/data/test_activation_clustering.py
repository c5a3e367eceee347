"""Activation clustering (Chen et al. 2019): planted clusters by hand, and the poisoned points
of a BadNets-backdoored digits model."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxsec import models
from jaxsec.defenses.data.activation_clustering import (activation_clustering,
                                                        activation_clusters)
from tests.defenses import backdoor_bed


def _planted(n=100, d=12, share=0.2, seed=0):
  """Two classes of Gaussian activations; class 1 holds a separated group of `share`."""
  rng = np.random.RandomState(seed)
  a = rng.randn(2 * n, d)
  y = np.repeat([0, 1], n).astype(np.int32)
  poison = np.zeros(2 * n, bool)
  poison[n:n + int(share * n)] = True
  a[poison, :3] += 6.0
  return a, y, poison


@pytest.mark.parametrize('reduce', ['ica', 'pca'])
def test_planted_group_is_the_small_cluster(reduce):
  a, y, poison = _planted()
  r = activation_clusters(a, y, num_classes=2, num_dims=4, reduce=reduce,
                          criterion='silhouette')
  assert np.array_equal(r['poison'], poison)
  assert r['flagged'].tolist() == [False, True]
  np.testing.assert_allclose(sorted(r['relative_size'][1]), [0.2, 0.8])
  # the score is one minus the relative size of the point's cluster
  np.testing.assert_allclose(r['score'][poison], 0.8)
  np.testing.assert_allclose(r['score'][100:][~poison[100:]], 0.2)
  assert r['silhouette'][1] > 0.1
  keep = activation_clustering(a, y, num_classes=2, num_dims=4, reduce=reduce,
                               criterion='silhouette')
  assert np.array_equal(keep, ~poison)


def test_criteria_on_sizes():
  a, y, poison = _planted(share=0.4)
  # 40% is above the relative-size threshold 0.35: not poison, but the smaller cluster
  rel = activation_clusters(a, y, num_classes=2, num_dims=4, criterion='relative_size')
  assert not rel['poison'][100:].any()
  small = activation_clusters(a, y, num_classes=2, num_dims=4, criterion='smaller')
  assert np.array_equal(small['poison'][100:], poison[100:])
  assert small['flagged'].all()    # 'smaller' flags a cluster in every class
  loose = activation_clusters(a, y, num_classes=2, num_dims=4, size_threshold=0.45)
  assert np.array_equal(loose['poison'][100:], poison[100:])


def test_bad_input_is_refused():
  a, y, _ = _planted()
  with pytest.raises(ValueError, match='criterion'):
    activation_clusters(a, y, num_classes=2, criterion='largest')
  with pytest.raises(ValueError, match='reduce'):
    activation_clusters(a, y, num_classes=2, reduce='tsne')
  with pytest.raises(ValueError, match='size_threshold'):
    activation_clusters(a, y, num_classes=2, size_threshold=1.5)
  with pytest.raises(ValueError, match='y'):
    activation_clusters(a, y + 1, num_classes=2)
  with pytest.raises(ValueError, match='features'):
    activation_clusters(np.full((200, 3), np.nan), y, num_classes=2)


@pytest.mark.slow
def test_separates_badnets_poison_on_digits():
  b = backdoor_bed.bed()
  feats = np.asarray(models.feature_fn(b.model, b.params)(b.x))
  r = activation_clusters(feats, b.y, num_classes=10, criterion='silhouette')
  assert roc_auc_score(b.poison, r['score']) > 0.8
  assert r['flagged'][backdoor_bed.TARGET]
  assert r['poison'][b.poison].mean() > 0.9          # recall
  assert r['poison'][~b.poison].mean() < 0.15        # clean points removed
