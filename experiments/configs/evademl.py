"""Config of experiments/evademl.py. Variants: ``full`` (the default) and ``smoke``.

Simulated PDF-like binary features (the paper's Contagio corpus and Cuckoo oracle are not
bundled); the GP settings are the paper's (population 48, 20 generations, mutation 0.1).
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  c.n_functional = 6               # /JavaScript, /OpenAction, /JS, /AA, /Launch, /EmbeddedFile
  c.n_malicious_ind = 30
  c.n_benign_ind = 60
  c.n_neutral = 104
  c.rates = ml_collections.ConfigDict({
      'functional_in_malicious': 0.5, 'functional_in_benign': 0.03,
      'malicious_in_malicious': 0.5, 'malicious_in_benign': 0.1,
      'benign_in_malicious': 0.15, 'benign_in_benign': 0.5,
      'neutral': (0.05, 0.3)})
  c.n_train = 4000
  c.n_test = 1000
  c.logreg_l2 = 1e-2
  c.mlp_hidden = (64,)
  c.mlp_lr = 0.1
  c.mlp_steps = 300
  c.n_seeds = 100                  # detected malicious test files attacked per classifier
  c.pop_size = 48
  c.max_generations = 20
  c.mutation_rate = 0.1


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.n_neutral = 20
  c.n_train, c.n_test = 400, 100
  c.mlp_hidden = (8,)
  c.mlp_steps = 50
  c.n_seeds = 4
  c.pop_size = 16
  c.max_generations = 12


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='evademl', default=_default, variants={'smoke': _smoke})
