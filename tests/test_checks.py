import jax.numpy as jnp
import numpy as np
import pytest

from jaxsec import _checks


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_floats_are_floating(dtype):
  # bfloat16 is the accelerator dtype; np.issubdtype does not know it is a float.
  _checks.check_array('x', jnp.ones((2, 3), dtype), dtype_kind='f')


def test_wrong_kind_and_non_finite_are_named():
  with pytest.raises(ValueError, match='x has dtype int32; expected a floating dtype'):
    _checks.check_array('x', jnp.ones((2,), jnp.int32), dtype_kind='f')
  with pytest.raises(ValueError, match='labels has dtype float32; expected an integer dtype'):
    _checks.check_array('labels', jnp.ones((2,), jnp.float32), dtype_kind='i')
  with pytest.raises(ValueError, match='non-finite'):
    _checks.check_array('x', np.array([1.0, np.nan], np.float32), dtype_kind='f', finite=True)
