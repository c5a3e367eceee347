"""Config of experiments/poisoning.py. Variants: ``full`` (the default), ``smoke``."""
import ml_collections

from experiments.configs import base
from experiments.poisoning import STUDIES


def _default(c: ml_collections.ConfigDict) -> None:
  c.studies = STUDIES
  # label flipping
  c.flip_datasets = ('digits', 'breast_cancer')
  c.flip_digit_pair = (7, 1)
  c.flip_fractions = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)
  c.flip_C = 1.0
  c.flip_random_seeds = 3
  c.flip_subset = 0             # 0 = whole training split
  c.alfa_iters = 50             # at most; ALFA stops when its LP returns the same flips
  c.reg_C = 0.01                # regularised SVM (stronger L2) under the same flips
  c.noise_sigma = 0.5           # noise-injection augmentation (standardised features)
  c.noise_copies = 2
  c.sanitize_flip_fraction = 0.2
  c.knn_k = 10
  c.knn_eta = 0.5
  c.roni_base = 20
  c.roni_trials = 5
  c.trusted_fraction = 0.2      # of the training split: the defender's clean validation
  # Biggio et al. 2012: 100 training points, a linear SVM with C=1, normalised gradient
  # steps of 0.05 (at most 500) on pixels in [0, 1] (the authors' MNIST script), averaged over
  # runs (random train / validation draws). 'digits' is scikit-learn's 8x8 digits (a pair has
  # ~360 images: 100 / biggio_val / the rest for test; 50 steps of 0.5, the same path
  # length, 10x cheaper, one-point error within a percentage point of it); 'fashion_mnist' is
  # the paper's 28x28 setting on Fashion-MNIST pairs (100 / 500 from the training split,
  # the pair's whole test split for test); 'fashion_mnist_7x7' the same pairs and draws
  # mean-pooled to 7x7 (the resolution control: only the image size differs).
  c.biggio_datasets = ('digits', 'fashion_mnist', 'fashion_mnist_7x7')
  c.biggio_pairs = ((7, 1), (9, 8), (4, 0))
  c.biggio_fmnist_pairs = ((1, 4), (5, 8), (2, 3))  # clean error 2-5% at n=100, C=1
  c.biggio_train = 100
  c.biggio_val = 130
  c.biggio_fmnist_val = 500
  c.biggio_fmnist_test = 0      # 0 = every test image of the pair
  c.biggio_runs = 5
  c.biggio_points = 10
  c.biggio_fmnist_points = 3
  c.biggio_C = (1.0, 10.0)
  c.biggio_fmnist_C = (1.0,)
  c.biggio_fmnist_7x7_C = (1.0, 16.0)  # 16 = 784/49: pooling divides |x|^2 by >= 16
  c.biggio_steps = 50
  c.biggio_step_size = 0.5
  c.biggio_fmnist_steps = 500
  c.biggio_fmnist_step_size = 0.05
  # bilevel
  c.bilevel_train = 300
  c.bilevel_val = 300
  c.bilevel_budgets = (0.01, 0.02, 0.05, 0.1)
  c.bilevel_steps = 20
  c.bilevel_step_size = 0.5
  c.logreg_l2 = 1e-2
  c.logreg_newton_steps = 10
  c.mlp_hidden = 32
  c.mlp_steps = 100
  c.mlp_lr = 0.5
  c.mlp_momentum = 0.5
  c.mlp_eval_seeds = 3
  c.bilevel_learners = ('logreg', 'mlp')
  # backdoor
  c.backdoor_dataset = 'fashion_mnist'
  c.backdoor_train = 6000
  c.backdoor_test = 2000
  c.backdoor_fractions = (0.01, 0.05)
  c.backdoor_sanitize_fraction = 0.01
  c.backdoor_target = 0
  c.backdoor_size = 3
  c.backdoor_hidden = 128
  c.backdoor_epochs = 5
  c.backdoor_lr = 1e-3
  c.backdoor_batch = 128
  c.backdoor_pca_rank = 10
  c.backdoor_retrain = True     # retrain on each sanitiser's kept set
  # centroid
  c.centroid_dim = 5
  c.centroid_window = 100
  c.centroid_points = 300
  c.centroid_target_radii = 3.0
  c.centroid_mix = (0.1, 0.3, 1.0)
  c.centroid_stream = 400
  c.mean_test_window = 20
  c.mean_test_alpha = 0.01
  # signature
  c.sig_vocab = 200
  c.sig_innocuous = 1000
  c.sig_worms = 100
  c.sig_background = 0.05
  c.sig_coverage = 0.9
  c.sig_fractions = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.flip_datasets = ('breast_cancer',)
  c.flip_fractions = (0.0, 0.2)
  c.flip_random_seeds = 1
  c.flip_subset = 80
  c.alfa_iters = 2
  c.roni_base = 10
  c.roni_trials = 1
  c.biggio_datasets = ('digits', 'fashion_mnist_7x7')
  c.biggio_pairs = ((7, 1),)
  c.biggio_fmnist_pairs = ((1, 4),)
  c.biggio_train = 40
  c.biggio_val = 40
  c.biggio_fmnist_val = 40
  c.biggio_fmnist_test = 200
  c.biggio_runs = 2
  c.biggio_points = 1
  c.biggio_fmnist_points = 1
  c.biggio_C = (10.0,)
  c.biggio_fmnist_7x7_C = (16.0,)
  c.biggio_steps = 3
  c.biggio_fmnist_steps = 3
  c.bilevel_train = 60
  c.bilevel_val = 40
  c.bilevel_budgets = (0.05,)
  c.bilevel_steps = 2
  c.mlp_steps = 5
  c.mlp_eval_seeds = 1
  c.bilevel_learners = ('mlp',)
  c.backdoor_dataset = 'digits_images'
  c.backdoor_train = 300
  c.backdoor_test = 200
  c.backdoor_fractions = (0.1,)
  c.backdoor_sanitize_fraction = 0.1
  c.backdoor_size = 2
  c.backdoor_hidden = 16
  c.backdoor_epochs = 1
  c.backdoor_batch = 64
  c.backdoor_pca_rank = 3
  c.backdoor_retrain = False
  c.backdoor_fractions = ()
  c.centroid_window = 20
  c.centroid_points = 30
  c.centroid_mix = (0.5,)
  c.centroid_stream = 60
  c.mean_test_window = 5
  c.sig_innocuous = 100
  c.sig_worms = 20
  c.sig_fractions = (0.0, 0.2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='poisoning', default=_default,
                    variants={'smoke': _smoke})
