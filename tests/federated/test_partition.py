"""Client partitions: IID shards and Dirichlet label skew (Hsu, Qi, Brown 2019)."""
import jax
import numpy as np
import pytest

from jaxsec.federated import fedavg


def _labels(n=2000, c=10, seed=0):
  return np.random.RandomState(seed).randint(0, c, n).astype(np.int32)


def test_iid_partition_covers_every_example_once():
  clients = fedavg.iid_partition(jax.random.key(0), 103, 10)
  allidx = np.concatenate(clients)
  np.testing.assert_array_equal(np.sort(allidx), np.arange(103))
  sizes = [c.size for c in clients]
  assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize('alpha', [0.1, 0.5, 10.0])
def test_dirichlet_partition_covers_every_example_once(alpha):
  y = _labels()
  clients = fedavg.dirichlet_partition(jax.random.key(1), y, 20, alpha=alpha)
  assert len(clients) == 20
  allidx = np.concatenate(clients)
  np.testing.assert_array_equal(np.sort(allidx), np.arange(y.size))   # disjoint + covering
  assert min(c.size for c in clients) >= 1
  # deterministic by key, different for another key
  again = fedavg.dirichlet_partition(jax.random.key(1), y, 20, alpha=alpha)
  assert all(np.array_equal(a, b) for a, b in zip(clients, again, strict=True))
  other = fedavg.dirichlet_partition(jax.random.key(2), y, 20, alpha=alpha)
  assert not all(np.array_equal(a, b) for a, b in zip(clients, other, strict=True))


def test_dirichlet_label_skew_grows_as_alpha_falls():
  y = _labels(5000)
  skews = []
  for alpha in (1000.0, 10.0, 1.0, 0.1):
    s = np.mean([fedavg.label_skew(y, fedavg.dirichlet_partition(
        jax.random.key(k), y, 10, alpha=alpha), 10) for k in range(3)])
    skews.append(s)
  assert all(a < b for a, b in zip(skews, skews[1:], strict=False)), skews
  assert skews[0] < 0.05 and skews[-1] > 0.5, skews
  # IID shards are nearly balanced
  iid = fedavg.label_skew(y, fedavg.iid_partition(jax.random.key(0), y.size, 10), 10)
  assert iid < 0.1


def test_label_distribution_rows_are_histograms():
  y = np.array([0, 0, 1, 2, 2, 2], np.int32)
  d = fedavg.label_distribution(y, [np.array([0, 1, 2]), np.array([3, 4, 5])], 3)
  np.testing.assert_allclose(d, [[2 / 3, 1 / 3, 0], [0, 0, 1]])
  # one class per client: TV distance to the pooled (1/3, 1/6, 1/2)
  assert fedavg.label_skew(y, [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])], 3
                           ) == pytest.approx(np.mean([2 / 3, 5 / 6, 1 / 2]))


def test_partition_errors_name_the_value():
  y = _labels(100)
  with pytest.raises(ValueError, match='alpha=0.0'):
    fedavg.dirichlet_partition(jax.random.key(0), y, 5, alpha=0.0)
  with pytest.raises(ValueError, match='num_clients=101'):
    fedavg.dirichlet_partition(jax.random.key(0), y, 101, alpha=1.0)
  with pytest.raises(ValueError, match='min_size=30'):
    fedavg.dirichlet_partition(jax.random.key(0), y, 5, alpha=1.0, min_size=30)
  with pytest.raises(ValueError, match='min_size=15'):   # feasible in count, not at alpha
    fedavg.dirichlet_partition(jax.random.key(0), y, 5, alpha=0.01, min_size=15,
                               max_tries=5)
  with pytest.raises(ValueError, match='label 10'):
    fedavg.dirichlet_partition(jax.random.key(0), np.append(y, 10).astype(np.int32), 5,
                               alpha=1.0, num_classes=10)
  with pytest.raises(ValueError, match='num_clients=0'):
    fedavg.iid_partition(jax.random.key(0), 10, 0)
  with pytest.raises(ValueError, match=r'clients\[1\] has no examples'):
    fedavg.client_index_lists([np.array([0, 1]), np.array([], np.int64)], 5)
  with pytest.raises(ValueError, match=r'clients\[0\] has indices in \[0, 7\]'):
    fedavg.client_index_lists([np.array([0, 7])], 5)
