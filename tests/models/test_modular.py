"""FusionModel and LateFusion: composition, shapes, additivity, learned weights, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion, models
from tests.models.zoo import (
    B,
    C,
    fusion_mlp_tensor,
    fusion_sequence_additive,
    jit_call,
    late_fusion,
    normal,
    sequence_inputs,
    vector_inputs,
)


def explicit_grid(apply, a, b):
    """F[i, j] = apply((a_i, b_j)) by pairing every i with every j: [N, N, C]."""
    n = a.shape[0]
    pairs = (jnp.repeat(a, n, axis=0), jnp.tile(b, (n,) + (1,) * (b.ndim - 1)))
    return apply(pairs).reshape(n, n, -1)


def test_fusion_model_is_head_of_fusion_of_encodings():
    model = fusion_mlp_tensor()
    xs = vector_inputs()
    y = model(xs)
    assert y.shape == (B, C)
    hs = (model.encoders[0](xs[0]), model.encoders[1](xs[1]))
    np.testing.assert_allclose(y, model.head(model.fusion(hs)), rtol=1e-6)
    np.testing.assert_allclose(model.fuse(model.encode(xs)), y, rtol=1e-6)
    assert [h.shape for h in model.encode(xs)] == [(B, 4), (B, 3)]


def test_fusion_model_keeps_a_time_axis_of_vector_encoders():
    model = fusion_mlp_tensor()
    a, b = normal(0, (B, 6, 3)), normal(1, (B, 6, 5))  # [B, T, d_m]
    y = model((a, b))
    assert y.shape == (B, 6, C)
    np.testing.assert_allclose(y[:, 2], model((a[:, 2], b[:, 2])), rtol=1e-5, atol=1e-6)


def test_fusion_model_with_a_sequence_encoder_and_an_identity():
    model = fusion_sequence_additive()
    xs = sequence_inputs()
    y = jit_call(model, xs)
    assert y.shape == (B, C)
    expected = model.fusion((jit_call(model.encoders[0], xs[0]), xs[1]))
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_identity_encoders_and_nonlinear_fusion_make_early_fusion_of_features():
    op = fusion.create("nonlinear", (3, 5), C, hidden_dims=(6,), rngs=nnx.Rngs(0))
    model = models.FusionModel([None, None], op, None)
    xs = vector_inputs()
    np.testing.assert_allclose(model(xs), op(xs), rtol=1e-6)
    for h, x in zip(model.encode(xs), xs, strict=True):  # identity encoders
        np.testing.assert_array_equal(h, x)


def test_fusion_kwargs_reach_the_operator():
    rngs = nnx.Rngs(0)
    encoders = [models.MLP(3, (), 4, rngs=rngs), models.MLP(5, (), 3, rngs=rngs)]
    model = models.FusionModel(encoders, fusion.create("hard_gated", (4, 3), 4, rngs=rngs))
    xs = vector_inputs()
    key = jax.random.key(1)
    expected = model.fusion(model.encode(xs), key=key)  # a sampled (training-mode) gate
    np.testing.assert_allclose(model(xs, key=key), expected, rtol=1e-6)
    pure = models.as_pure(model)
    np.testing.assert_allclose(
        jax.jit(pure.apply)(pure.params, xs, key=key), expected, rtol=1e-5, atol=1e-6
    )


def test_a_hard_gates_aux_comes_back_next_to_the_heads_output():
    rngs = nnx.Rngs(0)
    encoders = [models.MLP(3, (), 4, rngs=rngs), models.MLP(5, (), 3, rngs=rngs)]
    op = fusion.create("hard_gated", (4, 3), 4, estimator="reinforce", rngs=rngs)
    model = models.FusionModel(encoders, op, models.MLP(4, (), 2, rngs=rngs))
    xs, key = vector_inputs(), jax.random.key(1)
    y, aux = model(xs, key=key, return_aux=True)
    z, expected = op(model.encode(xs), key=key, return_aux=True)
    np.testing.assert_allclose(y, model.head(z), rtol=1e-6)
    np.testing.assert_array_equal(aux.log_prob, expected.log_prob)
    np.testing.assert_allclose(model(xs, key=key), y, rtol=1e-6)  # without aux: y alone

    def surrogate(params):  # the REINFORCE gate learns through aux.log_prob
        out, aux = nnx.merge(graphdef, params)(xs, key=key, return_aux=True)
        return fusion.reinforce_surrogate(aux.log_prob, jnp.sum(out**2, axis=-1))

    graphdef, params = nnx.split(model)
    grads = jax.grad(surrogate)(params)
    assert np.abs(np.asarray(grads["fusion"]["gate_kernel"][...])).max() > 0


def test_masks_reach_the_encoders():
    model = fusion_sequence_additive()
    x, v = sequence_inputs()
    mask = jnp.arange(6)[None, :].repeat(B, axis=0) >= 2  # 2 padded steps
    noisy = x.at[:, :2].set(normal(5, (B, 2, 3)))
    y = jit_call(model, (x, v), masks=(mask, None))
    np.testing.assert_allclose(jit_call(model, (noisy, v), masks=(mask, None)), y, rtol=1e-6)
    np.testing.assert_allclose(y, jit_call(model, (x[:, 2:], v)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="modality 1 has no encoder to take its mask"):
        model((x, v), masks=(None, jnp.ones((B,), bool)))
    rngs = nnx.Rngs(0)
    vectors = models.FusionModel(
        [models.MLP(3, (4,), 2, rngs=rngs), None], fusion.create("additive", (2, 2), 2, rngs=rngs)
    )
    with pytest.raises(ValueError, match=r"modality 0's MLP takes no mask .* pass None"):
        vectors((jnp.ones((B, 3)), jnp.ones((B, 2))), masks=(jnp.ones((B,), bool), None))


def test_per_step_fusion_beside_a_sequence_encoder_that_keeps_its_steps():
    # MAG / RAVEN per word: the words as they are, the audio through a GRU over the words
    rngs = nnx.Rngs(0)
    gru = models.SequenceEncoder(3, 4, pool="none", rngs=rngs)
    model = models.FusionModel([None, gru], fusion.create("modality_shift", (8, 4), 8, rngs=rngs))
    words, audio = normal(0, (B, 5, 8)), normal(1, (B, 5, 3))
    out = jit_call(model, (words, audio))
    assert out.shape == (B, 5, 8)
    np.testing.assert_allclose(out, model.fuse((words, gru(audio))), rtol=1e-6)
    with pytest.raises(ValueError, match=r"modality 1 has batch dims \(2,\) \(shape \(2, 5, 3\)\)"):
        model((words, audio[:2]))
    with pytest.raises(ValueError, match=r"modality 1 has batch dims \(4,\) \(shape \(4, 6, 3\)\)"):
        model((words, normal(1, (B, 6, 3))))  # 6 steps beside 5 words


def test_fusion_model_rejects_bad_inputs():
    model = fusion_mlp_tensor()
    a, b = vector_inputs()
    with pytest.raises(ValueError, match="FusionModel: expected 2 modalities, got 1"):
        model((a,))
    with pytest.raises(ValueError, match="expected a sequence of 2 modalities, got ArrayImpl"):
        model(a)
    with pytest.raises(
        ValueError, match=r"modality 1 has feature size 7 \(shape \(4, 7\)\), expected 5"
    ):
        model((a, jnp.ones((B, 7))))
    with pytest.raises(
        ValueError,
        match=r"modality 1 has batch dims \(3,\) \(shape \(3, 5\)\) but modality 0 has "
        r"\(4,\) \(shape \(4, 3\)\)",
    ):
        model((a, b[:3]))
    seq_model = fusion_sequence_additive()
    x, v = sequence_inputs()
    with pytest.raises(ValueError, match=r"modality 1 has batch dims \(2,\) \(shape \(2, 2\)\)"):
        seq_model((x, v[:2]))
    with pytest.raises(ValueError, match=r"modality 1 has feature size 3 .* expected 2"):
        seq_model((x, jnp.ones((B, 3))))  # the identity encoder checks the operator's width
    with pytest.raises(ValueError, match=r"modality 0 must have shape \[\.\.\., T, 3\]"):
        seq_model((jnp.ones((3,)), v))
    with pytest.raises(TypeError, match="FusionModel: modality 1 is None; expected a numeric"):
        model((a, None))
    with pytest.raises(ValueError, match="FusionModel: modality 0 is not an array of one shape"):
        model(([[1.0, 2.0, 3.0], [4.0]], b[:2]))


def test_fusion_model_rejects_mismatched_parts():
    rngs = nnx.Rngs(0)
    op = fusion.create("additive", (4, 3), 5, rngs=rngs)
    enc = [models.MLP(3, (), 4, rngs=rngs), models.MLP(5, (), 3, rngs=rngs)]
    with pytest.raises(ValueError, match="3 encoders but the fusion operator takes 2"):
        models.FusionModel([*enc, None], op)
    with pytest.raises(ValueError, match=r"encoder 1 outputs width 6 .* in_dims\[1\] = 3"):
        models.FusionModel([enc[0], models.MLP(5, (), 6, rngs=rngs)], op)
    with pytest.raises(ValueError, match="outputs width 5 but the head takes 4"):
        models.FusionModel(enc, op, models.MLP(4, (), 2, rngs=rngs))
    # in_dims is for encoders that declare no width; one that contradicts a declared
    # width could never be satisfied by any input
    with pytest.raises(ValueError, match=r"in_dims\[1\] = 6, but modality 1's MLP takes width 5"):
        models.FusionModel(enc, op, in_dims=(3, 6))
    with pytest.raises(ValueError, match=r"in_dims\[0\] = 5, but the fusion operator \(modality 0"):
        models.FusionModel([None, None], op, in_dims=(5, 3))
    with pytest.raises(ValueError, match=r"in_dims\[1\] must be a positive int or None, got 'x'"):
        models.FusionModel([None, None], op, in_dims=(None, "x"))
    specs = models.FusionModel(enc, op, in_dims=(np.int64(3), None)).input_specs
    assert specs == ((3, 1), (None, 1)) and type(specs[0][0]) is int


@pytest.mark.parametrize("combine", ["mean", "weighted"])
def test_late_fusion_combines_unimodal_predictions(combine):
    model = late_fusion(combine=combine)
    xs = vector_inputs()
    y = model(xs)
    assert y.shape == (B, C)
    p = [model.predictors[m](xs[m]) for m in range(2)]
    w = model.weights()
    if combine == "mean":
        np.testing.assert_allclose(w, [0.5, 0.5])
    assert w[0] != w[1] or combine == "mean"
    np.testing.assert_allclose(y, w[0] * p[0] + w[1] * p[1], rtol=1e-5, atol=1e-6)
    assert model(tuple(normal(3, (B, 6, x.shape[-1])) for x in xs)).shape == (B, 6, C)


@pytest.mark.parametrize("combine", ["mean", "weighted"])
def test_late_fusion_is_exactly_additive(combine):
    model = late_fusion(combine=combine)
    a, b = vector_inputs(seed=7, batch=5)
    grid = explicit_grid(model, a, b)  # [5, 5, C]
    interaction = grid - grid[:, :1] - grid[:1, :] + grid[:1, :1]
    np.testing.assert_allclose(interaction, 0.0, atol=1e-5)
    # a model that fuses with a product is not additive on the same grid
    tfn = explicit_grid(fusion_mlp_tensor(), a, b)
    assert np.abs(tfn - tfn[:, :1] - tfn[:1, :] + tfn[:1, :1]).max() > 1e-2


def test_late_fusion_weights_are_learnable_and_sum_to_one():
    model = late_fusion(combine="weighted")
    xs = vector_inputs()
    target = normal(9, (B, C))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        return jnp.mean((nnx.merge(graphdef, params, rest)(xs) - target) ** 2)

    loss_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = loss_and_grad(params)
    assert np.all(np.abs(grads["weight_logits"][...]) > 0)
    stepped = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    assert loss_and_grad(stepped)[0] < value
    before = model.weights()
    nnx.update(model, stepped)
    after = model.weights()
    assert not np.allclose(after, before)
    for w in (before, after):
        assert np.all(w > 0)
        np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-6)


def test_late_fusion_of_precomputed_predictions():
    model = models.LateFusion([None, None, None], combine="weighted")
    ps = tuple(normal(m, (B, C)) for m in range(3))
    np.testing.assert_allclose(model(ps), (ps[0] + ps[1] + ps[2]) / 3, rtol=1e-6)


def test_late_fusion_rejects_bad_inputs():
    model = late_fusion()
    a, b = vector_inputs()
    with pytest.raises(ValueError, match="LateFusion: expected 2 modalities, got 3"):
        model((a, b, b))
    with pytest.raises(ValueError, match=r"modality 0 has feature size 5 \(shape \(4, 5\)\)"):
        model((b, b))
    with pytest.raises(ValueError, match=r"modality 1 has batch dims \(2,\) \(shape \(2, 5\)\)"):
        model((a, b[:2]))
    with pytest.raises(
        ValueError, match=r"prediction of modality 1 has shape \(4, 3\) but .* \(4, 2\)"
    ):
        model.fuse((jnp.ones((B, C)), jnp.ones((B, 3))))
    with pytest.raises(ValueError, match="combine='max' is not one of"):
        models.LateFusion([None], combine="max")


def test_numpy_scalars_are_accepted_and_errors_name_the_index():
    with pytest.raises(ValueError, match=r"hidden_dims\[1\] must be"):
        models.MLP(3, (4, 0), 2, rngs=nnx.Rngs(0))
    op = fusion.create("film", (3, 4), 3, gamma_offset=np.float32(0.5), rngs=nnx.Rngs(0))
    assert op.gamma_offset == 0.5 and type(op.gamma_offset) is float
    residual = models.ResidualFusion((3, 4), 2, max_order=np.int64(1), rngs=nnx.Rngs(0))
    assert residual.max_order == 1 and type(residual.max_order) is int
