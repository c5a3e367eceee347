"""Settings shared by every study config, and the ``get_config(arg)`` argument parser.

A config file ``experiments/configs/<study>.py`` defines ``get_config(arg)`` as

    def get_config(arg=None):
      return base.build(arg, study='dp_sgd', default=_default,
                        variants={'smoke': _smoke, 'mnist': _mnist})

``_default(c)`` fills the study's fields on the base config (the ``full`` variant); each
named variant is a function that edits that default (the flax examples way: one default,
variants derived from it). ``arg`` is ``'<variant>,key=value,...'``: ``'smoke'``,
``'smoke,seed=3'``, ``'table.eps=0.2'`` (no variant: ``full``). Values are Python literals
(numbers, tuples, booleans, None) or else strings; an unknown variant or key is a
``ValueError`` naming it.

Every study (``experiments/<study>.py``, ``run(config, workdir)``; benchmarks under
``experiments/benchmarks/``) runs the same way, e.g.

    python -m experiments.run --config=experiments/configs/<study>.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/<study>.py:smoke --workdir=/tmp/s

(``main`` writes to ``--workdir=workdir/main``). Any field is set with ``:smoke,key=value``
or ``--config.key=value``; each named variant edits the ``full`` one.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Mapping, Sequence

import ml_collections

ConfigFn = Callable[[ml_collections.ConfigDict], None]


def get_config() -> ml_collections.ConfigDict:
  """The fields every study config has (the sweep launcher reads ``resources``)."""
  c = ml_collections.ConfigDict()
  c.study = ''            # module experiments.<study> with run(config, workdir) -> dict
  c.variant = 'full'
  c.seed = 0
  c.resources = ml_collections.ConfigDict({'cpus': 1.0, 'gpus': 0.0})
  return c


def reference_cnn(c: ml_collections.ConfigDict) -> None:
  """The reference Fashion-MNIST CNN and its training, shared by the evasion studies
  (evasion_suite; blackbox's oracle; physical's target)."""
  c.dataset = 'fashion_mnist'
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict({'features': (32, 64), 'dense': 128})
  c.bounds = (0.0, 1.0)
  c.batch_size = 128
  c.num_epochs = 2
  c.learning_rate = 1e-3
  c.train_subset = 0                 # 0 = the whole training split


def defense_cnn(c: ml_collections.ConfigDict, *, features=(32, 64), dense: int = 128,
                batch_size: int = 128, learning_rate: float = 1e-3, n_train: int = 0,
                n_test: int = 0, epochs: int = 2) -> None:
  """The CNN and training fields of the FMNIST studies on ``experiments/defense_common``
  (``load_fmnist(n_train, n_test)``, 0 = the whole split; Adam; ``epochs``)."""
  c.model_kwargs = ml_collections.ConfigDict({'features': tuple(features), 'dense': dense})
  c.batch_size = batch_size
  c.learning_rate = learning_rate
  c.n_train = n_train
  c.n_test = n_test
  c.epochs = epochs


def reference_cnn_smoke(c: ml_collections.ConfigDict) -> None:
  """:func:`reference_cnn` at smoke size (a tiny CNN, one epoch on 2048 images)."""
  c.model_kwargs = ml_collections.ConfigDict({'features': (4, 8), 'dense': 32})
  c.num_epochs = 1
  c.train_subset = 2048


def _split_top_level(arg: str) -> list[str]:
  """Splits on commas outside brackets and quotes (``eps=(0.1, 0.2),seed=3``)."""
  parts, depth, quote, cur = [], 0, None, []
  for ch in arg:
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == ',' and depth == 0:
      parts.append(''.join(cur))
      cur = []
      continue
    cur.append(ch)
  parts.append(''.join(cur))
  return [p.strip() for p in parts if p.strip()]


def parse_value(raw: str) -> Any:
  """``raw`` as a Python literal (number, tuple, boolean, None) when it is one, else the
  string itself."""
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def parse_arg(arg: str | None, *, variants: Sequence[str], default: str = 'full'
              ) -> tuple[str, dict[str, Any]]:
  """``(variant, {dotted_key: value})`` from ``'smoke,seed=3'``.

  At most one bare token, which must be one of ``variants``; the rest are ``key=value``.
  """
  variant, overrides = None, {}
  for part in _split_top_level(arg or ''):
    if '=' in part:
      key, raw = part.split('=', 1)
      overrides[key.strip()] = parse_value(raw.strip())
    elif part not in variants:
      raise ValueError(f'Unknown variant {part!r} in config arg {arg!r}; expected one of '
                       f'{list(variants)} or key=value overrides.')
    elif variant is not None:
      raise ValueError(f'Config arg {arg!r} names two variants ({variant!r}, {part!r}).')
    else:
      variant = part
  return variant or default, overrides


def field_parent(c: ml_collections.ConfigDict, parts: Sequence[str],
                 missing: Callable[[int, list[str]], Exception]) -> ml_collections.ConfigDict:
  """The node of ``c`` that holds the dotted field ``parts`` (``['a', 'b']`` for ``a.b``).

  Where ``parts[i]`` is not a field of the node reached, raises ``missing(i, known)``,
  ``known`` that node's sorted field names (``[]`` where it is not a ``ConfigDict``).
  """
  node = c
  for i, p in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      raise missing(i, sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict)
                    else [])
    if i < len(parts) - 1:
      node = node[p]
  return node


def coerce(old: Any, value: Any) -> Any:
  """``value`` for a field that holds ``old``: a list becomes a tuple for a tuple field and
  an int (not a bool) a float for a float field (what JSON and literals give)."""
  if isinstance(old, tuple) and isinstance(value, list):
    return tuple(value)
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def apply_overrides(c: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
  """Sets each dotted ``key`` of ``overrides`` on ``c`` in place; a key that is not in the
  config is a ``ValueError`` naming it and the known keys (a typo must not silently run
  the default)."""
  for key, value in overrides.items():
    _override(c, key, value)
  return c


def _override(c: ml_collections.ConfigDict, key: str, value: Any) -> None:
  parts = key.split('.')
  node = field_parent(c, parts, lambda i, known: ValueError(
      f'Config override {key!r}: field {".".join(parts[:i + 1])!r} is not in the '
      f'{c.get("study", "")!r} config; known fields there: {known}.'))
  node[parts[-1]] = coerce(node[parts[-1]], value)


def build(arg: str | None, *, study: str, default: ConfigFn,
          variants: Mapping[str, ConfigFn] | None = None, default_variant: str = 'full'
          ) -> ml_collections.ConfigDict:
  """The study's config: base fields, ``default`` (the ``full`` variant), the named
  variant's edits, then the ``key=value`` overrides of ``arg``."""
  variants = dict(variants or {})
  names = tuple(dict.fromkeys([default_variant, *variants]))
  variant, overrides = parse_arg(arg, variants=names, default=default_variant)
  c = get_config()
  c.study = study
  c.variant = variant
  default(c)
  if variant in variants:
    variants[variant](c)
  return apply_overrides(c, overrides)
