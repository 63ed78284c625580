"""Multiplicative fusion: hand values and the plain elementwise product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


def test_multiplicative_matches_a_hand_computed_float64_value():
    rng = np.random.default_rng(0)
    dims, width, out = (2, 3, 1), 4, 2
    xs = tuple(rng.normal(size=(3, d)) for d in dims)
    kernels = [rng.normal(size=(d, width)) for d in dims]
    biases = [rng.normal(size=width) for _ in dims]
    out_kernel, out_bias = rng.normal(size=(width, out)), rng.normal(size=out)
    expected = np.ones((3, width))
    for x, w, b in zip(xs, kernels, biases, strict=True):
        expected *= x @ w + b
    expected = expected @ out_kernel + out_bias
    params = {"kernels": kernels, "biases": biases, "out_kernel": out_kernel, "out_bias": out_bias}
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        np.testing.assert_allclose(F.multiplicative(params, xs), expected, rtol=1e-12)


def test_identity_projections_give_the_elementwise_product():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0, 12.0).reshape(2, 3)
    params = {"kernels": [jnp.eye(3)] * 2, "biases": [jnp.zeros(3)] * 2}
    np.testing.assert_allclose(F.multiplicative(params, (a, b)), a * b)


def test_without_hidden_dim_the_product_is_the_output():
    op = fusion.create("multiplicative", (3, 4), 5, rngs=nnx.Rngs(0))
    assert set(op.functional_params()) == {"kernels", "biases"}
    assert op((jnp.ones((2, 3)), jnp.ones((2, 4)))).shape == (2, 5)


def test_multiplicative_needs_two_modalities_and_a_positive_hidden_dim():
    with pytest.raises(ValueError, match="multiplicative needs at least 2 modalities"):
        fusion.create("multiplicative", (3,), 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden_dim must be a positive int, got 0"):
        fusion.create("multiplicative", (3, 3), 2, hidden_dim=0, rngs=nnx.Rngs(0))
