"""Bilinear fusion: full, MFB and MLB forms, and the multiplicative-interactions form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


def test_full_bilinear_with_linear_terms_matches_a_hand_computed_float64_value():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 2)), rng.normal(size=(3, 4))
    kernel, bias = rng.normal(size=(2, 4, 3)), rng.normal(size=3)
    lin_a, lin_b = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
    expected = np.zeros((3, 3))
    for n in range(3):
        for k in range(3):
            expected[n, k] = a[n] @ kernel[:, :, k] @ b[n] + a[n] @ lin_a[:, k]
            expected[n, k] += b[n] @ lin_b[:, k] + bias[k]
    params = {"kernel": kernel, "bias": bias, "linear_a": lin_a, "linear_b": lin_b}
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        np.testing.assert_allclose(F.bilinear(params, (a, b)), expected, rtol=1e-12)


@pytest.mark.parametrize("factorization", ["mfb", "mlb"])
def test_low_rank_forms_equal_the_full_form_with_a_rank_limited_kernel(factorization):
    rank = 2
    op = fusion.create(
        "bilinear", (5, 6), 3, rank=rank, factorization=factorization, rngs=nnx.Rngs(0)
    )
    params = op.functional_params()
    kernel = F.bilinear_kernel(params)  # [5, 6, 3]
    assert kernel.shape == (5, 6, 3)
    for k in range(3):
        assert np.linalg.matrix_rank(np.asarray(kernel[:, :, k]), tol=1e-5) == rank
    keys = jax.random.split(jax.random.key(1), 2)
    xs = (jax.random.normal(keys[0], (7, 5)), jax.random.normal(keys[1], (7, 6)))
    full = F.bilinear({"kernel": kernel, "bias": params["bias"]}, xs)
    np.testing.assert_allclose(op(xs), full, rtol=1e-4, atol=1e-5)


def test_bilinear_is_linear_in_each_modality_separately():
    op = fusion.create("bilinear", (3, 4), 2, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(0), 3)
    a1, a2 = jax.random.normal(keys[0], (2, 5, 3))
    b = jax.random.normal(keys[1], (5, 4))
    bias = op.functional_params()["bias"][None]
    lhs = op((2.0 * a1 - 3.0 * a2, b)) - bias
    rhs = 2.0 * (op((a1, b)) - bias) - 3.0 * (op((a2, b)) - bias)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-5)


def test_bilinear_takes_exactly_two_modalities():
    with pytest.raises(ValueError, match=r"bilinear takes at most 2 modalities, got 3"):
        fusion.create("bilinear", (2, 2, 2), 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"bilinear needs at least 2 modalities, got 1"):
        fusion.create("bilinear", (2,), 1, rngs=nnx.Rngs(0))


def test_bad_rank_and_factorization_are_rejected():
    with pytest.raises(ValueError, match="rank must be a positive int, got -1"):
        fusion.create("bilinear", (2, 2), 1, rank=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"factorization='cp' is not one of \('mfb', 'mlb'\)"):
        fusion.create("bilinear", (2, 2), 1, rank=2, factorization="cp", rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"factorization='mlb' needs a rank \(rank=None is the full"
    ):
        fusion.create("bilinear", (2, 2), 1, factorization="mlb", rngs=nnx.Rngs(0))
    # with a rank and no factorization, MFB
    assert (
        "p"
        not in fusion.create("bilinear", (2, 2), 1, rank=2, rngs=nnx.Rngs(0)).functional_params()
    )
