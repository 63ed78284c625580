"""Nonlinear (early) fusion: a numpy MLP reference, interactions, option checks."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F

NUMPY_ACTS = {
    "relu": lambda a: np.maximum(a, 0.0),
    "gelu": lambda a: 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3))),
    "tanh": np.tanh,
    "silu": lambda a: a / (1.0 + np.exp(-a)),
}


def random_params(rng, in_dims, hidden_dims, out_dim):
    widths = (*hidden_dims, out_dim)
    return {
        "input_kernels": [rng.normal(size=(d, widths[0])) for d in in_dims],
        "kernels": [rng.normal(size=s) for s in itertools.pairwise(widths)],
        "biases": [rng.normal(size=(w,)) for w in widths],
    }


def numpy_mlp(params, xs, activation):
    act = NUMPY_ACTS[activation]
    h = np.concatenate(xs, axis=-1)
    kernels = [np.concatenate(params["input_kernels"], axis=0), *params["kernels"]]
    for i, (w, b) in enumerate(zip(kernels, params["biases"], strict=True)):
        h = h @ w + b
        if i < len(kernels) - 1:
            h = act(h)
    return h


def as_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTS))
@pytest.mark.parametrize(
    ("in_dims", "hidden_dims"),
    [((3, 2, 4), (5,)), ((3, 2, 4), (5, 3)), ((4,), (6, 2, 3))],
    ids=["three_modalities", "two_hidden_layers", "one_modality"],
)
def test_matches_a_float64_numpy_mlp(activation, in_dims, hidden_dims):
    rng = np.random.default_rng(0)
    params = random_params(rng, in_dims, hidden_dims, 2)
    xs = [rng.normal(size=(2, 3, d)) for d in in_dims]
    expected = numpy_mlp(params, xs, activation)
    with jax.enable_x64(True):
        z = F.nonlinear(as_jax(params), as_jax(xs), activation=activation)
        assert z.dtype == jnp.float64 and z.shape == (2, 3, 2)
        np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-12, atol=1e-12)


def test_a_tiny_case_by_hand():
    # [x_1; x_2] = [1, -2, 3]; hidden relu([1·1 + 3·1, −2·1] + [0, 1]) = relu([4, −1]) = [4, 0];
    # output 4·2 + 0·5 − 1 = 7.
    params = {
        "input_kernels": [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])],
        "kernels": [np.array([[2.0], [5.0]])],
        "biases": [np.array([0.0, 1.0]), np.array([-1.0])],
    }
    with jax.enable_x64(True):
        z = F.nonlinear(as_jax(params), [jnp.array([[1.0, -2.0]]), jnp.array([[3.0]])])
    np.testing.assert_array_equal(z, [[7.0]])


def test_init_draws_one_first_layer_kernel_split_by_modality():
    params = F.init_nonlinear(jax.random.key(0), (3, 2, 4), 5, hidden_dims=(6, 7))
    assert [k.shape for k in params["input_kernels"]] == [(3, 6), (2, 6), (4, 6)]
    assert [k.shape for k in params["kernels"]] == [(6, 7), (7, 5)]
    assert [b.shape for b in params["biases"]] == [(6,), (7,), (5,)]
    for b in params["biases"]:
        np.testing.assert_array_equal(b, 0.0)


def test_module_calls_the_functional_form_with_its_options():
    op = fusion.create(
        "nonlinear", (3, 2), 4, rngs=nnx.Rngs(0), hidden_dims=[8, 5], activation="tanh"
    )
    xs = [jnp.linspace(-1, 1, 6).reshape(2, 3), jnp.full((2, 2), 0.5)]
    params = op.functional_params()
    assert [k.shape for k in params["kernels"]] == [(8, 5), (5, 4)]
    np.testing.assert_array_equal(op(xs), F.nonlinear(params, xs, activation="tanh"))


def test_models_cross_modal_interactions():
    # The double difference f(a, b) − f(a', b) − f(a, b') + f(a', b') vanishes for any
    # additive function; a nonlinear MLP on the concatenation does not keep it at zero.
    op = fusion.create("nonlinear", (3, 4), 2, rngs=nnx.Rngs(0), hidden_dims=(16,))
    keys = jax.random.split(jax.random.key(1), 4)
    a, a2 = (jax.random.normal(k, (8, 3)) for k in keys[:2])
    b, b2 = (jax.random.normal(k, (8, 4)) for k in keys[2:])
    interaction = op([a, b]) - op([a2, b]) - op([a, b2]) + op([a2, b2])
    assert np.max(np.abs(interaction)) > 1e-2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"hidden_dims": ()}, "hidden_dims must name at least one hidden layer"),
        ({"hidden_dims": (4, -1)}, r"hidden_dims\[1\] must be a positive int, got -1"),
        ({"hidden_dims": (0,)}, r"hidden_dims\[0\] must be a positive int, got 0"),
        ({"hidden_dims": (4.0,)}, r"hidden_dims\[0\] must be a positive int"),
        ({"hidden_dims": 4}, "hidden_dims must be a non-empty sequence of positive ints"),
        ({"hidden_dims": "64"}, "hidden_dims must be a non-empty sequence of positive ints"),
        ({"activation": "swish"}, r"activation='swish' is not one of"),
    ],
)
def test_bad_options_raise_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        fusion.create("nonlinear", (3, 2), 3, rngs=nnx.Rngs(0), **options)


def test_functional_form_checks_its_activation():
    params = F.init_nonlinear(jax.random.key(0), (3,), 2)
    with pytest.raises(ValueError, match=r"activation='sigmoid'"):
        F.nonlinear(params, [jnp.ones((1, 3))], activation="sigmoid")
    with pytest.raises(ValueError, match="hidden_dims must name at least one hidden layer"):
        F.init_nonlinear(jax.random.key(0), (3,), 2, hidden_dims=())
