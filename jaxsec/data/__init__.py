"""Data: ``load(name, split)``, data set ``info``, deterministic disjoint partitions."""
from jaxsec.data.loaders import DataUnavailableError
from jaxsec.data.loaders import DatasetInfo
from jaxsec.data.loaders import info
from jaxsec.data.loaders import load
from jaxsec.data.loaders import names
from jaxsec.data.partition import balanced_membership
from jaxsec.data.partition import masks_from_indices
from jaxsec.data.partition import partition
from jaxsec.data.partition import random_membership
from jaxsec.data.partition import shards
