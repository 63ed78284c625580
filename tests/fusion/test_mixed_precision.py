"""``compute_dtype``: bf16 matmul operands, float32 accumulation and everything else."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion, models
from mmfuse.fusion._core import einsum, matmul
from tests.fusion.specs import SPECS
from tests.jaxprs import dot_generals, operand_dtypes

OUT = 3
BF16 = jnp.bfloat16
NAMES = fusion.names()


def build(name, compute_dtype=None):
    spec = SPECS[name]
    return fusion.create(
        name,
        spec["in_dims"],
        OUT,
        rngs=nnx.Rngs(0),
        compute_dtype=compute_dtype,
        **spec["options"],
    )


def inputs(in_dims, batch=16, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(in_dims))
    return tuple(jax.random.normal(k, (batch, d)) for k, d in zip(keys, in_dims, strict=True))


def loss_and_grads(op, xs, target, **kwargs):
    graphdef, state = nnx.split(op)

    def loss(state):
        return jnp.mean((nnx.merge(graphdef, state)(xs, **kwargs) - target) ** 2)

    return loss, state, jax.grad(loss)(state)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", NAMES)
def test_every_matmul_forward_and_backward_takes_bf16_operands(name):
    op = build(name, BF16)
    xs = inputs(SPECS[name]["in_dims"])
    target = jnp.zeros((16, OUT))
    kwargs = SPECS[name].get("train_kwargs", lambda key: {})(jax.random.key(1))
    forward = dot_generals(jax.make_jaxpr(lambda xs: op(xs, **kwargs))(xs).jaxpr)
    assert forward, f"{name}: no matmul found"
    assert operand_dtypes(forward) == {"bfloat16"}
    assert {str(e.outvars[0].aval.dtype) for e in forward} == {"float32"}  # accumulated in f32

    loss, state, _ = loss_and_grads(op, xs, target, **kwargs)
    backward = dot_generals(jax.make_jaxpr(jax.grad(loss))(state).jaxpr)
    # the forward matmuls again plus those of the gradient, none of them float32
    assert len(backward) > len(forward)
    assert operand_dtypes(backward) == {"bfloat16"}


@pytest.mark.parametrize("name", NAMES)
def test_bf16_operator_is_the_float32_operator_to_bf16_rounding(name):
    f32, bf16 = build(name), build(name, BF16)
    xs = inputs(SPECS[name]["in_dims"])
    target = jax.random.normal(jax.random.key(5), (16, OUT))
    kwargs = SPECS[name].get("train_kwargs", lambda key: {})(jax.random.key(1))
    # the same parameters, kept in float32
    for a, b in zip(jax.tree.leaves(nnx.state(f32)), jax.tree.leaves(nnx.state(bf16)), strict=True):
        assert b.dtype == a.dtype and np.array_equal(a, b)

    z32, z16 = f32(xs), bf16(xs)
    assert z16.dtype == jnp.float32
    keep = np.ones(16, bool)
    if name == "hard_gated":  # compare the examples whose argmax choice agrees
        keep = np.all(
            f32(xs, return_aux=True)[1].choice == bf16(xs, return_aux=True)[1].choice, axis=-1
        )
        assert keep.mean() >= 0.75
    error = relative_error(z16[keep], z32[keep])
    assert 0 < error < 2e-2, f"{name}: relative error {error:.2e} of the bf16 output"

    _, _, g32 = loss_and_grads(f32, xs, target, **kwargs)
    _, _, g16 = loss_and_grads(bf16, xs, target, **kwargs)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(g32), jax.tree.leaves(g16), strict=True
    ):
        where = jax.tree_util.keystr(path)
        assert b.dtype == jnp.float32, f"{name}: gradient at {where} is {b.dtype}"
        if name != "hard_gated":  # a flipped choice moves whole experts' gradients
            error = relative_error(b, a)
            assert error < 5e-2, f"{name}: gradient at {where} off by {error:.2e}"


def test_float32_compute_dtype_is_the_default_computation():
    xs = inputs(SPECS["tensor"]["in_dims"])
    np.testing.assert_allclose(
        build("tensor", jnp.float32)(xs), build("tensor")(xs), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("bad", ["int32", jnp.bool_, "not-a-dtype", 3])
def test_bad_compute_dtype_is_a_value_error_naming_the_operator(bad):
    with pytest.raises(ValueError, match="multiplicative: compute_dtype"):
        fusion.create("multiplicative", (2, 3), 4, rngs=nnx.Rngs(0), compute_dtype=bad)
    with pytest.raises(ValueError, match="tensor: compute_dtype"):
        fusion.functional.tensor(
            build("tensor").functional_params(), inputs((3, 4, 2)), compute_dtype=bad
        )


def test_dtype_names_are_accepted():
    op = fusion.create("additive", (2, 3), 4, rngs=nnx.Rngs(0), compute_dtype="bfloat16")
    assert op.compute_dtype == jnp.bfloat16


def test_matmul_and_einsum_work_under_jit_and_vmap():
    a = jax.random.normal(jax.random.key(0), (4, 5, 6))
    b = jax.random.normal(jax.random.key(1), (6, 3))
    expected = jnp.matmul(a.astype(BF16), b.astype(BF16), preferred_element_type=jnp.float32)
    got = jax.jit(jax.vmap(lambda a: matmul(a, b, BF16)))(a)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(einsum("nti,ij->ntj", a, b, compute_dtype=BF16), expected)


def test_forward_mode_multiplies_the_tangents_in_bf16_too():
    a = jax.random.normal(jax.random.key(0), (4, 6))
    b = jax.random.normal(jax.random.key(1), (6, 3))
    da = jax.random.normal(jax.random.key(2), (4, 6))
    out, tangent = jax.jvp(lambda a: matmul(a, b, BF16), (a,), (da,))
    assert out.dtype == tangent.dtype == jnp.float32
    low = jnp.matmul(da.astype(BF16), b.astype(BF16))  # the tangent's product, in bf16
    np.testing.assert_array_equal(tangent, low.astype(jnp.float32))
    # forward and reverse mode give the same Jacobian: the bf16 weights, each
    jac_fwd = jax.jacfwd(lambda a: matmul(a, b, BF16))(a)
    jac_rev = jax.jacrev(lambda a: matmul(a, b, BF16))(a)
    np.testing.assert_array_equal(jac_fwd, jac_rev)
    np.testing.assert_array_equal(jac_fwd[0, :, 0, :], b.astype(BF16).astype(jnp.float32).T)


@pytest.mark.parametrize("name", ["tensor", "low_rank_tensor", "bilinear"])
def test_second_derivatives_of_a_bf16_operator_are_the_float32_ones_to_bf16_rounding(name):
    in_dims = SPECS[name]["in_dims"]
    xs = inputs(in_dims, batch=2)

    def hessian(op):
        def loss(x0):  # the operator's squared output, a function of modality 0
            return jnp.sum(op((x0, *xs[1:])) ** 2)

        return jax.hessian(loss)(xs[0])  # forward over reverse mode

    h16, h32 = hessian(build(name, BF16)), hessian(build(name))
    assert h16.dtype == jnp.float32 and h16.shape == (2, in_dims[0], 2, in_dims[0])
    assert relative_error(h16, h32) < 2e-2


def test_an_operand_that_is_not_differentiated_costs_no_gradient_matmul():
    x = jax.random.normal(jax.random.key(0), (4, 6))
    w = jax.random.normal(jax.random.key(1), (6, 3))

    def loss(x, w):
        return jnp.sum(jnp.tanh(matmul(x, w, BF16)))

    def count(argnums):
        return len(dot_generals(jax.make_jaxpr(jax.grad(loss, argnums))(x, w).jaxpr))

    assert count(1) == 2  # the forward product and the weight's gradient
    assert count((0, 1)) == 3  # and the input's


@pytest.mark.parametrize(
    "make",
    [
        lambda dtype: models.MLP(5, (8,), 3, compute_dtype=dtype, rngs=nnx.Rngs(0)),
        lambda dtype: models.SequenceEncoder(
            5, 3, pool="mean", compute_dtype=dtype, rngs=nnx.Rngs(0)
        ),
    ],
    ids=["mlp", "sequence"],
)
def test_encoders_compute_in_bf16_with_float32_parameters(make):
    f32, bf16 = make(None), make(BF16)
    x = jax.random.normal(jax.random.key(2), (4, 7, 5))
    found = dot_generals(jax.make_jaxpr(bf16)(x).jaxpr)
    assert found and operand_dtypes(found) == {"bfloat16"}
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(nnx.state(bf16))} == {"float32"}
    error = relative_error(bf16(x), f32(x))
    assert 0 < error < 2e-2


@pytest.mark.parametrize("cls", [models.EarlyFusionTransformer, models.BottleneckFusion])
def test_transformers_compute_in_bf16_with_float32_parameters(cls):
    def make(dtype):
        return cls(
            (5, 3), 2, d_model=16, num_heads=2, mlp_dim=16, compute_dtype=dtype, rngs=nnx.Rngs(0)
        )

    f32, bf16 = make(None), make(BF16)
    keys = jax.random.split(jax.random.key(3), 2)
    xs = [jax.random.normal(keys[0], (4, 6, 5)), jax.random.normal(keys[1], (4, 2, 3))]
    found = dot_generals(jax.make_jaxpr(bf16)(xs).jaxpr)
    assert len(found) > 10 and operand_dtypes(found) == {"bfloat16"}
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(nnx.state(bf16))} == {"float32"}
    error = relative_error(bf16(xs), f32(xs))
    assert 0 < error < 3e-2


def test_residual_fusion_branches_compute_in_bf16():
    def make(dtype):
        return models.ResidualFusion((5, 3), 2, compute_dtype=dtype, rngs=nnx.Rngs(0))

    xs = inputs((5, 3), batch=8)
    found = dot_generals(jax.make_jaxpr(make(BF16))(xs).jaxpr)
    assert len(found) == 6 and operand_dtypes(found) == {"bfloat16"}  # 3 branches x 2 layers
    assert 0 < relative_error(make(BF16)(xs), make(None)(xs)) < 2e-2
