"""EMAP of tensor-fusion models: the kernel is contracted with each row of the grid once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion, interactions, models


def tensor_model(dims, out=6, head=True, append="last", seed=0):
    rngs = nnx.Rngs(seed)
    op = fusion.create("tensor", dims, out, append_one=append, rngs=rngs)
    classifier = nnx.Sequential(jax.nn.relu, nnx.Linear(out, 3, rngs=rngs)) if head else None
    encoders = [nnx.Linear(7, dims[0], rngs=rngs), *([None] * (len(dims) - 1))]
    return models.FusionModel(encoders, op, classifier)


def inputs(seed, n, widths):
    keys = jax.random.split(jax.random.key(seed), len(widths))
    return tuple(jax.random.normal(k, (n, d)) for k, d in zip(keys, widths, strict=True))


@pytest.mark.parametrize(
    ("dims", "head", "append", "block_size"),
    [((4, 3), True, "last", 5), ((4, 3), False, "first", None), ((4, 3, 2), True, "last", 7)],
)
def test_row_shared_contraction_equals_emap_of_the_whole_model(dims, head, append, block_size):
    model = tensor_model(dims, head=head, append=append)
    xs = inputs(1, 13, (7, *dims[1:]))
    pure = models.as_pure(model)
    want = interactions.emap_decompose(lambda batch: pure.apply(pure.params, batch), xs)
    got = interactions.emap_model(model, xs, decompose=True, block_size=block_size)
    np.testing.assert_allclose(got.original, want.original, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.projected, want.projected, rtol=1e-5, atol=1e-5)
    for a, b in zip(got.marginals, want.marginals, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(want.residual)) > 1e-2  # the model does use interactions


def test_each_row_meets_the_kernel_once():
    # one block holding every row, so the compiled cost counts the whole pass
    model, xs = tensor_model((16, 16), out=32, head=False), inputs(2, 64, (7, 16))
    pure = models.as_pure(model)
    encoded = tuple(pure.encode(pure.params, xs))

    def flops(f):
        cost = jax.jit(f).lower(encoded).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    def per_pair(hs):  # the whole contraction on every pair
        return interactions.emap(lambda batch: pure.head(pure.params, batch), hs, block_size=64)

    def per_row(hs):  # the model's encoders are the identity here
        fused = models.FusionModel([None, None], model.fusion)
        return interactions.emap_model(fused, hs, block_size=64)

    np.testing.assert_allclose(per_row(encoded), per_pair(encoded), rtol=1e-5, atol=1e-5)
    # 2·17·17·32 multiply-adds per pair against 2·17·32 (+ the same sums): ≥ 5× fewer
    assert flops(per_row) < flops(per_pair) / 5


def test_bfloat16_contraction_with_float32_accumulation():
    model, xs = tensor_model((4, 3)), inputs(3, 17, (7, 3))
    exact = interactions.emap_model(model, xs)
    low = interactions.emap_model(model, xs, compute_dtype=jnp.bfloat16)
    assert low.dtype == jnp.float32
    error = np.max(np.abs(low - exact))
    assert 0 < error < 2e-2 * np.max(np.abs(exact))


def test_monte_carlo_on_a_tensor_model_uses_the_pairwise_head():
    model, xs = tensor_model((4, 3)), inputs(4, 12, (7, 3))
    exact = interactions.emap_model(model, xs)
    sampled = interactions.emap_model(
        model, xs, decompose=True, num_samples=64, key=jax.random.key(0)
    )
    z = (sampled.projected - exact) / sampled.projected_stderr
    assert np.max(np.abs(z)) < 5
