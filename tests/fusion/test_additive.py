"""Additive fusion: hand values and the absence of any cross-modal interaction."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


def test_additive_matches_a_hand_computed_float64_value():
    a, b = np.array([[1.0, 2.0]]), np.array([[3.0]])
    params = {
        "kernels": [np.array([[1.0, -1.0], [0.5, 2.0]]), np.array([[4.0, 0.25]])],
        "bias": np.array([0.1, -0.2]),
    }
    # z = [1*1 + 2*0.5, 1*(-1) + 2*2] + [3*4, 3*0.25] + b = [2, 3] + [12, 0.75] + b
    expected = np.array([[14.1, 3.55]])
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        z = F.additive(params, (a, b))
        assert z.dtype == jnp.float64
        np.testing.assert_allclose(z, expected, rtol=1e-14)


def test_additive_has_no_interaction_term():
    """On a grid F[i, j] = f(a_i, b_j) every double difference vanishes."""
    op = fusion.create("additive", (3, 2), 4, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(0), 2)
    a, b = jax.random.normal(keys[0], (5, 3)), jax.random.normal(keys[1], (6, 2))
    grid = jax.vmap(lambda x: jax.vmap(lambda y: op((x, y)))(b))(a)  # [5, 6, 4]
    double_difference = grid - grid[:1] - grid[:, :1] + grid[:1, :1]
    np.testing.assert_allclose(double_difference, 0.0, atol=1e-5)


def test_single_modality_is_a_linear_layer():
    op = fusion.create("additive", (3,), 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 3))
    params = op.functional_params()
    np.testing.assert_allclose(op((x,)), x @ params["kernels"][0] + params["bias"][None], rtol=1e-6)
