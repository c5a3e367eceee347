"""Model zoo (Flax Linen), looked up by name.

A model is a function ``apply_fn(params, x) -> logits``; the modules here are one way to get
one (``module.apply``). Nothing in ``jaxsec.attacks`` or ``jaxsec.defenses`` depends on Flax.
Models with hidden layers take ``penultimate=True`` to return the activations that feed the
head instead of the logits (:func:`feature_fn`).

>>> import jax, jax.numpy as jnp
>>> model = get('cnn', num_classes=10)
>>> params = init(model, jax.random.key(0), (1, 28, 28, 1))
>>> model.apply(params, jnp.zeros((2, 28, 28, 1))).shape
(2, 10)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsec import _checks


def _flatten(x):
  return x.reshape((x.shape[0], -1))


def max_pool_2x2(x):
  """2x2 max-pooling with stride 2 and VALID padding (``nn.max_pool(x, (2, 2), (2, 2))``),
  written as a reshape + max: same values, and its gradient avoids XLA's
  select-and-scatter, which is ~3x slower on CPU (this matters for every attack step)."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LogisticRegression(nn.Module):
  """Multinomial logistic regression: logits = W x + b on the flattened input.

  With ``num_classes=1`` it is binary logistic regression (one logit, class 1 when > 0).
  """
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes, name='linear')(_flatten(x))


class LinearSVM(nn.Module):
  """Linear SVM: one score per class (one-vs-rest), trained with ``losses.hinge``.

  With ``num_classes=1`` it is the binary SVM f(x) = w.x + b (class 1 when f > 0).
  """
  num_classes: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes, name='linear')(_flatten(x))


