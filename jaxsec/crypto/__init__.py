"""jaxsec.crypto: the survey's encryption defenses (§3.4(1)) for data and gradients in
transit -- homomorphic encryption and secret sharing.

* Additively homomorphic encryption (Paillier 1999, via ``phe``): encrypted arrays with an
  explicit fixed-point scale and overflow checks, encrypted FedAvg aggregation (Aono et al.
  2017) and encrypted linear inference (the linear layer of CryptoNets, Gilad-Bachrach et
  al. 2016): :mod:`~jaxsec.crypto.paillier`.
* Shamir ``t``-of-``n`` threshold sharing over ``GF(p)``, ``p < 2^31``, and the Shamir
  secure sum: :mod:`~jaxsec.crypto.shamir` (also of one element of ``GF(2^521 - 1)``,
  :func:`~jaxsec.crypto.shamir.share_int`, the key sharing of secure aggregation).
* Additive ``n``-of-``n`` sharing and the SPDZ-style (linear, passive) secure sum:
  :mod:`~jaxsec.crypto.additive`.
* Encrypted inference of a square-activation MLP on CKKS ciphertexts (TenSEAL; CryptoNets'
  network family, 128-bit parameters checked): :mod:`~jaxsec.crypto.ckks`.
* Three-party secret-shared inference (MPyC, semi-honest, honest majority; square or ReLU
  MLP, secure argmax), each party its own process: :mod:`~jaxsec.crypto.mpc_inference`
  (the party program: ``mpc_party.py``, run as a script, never imported).
* The trained MLP's params as plain layers for both, and the plaintext reference:
  :mod:`~jaxsec.crypto.mlp_export`.
* The fixed-point codec and the prime field under them: :mod:`~jaxsec.crypto.fixed_point`,
  :mod:`~jaxsec.crypto.field`.

Secure aggregation with pairwise masks and dropout recovery (Bonawitz et al. 2017) lives in
:mod:`jaxsec.federated.secure_aggregation`. Everything here is host-side Python / NumPy (not
jitted); the sharing schemes simulate the parties of a protocol in one process, MPC inference
runs them as separate processes.
"""
from jaxsec.crypto import additive
from jaxsec.crypto import ckks
from jaxsec.crypto import field
from jaxsec.crypto import fixed_point
from jaxsec.crypto import mlp_export
from jaxsec.crypto import mpc_inference
from jaxsec.crypto import paillier
from jaxsec.crypto import shamir
from jaxsec.crypto.additive import AdditiveShare
from jaxsec.crypto.additive import secure_sum as additive_secure_sum
from jaxsec.crypto.additive import share_array as additive_share_array
from jaxsec.crypto.additive import reconstruct_array as additive_reconstruct_array
from jaxsec.crypto.ckks import ckks_context
from jaxsec.crypto.ckks import encrypted_mlp_logits
from jaxsec.crypto.mpc_inference import mpc_mlp_logits
from jaxsec.crypto.paillier import EncryptedArray
from jaxsec.crypto.paillier import decrypt_array
from jaxsec.crypto.paillier import decrypt_mean
from jaxsec.crypto.paillier import encrypt_array
from jaxsec.crypto.paillier import encrypt_update
from jaxsec.crypto.paillier import encrypted_linear
from jaxsec.crypto.paillier import encrypted_mean
from jaxsec.crypto.paillier import generate_keypair as paillier_keypair
from jaxsec.crypto.paillier import homomorphic_sum
from jaxsec.crypto.shamir import ShamirShare
from jaxsec.crypto.shamir import secure_sum as shamir_secure_sum
from jaxsec.crypto.shamir import share_array as shamir_share_array
from jaxsec.crypto.shamir import reconstruct_array as shamir_reconstruct_array

__all__ = [
    'additive', 'ckks', 'field', 'fixed_point', 'mlp_export', 'mpc_inference', 'paillier',
    'shamir', 'ckks_context', 'encrypted_mlp_logits', 'mpc_mlp_logits',
    'AdditiveShare', 'additive_secure_sum', 'additive_share_array',
    'additive_reconstruct_array',
    'EncryptedArray', 'decrypt_array', 'decrypt_mean', 'encrypt_array', 'encrypt_update',
    'encrypted_linear', 'encrypted_mean', 'paillier_keypair', 'homomorphic_sum',
    'ShamirShare', 'shamir_secure_sum', 'shamir_share_array', 'shamir_reconstruct_array',
]
