"""jaxsec.federated: federated averaging as one vmapped program per round, client
partitions (IID, Dirichlet label skew) and Byzantine clients (survey §2.3, §3).

Aggregators live in ``jaxsec.defenses.robust_aggregation``; the DP-FedAvg hooks in
``jaxsec.privacy.fedavg``; secure aggregation in ``jaxsec.privacy.secure_aggregation``.
"""
from jaxsec.federated import byzantine
from jaxsec.federated import fedavg
from jaxsec.federated.byzantine import (alie, alie_z_max, backdoor, gaussian_noise, ipm,
                                        label_flip, model_replacement, sign_flip)
from jaxsec.federated.fedavg import (FedAvg, FedAvgResult, RoundInfo, client_index_lists,
                                     client_key, dirichlet_partition, iid_partition,
                                     label_distribution, label_skew, make_fedavg, run)

__all__ = [
    'byzantine', 'fedavg',
    'alie', 'alie_z_max', 'backdoor', 'gaussian_noise', 'ipm', 'label_flip',
    'model_replacement', 'sign_flip',
    'FedAvg', 'FedAvgResult', 'RoundInfo', 'client_index_lists', 'client_key',
    'dirichlet_partition', 'iid_partition', 'label_distribution', 'label_skew',
    'make_fedavg', 'run',
]
