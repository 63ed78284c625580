"""Properties of the models (FusionModel, LateFusion, MLP, the zoo's kinds) on random input."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse import fusion, models
from tests.fusion.specs import SPECS
from tests.models import zoo
from tests.properties.strategies import (
    expected_dtype,
    leading_dims,
    modality_inputs,
    poison,
    to_jax,
    x64_context,
)

C = 2


@st.composite
def modular_model(draw):
    """A FusionModel (MLP encoders, any operator, optional MLP head) or a LateFusion."""
    seed = draw(st.integers(0, 2**16))
    rngs = nnx.Rngs(seed)
    kind = draw(st.sampled_from(["fusion", "late", "mlp"]))
    if kind == "mlp":
        d = draw(st.integers(1, 3))
        return models.MLP(d, (draw(st.integers(1, 3)),), C, rngs=rngs), (d,), True
    name = draw(st.sampled_from(fusion.names()))
    high = 2 if name == "bilinear" else 3
    num_modalities = draw(st.integers(2, high))
    in_dims = tuple(draw(st.integers(1, 3)) for _ in range(num_modalities))
    if kind == "late":
        combine = draw(st.sampled_from(["mean", "weighted"]))
        predictors = [models.MLP(d, (3,), C, rngs=rngs) for d in in_dims]
        return models.LateFusion(predictors, combine=combine), in_dims, False
    widths = tuple(draw(st.integers(1, 3)) for _ in in_dims)
    encoders = [
        None if draw(st.booleans()) else models.MLP(d, (3,), e, rngs=rngs)
        for d, e in zip(in_dims, widths, strict=True)
    ]
    widths = tuple(
        d if enc is None else e for enc, d, e in zip(encoders, in_dims, widths, strict=True)
    )
    head_in = draw(st.integers(1, 4))
    op = fusion.create(name, widths, head_in, rngs=rngs, **SPECS[name]["options"])
    head = models.MLP(head_in, (), C, rngs=rngs)
    return models.FusionModel(encoders, op, head), in_dims, False


def call(model, xs, single):
    return model(xs[0]) if single else model(tuple(xs))


@given(data=st.data())
def test_modular_models_give_finite_outputs_of_the_documented_shape_and_dtype(data):
    model, in_dims, single = data.draw(modular_model())
    lead = data.draw(leading_dims())
    xs, dtypes = data.draw(modality_inputs(in_dims, lead))
    with x64_context(dtypes):
        z = call(model, [to_jax(x, d) for x, d in zip(xs, dtypes, strict=True)], single)
        assert z.shape == (*lead, C)
        assert z.dtype == expected_dtype(dtypes)
        assert np.all(np.isfinite(np.asarray(z)))


@given(data=st.data())
def test_modular_models_keep_nan_and_inf_in_their_example(data):
    model, in_dims, single = data.draw(modular_model())
    lead = data.draw(leading_dims(min_batch=2))
    xs, _ = data.draw(modality_inputs(in_dims, lead, dtypes=("float32",)))
    m = data.draw(st.integers(0, len(in_dims) - 1))
    where = tuple(data.draw(st.integers(0, s - 1)) for s in lead)
    xs = list(xs)
    xs[m] = poison(xs[m], (*where, 0), data.draw(st.sampled_from([np.nan, np.inf, -np.inf])))
    z = np.asarray(call(model, [jnp.asarray(x, jnp.float32) for x in xs], single))
    others = np.ones(lead, bool)
    others[where] = False
    assert np.all(np.isfinite(z[others]))


@given(data=st.data())
def test_modular_models_reject_mismatched_and_complex_inputs(data):
    model, in_dims, single = data.draw(modular_model())
    if single:
        with pytest.raises(ValueError, match=r"MLP: input has feature size"):
            model(np.zeros((2, in_dims[0] + 1), np.float32))
        with pytest.raises(TypeError, match=r"MLP: input has complex dtype"):
            model(np.zeros((2, in_dims[0]), np.complex64))
        return
    m = data.draw(st.integers(1, len(in_dims) - 1))
    xs = [np.zeros((3, d), np.float32) for d in in_dims]
    xs[m] = np.zeros((2, in_dims[m]), np.float32)
    with pytest.raises(ValueError, match=rf"modality {m} has batch dims \(2,\)"):
        model(tuple(xs))
    xs[m] = np.zeros((3, in_dims[m]), np.complex64)
    with pytest.raises(TypeError, match=rf"modality {m} has complex dtype"):
        model(tuple(xs))


@pytest.mark.parametrize("kind", sorted(zoo.KINDS))
@settings(max_examples=6)
@given(
    batch=st.sampled_from([0, 1, 3]),
    dtype=st.sampled_from(["float16", "bfloat16", "float32", "int32"]),
)
def test_every_model_kind_takes_any_batch_and_input_dtype(kind, batch, dtype):
    model = zoo.built(kind)
    xs = tuple(to_jax(np.asarray(x), dtype) for x in zoo.KINDS[kind][1](batch=batch))
    z = zoo.jit_call(model, xs)
    assert z.shape == (batch, zoo.C)
    assert z.dtype == jnp.float32  # half-precision and integer inputs compute in float32
    assert np.all(np.isfinite(np.asarray(z)))
