"""Issue 13: federated learning has one home (jaxsec.federated) and each quantity one name."""
from __future__ import annotations

import ast
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsec
from jaxsec import defenses, federated, privacy

_OLD_MODULES = ('jaxsec.privacy.fedavg', 'jaxsec.privacy.secure_aggregation',
                'jaxsec.defenses.robust_aggregation')
# Drifted spellings of one quantity: the L2 clipping bound is `l2_norm_clip`, the noise
# multiplier `noise_multiplier`, the reported delta `delta` and the accountant `accountant`
# (as in dpsgd.train).
_DRIFTED = ('clip_norm', 'dp_clip_norm', 'dp_noise_multiplier', 'dp_delta', 'dp_accountant')


@pytest.mark.parametrize('name', _OLD_MODULES)
def test_old_federated_modules_are_gone(name):
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module(name)


def test_federated_pieces_live_under_federated():
  for name in ('dp', 'secure_aggregation', 'aggregators', 'byzantine', 'fedavg'):
    assert importlib.import_module(f'jaxsec.federated.{name}') is getattr(federated, name)
  assert federated.secure_sum is federated.secure_aggregation.secure_sum
  assert federated.DPFedAvgAccount is federated.dp.DPFedAvgAccount
  assert federated.krum is federated.aggregators.krum
  for pkg, gone in ((privacy, ('fedavg', 'secure_aggregation', 'secure_sum',
                               'DPFedAvgAccount')),
                    (defenses, ('robust_aggregation', 'robust_aggregator', 'krum'))):
    for name in gone:
      assert not hasattr(pkg, name), f'{pkg.__name__}.{name}'
      assert name not in pkg.__all__


def _parameter_and_field_names(path):
  with open(path) as f:
    tree = ast.parse(f.read(), filename=path)
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      a = node.args
      for arg in a.posonlyargs + a.args + a.kwonlyargs:
        yield arg.arg, node.lineno
    elif isinstance(node, ast.ClassDef):
      for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
          yield stmt.target.id, stmt.lineno
    elif isinstance(node, ast.Call):
      for kw in node.keywords:
        if kw.arg:
          yield kw.arg, node.lineno


def test_one_name_for_the_clipping_bound_and_the_noise_multiplier():
  root = os.path.dirname(jaxsec.__file__)
  found = []
  for dirpath, _, files in os.walk(root):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        found += [f'{os.path.relpath(path, root)}:{line} {name}'
                  for name, line in _parameter_and_field_names(path) if name in _DRIFTED]
  assert not found, found


def test_make_fedavg_takes_l2_norm_clip_and_noise_multiplier():
  fed = federated.make_fedavg(lambda p, x: x @ p['w'], client_optimizer=optax.sgd(0.1), batch_size=2,
                              local_steps=1, l2_norm_clip=1.5, noise_multiplier=0.5)
  assert (fed.l2_norm_clip, fed.noise_multiplier) == (1.5, 0.5)
  acc = fed.dp_account(num_clients=10, num_rounds=2, delta=1e-5)
  assert (acc.l2_norm_clip, acc.noise_multiplier) == (1.5, 0.5)
  data = dict(clients=federated.iid_partition(jax.random.key(0), 4, 2), num_rounds=1,
              key=jax.random.key(1))
  x, y, p0 = np.ones((4, 3), np.float32), np.zeros(4, np.int32), {'w': jnp.zeros((3, 2))}
  with pytest.raises(ValueError, match='needs delta'):   # checked before any compilation
    federated.run(fed, p0, x, y, accountant='rdp', **data)
  plain = federated.make_fedavg(lambda p, x: x @ p['w'], client_optimizer=optax.sgd(0.1),
                                batch_size=2, local_steps=1)
  with pytest.raises(ValueError, match="delta=1e-05, accountant='rdp' are for DP-FedAvg"):
    federated.run(plain, p0, x, y, delta=1e-5, accountant='rdp', **data)
  with pytest.raises(TypeError):
    federated.make_fedavg(lambda p, x: x @ p['w'], client_optimizer=optax.sgd(0.1), batch_size=2,
                          local_steps=1, dp_clip_norm=1.0)  # pylint: disable=unexpected-keyword-arg
