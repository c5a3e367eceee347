"""Config of experiments/crypto_overhead.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.key_bits = 2048
  c.scale_bits = 32                 # Paillier fixed-point resolution 2^-32
  c.timing_values = 200             # values per Paillier micro-benchmark
  c.num_clients = 10
  c.rounds = 10
  c.local_steps = 5
  c.learning_rate = 0.5
  c.update_max_abs = 64.0           # declared public range of a client delta
  c.input_max_abs = 64.0            # declared range of an inference input
  c.inference_queries = 40
  c.shamir_values = 1_000_000
  c.shamir_threshold = 3
  c.shamir_parties = 5
  c.sharing_scale_bits = 16
  c.additive_parties = 3
  c.secagg_lengths = (31, 100_000)
  c.secagg_threshold = 6


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.key_bits = 512
  c.timing_values = 10
  c.rounds = 2
  c.inference_queries = 5
  c.shamir_values = 10_000
  c.secagg_lengths = (31, 1000)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='crypto_overhead', default=_default,
                    variants={'smoke': _smoke})
