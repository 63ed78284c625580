"""Properties of every registered fusion operator on random shapes, dtypes and bad inputs."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from mmfuse import fusion
from tests.fusion.specs import SPECS
from tests.properties.strategies import (
    expected_dtype,
    leading_dims,
    modality_inputs,
    poison,
    to_jax,
    x64_context,
)

NAMES = fusion.names()
# (fewest, most) modalities drawn per operator; the maths of the others allows M > 2
MODALITY_RANGE = {"additive": (1, 4), "nonlinear": (1, 4), "bilinear": (2, 2)}
# the fewest features of the first modality (modality_shift layer-normalizes it)
MIN_PRIMARY_WIDTH = {"modality_shift": 2}
OUT = 3


@st.composite
def operator(draw, name):
    """A freshly built operator with random modality count and widths."""
    low, high = MODALITY_RANGE.get(name, (2, 4))
    num_modalities = draw(st.integers(low, high))
    in_dims = tuple(draw(st.integers(1, 3)) for _ in range(num_modalities))
    in_dims = (max(in_dims[0], MIN_PRIMARY_WIDTH.get(name, 1)), *in_dims[1:])
    seed = draw(st.integers(0, 2**16))
    op = fusion.create(name, in_dims, OUT, rngs=nnx.Rngs(seed), **SPECS[name]["options"])
    return op, in_dims


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_finite_inputs_give_finite_outputs_of_the_documented_shape_and_dtype(name, data):
    op, in_dims = data.draw(operator(name))
    lead = data.draw(leading_dims())
    xs, dtypes = data.draw(modality_inputs(in_dims, lead))
    with x64_context(dtypes):
        z = op(tuple(to_jax(x, d) for x, d in zip(xs, dtypes, strict=True)))
        assert z.shape == (*lead, OUT)  # B = 0 included: [0, OUT]
        assert z.dtype == expected_dtype(dtypes)
        assert np.all(np.isfinite(np.asarray(z)))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_nan_and_inf_stay_in_the_example_that_holds_them(name, data):
    op, in_dims = data.draw(operator(name))
    lead = data.draw(leading_dims(min_batch=2))
    xs, _ = data.draw(modality_inputs(in_dims, lead, dtypes=("float32",)))
    m = data.draw(st.integers(0, len(in_dims) - 1))
    where = tuple(data.draw(st.integers(0, size - 1)) for size in lead)
    feature = data.draw(st.integers(0, in_dims[m] - 1))
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    xs = list(xs)
    xs[m] = poison(xs[m], (*where, feature), bad)
    z = np.asarray(op(tuple(jnp.asarray(x, jnp.float32) for x in xs)))
    assert z.shape == (*lead, OUT)
    others = np.ones(lead, bool)
    others[where] = False
    assert np.all(np.isfinite(z[others])), "a non-finite input leaked into other examples"


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_mismatched_inputs_raise_value_errors_naming_the_modality(name, data):
    op, in_dims = data.draw(operator(name))
    lead = data.draw(leading_dims(min_batch=1))
    xs = [np.zeros((*lead, d), np.float32) for d in in_dims]
    m = data.draw(st.integers(0, len(in_dims) - 1))
    fault = data.draw(st.sampled_from(["count", "width", "batch", "rank", "scalar"]))
    if fault == "count":
        xs = [*xs, xs[-1]] if data.draw(st.booleans()) else xs[:-1]
        message = rf"expected {len(in_dims)} modalities"
    elif fault == "width":
        xs[m] = np.zeros((*lead, in_dims[m] + data.draw(st.integers(1, 3))), np.float32)
        message = rf"modality {m} has feature size"
    elif fault == "scalar":
        xs[m] = np.float32(0.0)
        message = rf"modality {m} must have shape"
    else:
        # the leading dims of one modality differ from the others'
        other = (lead[0] + 1, *lead[1:]) if fault == "batch" else (*lead, 2)
        if len(in_dims) == 1:
            return  # a single modality has nothing to disagree with
        m = max(m, 1)
        xs[m] = np.zeros((*other, in_dims[m]), np.float32)
        message = rf"modality {m} has leading dims {tuple(other)}".replace("(", r"\(").replace(
            ")", r"\)"
        )
    with pytest.raises(ValueError, match=message):
        op(tuple(xs))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_complex_and_non_numeric_inputs_raise_type_errors_naming_the_modality(name, data):
    op, in_dims = data.draw(operator(name))
    xs = [np.zeros((2, d), np.float32) for d in in_dims]
    m = data.draw(st.integers(0, len(in_dims) - 1))
    if data.draw(st.booleans()):
        xs[m] = np.zeros((2, in_dims[m]), np.complex64)
    else:
        xs[m] = np.full((2, in_dims[m]), "a")
    with pytest.raises(TypeError, match=rf"{name}: modality {m} "):
        op(tuple(xs))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_an_unsupported_modality_count_is_rejected_at_construction(name, data):
    limits = {"additive": (1, None), "nonlinear": (1, None), "bilinear": (2, 2), "tensor": (2, 20)}
    low, high = limits.get(name, (2, None))
    counts = [c for c in (0, low - 1, None if high is None else high + 1) if c is not None]
    count = data.draw(st.sampled_from(sorted(set(counts))))
    in_dims = (2,) * count
    with pytest.raises(ValueError, match=rf"{name}.*modalit"):
        fusion.create(name, in_dims, OUT, rngs=nnx.Rngs(0), **SPECS[name]["options"])
