"""Input validation shared by every jaxsec factory and entry point.

Every check raises ``ValueError`` (or ``TypeError`` for wrong kinds) with a message that
names the argument, the offending value and what was expected. Nothing is silently
clipped, cast or dropped. Checks on values that may be traced (``eps`` swept under
``jax.vmap``) are skipped when the value is a tracer: only concrete values can be checked
at factory time.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value: Any) -> bool:
  """True when ``value`` is a Python / NumPy number or a concrete (non-traced) array."""
  return not isinstance(value, jax.core.Tracer)


def _describe(value: Any) -> str:
  r = repr(value)
  return r if len(r) <= 80 else r[:77] + '...'


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f'{name}={_describe(value)} is not one of {choices}.')
  return value


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f'{name}={_describe(value)} must be an integer.')
  value = int(value)
  if minimum is not None and value < minimum:
    raise ValueError(f'{name}={value} must be >= {minimum}.')
  if maximum is not None and value > maximum:
    raise ValueError(f'{name}={value} must be <= {maximum}.')
  return value


def check_counts(**counts: Any) -> None:
  """Checks that each of ``counts`` (steps, iterations, batch or memory sizes) is an int
  >= 1, naming the first that is not."""
  for name, value in counts.items():
    check_int(name, value, minimum=1)


def check_float(name: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, strict_min: bool = False,
                strict_max: bool = False, allow_traced: bool = True) -> Any:
  """Checks a real scalar; returns it unchanged (tracers pass through unchecked)."""
  if not is_concrete(value):
    if allow_traced:
      return value
    raise ValueError(f'{name} must be a concrete (static) number, got a traced value.')
  arr = np.asarray(value)
  if arr.shape != () or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(
      arr.dtype, np.complexfloating) or isinstance(value, bool):
    raise ValueError(f'{name}={_describe(value)} must be a real scalar.')
  v = float(arr)
  if not np.isfinite(v):
    raise ValueError(f'{name}={v} must be finite.')
  if minimum is not None and (v < minimum or (strict_min and v == minimum)):
    op = '>' if strict_min else '>='
    raise ValueError(f'{name}={v} must be {op} {minimum}.')
  if maximum is not None and (v > maximum or (strict_max and v == maximum)):
    op = '<' if strict_max else '<='
    raise ValueError(f'{name}={v} must be {op} {maximum}.')
  return value


def check_hashable(where: str, /, **static: Any) -> None:
  """Raises ValueError naming the first of ``static`` that is not hashable; ``where``
  says why it must be (e.g. 'it is a static argument of the compiled epoch': jax's jit
  cache keys on static arguments' hashes)."""
  for name, value in static.items():
    try:
      hash(value)
    except TypeError:
      raise ValueError(f'{name}={value!r} is not hashable; expected a hashable value '
                       f'({where}).') from None


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> Any:
  return check_float(name, value, minimum=0.0, strict_min=not allow_zero)


def check_probability(name: str, value: Any) -> Any:
  return check_float(name, value, minimum=0.0, maximum=1.0)


def check_bounds(bounds: Sequence[float], name: str = 'bounds') -> tuple[float, float]:
  """Checks an input-domain box ``(low, high)`` with ``low < high``."""
  try:
    lo, hi = bounds
    lo, hi = float(lo), float(hi)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={_describe(bounds)} must be a pair (low, high) of numbers.'
                     ) from None
  if not (np.isfinite(lo) and np.isfinite(hi)) or not lo < hi:
    raise ValueError(f'{name}=({lo}, {hi}) must satisfy low < high, both finite.')
  return lo, hi


def check_array(name: str, x: Any, *, ndim: int | Sequence[int] | None = None,
                dtype_kind: str | None = None, finite: bool = False) -> Any:
  """Checks rank, dtype kind ('f' float, 'i' integer) and, for concrete arrays, finiteness."""
  if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
    raise ValueError(f'{name} must be an array, got {type(x).__name__}.')
  if ndim is not None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in allowed:
      raise ValueError(f'{name} has shape {tuple(x.shape)} (rank {x.ndim}); expected rank '
                       f'{" or ".join(map(str, allowed))}.')
  # jnp.issubdtype knows bfloat16 / float8 (ml_dtypes) are floating; np.issubdtype does not.
  if dtype_kind == 'f' and not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{name} has dtype {x.dtype}; expected a floating dtype.')
  if dtype_kind == 'i' and not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(f'{name} has dtype {x.dtype}; expected an integer dtype.')
  if finite and is_concrete(x):
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f'{name} contains {int(bad.sum())} non-finite values '
                       f'(first at index {idx}: {np.asarray(x)[idx]}).')
  return x


def check_labels(name: str, y: Any, num_classes: int | None = None,
                 batch: int | None = None) -> Any:
  """Checks integer labels of shape [batch] in [0, num_classes)."""
  check_array(name, y, ndim=1, dtype_kind='i')
  if batch is not None and y.shape[0] != batch:
    raise ValueError(f'{name} has {y.shape[0]} labels but the inputs have batch {batch}.')
  if num_classes is not None and is_concrete(y) and y.size:
    arr = np.asarray(y)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
      bad = arr[(arr < 0) | (arr >= num_classes)][0]
      raise ValueError(f'{name} contains label {int(bad)}; expected labels in '
                       f'[0, {num_classes}).')
  return y


def check_in_bounds(name: str, x: Any, bounds: tuple[float, float], tol: float = 1e-6):
  """For concrete inputs, checks that ``x`` lies inside the box (no silent clipping)."""
  if is_concrete(x) and x.size:
    arr = np.asarray(x)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < bounds[0] - tol or hi > bounds[1] + tol:
      raise ValueError(f'{name} has values in [{lo:g}, {hi:g}], outside bounds '
                       f'{tuple(bounds)}.')
  return x
