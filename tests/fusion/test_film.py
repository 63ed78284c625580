"""FiLM: float64 reference, identity modulation, affinity in the modulated input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


def random_params(rng, in_dims, out_dim):
    d0, conditioning = in_dims[0], in_dims[1:]
    params = {
        "gamma_kernels": [rng.normal(size=(d, d0)) for d in conditioning],
        "gamma_bias": rng.normal(size=(d0,)),
        "beta_kernels": [rng.normal(size=(d, d0)) for d in conditioning],
        "beta_bias": rng.normal(size=(d0,)),
    }
    if out_dim != d0:
        params["out_kernel"] = rng.normal(size=(d0, out_dim))
        params["out_bias"] = rng.normal(size=(out_dim,))
    return params


def numpy_film(params, xs, gamma_offset):
    c = np.concatenate(xs[1:], axis=-1)
    w_gamma = np.concatenate(params["gamma_kernels"], axis=0)
    w_beta = np.concatenate(params["beta_kernels"], axis=0)
    gamma = gamma_offset + c @ w_gamma + params["gamma_bias"]
    beta = c @ w_beta + params["beta_bias"]
    z = gamma * xs[0] + beta
    if "out_kernel" in params:
        z = z @ params["out_kernel"] + params["out_bias"]
    return z


def as_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


@pytest.mark.parametrize("gamma_offset", [1.0, 0.0, -2.5])
@pytest.mark.parametrize("out_dim", [3, 2], ids=["no_projection", "projection"])
@pytest.mark.parametrize("lead", [(4,), (2, 3)], ids=["batch", "batch_time"])
def test_matches_a_float64_numpy_reference(gamma_offset, out_dim, lead):
    rng = np.random.default_rng(0)
    in_dims = (3, 2, 4)
    params = random_params(rng, in_dims, out_dim)
    xs = [rng.normal(size=(*lead, d)) for d in in_dims]
    expected = numpy_film(params, xs, gamma_offset)
    with jax.enable_x64(True):
        z = F.film(as_jax(params), as_jax(xs), gamma_offset=gamma_offset)
        assert z.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-12, atol=1e-12)


def test_a_tiny_case_by_hand():
    # x = [1, 2], c = [3]; γ = 1 + 3·[0.5, -1] + [0, 1] = [2.5, -1]; β = 3·[1, 0] + [0, -2].
    params = {
        "gamma_kernels": [np.array([[0.5, -1.0]])],
        "gamma_bias": np.array([0.0, 1.0]),
        "beta_kernels": [np.array([[1.0, 0.0]])],
        "beta_bias": np.array([0.0, -2.0]),
    }
    with jax.enable_x64(True):
        z = F.film(as_jax(params), [jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])])
    np.testing.assert_allclose(z, [[2.5 * 1.0 + 3.0, -1.0 * 2.0 - 2.0]], rtol=1e-15)


@pytest.mark.parametrize("gamma_offset", [1.0, 0.5])
def test_zero_conditioning_weights_give_the_affine_identity(gamma_offset):
    rng = np.random.default_rng(1)
    in_dims = (5, 3, 4)
    params = random_params(rng, in_dims, 5)
    params["gamma_kernels"] = [np.zeros_like(k) for k in params["gamma_kernels"]]
    params["beta_kernels"] = [np.zeros_like(k) for k in params["beta_kernels"]]
    xs = [rng.normal(size=(6, d)) for d in in_dims]
    with jax.enable_x64(True):
        z = F.film(as_jax(params), as_jax(xs), gamma_offset=gamma_offset)
    expected = xs[0] * (gamma_offset + params["gamma_bias"]) + params["beta_bias"]
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-13, atol=1e-13)


def test_zero_initialised_module_starts_as_the_identity():
    in_dims = (5, 3, 4)
    op = fusion.create("film", in_dims, 5, rngs=nnx.Rngs(0), kernel_init=jax.nn.initializers.zeros)
    xs = [jax.random.normal(jax.random.key(m), (6, d)) for m, d in enumerate(in_dims)]
    np.testing.assert_array_equal(op(xs), xs[0])


@pytest.mark.parametrize("out_dim", [3, 4], ids=["no_projection", "projection"])
def test_affine_in_the_modulated_input_for_fixed_conditioning(out_dim):
    rng = np.random.default_rng(2)
    in_dims = (3, 2, 4)
    params = random_params(rng, in_dims, out_dim)
    conditioning = [rng.normal(size=(5, d)) for d in in_dims[1:]]
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    a, b = 1.7, -0.4
    with jax.enable_x64(True):
        jp = as_jax(params)

        def f(x):
            return np.asarray(F.film(jp, as_jax([x, *conditioning])))

        f0 = f(np.zeros((5, 3)))
        lhs = f(a * x1 + b * x2) - f0
        rhs = a * (f(x1) - f0) + b * (f(x2) - f0)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    # The cross-modal part is the bilinear term (W_γ c) ⊙ x: the double difference
    # f(x, c) − f(x, 0) − f(0, c) + f(0, 0) keeps exactly that term.
    zero_c = [np.zeros_like(c) for c in conditioning]
    with jax.enable_x64(True):
        both, no_c, no_x, neither = (
            np.asarray(F.film(jp, as_jax([x, *c])))
            for x, c in [
                (x1, conditioning),
                (x1, zero_c),
                (np.zeros_like(x1), conditioning),
                (np.zeros_like(x1), zero_c),
            ]
        )
    interaction = (np.concatenate(conditioning, -1) @ np.concatenate(params["gamma_kernels"])) * x1
    if "out_kernel" in params:
        interaction = interaction @ params["out_kernel"]
    np.testing.assert_allclose(both - no_c - no_x + neither, interaction, rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(interaction)) > 0.1


def test_init_splits_one_kernel_over_the_conditioning_modalities():
    in_dims = (3, 2, 4, 1)
    params = F.init_film(jax.random.key(0), in_dims, 6)
    assert [k.shape for k in params["gamma_kernels"]] == [(2, 3), (4, 3), (1, 3)]
    assert [k.shape for k in params["beta_kernels"]] == [(2, 3), (4, 3), (1, 3)]
    assert params["out_kernel"].shape == (3, 6) and params["out_bias"].shape == (6,)
    assert "out_kernel" not in F.init_film(jax.random.key(0), in_dims, 3)
    np.testing.assert_array_equal(params["gamma_bias"], 0.0)
    np.testing.assert_array_equal(params["beta_bias"], 0.0)


def test_module_calls_the_functional_form_with_its_offset():
    op = fusion.create("film", (3, 2), 4, rngs=nnx.Rngs(0), gamma_offset=0.25)
    xs = [jnp.ones((2, 3)), jnp.full((2, 2), 0.5)]
    np.testing.assert_array_equal(op(xs), F.film(op.functional_params(), xs, gamma_offset=0.25))


@pytest.mark.parametrize("gamma_offset", ["1", None, float("inf"), True])
def test_bad_gamma_offset_raises_naming_the_option(gamma_offset):
    with pytest.raises(ValueError, match="gamma_offset must be a finite number"):
        fusion.create("film", (3, 2), 3, rngs=nnx.Rngs(0), gamma_offset=gamma_offset)


def test_the_functional_form_checks_a_numeric_offset_and_takes_a_traced_one():
    params = F.init_film(jax.random.key(0), (3, 2), 3)
    xs = [jnp.ones((2, 3)), jnp.ones((2, 2))]
    with pytest.raises(ValueError, match=r"film: gamma_offset must be a finite number, got nan"):
        F.film(params, xs, gamma_offset=float("nan"))
    traced = jax.jit(lambda g: F.film(params, xs, gamma_offset=g))(jnp.float32(0.5))
    np.testing.assert_allclose(traced, F.film(params, xs, gamma_offset=0.5), rtol=1e-6)


def test_needs_a_conditioning_modality():
    with pytest.raises(ValueError, match="at least 2 modalities"):
        fusion.create("film", (3,), 3, rngs=nnx.Rngs(0))
