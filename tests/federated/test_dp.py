"""DP-FedAvg hooks: client clipping, fixed-denominator mean, server noise std z S / (qW)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsec.federated import dp


def test_dp_fedavg_aggregate():
  updates = {'w': jnp.array([[3.0, 4.0], [0.3, 0.4], [30.0, 40.0]])}
  agg, info = dp.dp_aggregate(updates, jax.random.key(0), l2_norm_clip=1.0,
                                  noise_multiplier=0.0, expected_clients=2.0,
                                  mask=jnp.array([1, 1, 0]))
  np.testing.assert_allclose(info.norms, [5.0, 0.5, 0.0], rtol=1e-6)
  np.testing.assert_allclose(agg['w'], (np.array([0.6, 0.8]) + np.array([0.3, 0.4])) / 2,
                             rtol=1e-6)
  noisy = jax.vmap(lambda k: dp.dp_aggregate(
      updates, k, l2_norm_clip=1.0, noise_multiplier=2.0, expected_clients=2.0)[0]['w'])(
          jax.random.split(jax.random.key(1), 4000))
  np.testing.assert_allclose(np.std(np.asarray(noisy), 0), 2.0 * 1.0 / 2.0, rtol=0.05)
