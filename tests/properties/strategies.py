"""Hypothesis strategies shared by the property tests: shapes, dtypes and input arrays."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

# Moderate magnitudes: a product of four modalities' features stays far inside float32
# (and a float16 input is representable); overflow of huge inputs is not a bug.
BOUND = 100.0

# float64 is drawn as a dtype, and the call then runs under jax.enable_x64
DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "bool")


def x64_context(dtypes):
    """``jax.enable_x64`` when any drawn dtype is float64, so the array keeps it."""
    return jax.enable_x64(True) if "float64" in dtypes else contextlib.nullcontext()


def expected_dtype(dtypes):
    """The output dtype the policy promises: float64 if any input is float64, else float32."""
    return jnp.float64 if "float64" in dtypes else jnp.float32


@st.composite
def leading_dims(draw, *, min_batch=0, max_batch=3, allow_time=True):
    """``(B,)`` or ``(B, T)``: small, and including the empty batch B = 0."""
    batch = draw(st.integers(min_batch, max_batch))
    if allow_time and draw(st.booleans()):
        return (batch, draw(st.integers(1, 2)))
    return (batch,)


@st.composite
def array(draw, shape, dtype, *, finite=True):
    """A NumPy array of ``shape`` whose values suit ``dtype`` (ints and bools included).

    Built in NumPy and converted by the caller, so no JAX work is spent on generation.
    """
    size = int(np.prod(shape))
    if dtype == "bool":
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        return np.asarray(values, bool).reshape(shape)
    if dtype == "int32":
        values = draw(st.lists(st.integers(-100, 100), min_size=size, max_size=size))
        return np.asarray(values, np.int32).reshape(shape)
    elements = st.floats(-BOUND, BOUND, allow_nan=not finite, allow_infinity=not finite, width=32)
    values = draw(st.lists(elements, min_size=size, max_size=size))
    return np.asarray(values, np.float64).reshape(shape)


def to_jax(x, dtype):
    """``x`` as a jax array of ``dtype`` (float64 needs the caller's x64 context)."""
    if dtype in ("bool", "int32"):
        return jnp.asarray(x)
    return jnp.asarray(x, jnp.dtype(dtype))


@st.composite
def modality_inputs(draw, in_dims, lead, *, dtypes=DTYPES):
    """M arrays ``[*lead, d_m]`` (NumPy), each with its own drawn dtype; returns both."""
    chosen = tuple(draw(st.sampled_from(dtypes)) for _ in in_dims)
    xs = tuple(draw(array((*lead, d), dtype)) for d, dtype in zip(in_dims, chosen, strict=True))
    return xs, chosen


def poison(x, index, value):
    """A float copy of ``x`` with ``x[index] = value`` (nan or ±inf)."""
    x = np.array(x, np.float64)
    x[index] = value
    return x
