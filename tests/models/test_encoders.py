"""MLP and SequenceEncoder: shapes, padding, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import models
from tests.models.zoo import jit_call, normal


@pytest.mark.parametrize("lead", [(4,), (2, 3)], ids=["batch", "batch_time"])
def test_mlp_maps_the_last_axis(lead):
    mlp = models.MLP(3, (6, 4), 2, rngs=nnx.Rngs(0))
    x = normal(0, (*lead, 3))
    y = mlp(x)
    assert y.shape == (*lead, 2)
    # the same map for every leading index
    np.testing.assert_allclose(y.reshape(-1, 2), mlp(x.reshape(-1, 3)), rtol=1e-6, atol=1e-6)


def test_mlp_without_hidden_layers_is_affine():
    mlp = models.MLP(3, (), 4, rngs=nnx.Rngs(0))
    a, b = normal(0, (4, 3)), normal(1, (4, 3))
    np.testing.assert_allclose(
        mlp(0.3 * a + 0.7 * b), 0.3 * mlp(a) + 0.7 * mlp(b), rtol=1e-5, atol=1e-6
    )


def test_mlp_activation_by_name_or_function():
    x = normal(0, (4, 3))
    by_name = models.MLP(3, (6,), 2, activation="tanh", rngs=nnx.Rngs(0))
    by_fn = models.MLP(3, (6,), 2, activation=jnp.tanh, rngs=nnx.Rngs(0))
    relu = models.MLP(3, (6,), 2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(by_name(x), by_fn(x), rtol=1e-6)
    assert not np.allclose(by_name(x), relu(x))
    with pytest.raises(ValueError, match="activation='swish' is not one of"):
        models.MLP(3, (6,), 2, activation="swish", rngs=nnx.Rngs(0))


def test_mlp_rejects_a_wrong_feature_size():
    mlp = models.MLP(3, (6,), 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"feature size 4 \(shape \(2, 4\)\), expected 3"):
        mlp(jnp.ones((2, 4)))


@pytest.mark.parametrize("pool, shape", [("last", (4, 4)), ("mean", (4, 4)), ("none", (4, 6, 4))])
def test_sequence_encoder_pools(pool, shape):
    encoder = models.SequenceEncoder(3, 4, pool=pool, rngs=nnx.Rngs(0))
    x = normal(0, (4, 6, 3))
    h = jit_call(encoder, x)
    assert h.shape == shape
    every = jit_call(models.SequenceEncoder(3, 4, pool="none", rngs=nnx.Rngs(0)), x)  # same weights
    expected = {"last": every[:, -1], "mean": every.mean(axis=1), "none": every}[pool]
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)


def test_sequence_encoder_is_causal_in_time():
    encoder = models.SequenceEncoder(3, 4, pool="none", rngs=nnx.Rngs(0))
    x = normal(0, (4, 6, 3))
    changed = x.at[:, 4].add(1.0)
    before, after = jit_call(encoder, x), jit_call(encoder, changed)
    np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=1e-6)
    assert not np.allclose(after[:, 4:], before[:, 4:])


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_left_padding_encodes_like_the_unpadded_sequence(pool):
    x = normal(0, (2, 4, 3))
    padded = jnp.concatenate([jnp.zeros((2, 3, 3)), x], axis=1)  # CMU-MOSI style
    mask = jnp.arange(7)[None, :].repeat(2, axis=0) >= 3
    encoder = models.SequenceEncoder(3, 4, pool=pool, rngs=nnx.Rngs(0))
    by_value = models.SequenceEncoder(3, 4, pool=pool, pad_value=0.0, rngs=nnx.Rngs(0))
    expected = jit_call(encoder, x)
    ones = jnp.ones(padded.shape[:-1], bool)
    np.testing.assert_allclose(jit_call(encoder, padded, mask=mask), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jit_call(by_value, padded, mask=ones), expected, rtol=1e-5, atol=1e-6
    )
    unmasked = jit_call(encoder, padded.at[:, :3].set(1.0), mask=ones)
    assert not np.allclose(unmasked, expected)  # tokens that are not masked count


@pytest.mark.parametrize("pool", ["last", "mean", "none"])
def test_values_at_masked_steps_are_irrelevant(pool):
    encoder = models.SequenceEncoder(3, 4, pool=pool, rngs=nnx.Rngs(0))
    x = normal(0, (3, 6, 3))
    mask = jnp.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1]], bool)
    noisy = jnp.where(mask[..., None], x, normal(1, x.shape) * 5.0)
    h = jit_call(encoder, x, mask=mask)
    np.testing.assert_allclose(jit_call(encoder, noisy, mask=mask), h, rtol=1e-6)
    if pool == "none":
        assert np.all(h[~mask] == 0.0)
    # NaN / inf at masked steps reach neither the output nor the gradients
    graphdef, params = nnx.split(encoder)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x, mask=mask))

    grad = jax.jit(jax.grad(loss))
    grads = grad(params, x)
    for fill in (jnp.nan, -jnp.inf):
        filled = jnp.where(mask[..., None], x, fill)
        np.testing.assert_allclose(encoder(filled, mask=mask), h, rtol=1e-6)
        for g, g_filled in zip(
            jax.tree.leaves(grads), jax.tree.leaves(grad(params, filled)), strict=True
        ):
            np.testing.assert_allclose(g_filled, g, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="SequenceEncoder: mask must hold booleans"):
        encoder(x, mask=mask.astype(jnp.float32))


def test_sequence_encoder_checks_inputs():
    encoder = models.SequenceEncoder(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"input must have shape \[\.\.\., T, 3\], got shape \(3,\)"
    ):
        encoder(jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"feature size 2 \(shape \(4, 6, 2\)\), expected 3"):
        encoder(jnp.ones((4, 6, 2)))
    with pytest.raises(ValueError, match=r"mask has shape \(4, 5\), expected \(4, 6\)"):
        encoder(jnp.ones((4, 6, 3)), mask=jnp.ones((4, 5), bool))
    with pytest.raises(ValueError, match="pool='max' is not one of"):
        models.SequenceEncoder(3, 4, pool="max", rngs=nnx.Rngs(0))


def test_sequence_encoder_vmaps_over_examples():
    encoder = models.SequenceEncoder(3, 4, rngs=nnx.Rngs(0))
    x = normal(0, (4, 6, 3))
    graphdef, state = nnx.split(encoder)
    one = jax.jit(jax.vmap(lambda x: nnx.merge(graphdef, state)(x)))(x)  # [T, d] inside
    np.testing.assert_allclose(one, jit_call(encoder, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pad_value", ["0", [0.0, 0.0, 0.0], float("nan"), True])
def test_a_pad_value_that_is_not_a_finite_number_is_named(pad_value):
    # NaN would match no token (padding detection silently off); a string failed at call
    with pytest.raises(ValueError, match="SequenceEncoder: pad_value must be a finite number"):
        models.SequenceEncoder(3, 4, pad_value=pad_value, rngs=nnx.Rngs(0))
    sizes = dict(d_model=8, num_heads=2, num_layers=2, mlp_dim=8, max_len=4)
    for model in (models.EarlyFusionTransformer, models.BottleneckFusion):
        with pytest.raises(ValueError, match=f"{model.__name__}: pad_value must be a finite"):
            model((3, 2), 2, **sizes, pad_value=pad_value, rngs=nnx.Rngs(0))
    assert models.SequenceEncoder(3, 4, pad_value=jnp.float32(0), rngs=nnx.Rngs(0)).pad_value == 0


def test_an_int_for_hidden_dims_is_named_with_the_tuple_it_likely_meant():
    with pytest.raises(
        ValueError, match=r"MLP: hidden_dims must be a sequence .* got 4; e.g. \(4,\)"
    ):
        models.MLP(3, 4, 2, rngs=nnx.Rngs(0))
    match = r"ResidualFusion: hidden_dims must be a sequence .* got 8; e.g. \(8,\)"
    with pytest.raises(ValueError, match=match):
        models.ResidualFusion((3, 3), 2, hidden_dims=8, rngs=nnx.Rngs(0))
    # widths read off an array are fine
    assert models.MLP(3, np.array([4, 5]), 2, rngs=nnx.Rngs(0))(jnp.ones((2, 3))).shape == (2, 2)
    assert (
        len(models.ResidualFusion((3, 3), 2, hidden_dims=np.array([8]), rngs=nnx.Rngs(0)).branches)
        == 3
    )
