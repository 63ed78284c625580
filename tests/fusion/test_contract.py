"""The contract every registered fusion operator keeps (DESIGN §3)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from tests.fusion.specs import SPECS

OUT = 3
NAMES = fusion.names()
REQUIRED = (
    "additive",
    "multiplicative",
    "bilinear",
    "tensor",
    "low_rank_tensor",
    "gated",
    "hard_gated",
    "modality_shift",
    "nonlinear",
    "film",
)


def build(name, seed=0):
    spec = SPECS[name]
    return fusion.create(name, spec["in_dims"], OUT, rngs=nnx.Rngs(seed), **spec["options"])


def make_inputs(in_dims, lead, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(in_dims))
    return tuple(jax.random.normal(k, (*lead, d)) for k, d in zip(keys, in_dims, strict=True))


def pure(op):
    graphdef, state = nnx.split(op)
    return (lambda state, xs, **kw: nnx.merge(graphdef, state)(xs, **kw)), state


def test_every_required_operator_is_registered():
    assert set(REQUIRED) <= set(NAMES)


def test_every_operator_has_a_test_spec():
    assert set(NAMES) == set(SPECS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lead", [(5,), (2, 6)], ids=["batch", "batch_time"])
def test_output_shape_and_finite(name, lead):
    op = build(name)
    z = op(make_inputs(SPECS[name]["in_dims"], lead))
    assert z.shape == (*lead, OUT)
    assert z.dtype == jnp.float32
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    op = build(name)
    xs = make_inputs(SPECS[name]["in_dims"], (7,))
    apply, state = pure(op)
    np.testing.assert_allclose(jax.jit(apply)(state, xs), op(xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_extra_axis_equals_python_loop(name):
    op = build(name)
    xs = make_inputs(SPECS[name]["in_dims"], (4, 5))  # [4, 5, d_m]: vmap over the 4
    apply, state = pure(op)
    mapped = jax.vmap(apply, in_axes=(None, 0))(state, xs)
    looped = jnp.stack([apply(state, tuple(x[i] for x in xs)) for i in range(4)])
    np.testing.assert_allclose(mapped, looped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_finite_nonzero_gradient(name):
    op = build(name)
    xs = make_inputs(SPECS[name]["in_dims"], (16,))
    target = jax.random.normal(jax.random.key(7), (16, OUT))
    train_kwargs = SPECS[name].get("train_kwargs", lambda key: {})(jax.random.key(3))
    apply, state = pure(op)
    params = nnx.state(op, nnx.Param)
    assert len(jax.tree.leaves(params)) > 0

    def loss(state):
        return jnp.mean((apply(state, xs, **train_kwargs) - target) ** 2)

    grads = jax.grad(loss)(state)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert len(flat) == len(jax.tree.leaves(params))
    for path, g in flat:
        where = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), f"{name}: non-finite gradient at {where}"
        assert np.any(g != 0), f"{name}: zero gradient at {where}"


@pytest.mark.parametrize("name", NAMES)
def test_each_output_depends_only_on_its_own_example(name):
    op = build(name)
    in_dims = SPECS[name]["in_dims"]
    xs = make_inputs(in_dims, (6,))
    changed = tuple(x.at[2].set(x[2] * 3.0 + 1.0) for x in xs)
    before, after = op(xs), op(changed)
    keep = np.array([i != 2 for i in range(6)])
    np.testing.assert_allclose(after[keep], before[keep], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[2], before[2])


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_errors_naming_modality_and_shapes(name):
    op = build(name)
    in_dims = SPECS[name]["in_dims"]
    xs = make_inputs(in_dims, (5,))
    shapes = re.escape(str([x.shape for x in xs[:-1]]))
    with pytest.raises(
        ValueError, match=rf"expected {len(in_dims)} modalities.* of shapes {shapes}"
    ):
        op(xs[:-1])
    wrong_width = list(xs)
    wrong_width[1] = jnp.ones((5, in_dims[1] + 2))
    with pytest.raises(
        ValueError,
        match=rf"modality 1 has feature size {in_dims[1] + 2}.*"
        rf"in_dims\[1\] = {in_dims[1]}",
    ):
        op(wrong_width)
    wrong_batch = list(xs)
    wrong_batch[-1] = jnp.ones((4, in_dims[-1]))
    with pytest.raises(ValueError, match=rf"modality {len(in_dims) - 1} has leading dims \(4,\)"):
        op(wrong_batch)
    with pytest.raises(ValueError, match="modality 0 must have shape"):
        op((jnp.float32(1.0), *xs[1:]))


def test_unknown_operator_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown fusion operator 'tensr'.*low_rank_tensor"):
        fusion.create("tensr", (2, 2), 1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_lists_the_valid_ones(name):
    valid = fusion.options(name)
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) colour; valid options: " + ", ".join(valid)
    ):
        fusion.create(name, SPECS[name]["in_dims"], 2, rngs=nnx.Rngs(0), colour=1)


@pytest.mark.parametrize("name", NAMES)
def test_bad_sizes_are_rejected_at_construction(name):
    in_dims = SPECS[name]["in_dims"]
    with pytest.raises(ValueError, match=r"in_dims\[1\] \(modality 1\) must be a positive int"):
        fusion.create(
            name, (in_dims[0], 0, *in_dims[2:]), 2, rngs=nnx.Rngs(0), **SPECS[name]["options"]
        )
    with pytest.raises(ValueError, match="out_dim must be a positive int"):
        fusion.create(name, in_dims, 0, rngs=nnx.Rngs(0), **SPECS[name]["options"])


@pytest.mark.parametrize("name", NAMES)
def test_numpy_integer_sizes_are_accepted_as_ints(name):
    # e.g. widths read off arrays: np.array(widths)[m] is a NumPy integer
    in_dims = tuple(np.int64(d) for d in SPECS[name]["in_dims"])
    op = fusion.create(name, in_dims, np.int32(3), rngs=nnx.Rngs(0), **SPECS[name]["options"])
    assert op.in_dims == SPECS[name]["in_dims"] and op.out_dim == 3
    assert all(type(d) is int for d in (*op.in_dims, op.out_dim))
    with pytest.raises(ValueError, match=r"in_dims\[0\] \(modality 0\) must be a positive int"):
        fusion.create(name, (np.True_, *in_dims[1:]), 3, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("modality_shift", "beta", 0.25),
        ("modality_shift", "dropout", 0.25),
        ("hard_gated", "temperature", 0.5),
        ("film", "gamma_offset", 0.5),
    ],
)
def test_real_options_accept_numpy_and_jax_scalars_as_the_number(name, option, value):
    # e.g. a value computed with jnp, or read off an array: the option is the number
    in_dims = SPECS[name]["in_dims"]
    for scalar in (np.float32(value), jnp.float32(value), jnp.asarray(value)):
        op = fusion.create(name, in_dims, 2, rngs=nnx.Rngs(0), **{option: scalar})
        assert type(getattr(op, option)) is float
        assert getattr(op, option) == pytest.approx(value)
    for bad in (jnp.float32(jnp.nan), jnp.asarray([value, value]), jnp.asarray(True)):
        with pytest.raises(ValueError, match=f"{name}: {option} must be"):
            fusion.create(name, in_dims, 2, rngs=nnx.Rngs(0), **{option: bad})
    # the functional form checks a concrete scalar the same way (a traced one passes)
    op = fusion.create(name, in_dims, 2, rngs=nnx.Rngs(0))
    xs = make_inputs(in_dims, (3,))
    bad = {"gamma_offset": jnp.inf}.get(option, -1.0)  # gamma_offset may be any finite
    with pytest.raises(ValueError, match=f"{name}: {option} must be"):
        getattr(fusion.functional, name)(op.functional_params(), xs, **{option: jnp.float32(bad)})


def test_register_refuses_a_taken_name_and_non_operators():
    class Additive(fusion.FusionOperator):  # another class under a taken name
        pass

    with pytest.raises(ValueError, match=r"'additive' is already registered \(mmfuse.fusion"):
        fusion.register("additive")(Additive)
    with pytest.raises(TypeError, match=r"fusion.register\('mine'\): .* not a FusionOperator"):
        fusion.register("mine")(dict)
    assert "mine" not in fusion.names() and fusion.get("additive") is fusion.AdditiveFusion


def test_create_names_a_bad_rngs_and_takes_widths_as_a_numpy_array():
    with pytest.raises(TypeError, match=r"additive: rngs must be an nnx.Rngs .* got int"):
        fusion.create("additive", (3, 4), 2, rngs=0)
    op = fusion.create("additive", np.array([3, 4]), 2, rngs=nnx.Rngs(0))
    assert op.in_dims == (3, 4) and all(type(d) is int for d in op.in_dims)


def test_stochastic_says_which_operators_take_a_key():
    sampling = {name for name in NAMES if build(name).stochastic is True}
    assert sampling == {"hard_gated"}  # modality_shift only with dropout > 0
    assert all(build(name).stochastic is False for name in NAMES if name not in sampling)
    with_dropout = fusion.create("modality_shift", (4, 3), 2, dropout=0.5, rngs=nnx.Rngs(0))
    assert with_dropout.stochastic is True


@pytest.mark.parametrize("name", NAMES)
def test_an_unbatched_example_gives_its_row_of_the_batch(name):
    op = build(name)
    xs = make_inputs(SPECS[name]["in_dims"], (3,))
    single = op(tuple(x[1] for x in xs))  # [C]
    assert single.shape == (OUT,)
    np.testing.assert_allclose(single, op(xs)[1], rtol=1e-5, atol=1e-6)


# the operators whose training mode draws from a key, with options that make it draw
KEYED = {"hard_gated": {}, "modality_shift": {"dropout": 0.3}}


@pytest.mark.parametrize("name", sorted(KEYED))
def test_keyed_training_mode_jits_and_keeps_examples_and_time_steps_apart(name):
    spec = SPECS[name]
    options = {**spec["options"], **KEYED[name]}
    op = fusion.create(name, spec["in_dims"], OUT, rngs=nnx.Rngs(0), **options)
    assert op.stochastic
    xs = make_inputs(spec["in_dims"], (6, 4))  # [B, T, d_m]
    key = jax.random.key(5)
    apply, state = pure(op)
    before = op(xs, key=key)
    np.testing.assert_allclose(jax.jit(apply)(state, xs, key=key), before, rtol=1e-5, atol=1e-6)
    assert not np.allclose(op(xs, key=jax.random.key(6)), before)  # the key is used
    changed = tuple(x.at[2, 1].set(x[2, 1] * 3.0 + 1.0) for x in xs)
    after = op(changed, key=key)
    keep = np.ones((6, 4), bool)
    keep[2, 1] = False
    np.testing.assert_allclose(after[keep], before[keep], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[2, 1], before[2, 1])
