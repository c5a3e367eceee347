"""Config of experiments/dp_audit.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.delta = 1e-5
  c.dim = 5                  # real features
  c.num_real = 200
  c.l2_norm_clip = 1.0
  c.canary_scale = 10.0      # canary gradient norm / C
  c.learning_rate = 0.5
  c.claimed_epsilons = (1.0, 2.0, 4.0, 8.0)
  c.regimes = [{'name': 'full_batch', 'q': 1.0, 'steps': 10},
               {'name': 'poisson', 'q': 0.1, 'steps': 50}]
  c.runs = 2000              # per side, multi-run audit
  c.num_thresholds = 20
  c.one_run_canaries = 1000
  c.one_run_guesses = 100    # k "in" guesses and k "out" guesses


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.claimed_epsilons = (2.0,)
  c.runs = 200
  c.num_real = 50
  c.regimes = [{'name': 'full_batch', 'q': 1.0, 'steps': 3}]
  c.one_run_canaries = 100
  c.one_run_guesses = 20


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='dp_audit', default=_default,
                    variants={'smoke': _smoke})
