"""The package imports and a two-layer model round-trips through init/apply."""

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
from nnkit.layers import Dense, Relu


def test_mlp_init_apply_shapes_and_values():
    model = nnkit.serial(Dense(8, name="hidden"), Relu(), Dense(3))
    out_shape, params, state = model.init(jax.random.key(0), (4,))
    assert out_shape == (3,)
    assert state == {}
    assert set(params) == {"hidden", "dense_0"}
    x = jnp.arange(8.0).reshape(2, 4)
    y, _ = model.apply(params, state, x)
    h = np.maximum(np.asarray(x) @ params["hidden"]["w"] + params["hidden"]["b"], 0)
    np.testing.assert_allclose(y, h @ params["dense_0"]["w"] + params["dense_0"]["b"], rtol=1e-5)
