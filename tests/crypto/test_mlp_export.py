"""MLP export (jaxsec.crypto.mlp_export): the exported layers' forward pass is the Flax
MLP's, with the square activation."""
import jax
import numpy as np
import pytest

from jaxsec import models
from jaxsec.crypto import mlp_export


def test_export_matches_flax_mlp_with_square_activation():
  model = models.get('mlp', num_classes=3, hidden=(5, 4), activation=mlp_export.square)
  params = models.init(model, jax.random.key(0), (1, 2, 3))
  x = np.asarray(jax.random.uniform(jax.random.key(1), (6, 2, 3)))
  layers = mlp_export.mlp_layers(params)
  assert [w.shape for w, _ in layers] == [(6, 5), (5, 4), (4, 3)]
  np.testing.assert_allclose(mlp_export.mlp_forward(layers, x, 'square'),
                             np.asarray(model.apply(params, x)), rtol=1e-5, atol=1e-5)
  assert not np.allclose(mlp_export.mlp_forward(layers, x, 'relu'),
                         np.asarray(model.apply(params, x)), atol=1e-3)


def test_bad_params_and_inputs():
  with pytest.raises(ValueError, match='"head"'):
    mlp_export.mlp_layers({'params': {'conv0': {}}})
  with pytest.raises(ValueError, match=r"\['conv0', 'head'\]"):
    mlp_export.mlp_layers({'params': {'conv0': {}, 'head': {}}})
  layers = [mlp_export.Dense(np.ones((2, 1)), np.zeros(1))]
  with pytest.raises(ValueError, match='expected a batch'):
    mlp_export.mlp_forward(layers, np.ones(2))
  with pytest.raises(ValueError, match="activation='tanh'"):
    mlp_export.mlp_forward(layers, np.ones((1, 2)), 'tanh')