class MLP(nn.Module):
  """Fully connected ReLU network with optional dropout."""
  num_classes: int = 10
  hidden: Sequence[int] = (256, 128)
  dropout: float = 0.0
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    x = _flatten(x)
    for i, h in enumerate(self.hidden):
      x = self.activation(nn.Dense(h, name=f'dense{i}')(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if penultimate:
      return x
    return nn.Dense(self.num_classes, name='head')(x)


class CNN(nn.Module):
  """The reference FMNIST CNN: two 3x3 conv layers (32, 64 channels), each followed by
  ReLU and 2x2 max-pooling, a 128-unit dense layer and the head; optional dropout before
  the head. About 420k parameters on 28x28x1 inputs. ``kernel_size=5, dense=1024`` gives
  the larger MNIST CNN of Madry et al. 2018 (3.3M parameters).
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  dense: int = 128
  dropout: float = 0.0
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    for i, f in enumerate(self.features):
      x = nn.Conv(f, (self.kernel_size, self.kernel_size), padding='SAME', name=f'conv{i}')(x)
      x = self.activation(x)
      x = max_pool_2x2(x)
    x = _flatten(x)
    x = self.activation(nn.Dense(self.dense, name='dense')(x))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if penultimate:
      return x
    return nn.Dense(self.num_classes, name='head')(x)


class _ResBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    # GroupNorm instead of BatchNorm: no mutable batch statistics, so the model stays a pure
    # apply_fn(params, x), per-example gradients (DP-SGD) stay per-example, and vmap over
    # many models needs no state handling.
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding='SAME', use_bias=False)(x)
    y = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(y))
    y = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False)(y)
    y = nn.GroupNorm(num_groups=min(8, self.features))(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A small pre-activation-free ResNet for CIFAR-10 (ResNet-8/14/20 style, GroupNorm)."""
  num_classes: int = 10
  widths: Sequence[int] = (16, 32, 64)
  blocks_per_stage: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    x = nn.Conv(self.widths[0], (3, 3), padding='SAME', use_bias=False)(x)
    x = nn.relu(nn.GroupNorm(num_groups=min(8, self.widths[0]))(x))
    for s, w in enumerate(self.widths):
      for b in range(self.blocks_per_stage):
        x = _ResBlock(w, strides=2 if (s > 0 and b == 0) else 1)(x)
    x = jnp.mean(x, axis=(1, 2))
    if penultimate:
      return x
    return nn.Dense(self.num_classes)(x)


_TEMPERED_ACTIVATIONS = {'tanh': nn.tanh, 'relu': nn.relu}


class TemperedCNN(nn.Module):
  """The small CNN of the DP-SGD literature for MNIST / Fashion-MNIST (26,010 parameters).

  Papernot, Thakurta, Song, Chien, Erlingsson, "Tempered Sigmoid Activations for Deep
  Learning with Differential Privacy" (AAAI 2021), Table 1, also the end-to-end CNN of
  Tramer & Boneh, "Differentially Private Learning Needs Better Features" (ICLR 2021):
  conv 16 8x8 /2 (SAME-like padding 3/4), max-pool 2x2 /1, conv 32 4x4 /2 VALID, max-pool
  2x2 /1, dense 32, dense ``num_classes``. ``activation`` is 'tanh' (the tempered sigmoid
  the paper recommends under DP) or 'relu'.
  """
  num_classes: int = 10
  activation: str = 'tanh'

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    if self.activation not in _TEMPERED_ACTIVATIONS:
      raise ValueError(f'activation={self.activation!r}; expected one of '
                       f'{tuple(_TEMPERED_ACTIVATIONS)}.')
    act = _TEMPERED_ACTIVATIONS[self.activation]
    x = act(nn.Conv(16, (8, 8), strides=2, padding=((3, 4), (3, 4)), name='conv0')(x))
    x = nn.max_pool(x, (2, 2), strides=(1, 1))
    x = act(nn.Conv(32, (4, 4), strides=2, padding='VALID', name='conv1')(x))
    x = nn.max_pool(x, (2, 2), strides=(1, 1))
    x = _flatten(x)
    x = act(nn.Dense(32, name='dense')(x))
    if penultimate:
      return x
    return nn.Dense(self.num_classes, name='head')(x)


_REGISTRY: dict[str, type[nn.Module]] = {
    'logreg': LogisticRegression,
    'svm': LinearSVM,
    'mlp': MLP,
    'cnn': CNN,
    'resnet': ResNet,
    'tempered_cnn': TemperedCNN,
}


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get(name: str, **kwargs: Any) -> nn.Module:
  """Returns the model called ``name`` (one of :func:`names`) built with ``kwargs``."""
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model name={name!r}; expected one of {names()}.')
  if 'num_classes' in kwargs:
    _checks.check_int('num_classes', kwargs['num_classes'], minimum=1)
  if 'dropout' in kwargs:
    _checks.check_float('dropout', kwargs['dropout'], minimum=0.0, maximum=1.0,
                        strict_max=True)
  if name == 'tempered_cnn' and kwargs.get('activation', 'tanh') not in _TEMPERED_ACTIVATIONS:
    raise ValueError(f"activation={kwargs['activation']!r}; expected one of "
                     f'{tuple(_TEMPERED_ACTIVATIONS)}.')
  return _REGISTRY[name](**kwargs)


def init(model: nn.Module, key: jax.Array, input_shape: Sequence[int]) -> Any:
  """Initialises ``model`` for inputs of ``input_shape`` (batch dimension included)."""
  return model.init(key, jnp.zeros(tuple(input_shape), jnp.float32))


def logits_fn(model: nn.Module, params: Any) -> Callable[[jax.Array], Any]:
  """The closure ``x -> logits`` that white-box attacks take (inference mode)."""
  return lambda x: model.apply(params, x)


def feature_fn(model: nn.Module, params: Any) -> Callable[[jax.Array], Any]:
  """The closure ``x -> penultimate activations [B, d]`` (inference mode): the input of the
  classification head, after its activation, for the models that have hidden layers (MLP,
  CNN, ResNet, TemperedCNN: ``model.apply(params, x, penultimate=True)``). Backdoor defenses
  read it (activation clustering, spectral signatures, fine-pruning); ``model.apply(params,
  x)`` stays ``(params, x) -> logits``."""
  if isinstance(model, (LogisticRegression, LinearSVM)):
    raise ValueError(f'model={type(model).__name__} has no hidden layer (no penultimate '
                     'activations).')
  return lambda x: model.apply(params, x, penultimate=True)
