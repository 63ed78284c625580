"""EarlyFusionTransformer and BottleneckFusion: shapes, per-example outputs, padding,
modality embeddings, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import models
from tests.models.zoo import (
    KINDS,
    TRANSFORMER_SIZES,
    TRANSFORMERS,
    B,
    C,
    all_real,
    built,
    jit_call,
    normal,
)

TITLES = {"early_transformer": "EarlyFusionTransformer", "bottleneck": "BottleneckFusion"}


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("pool", ["mean", "cls"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_output_shape(name, pool, positions):
    build, make_inputs = KINDS[name]
    pure = models.as_pure(build(pool=pool, positions=positions))
    sequences = make_inputs()  # [B, T_m, d_m]
    vectors = tuple(x[:, 0] if x.ndim == 3 else x for x in sequences)  # [B, d_m]: one token
    for xs in (sequences, vectors):
        out = jax.eval_shape(pure.apply, pure.params, xs)
        assert (out.shape, out.dtype) == ((B, C), jnp.float32)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_each_output_depends_only_on_its_own_example(name):
    model, xs = built(name), KINDS[name][1]()
    changed = tuple(x.at[2].set(normal(11, x.shape[1:])) for x in xs)
    before = jit_call(model, xs, masks=all_real(xs))
    after = jit_call(model, changed, masks=all_real(xs))
    assert np.all(np.isfinite(before))
    keep = np.arange(B) != 2
    np.testing.assert_allclose(after[keep], before[keep], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[2], before[2])


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_values_at_padded_tokens_are_irrelevant(name):
    model, xs = built(name), KINDS[name][1]()
    # example b has its first b tokens padded (all of them, for a short modality)
    masks = tuple(
        jnp.arange(x.shape[1])[None, :] >= jnp.arange(B)[:, None]
        if x.ndim == 3
        else jnp.ones((B,), bool)
        for x in xs
    )
    noisy = tuple(
        x if x.ndim == 2 else jnp.where(mask[..., None], x, 10.0 * normal(12, x.shape))
        for x, mask in zip(xs, masks, strict=True)
    )
    y = jit_call(model, xs, masks=masks)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(jit_call(model, noisy, masks=masks), y, rtol=1e-5, atol=1e-6)
    unmasked = jit_call(model, noisy, masks=all_real(xs))
    assert not np.allclose(unmasked, jit_call(model, xs, masks=all_real(xs)))


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_nan_and_inf_at_padded_tokens_reach_neither_outputs_nor_gradients(name, pool):
    # e.g. a missing modality filled with NaN, or -inf frames in CMU-MOSEI's audio
    build, make_inputs = KINDS[name]
    pure, xs = models.as_pure(build(pool=pool)), make_inputs()
    # example b: its first b tokens padded; example 3's first modality entirely
    masks = tuple(
        (jnp.arange(x.shape[1])[None, :] >= jnp.arange(B)[:, None]).at[3].set(m > 0)
        if x.ndim == 3
        else jnp.ones((B,), bool)
        for m, x in enumerate(xs)
    )

    def loss(params, xs):
        return jnp.sum(pure.apply(params, xs, masks=masks))

    value_and_grad = jax.jit(jax.value_and_grad(loss))  # one compilation for every fill
    value, grads = value_and_grad(pure.params, xs)
    for fill in (jnp.nan, jnp.inf, -jnp.inf):
        filled = tuple(
            x if x.ndim == 2 else jnp.where(mask[..., None], x, fill)
            for x, mask in zip(xs, masks, strict=True)
        )
        value_filled, grads_filled = value_and_grad(pure.params, filled)
        np.testing.assert_allclose(value_filled, value, rtol=1e-5)
        for g, g_filled in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_filled), strict=True):
            np.testing.assert_allclose(g_filled, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_masks_are_booleans_or_zero_one_integers(name):
    model, xs = built(name), KINDS[name][1]()
    title, rest = TITLES[name], (None,) * (len(xs) - 1)
    mask = jnp.arange(xs[0].shape[1])[None, :] >= jnp.arange(B)[:, None]  # [B, T_0]
    expected = jit_call(model, xs, masks=(mask, *rest))
    as_int = jit_call(model, xs, masks=(mask.astype(jnp.int32), *rest))  # a tokenizer's
    np.testing.assert_allclose(as_int, expected, rtol=1e-6)
    # an additive mask (0 = keep, -inf = pad) would read inverted
    additive = jnp.where(mask, 0.0, -jnp.inf)
    with pytest.raises(ValueError, match=rf"{title}: mask of modality 0 must hold booleans"):
        model(xs, masks=(additive, *rest))
    with pytest.raises(ValueError, match="mask of modality 0 holds integers other than 0 and 1"):
        model(xs, masks=(2 * mask.astype(jnp.int32), *rest))
    with pytest.raises(ValueError, match="mask of modality 0 is not an array of booleans"):
        model(xs, masks=([[True, False], [True]], *rest))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_left_padding_predicts_like_the_unpadded_sequences(name):
    """Positions count real tokens, so left padding (as in CMU-MOSI) changes nothing."""
    model, xs = built(name), KINDS[name][1]()
    padded = tuple(
        jnp.concatenate([jnp.zeros((B, 2, x.shape[2])), x], axis=1) if x.ndim == 3 else x
        for x in xs
    )
    masks = tuple(jnp.any(x != 0, axis=-1) for x in padded)
    expected = jit_call(model, xs, masks=all_real(xs))
    np.testing.assert_allclose(jit_call(model, padded, masks=masks), expected, rtol=1e-5, atol=1e-5)
    if name == "early_transformer":  # pad_value derives the same masks
        by_value = KINDS[name][0](pad_value=0.0)  # same seed, same weights
        np.testing.assert_allclose(
            jit_call(by_value, padded, masks=all_real(padded)), expected, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_modalities_interact(name):
    """F[i, j] = f(a_i, b_j) on a 2 x 2 grid is not additive: the modalities exchange
    information (in BottleneckFusion only through the bottleneck tokens, since its
    output is linear in the per-modality pooled tokens)."""
    model = built(name)
    a, *rest = KINDS[name][1](batch=2)  # F[i, j] = f(a_i, rest_j)
    pairs = (jnp.repeat(a, 2, axis=0), *(jnp.tile(x, (2,) + (1,) * (x.ndim - 1)) for x in rest))
    grid = jit_call(model, pairs, masks=all_real(pairs)).reshape(2, 2, C)
    interaction = grid[1, 1] - grid[1, 0] - grid[0, 1] + grid[0, 0]
    assert np.abs(interaction).max() > 1e-4


def test_modality_embedding_tells_same_width_modalities_apart():
    model = models.EarlyFusionTransformer(
        (3, 3), C, d_model=8, num_heads=2, num_layers=1, mlp_dim=8, max_len=4, rngs=nnx.Rngs(0)
    )
    # give modality 1 the token embedding of modality 0: only e_m tells them apart
    model.embed[1].project.kernel[...] = model.embed[0].project.kernel[...]
    model.embed[1].project.bias[...] = model.embed[0].project.bias[...]
    model.embed[1].position_table[...] = model.embed[0].position_table[...]
    a, b = normal(0, (B, 4, 3)), normal(1, (B, 4, 3))
    assert not np.allclose(jit_call(model, (a, b)), jit_call(model, (b, a)), atol=1e-4)
    model.modality_embedding[...] = jnp.zeros_like(model.modality_embedding[...])
    # without e_m the joint set of tokens is symmetric in the two modalities
    np.testing.assert_allclose(
        jit_call(model, (a, b)), jit_call(model, (b, a)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_bad_inputs_raise_value_errors_naming_modality_and_shapes(name):
    model = built(name)
    a, b = KINDS[name][1]()[:2]  # [B, 5, 3], [B, 4, 2]
    rest = KINDS[name][1]()[2:]
    title = TITLES[name]
    num = 2 + len(rest)
    with pytest.raises(ValueError, match=f"{title}: expected {num} modalities, got 1"):
        model((a,))
    with pytest.raises(
        ValueError, match=r"modality 1 has feature size 3 \(shape \(4, 4, 3\)\), expected"
    ):
        model((a, jnp.ones((B, 4, 3)), *rest))
    with pytest.raises(
        ValueError,
        match=r"modality 1 has batch size 3 \(shape \(3, 4, 2\)\) but modality 0 has 4 "
        r"\(shape \(4, 5, 3\)\)",
    ):
        model((a, b[:3], *rest))
    with pytest.raises(ValueError, match=r"modality 0 must have shape \[B, T, 3\] or \[B, 3\]"):
        model((a[None], b, *rest))
    with pytest.raises(ValueError, match=r"modality 1 has 9 tokens \(shape \(4, 9, 2\)\).*8"):
        model((a, jnp.ones((B, 9, 2)), *rest))
    with pytest.raises(ValueError, match=f"expected {num} masks"):
        model((a, b, *rest), masks=(None,) * (num + 1))
    with pytest.raises(ValueError, match=r"mask of modality 0 has shape \(4, 4\), expected"):
        model((a, b, *rest), masks=(jnp.ones((B, 4), bool), *(None,) * (num - 1)))


def test_bad_sizes_are_rejected_at_construction():
    build_early, build_bottleneck = KINDS["early_transformer"][0], KINDS["bottleneck"][0]
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        build_early(d_model=10, num_heads=4)
    with pytest.raises(
        ValueError, match=r"fusion_layer must be an int in \[0, num_layers - 2 = 1\]"
    ):
        build_bottleneck(fusion_layer=2)
    with pytest.raises(ValueError, match="num_layers must be at least 2"):
        build_bottleneck(num_layers=1)
    with pytest.raises(ValueError, match="pool='max' is not one of"):
        build_early(pool="max")
    with pytest.raises(ValueError, match="positions='rotary' is not one of"):
        build_bottleneck(positions="rotary")
    with pytest.raises(ValueError, match=r"in_dims\[1\] \(modality 1\) must be a positive int"):
        models.BottleneckFusion((3, 0), 2, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["EarlyFusionTransformer", "BottleneckFusion"])
def test_parameters_and_outputs_stay_float32_under_x64(kind):
    with jax.enable_x64(True):
        model = getattr(models, kind)((4, 6), 2, d_model=8, num_heads=2, rngs=nnx.Rngs(0))
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
        assert dtypes == {jnp.dtype(jnp.float32)}
        xs = [np.ones((3, 5, 4), np.float32), np.ones((3, 6), np.float16)]
        assert model(xs).dtype == jnp.float32


def test_bottleneck_mean_pool_averages_only_the_modalities_present():
    """One token per modality: each pooled token is a LayerNorm output (unit scale, zero
    shift at init), so its features have variance 1 - up to eps. Through an identity
    head the prediction's variance stays 1 when a modality is missing (all padding);
    a zero vector standing in for it would halve the mean and quarter the variance."""
    d_model = TRANSFORMER_SIZES["d_model"]
    model = models.BottleneckFusion(
        (3, 2), d_model, **{**TRANSFORMER_SIZES, "num_layers": 3}, rngs=nnx.Rngs(0)
    )
    model.head.kernel[...] = jnp.eye(d_model)
    model.head.bias[...] = jnp.zeros(d_model)
    xs = (normal(1, (B, 3)), normal(2, (B, 2)))  # [B, d_m]: one token each
    missing = jnp.arange(B) == 0  # example 0 has no second modality
    masks = (jnp.ones((B,), bool), ~missing)
    y = jit_call(model, xs, masks=masks)  # [B, D]
    np.testing.assert_allclose(np.var(y[0]), 1.0, rtol=1e-3)
    assert np.all(np.var(y[1:], axis=-1) < 0.99)  # two unit vectors averaged: shorter
    nothing = jit_call(model, xs, masks=(jnp.zeros((B,), bool), jnp.zeros((B,), bool)))
    np.testing.assert_allclose(nothing, 0.0, atol=1e-6)  # no modality: the head's bias
