"""Low-rank fusion (LMF): hand values, equivalence with TFN, parameter count, memory."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


def test_low_rank_matches_a_hand_computed_float64_value():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
    fa, fb = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 2, 2))  # [r, d + 1, C]
    weights, bias = np.array([0.5, -2.0]), np.array([0.1, 0.2])
    expected = np.zeros((3, 2))
    for n in range(3):
        ea, eb = np.append(a[n], 1.0), np.append(b[n], 1.0)
        for r in range(2):
            expected[n] += weights[r] * (ea @ fa[r]) * (eb @ fb[r])
        expected[n] += bias
    params = {"factors": [fa, fb], "rank_weights": weights, "bias": bias}
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        np.testing.assert_allclose(F.low_rank_tensor(params, (a, b)), expected, rtol=1e-12)
        uniform = {"factors": params["factors"], "bias": params["bias"]}
        expected_uniform = F.low_rank_tensor(
            {**uniform, "rank_weights": jnp.ones(2, jnp.float64)}, (a, b)
        )
        np.testing.assert_allclose(F.low_rank_tensor(uniform, (a, b)), expected_uniform)


@pytest.mark.parametrize("append", ["last", "first"])
def test_lmf_with_enough_rank_reproduces_tfn_with_that_tensor(append):
    """A kernel of CP rank 2, given to LMF with rank 3 (one spare component), matches TFN."""
    rng = np.random.default_rng(1)
    in_dims, out_dim, cp_rank = (3, 2, 4), 2, 2
    cp = [rng.normal(size=(cp_rank, d + 1, out_dim)) for d in in_dims]
    kernel = np.einsum("rak,rbk,rck->abck", *cp)  # CP rank ≤ 2 per output
    xs = tuple(rng.normal(size=(5, d)) for d in in_dims)
    bias = rng.normal(size=out_dim)
    with jax.enable_x64(True):
        spare = [np.concatenate([f, rng.normal(size=(1, *f.shape[1:]))]) for f in cp]
        params = {
            "factors": [jnp.asarray(f) for f in spare],
            "rank_weights": jnp.asarray([1.0, 1.0, 0.0]),
            "bias": jnp.asarray(bias),
        }
        lmf = F.low_rank_tensor(params, xs, append=append)
        tfn = F.tensor({"kernel": jnp.asarray(kernel)}, xs, append=append) + bias[None]
        np.testing.assert_allclose(lmf, tfn, rtol=1e-10)
        np.testing.assert_allclose(F.low_rank_to_tensor(params), kernel, rtol=1e-10)


def test_module_equals_tfn_with_its_rebuilt_kernel():
    op = fusion.create("low_rank_tensor", (4, 3), 5, rank=6, rngs=nnx.Rngs(2))
    keys = jax.random.split(jax.random.key(0), 2)
    xs = (jax.random.normal(keys[0], (8, 4)), jax.random.normal(keys[1], (8, 3)))
    params = op.functional_params()
    tfn = F.tensor({"kernel": F.low_rank_to_tensor(params)}, xs) + params["bias"][None]
    np.testing.assert_allclose(op(xs), tfn, rtol=1e-4, atol=1e-5)


def test_rebuilt_kernel_for_many_modalities():
    # 18 modalities: more than the letters an einsum spec beside "r" and "z" could name
    in_dims = (1,) * 17 + (2,)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        params = F.init_low_rank_tensor(jax.random.key(0), in_dims, 2, rank=3)
        params["factors"] = [f * 3.0 for f in params["factors"]]  # entries of order 1
        params["rank_weights"] = jnp.asarray(rng.normal(size=3))
        xs = tuple(rng.normal(size=(4, d)) for d in in_dims)
        kernel = F.low_rank_to_tensor(params)
        assert kernel.shape == (2,) * 17 + (3, 2)
        tfn = F.tensor({"kernel": kernel}, xs) + params["bias"][None]
        np.testing.assert_allclose(tfn, F.low_rank_tensor(params, xs), rtol=1e-9)


@pytest.mark.parametrize("rank_weights, extra", [("learned", 1), ("uniform", 0)])
def test_parameter_count_is_linear_in_the_widths(rank_weights, extra):
    in_dims, out_dim, rank = (3, 4, 5), 6, 3
    op = fusion.create(
        "low_rank_tensor",
        in_dims,
        out_dim,
        rank=rank,
        rank_weights=rank_weights,
        rngs=nnx.Rngs(0),
    )
    count = sum(x.size for x in jax.tree.leaves(nnx.state(op, nnx.Param)))
    assert count == rank * sum(d + 1 for d in in_dims) * out_dim + extra * rank + out_dim


def test_compiled_memory_stays_far_below_one_full_tensor_per_example():
    in_dims, out_dim, rank, batch = (256, 256, 256), 8, 4, 4
    params = jax.eval_shape(
        lambda: F.init_low_rank_tensor(jax.random.key(0), in_dims, out_dim, rank=rank)
    )
    xs = tuple(jax.ShapeDtypeStruct((batch, d), jnp.float32) for d in in_dims)

    def loss(params, xs):
        return jnp.sum(F.low_rank_tensor(params, xs) ** 2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
    memory = compiled.memory_analysis()
    used = memory.temp_size_in_bytes + memory.output_size_in_bytes
    one_tensor = math.prod(d + 1 for d in in_dims) * 4  # bytes of one float32 Π(d_m+1)
    assert used < one_tensor / 100, (used, one_tensor)


def test_bad_rank_and_rank_weights_are_rejected():
    with pytest.raises(ValueError, match="rank must be a positive int, got 0"):
        fusion.create("low_rank_tensor", (2, 2), 1, rank=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rank_weights='softmax' is not one of"):
        fusion.create("low_rank_tensor", (2, 2), 1, rank_weights="softmax", rngs=nnx.Rngs(0))
