"""The reference CNN's Flax weights in PyTorch, for the benchmarks' PyTorch peers.

torchattacks (``attack_speed``) and ART (``blackbox_speed``) attack a PyTorch copy of the very
model jaxsec attacks: :func:`cnn` rebuilds ``models.CNN`` (conv / ReLU / 2x2 max-pool blocks,
dense, head) from the Flax parameter shapes and copies the weights; :func:`check_same_logits`
says how far its logits are from the JAX model's on a batch, and refuses a copy that differs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def cnn(params):
  """``models.CNN``'s architecture in PyTorch (NCHW), read off the Flax parameter shapes,
  weights copied; in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  nn = torch.nn
  p = params['params']
  layers, cin, side, i = [], 1, 28, 0
  while f'conv{i}' in p:
    kern = np.asarray(p[f'conv{i}']['kernel'])          # HWIO
    ks, f = kern.shape[0], kern.shape[-1]
    cin = kern.shape[2]
    conv = nn.Conv2d(cin, f, ks, padding=ks // 2)       # 'SAME' for odd kernels
    conv.weight = nn.Parameter(torch.tensor(kern.transpose(3, 2, 0, 1).copy()))
    conv.bias = nn.Parameter(torch.tensor(np.asarray(p[f'conv{i}']['bias']).copy()))
    layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
    cin, side, i = f, side // 2, i + 1
  dk = np.asarray(p['dense']['kernel'])
  dense = dk.shape[1]
  fc = nn.Linear(side * side * cin, dense)
  # Flax flattens NHWC (h, w, c); torch flattens NCHW (c, h, w): permute the rows.
  k = dk.reshape(side, side, cin, dense).transpose(2, 0, 1, 3)
  fc.weight = nn.Parameter(torch.tensor(k.reshape(-1, dense).T.copy()))
  fc.bias = nn.Parameter(torch.tensor(np.asarray(p['dense']['bias']).copy()))
  hk = np.asarray(p['head']['kernel'])
  head = nn.Linear(dense, hk.shape[1])
  head.weight = nn.Parameter(torch.tensor(hk.T.copy()))
  head.bias = nn.Parameter(torch.tensor(np.asarray(p['head']['bias']).copy()))
  return nn.Sequential(*layers, nn.Flatten(), fc, nn.ReLU(), head).eval()


def nchw(x) -> np.ndarray:
  """An NHWC batch as a new, writable, contiguous float32 NCHW array (PyTorch's layout)."""
  return np.array(np.asarray(x, np.float32).transpose(0, 3, 1, 2), order='C')   # a copy


def check_same_logits(model, logits_fn: Callable, x, *, rtol: float = 1e-4) -> float:
  """Max |torch logits - JAX logits| on the NHWC batch ``x``; raises ``ValueError`` when it
  exceeds ``rtol`` times the largest |logit| (at least 1): the copy is not the same model."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    ours = model(torch.from_numpy(nchw(x))).numpy()
  ref = np.asarray(logits_fn(x))
  diff = float(np.abs(ours - ref).max())
  tol = rtol * max(1.0, float(np.abs(ref).max()))
  if not diff <= tol:
    raise ValueError(f'the PyTorch copy of the model gives logits {diff:.3g} away from the JAX '
                     f'model (max |logit| {np.abs(ref).max():.3g}); expected at most {tol:.3g}: '
                     'the weight port does not match the architecture.')
  return diff
