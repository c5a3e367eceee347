"""Export of a trained MLP's ``params`` to plain NumPy layers, the input of encrypted
(:mod:`~jaxsec.crypto.ckks`) and secret-shared (:mod:`~jaxsec.crypto.mpc_inference`)
inference, and the plaintext reference forward pass they are compared with.

The network is :class:`jaxsec.models.MLP` (``models.get('mlp', hidden=..., activation=...)``):
dense layers ``dense0 .. dense{L-1}`` with an activation after each, then ``head``. The
CryptoNets activation (Gilad-Bachrach et al., "CryptoNets: Applying Neural Networks to
Encrypted Data with High Throughput and Accuracy", ICML 2016) is :func:`square`, the
lowest-degree polynomial that is not linear: it costs one ciphertext multiplication (CKKS)
or one secure multiplication (MPC), where ReLU needs a secure comparison (MPC) or a
polynomial approximation (HE). Pass it as ``models.get('mlp', activation=square)``.

>>> import numpy as np
>>> params = {'params': {'dense0': {'kernel': np.eye(2), 'bias': np.zeros(2)},
...                      'head': {'kernel': np.ones((2, 1)), 'bias': np.zeros(1)}}}
>>> layers = mlp_layers(params)
>>> mlp_forward(layers, np.array([[1.0, -2.0]]), 'square').tolist()
[[5.0]]
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxsec import _checks

__all__ = ['ACTIVATIONS', 'Dense', 'square', 'mlp_layers', 'mlp_forward', 'check_inputs']

ACTIVATIONS = ('square', 'relu')


def square(x: Any) -> Any:
  """``x * x``: the CryptoNets activation (works on NumPy and JAX arrays alike)."""
  return x * x


class Dense(NamedTuple):
  """One dense layer ``x @ kernel + bias`` as float64 NumPy arrays."""
  kernel: np.ndarray   # [d_in, d_out]
  bias: np.ndarray     # [d_out]


def mlp_layers(params: Any) -> list[Dense]:
  """The dense layers of a :class:`jaxsec.models.MLP`'s ``params``, in order (hidden layers,
  then the head), as float64 NumPy arrays.

  Raises:
    ValueError: ``params`` is not an MLP's (no ``head``, a layer name other than
      ``dense<i>`` / ``head``, or shapes that do not chain).
  """
  tree = params.get('params', params) if isinstance(params, dict) else None
  if not isinstance(tree, dict) or 'head' not in tree:
    raise ValueError(f'params must be a models.MLP params dict with a "head" layer; got '
                     f'{type(params).__name__} with keys '
                     f'{sorted(tree) if isinstance(tree, dict) else None}.')
  hidden = sorted((k for k in tree if k != 'head'), key=lambda k: (len(k), k))
  expected = [f'dense{i}' for i in range(len(hidden))]
  if hidden != expected:
    raise ValueError(f'params layers {sorted(tree)} are not an MLP\'s; expected '
                     f'{expected + ["head"]}.')
  layers = []
  for name in hidden + ['head']:
    k = np.asarray(tree[name]['kernel'], np.float64)
    b = np.asarray(tree[name]['bias'], np.float64)
    if k.ndim != 2 or b.shape != (k.shape[1],):
      raise ValueError(f'layer {name}: kernel {k.shape} and bias {b.shape} do not form a '
                       'dense layer.')
    if layers and layers[-1].kernel.shape[1] != k.shape[0]:
      raise ValueError(f'layer {name}: input size {k.shape[0]} != previous output size '
                       f'{layers[-1].kernel.shape[1]}.')
    layers.append(Dense(k, b))
  return layers


def check_inputs(layers: list[Dense], x: Any) -> np.ndarray:
  """``x`` flattened to ``[B, d_in]`` float64, checked against the first layer."""
  x = np.asarray(x, np.float64)
  if x.ndim < 2:
    raise ValueError(f'x has shape {x.shape}; expected a batch [B, ...] of inputs.')
  x = x.reshape(x.shape[0], -1)
  if x.shape[1] != layers[0].kernel.shape[0]:
    raise ValueError(f'x has {x.shape[1]} features per example; the first layer expects '
                     f'{layers[0].kernel.shape[0]}.')
  if x.shape[0] == 0:
    raise ValueError('x is an empty batch (B=0).')
  _checks.check_array('x', x, finite=True)
  return x


def mlp_forward(layers: list[Dense], x: Any, activation: str = 'square') -> np.ndarray:
  """The plaintext float64 forward pass: logits ``[B, num_classes]``."""
  _checks.check_choice('activation', activation, ACTIVATIONS)
  h = check_inputs(layers, x)
  for layer in layers[:-1]:
    h = h @ layer.kernel + layer.bias
    h = h * h if activation == 'square' else np.maximum(h, 0.0)
  return h @ layers[-1].kernel + layers[-1].bias
