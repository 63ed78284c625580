"""EMAP of mmfuse models: factorized (encode once) equals the full model; the XOR task."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mmfuse import fusion, interactions, models
from tests.fusion.expressivity import make_task
from tests.interactions.fns import inputs


def mlp_fusion_model(seed=0):
    """Vectors [B, 3], [B, 5] -> MLP encoders -> tensor fusion -> MLP head -> [B, 2]."""
    rngs = nnx.Rngs(seed)
    return models.FusionModel(
        [models.MLP(3, (16,), 4, rngs=rngs), models.MLP(5, (16,), 3, rngs=rngs)],
        fusion.create("tensor", (4, 3), 6, rngs=rngs),
        models.MLP(6, (8,), 2, activation="tanh", rngs=rngs),
    )


def three_modality_model(seed=0):
    """Vectors [B, 3], [B, 5], [B, 5] -> MLP / identity / MLP -> tensor fusion -> [B, 2]."""
    rngs = nnx.Rngs(seed)
    return models.FusionModel(
        [models.MLP(3, (16,), 4, rngs=rngs), None, models.MLP(5, (16,), 3, rngs=rngs)],
        fusion.create("tensor", (4, 5, 3), 2, rngs=rngs),
    )


@pytest.mark.parametrize(
    "build, widths", [(mlp_fusion_model, (3, 5)), (three_modality_model, (3, 5, 5))]
)
def test_factorized_emap_equals_full_model_emap(build, widths):
    model, xs = build(), inputs(40, 9, widths)
    pure = models.as_pure(model)
    assert pure.factorizes

    @jax.jit
    def full(params, xs):
        return interactions.emap_decompose(functools.partial(pure.apply, params), xs)

    @jax.jit
    def fast(params, xs):  # the encoders once, the head on every cross pair
        view = dataclasses.replace(pure, params=params)
        return interactions.emap_model(view, xs, decompose=True, block_size=4)

    want, got = full(pure.params, xs), fast(pure.params, xs)
    original = jax.jit(pure.apply)(pure.params, xs)
    np.testing.assert_allclose(got.original, original, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.projected, want.projected, rtol=1e-5, atol=1e-6)
    for a, b in zip(got.marginals, want.marginals, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the decomposition is genuine: these models do use interactions
    assert np.max(np.abs(want.residual)) > 1e-3


@pytest.mark.parametrize(
    "build, widths", [(mlp_fusion_model, (3, 5)), (three_modality_model, (3, 5, 5))]
)
def test_tensor_fusion_emap_keeps_float64_under_x64(build, widths):
    # the cross-paired tensor contraction computes in the model's precision
    with jax.enable_x64(True):
        model = build()
        xs = tuple(x.astype(jnp.float64) for x in inputs(41, 9, widths))
        pure = models.as_pure(model)
        want = interactions.emap(functools.partial(pure.apply, pure.params), xs)
        got = interactions.emap_model(model, xs)
        assert want.dtype == got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_samples", [None, 6])
def test_tensor_fusion_on_sequences_keeps_the_time_axis(num_samples):
    # encodings [N, T, e_m]: tensor fusion and its head act at every time step
    rngs = nnx.Rngs(0)
    model = models.FusionModel(
        [models.MLP(2, (8,), 3, rngs=rngs), None],
        fusion.create("tensor", (3, 3), 4, rngs=rngs),
        models.MLP(4, (5,), 2, rngs=rngs),
    )
    rng = np.random.default_rng(0)
    xs = tuple(rng.normal(size=(7, 3, d)).astype(np.float32) for d in (2, 3))
    kw = {} if num_samples is None else {"num_samples": num_samples, "key": jax.random.key(1)}
    want = interactions.emap_decompose(model, xs, block_size=3, **kw)
    got = interactions.emap_model(model, xs, decompose=True, block_size=3, **kw)
    assert got.projected.shape == (7, 3, 2)
    np.testing.assert_allclose(got.projected, want.projected, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(want.residual)) > 1e-3


def test_factorized_model_runs_the_encoders_once():
    # the encoders run on the N examples, the head alone on the N² pairs
    model, xs = mlp_fusion_model(), inputs(41, 6, (3, 5))
    fn, hs = interactions.model_fn(model, xs)
    assert [h.shape for h in hs] == [(6, 4), (6, 3)]  # encodings, not raw inputs
    np.testing.assert_allclose(fn(hs), model(xs), rtol=1e-5, atol=1e-6)
    # a model that does not factorize (here a bare fusion operator) runs whole on every pair
    operator, raw = model.fusion, inputs(42, 6, (4, 3))
    assert not models.as_pure(operator).factorizes
    fn, same = interactions.model_fn(operator, raw)
    assert all(a is b for a, b in zip(same, raw, strict=True))
    np.testing.assert_allclose(fn(raw), operator(raw), rtol=1e-6)


def train(model, xs, labels, steps=300, learning_rate=2e-2):
    """Full-batch Adam on softmax cross-entropy; returns the trained model."""
    graphdef, params = nnx.split(model)
    optimizer = optax.adam(learning_rate)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(xs)  # [N, 2]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, steps)
        return params

    return nnx.merge(graphdef, run(params))


def split_task(kind, num_train=1024, num_test=512, seed=0):
    xs, labels = make_task(kind, num_train + num_test, seed=seed)
    xs = tuple(jnp.asarray(x) for x in xs)
    return (
        (tuple(x[:num_train] for x in xs), jnp.asarray(labels[:num_train])),
        (tuple(x[num_train:] for x in xs), labels[num_train:]),
    )


def test_xor_interaction_model_drops_to_chance_additive_model_unchanged():
    # XOR: only a model with a cross-modal interaction can beat chance
    (train_xs, train_y), (test_xs, test_y) = split_task("xor")
    rngs = nnx.Rngs(0)
    interacting = models.FusionModel(
        [None, None], fusion.create("nonlinear", (8, 8), 2, hidden_dims=(32,), rngs=rngs)
    )
    interacting = train(interacting, train_xs, train_y)
    report = interactions.emap_report(interacting, test_xs, test_y)
    assert report.original > 0.9
    assert abs(report.projected - 0.5) < 0.08  # chance
    assert all(abs(m - 0.5) < 0.08 for m in report.marginals)  # no unimodal signal either
    # sum task: an additive model is its own projection, with the same accuracy
    (train_xs, train_y), (test_xs, test_y) = split_task("sum")
    additive = models.FusionModel([None, None], fusion.create("additive", (8, 8), 2, rngs=rngs))
    additive = train(additive, train_xs, train_y)
    report = interactions.emap_report(additive, test_xs, test_y)
    assert report.original > 0.8
    assert report.projected == report.original
    np.testing.assert_allclose(report.residual, 0, atol=1e-4)
