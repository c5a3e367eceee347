"""jaxsec.privacy: differential privacy by perturbation, and its audit.

* Per-example clipped gradients as a function transformation (vmap and ghost clipping):
  :func:`clipped_grad`.
* DP-SGD (Abadi et al. 2016) as an optax-compatible path whose batch sampler is its own
  accountant: :mod:`~jaxsec.privacy.sampling`, :func:`dpsgd_train`,
  :class:`AdaptiveClipping`.
* The one Gaussian noise addition of DP-SGD and DP-FedAvg: :mod:`noise`
  (:func:`add_gaussian_noise`, :func:`gaussian_privatizer`).
* DP-FTRL (Kairouz et al. 2021): tree-aggregated noise on prefix sums, no sampling or
  shuffling assumption, accounted with dp_accounting's tree events: :mod:`dpftrl`.
* BandMF (Choquette-Choo et al. 2023): banded matrix-factorization noise ``C^{-1} z``
  streamed in O(b d) memory, amplified by cyclic Poisson sampling and accounted as DP-SGD
  over ``ceil(T / b)`` steps: :mod:`banded_mf`, :class:`CyclicPoissonSampler`.
* Individual (per-example) RDP of DP-SGD from realised norms (Feldman & Zrnic 2021):
  :mod:`individual`; the privacy cost of hyperparameter tuning, best of a random number of
  runs (Papernot & Steinke 2022): :mod:`tuning`.
* Accounting and calibration with ``dp_accounting`` (RDP / PLD): :mod:`accounting`.
* Input, objective and output perturbation (CMS 2011) and the floating-point-safe
  snapping mechanism (Mironov 2012): :mod:`perturbation`, :func:`snapping_laplace`.
* Secure mode: DP noise and sampling keyed from the OS CSPRNG: :func:`secure_key`.
* PATE (2017, 2018): :mod:`pate`.
* DP-FedAvg, secure aggregation and robust aggregators live in :mod:`jaxsec.federated`
  (which builds on this package, never the reverse).
* Auditing (Jagielski 2020, Nasr 2021, Steinke 2023): :mod:`audit`.
"""
from jaxsec.privacy import accounting
from jaxsec.privacy import audit
from jaxsec.privacy import banded_mf
from jaxsec.privacy import clipping
from jaxsec.privacy import dpftrl
from jaxsec.privacy import dpsgd
from jaxsec.privacy import individual
from jaxsec.privacy import noise
from jaxsec.privacy import pate
from jaxsec.privacy import perturbation
from jaxsec.privacy import sampling
from jaxsec.privacy import tuning
from jaxsec.privacy.accounting import calibrate
from jaxsec.privacy.accounting import epsilon
from jaxsec.privacy.accounting import gaussian_sigma
from jaxsec.privacy.clipping import ClipInfo
from jaxsec.privacy.clipping import clipped_grad
from jaxsec.privacy.clipping import per_example_grads
from jaxsec.privacy.banded_mf import banded_mf_privatizer
from jaxsec.privacy.banded_mf import train as banded_mf_train
from jaxsec.privacy.dpftrl import tree_aggregation_privatizer
from jaxsec.privacy.dpftrl import train as dpftrl_train
from jaxsec.privacy.dpsgd import AdaptiveClipping
from jaxsec.privacy.dpsgd import DPResult
from jaxsec.privacy.dpsgd import make_step as dpsgd_step
from jaxsec.privacy.dpsgd import secure_key
from jaxsec.privacy.dpsgd import train as dpsgd_train
from jaxsec.privacy.noise import add_gaussian_noise
from jaxsec.privacy.noise import gaussian_privatizer
from jaxsec.privacy.perturbation import snapping_epsilon
from jaxsec.privacy.perturbation import snapping_laplace
from jaxsec.privacy.sampling import CyclicPoissonSampler
from jaxsec.privacy.sampling import FixedSizeSampler
from jaxsec.privacy.sampling import PoissonSampler
from jaxsec.privacy.sampling import ShuffleSampler

__all__ = [
    'accounting', 'audit', 'banded_mf', 'clipping', 'dpftrl', 'dpsgd', 'individual', 'noise',
    'pate',
    'perturbation', 'sampling', 'tuning', 'calibrate', 'epsilon', 'gaussian_sigma', 'ClipInfo',
    'clipped_grad',
    'per_example_grads', 'AdaptiveClipping', 'DPResult', 'gaussian_privatizer',
    'dpsgd_step', 'dpsgd_train', 'dpftrl_train', 'tree_aggregation_privatizer',
    'banded_mf_train', 'banded_mf_privatizer', 'secure_key', 'add_gaussian_noise',
    'snapping_epsilon',
    'snapping_laplace', 'CyclicPoissonSampler', 'FixedSizeSampler', 'PoissonSampler',
    'ShuffleSampler',
]
