"""Modality-shifting fusion (MAG / RAVEN): float64 reference, the β bound, gates, sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F

ACTS = {"relu": lambda a: np.maximum(a, 0.0), "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a))}


def random_params(rng, in_dims, out_dim):
    d0, secondary = in_dims[0], in_dims[1:]
    params = {
        "gate_kernels": [rng.normal(size=(d0 + d, d0)) for d in secondary],
        "gate_biases": [rng.normal(size=(d0,)) for _ in secondary],
        "shift_kernels": [rng.normal(size=(d, d0)) for d in secondary],
        "shift_bias": rng.normal(size=(d0,)),
        "norm_scale": rng.normal(size=(d0,)),
        "norm_bias": rng.normal(size=(d0,)),
    }
    if out_dim != d0:
        params["out_kernel"] = rng.normal(size=(d0, out_dim))
        params["out_bias"] = rng.normal(size=(out_dim,))
    return params


def numpy_shift(params, xs, gate, beta, eps):
    z = xs[0]
    h = params["shift_bias"]
    for x, wg, bg, w in zip(
        xs[1:],
        params["gate_kernels"],
        params["gate_biases"],
        params["shift_kernels"],
        strict=True,
    ):
        g = ACTS[gate](np.concatenate([z, x], axis=-1) @ wg + bg)
        h = h + g * (x @ w)
    ratio = (
        beta
        * np.linalg.norm(z, axis=-1, keepdims=True)
        / (np.linalg.norm(h, axis=-1, keepdims=True) + eps)
    )
    alpha = np.minimum(ratio, 1.0)
    return alpha * h, alpha, h


def numpy_layer_norm(s, scale, bias, eps):
    mu = s.mean(-1, keepdims=True)
    var = ((s - mu) ** 2).mean(-1, keepdims=True)
    return (s - mu) / np.sqrt(var + eps) * scale + bias


def numpy_modality_shift(params, xs, gate, beta, eps=1e-6, ln_eps=1e-5):
    shift, alpha, _ = numpy_shift(params, xs, gate, beta, eps)
    out = numpy_layer_norm(xs[0] + shift, params["norm_scale"], params["norm_bias"], ln_eps)
    if "out_kernel" in params:
        out = out @ params["out_kernel"] + params["out_bias"]
    return out, alpha


def as_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


@pytest.mark.parametrize("gate", ["relu", "sigmoid"])
@pytest.mark.parametrize("out_dim", [3, 2], ids=["no_projection", "projection"])
def test_matches_a_float64_numpy_reference(gate, out_dim):
    rng = np.random.default_rng(0)
    in_dims = (3, 2, 4)
    params = random_params(rng, in_dims, out_dim)
    # Secondary inputs of very different sizes, so α is clipped at 1 in some rows only.
    scales = np.array([1e-3, 0.1, 1.0, 10.0, 100.0, 3.0])[:, None]
    xs = [rng.normal(size=(6, d)) * (1.0 if m == 0 else scales) for m, d in enumerate(in_dims)]
    beta = 2.0
    expected, alpha = numpy_modality_shift(params, xs, gate, beta)
    assert np.any(alpha < 1.0) and np.any(alpha == 1.0)
    with jax.enable_x64(True):
        z = F.modality_shift(as_jax(params), as_jax(xs), gate=gate, beta=beta)
        assert z.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-12, atol=1e-12)


def test_module_calls_the_functional_form_with_its_options():
    op = fusion.create(
        "modality_shift", (3, 2, 4), 5, rngs=nnx.Rngs(1), gate="sigmoid", beta=0.7, eps=1e-4
    )
    xs = [jax.random.normal(jax.random.key(m), (4, d)) for m, d in enumerate((3, 2, 4))]
    expected = F.modality_shift(op.functional_params(), xs, gate="sigmoid", beta=0.7, eps=1e-4)
    np.testing.assert_array_equal(op(xs), expected)
    assert "out_kernel" in op.functional_params()
    assert "out_kernel" not in F.init_modality_shift(jax.random.key(0), (3, 2, 4), 3)


@pytest.mark.parametrize("gate", ["relu", "sigmoid"])
def test_beta_zero_is_exactly_layer_norm_of_the_primary_input(gate):
    in_dims = (6, 3, 4)
    op = fusion.create("modality_shift", in_dims, 6, rngs=nnx.Rngs(0), gate=gate, beta=0.0)
    xs = [jax.random.normal(jax.random.key(m), (5, 2, d)) for m, d in enumerate(in_dims)]
    others = [xs[0], *(10.0 * jax.random.normal(jax.random.key(9), x.shape) for x in xs[1:])]
    z = op(xs)
    # Bit-identical whatever the secondary modalities hold: z + 0·H is z.
    np.testing.assert_array_equal(z, op(others))
    zeros = [xs[0], *(jnp.zeros_like(x) for x in xs[1:])]
    np.testing.assert_array_equal(z, op(zeros))
    expected = numpy_layer_norm(np.asarray(xs[0], np.float64), 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)

    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        params = random_params(rng, in_dims, 6)
        xs64 = [rng.normal(size=(7, d)) for d in in_dims]
        z64 = F.modality_shift(as_jax(params), as_jax(xs64), gate=gate, beta=0.0)
        expected = numpy_layer_norm(xs64[0], params["norm_scale"], params["norm_bias"], 1e-5)
        np.testing.assert_allclose(np.asarray(z64), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("beta", [0.0, 1e-3, 0.1, 1.0, 10.0, 1e3])
def test_shift_never_exceeds_beta_times_the_primary_norm_nor_the_displacement(beta):
    rng = np.random.default_rng(2)
    in_dims = (4, 3, 5)
    params = random_params(rng, in_dims, 4)
    xs = [rng.normal(size=(64, d)) * rng.lognormal(0.0, 2.0, size=(64, 1)) for d in in_dims]
    with jax.enable_x64(True):
        jp, jxs = as_jax(params), as_jax(xs)
        shift = np.asarray(F.modality_shift_displacement(jp, jxs, beta=beta))
        # A β this large makes α = 1 for every row, so this is H itself.
        h = np.asarray(F.modality_shift_displacement(jp, jxs, beta=1e12))
    _, _, expected_h = numpy_shift(params, xs, "relu", 1e12, 1e-6)
    np.testing.assert_allclose(h, expected_h, rtol=1e-12, atol=1e-12)
    shift_norm = np.linalg.norm(shift, axis=-1)
    tol = 1 + 1e-12
    assert np.all(shift_norm <= beta * np.linalg.norm(xs[0], axis=-1) * tol)
    assert np.all(shift_norm <= np.linalg.norm(h, axis=-1) * tol)
    # The shift is a non-negative multiple of H.
    alpha = np.sum(shift * h, axis=-1) / np.sum(h * h, axis=-1)
    np.testing.assert_allclose(shift, alpha[:, None] * h, rtol=1e-10, atol=1e-12)
    assert np.all((alpha >= 0) & (alpha <= 1 + 1e-12))


@pytest.mark.parametrize("gate", ["relu", "sigmoid"])
def test_gradients_are_finite_where_the_displacement_or_the_primary_is_zero(gate):
    in_dims = (3, 2, 2)
    params = F.init_modality_shift(jax.random.key(0), in_dims, 2)
    params["shift_bias"] = jnp.zeros(3)
    xs = [jax.random.normal(jax.random.key(m), (4, d)) for m, d in enumerate(in_dims)]
    xs[0] = xs[0].at[1].set(0.0)  # ‖z‖ = 0
    xs[1] = xs[1].at[2].set(0.0)
    xs[2] = xs[2].at[2].set(0.0)  # H = 0: secondary inputs and b_H are zero
    xs[1] = xs[1].at[3].set(0.0)
    xs[2] = xs[2].at[3].set(0.0)
    xs[0] = xs[0].at[3].set(0.0)  # both zero
    shift = F.modality_shift_displacement(params, xs, gate=gate, beta=1.0)
    assert np.all(np.asarray(shift[1:]) == 0.0)

    def loss(params, xs):
        return jnp.sum(F.modality_shift(params, xs, gate=gate, beta=1.0) ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(params, xs)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf))


def test_relu_gates_start_closed_and_sigmoid_gates_half_open():
    rng = np.random.default_rng(3)
    in_dims = (3, 2, 4)
    params = random_params(rng, in_dims, 3)
    # Zero gate weights: relu(0) = 0 shuts every gate, sigmoid(0) = 1/2 half-opens it.
    params["gate_kernels"] = [np.zeros_like(k) for k in params["gate_kernels"]]
    params["gate_biases"] = [np.zeros_like(b) for b in params["gate_biases"]]
    xs = [rng.normal(size=(5, d)) for d in in_dims]
    with jax.enable_x64(True):
        jp, jxs = as_jax(params), as_jax(xs)
        relu_h = F.modality_shift_displacement(jp, jxs, gate="relu", beta=1e12)
        sigmoid_h = F.modality_shift_displacement(jp, jxs, gate="sigmoid", beta=1e12)
    np.testing.assert_allclose(relu_h, np.broadcast_to(params["shift_bias"], (5, 3)), rtol=1e-13)
    half = 0.5 * sum(x @ w for x, w in zip(xs[1:], params["shift_kernels"], strict=True))
    np.testing.assert_allclose(sigmoid_h, half + params["shift_bias"], rtol=1e-12, atol=1e-13)


def test_relu_gate_zeroes_negative_preactivations_sigmoid_does_not():
    rng = np.random.default_rng(4)
    in_dims = (3, 2)
    params = random_params(rng, in_dims, 3)
    # Every gate pre-activation is within 10 ± 0.1 of zero, far below it.
    params["gate_kernels"] = [0.01 * k for k in params["gate_kernels"]]
    params["gate_biases"] = [np.full(3, -10.0)]
    xs = [rng.normal(size=(5, d)) for d in in_dims]
    with jax.enable_x64(True):
        jp, jxs = as_jax(params), as_jax(xs)
        moved = [jxs[0], jxs[1] + 1.0]
        relu = [F.modality_shift(jp, x, gate="relu", beta=1.0) for x in (jxs, moved)]
        sigmoid = [F.modality_shift(jp, x, gate="sigmoid", beta=1.0) for x in (jxs, moved)]
    # A closed relu gate has zero output and derivative: the secondary input is ignored.
    np.testing.assert_array_equal(relu[0], relu[1])
    assert not np.allclose(sigmoid[0], sigmoid[1], rtol=0.0, atol=1e-7)


@pytest.mark.parametrize("out_dim", [4, 6])
def test_sequence_input_is_fused_per_time_step(out_dim):
    in_dims = (4, 3, 5)
    op = fusion.create("modality_shift", in_dims, out_dim, rngs=nnx.Rngs(0), beta=0.5)
    xs = [jax.random.normal(jax.random.key(m), (3, 7, d)) for m, d in enumerate(in_dims)]
    z = op(xs)
    assert z.shape == (3, 7, out_dim)
    per_step = jnp.stack([op([x[:, t] for x in xs]) for t in range(7)], axis=1)
    np.testing.assert_allclose(z, per_step, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gate": "tanh"}, r"gate='tanh' is not one of \('relu', 'sigmoid'\)"),
        ({"beta": -0.1}, "beta must be a finite number >= 0"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"beta": "0.1"}, "beta must be a finite number >= 0"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"layer_norm_eps": -1e-5}, "layer_norm_eps must be a finite number > 0"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\)"),
        ({"dropout": float("nan")}, r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_bad_options_raise_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        fusion.create("modality_shift", (3, 2), 3, rngs=nnx.Rngs(0), **options)


def test_needs_a_secondary_modality_and_a_primary_of_two_features():
    with pytest.raises(ValueError, match="at least 2 modalities"):
        fusion.create("modality_shift", (3,), 3, rngs=nnx.Rngs(0))
    # the layer norm of a single feature would be its bias whatever the inputs
    with pytest.raises(ValueError, match=r"primary modality \(in_dims\[0\]\) needs at least 2"):
        fusion.create("modality_shift", (1, 3), 3, rngs=nnx.Rngs(0))
    params = F.init_modality_shift(jax.random.key(0), (3, 2), 3)
    with pytest.raises(ValueError, match=r"gate='gelu'"):
        F.modality_shift(params, [jnp.ones((1, 3)), jnp.ones((1, 2))], gate="gelu")


def test_dropout_zeroes_features_after_the_layer_norm_and_rescales_the_rest():
    rate = 0.5
    in_dims = (16, 6, 5)
    op = fusion.create("modality_shift", in_dims, 16, rngs=nnx.Rngs(0), beta=0.5, dropout=rate)
    assert (
        op.stochastic
        and not fusion.create("modality_shift", in_dims, 16, rngs=nnx.Rngs(0)).stochastic
    )
    xs = [jax.random.normal(jax.random.key(m), (512, d)) for m, d in enumerate(in_dims)]
    clean = np.asarray(op(xs))  # no key: deterministic, no dropout
    np.testing.assert_array_equal(
        clean, F.modality_shift(op.functional_params(), xs, beta=0.5, dropout=0.0)
    )
    dropped = np.asarray(op(xs, key=jax.random.key(1)))
    kept = dropped != 0
    # every feature is either dropped or the layer-norm output scaled by 1 / (1 - rate)
    np.testing.assert_allclose(dropped[kept], clean[kept] / (1 - rate), rtol=1e-6)
    assert abs(1 - kept.mean() - rate) < 0.01  # 8,192 draws: 4.5 standard errors
    assert kept.any(axis=1).all() and not kept.all(axis=1).any()  # masks differ per example
    again = np.asarray(op(xs, key=jax.random.key(1)))
    other = np.asarray(op(xs, key=jax.random.key(2)))
    np.testing.assert_array_equal(again, dropped)
    assert (other != dropped).any()


def test_dropout_precedes_the_output_projection():
    in_dims, out_dim = (8, 3), 4
    params = F.init_modality_shift(jax.random.key(0), in_dims, out_dim)
    xs = [jax.random.normal(jax.random.key(m + 1), (64, d)) for m, d in enumerate(in_dims)]
    key = jax.random.key(5)
    out = F.modality_shift(params, xs, beta=1.0, dropout=0.25, key=key)
    # the same model without its projection drops exactly the same features
    no_proj = {k: v for k, v in params.items() if not k.startswith("out_")}
    hidden = F.modality_shift(no_proj, xs, beta=1.0, dropout=0.25, key=key)  # [64, 8]
    expected = hidden @ params["out_kernel"] + params["out_bias"][None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert (np.asarray(hidden) == 0).mean() > 0.15


def test_a_model_with_dropout_is_stochastic_for_the_trainers():
    from experiments import _models, _tasks, _training
    from mmfuse import models

    op = fusion.create("modality_shift", (4, 3), 4, rngs=nnx.Rngs(0), beta=1.0, dropout=0.5)
    model = models.FusionModel([None, None], op, nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    assert _models.is_stochastic(model)
    task = _tasks.Task("toy", ("a", "b"), {}, num_classes=2)
    loss_fn, _ = _training.make_objective(task, stochastic=True)
    batch = {"a": jnp.ones((8, 4)), "b": jnp.ones((8, 3)), "label": jnp.zeros((8,), jnp.int32)}
    batch["a"] = batch["a"] * jnp.arange(8)[:, None]
    losses = {float(loss_fn(model, batch, jax.random.key(k))) for k in range(4)}
    assert len(losses) == 4  # the step's key samples the dropout mask
    deterministic = _training.make_objective(task, stochastic=False)[0]
    assert len({float(deterministic(model, batch, jax.random.key(k))) for k in range(4)}) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"layer_norm_eps": float("inf")}, "layer_norm_eps must be a finite number > 0"),
    ],
)
def test_the_functional_form_checks_its_scalars_too(options, match):
    params = F.init_modality_shift(jax.random.key(0), (3, 2), 3)
    xs = [jnp.ones((1, 3)), jnp.ones((1, 2))]
    with pytest.raises(ValueError, match=match):
        F.modality_shift(params, xs, **options)
    if "layer_norm_eps" not in options:
        with pytest.raises(ValueError, match=match):
            F.modality_shift_displacement(params, xs, **options)
    # a traced β (e.g. learned) is not a number to check
    jax.jit(lambda b: F.modality_shift(params, xs, beta=b))(jnp.float32(0.5))
