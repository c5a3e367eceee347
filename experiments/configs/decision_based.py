"""Config of experiments/decision_based.py. Variants: ``full`` (the default) and ``smoke``.

The reference CNN (as experiments/smoothing.py's base model) trained 1 epoch on the whole
FMNIST training set, so that the full run fits about 15 minutes on a 2-core CPU; 50 test
images the CNN classifies correctly (from 200 random ones). Boundary Attack and RayS with
their reference defaults (Foolbox's, the authors'), one run each to 10,000 queries per image.
White-box references on the same images: C&W L2 at a reduced budget (5 x 200 Adam steps, as
experiments/blackbox.py) and the minimal L_inf eps of PGD-20 found by bisection.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.defense_cnn(c, n_test=200, epochs=1)   # n_test random images; the first n_images correct
  c.n_images = 50
  c.query_checkpoints = (100, 300, 1000, 3000, 10000)
  c.boundary = ml_collections.ConfigDict({
      'num_steps': 25000, 'spherical_step': 1e-2, 'source_step': 1e-2,
      'source_step_convergence': 1e-7, 'step_adaptation': 1.5, 'update_stats_every_k': 10,
      'init_num_tries': 1000, 'init_blend_steps': 50})
  c.rays = ml_collections.ConfigDict({'tol': 1e-3})
  # C&W L2 at a reduced budget (the reference 9 x 1000 Adam steps take too long on a CPU).
  c.cw = ml_collections.ConfigDict({'num_binary_steps': 5, 'num_steps': 200,
                                    'initial_const': 1.0, 'learning_rate': 0.05,
                                    'confidence': 0.0})
  # Minimal L_inf eps of PGD (step eps / 4, random start): bisection on [0, eps_max].
  c.pgd = ml_collections.ConfigDict({'num_steps': 20, 'eps_max': 0.3, 'bisections': 10})


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.n_train, c.n_test, c.n_images, c.batch_size = 256, 32, 4, 64
  c.query_checkpoints = (20, 60, 150)
  c.boundary.init_num_tries = 50
  c.cw.num_binary_steps, c.cw.num_steps = 2, 10
  c.pgd.num_steps, c.pgd.bisections = 5, 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='decision_based', default=_default,
                    variants={'smoke': _smoke})
