"""jaxsec.federated: federated learning in one place (survey §2.3, §3).

* :mod:`fedavg`: federated averaging as one vmapped program per round; client partitions
  (IID, Dirichlet label skew).
* :mod:`aggregators`: Byzantine-robust aggregation rules (Krum, Bulyan, trimmed mean,
  coordinate / geometric median, norm bounding; FLTrust, centered clipping, bucketing, FLAME,
  FoolsGold), ``fn(updates [K, ...]) -> update`` or a ``StatefulAggregator``.
* :mod:`byzantine`: Byzantine clients (update and data attacks; DBA).
* :mod:`model_poisoning`: optimised attacks on robust rules (Fang et al. 2020, min-max /
  min-sum of Shejwalkar & Houmansadr 2021).
* :mod:`dp`: DP-FedAvg hooks (client clipping, server noise) and user-level accounting.
* :mod:`secure_aggregation`: Bonawitz et al. secure aggregation with pairwise masks
  (its secret sharing is :mod:`jaxsec.crypto`'s).
* :mod:`distributed_dp`: distributed DP, Skellam noise added by the clients and summed by
  secure aggregation modulo ``2^k`` (Kairouz et al. 2021; Agarwal et al. 2021).

Layering: ``federated`` builds on ``privacy`` (clipping, noise, accounting), ``crypto``
and ``train``; nothing in ``privacy`` or ``defenses`` imports it.
"""
from jaxsec.federated import aggregators
from jaxsec.federated import byzantine
from jaxsec.federated import distributed_dp
from jaxsec.federated import dp
from jaxsec.federated import fedavg
from jaxsec.federated import model_poisoning
from jaxsec.federated import secure_aggregation
from jaxsec.federated.aggregators import (StatefulAggregator, aggregator, bucketing, bulyan,
                                          centered_clipping, centered_clipping_momentum,
                                          coordinate_median, flame, fltrust, foolsgold,
                                          geometric_median, krum, norm_bounding, trimmed_mean)
from jaxsec.federated.byzantine import (alie, alie_z_max, backdoor, dba, gaussian_noise, ipm,
                                        label_flip, model_replacement, sign_flip)
from jaxsec.federated.model_poisoning import (fang_krum, fang_trimmed_mean, min_max,
                                              min_sum)
from jaxsec.federated.distributed_dp import DistributedSkellam
from jaxsec.federated.dp import DPFedAvgAccount
from jaxsec.federated.fedavg import (FedAvg, FedAvgResult, RoundInfo, client_index_lists,
                                     client_key, dirichlet_partition, iid_partition,
                                     label_distribution, label_skew, make_fedavg, run)
from jaxsec.federated.secure_aggregation import secure_sum

__all__ = [
    'aggregators', 'byzantine', 'distributed_dp', 'dp', 'fedavg', 'model_poisoning',
    'secure_aggregation',
    'StatefulAggregator', 'aggregator', 'bucketing', 'bulyan', 'centered_clipping',
    'centered_clipping_momentum', 'coordinate_median', 'flame', 'fltrust', 'foolsgold',
    'geometric_median', 'krum', 'norm_bounding', 'trimmed_mean',
    'alie', 'alie_z_max', 'backdoor', 'dba', 'gaussian_noise', 'ipm', 'label_flip',
    'model_replacement', 'sign_flip', 'fang_krum', 'fang_trimmed_mean', 'min_max', 'min_sum',
    'DistributedSkellam', 'DPFedAvgAccount',
    'FedAvg', 'FedAvgResult', 'RoundInfo', 'client_index_lists', 'client_key',
    'dirichlet_partition', 'iid_partition', 'label_distribution', 'label_skew',
    'make_fedavg', 'run',
    'secure_sum',
]
