"""as_pure: apply equals the module, encode/head factorize it, cross pairs, gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import models
from tests.models.zoo import (
    FACTORIZING,
    KINDS,
    TRANSFORMERS,
    all_real,
    built,
    jit_call,
    normal,
    pure_and_jit,
)

N = 5  # examples to cross-pair


@pytest.mark.parametrize("name", KINDS)
def test_apply_equals_the_module_call_eager_and_jitted(name):
    model, xs = built(name), KINDS[name][1]()
    pure, apply = pure_and_jit(name)
    # the transformers run with masks, as their other tests do (one compilation each)
    kwargs = {"masks": all_real(xs)} if name in TRANSFORMERS else {}
    expected = jit_call(model, xs, **kwargs)
    np.testing.assert_allclose(apply(pure.params, xs, **kwargs), expected, rtol=1e-5, atol=1e-6)
    if name not in TRANSFORMERS:  # eager transformers compile op by op: slow on CPU
        np.testing.assert_allclose(model(xs), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pure.apply(pure.params, xs), expected, rtol=1e-5, atol=1e-6)


def test_params_are_a_snapshot_of_the_module():
    model, xs = KINDS["late_fusion"][0](), KINDS["late_fusion"][1]()
    pure = models.as_pure(model)
    y = pure.apply(pure.params, xs)
    model.weight_logits[...] = jnp.array([5.0, -5.0])
    np.testing.assert_allclose(pure.apply(pure.params, xs), y, rtol=1e-6)
    assert not np.allclose(model(xs), y)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pure.params = None


@pytest.mark.parametrize("name", FACTORIZING)
def test_head_of_encode_equals_apply(name):
    pure, apply = pure_and_jit(name)
    xs = KINDS[name][1]()
    assert pure.factorizes
    hs = pure.encode(pure.params, xs)
    assert isinstance(hs, tuple) and len(hs) == len(xs)
    expected = apply(pure.params, xs)
    np.testing.assert_allclose(pure.head(pure.params, hs), expected, rtol=1e-5, atol=1e-6)
    split = jax.jit(lambda p, xs: pure.head(p, pure.encode(p, xs)))
    np.testing.assert_allclose(split(pure.params, xs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FACTORIZING)
def test_head_on_cross_paired_encodings_equals_apply_on_paired_inputs(name):
    """Encode N examples once, run only the head on all N x N pairs (what EMAP needs)."""
    pure, apply = pure_and_jit(name)
    a, b = KINDS[name][1](seed=3, batch=N)
    h_a, h_b = jax.jit(pure.encode)(pure.params, (a, b))

    def head_one(h1, h2):  # one pair of unbatched encodings
        return pure.head(pure.params, (h1, h2))

    grid = jax.jit(jax.vmap(jax.vmap(head_one, (None, 0)), (0, None)))(h_a, h_b)  # [N, N, C]
    pairs = (jnp.repeat(a, N, axis=0), jnp.tile(b, (N,) + (1,) * (b.ndim - 1)))  # [N * N, ...]
    explicit = apply(pure.params, pairs).reshape(N, N, -1)  # row i = a_i, column j = b_j
    np.testing.assert_allclose(grid, explicit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.diagonal(grid).T, apply(pure.params, (a, b)), rtol=1e-5)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformers_do_not_factorize(name):
    pure, _ = pure_and_jit(name)
    assert not pure.factorizes
    assert pure.encode is None and pure.head is None


@pytest.mark.parametrize("name", KINDS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name):
    pure, _ = pure_and_jit(name)
    xs = KINDS[name][1]()
    n_params = len(jax.tree.leaves(nnx.state(built(name), nnx.Param)))
    assert n_params == len(jax.tree.leaves(pure.params)) > 0  # every variable is a Param

    def loss(params):
        y = pure.apply(params, xs)
        return jnp.mean((y - normal(7, y.shape)) ** 2)

    grads = jax.jit(jax.grad(loss))(pure.params)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert len(flat) == n_params
    for path, g in flat:
        g = np.asarray(g)
        where = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), f"{name}: non-finite gradient at {where}"
        assert np.any(g != 0), f"{name}: zero gradient at {where}"
