"""Config of experiments/smoothing.py. Variants: ``full`` (the default) and ``smoke``.

Deviation from Cohen et al. (2019), Sec. 4: ``n = 10_000`` estimation draws (paper
100,000) on ``n_test = 100`` test images (paper 500), and 2 training epochs per sigma, so
that the full run fits about 10-15 minutes on an idle 2-core CPU (2 x 2 epochs of 60,000
images, then 2 x 100 x 10,100 noisy forward passes); set ``n=100000,n_test=500`` for the
paper's settings on an accelerator. ``n0 = 100`` and ``alpha = 0.001`` are the paper's.
"""
import ml_collections

from experiments.configs import base


def _default(c: ml_collections.ConfigDict) -> None:
  base.defense_cnn(c, n_test=100, epochs=2)   # 2 Gaussian-augmented epochs per sigma
  c.sigmas = (0.25, 0.5)
  c.radii = (0.0, 0.25, 0.5, 1.0)
  c.n0 = 100                       # selection draws (paper: 100)
  c.n = 10_000                     # estimation draws (paper: 100,000)
  c.alpha = 0.001                  # failure probability (paper: 0.001)
  c.cert_batch = 500               # noisy inputs per forward pass
  c.block = 10                     # images per certify call (one progress line each)


def _smoke(c: ml_collections.ConfigDict) -> None:
  c.model_kwargs = ml_collections.ConfigDict({'features': (4,), 'dense': 16})
  c.n_train, c.n_test, c.epochs, c.batch_size = 256, 8, 1, 64
  c.sigmas = (0.25,)
  c.n0, c.n, c.alpha = 10, 200, 0.01
  c.cert_batch, c.block = 100, 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return base.build(arg, study='smoothing', default=_default, variants={'smoke': _smoke})
