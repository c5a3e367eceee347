"""jaxsec.federated: federated learning in one place (survey §2.3, §3).

* :mod:`fedavg`: federated averaging as one vmapped program per round; client partitions
  (IID, Dirichlet label skew).
* :mod:`aggregators`: Byzantine-robust aggregation rules (Krum, Bulyan, trimmed mean,
  coordinate / geometric median, norm bounding), ``fn(updates [K, ...]) -> update``.
* :mod:`byzantine`: Byzantine clients (update and data attacks).
* :mod:`dp`: DP-FedAvg hooks (client clipping, server noise) and user-level accounting.
* :mod:`secure_aggregation`: Bonawitz et al. secure aggregation with pairwise masks
  (its secret sharing is :mod:`jaxsec.crypto`'s).

Layering: ``federated`` builds on ``privacy`` (clipping, noise, accounting), ``crypto``
and ``train``; nothing in ``privacy`` or ``defenses`` imports it.
"""
from jaxsec.federated import aggregators
from jaxsec.federated import byzantine
from jaxsec.federated import dp
from jaxsec.federated import fedavg
from jaxsec.federated import secure_aggregation
from jaxsec.federated.aggregators import (aggregator, bulyan, coordinate_median,
                                          geometric_median, krum, norm_bounding, trimmed_mean)
from jaxsec.federated.byzantine import (alie, alie_z_max, backdoor, gaussian_noise, ipm,
                                        label_flip, model_replacement, sign_flip)
from jaxsec.federated.dp import DPFedAvgAccount
from jaxsec.federated.fedavg import (FedAvg, FedAvgResult, RoundInfo, client_index_lists,
                                     client_key, dirichlet_partition, iid_partition,
                                     label_distribution, label_skew, make_fedavg, run)
from jaxsec.federated.secure_aggregation import secure_sum

__all__ = [
    'aggregators', 'byzantine', 'dp', 'fedavg', 'secure_aggregation',
    'aggregator', 'bulyan', 'coordinate_median', 'geometric_median', 'krum',
    'norm_bounding', 'trimmed_mean',
    'alie', 'alie_z_max', 'backdoor', 'gaussian_noise', 'ipm', 'label_flip',
    'model_replacement', 'sign_flip',
    'DPFedAvgAccount',
    'FedAvg', 'FedAvgResult', 'RoundInfo', 'client_index_lists', 'client_key',
    'dirichlet_partition', 'iid_partition', 'label_distribution', 'label_skew',
    'make_fedavg', 'run',
    'secure_sum',
]
