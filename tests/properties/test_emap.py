"""Properties of ``interactions.emap`` / ``emap_decompose`` on random shapes, dtypes, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse import interactions
from tests.properties.strategies import array, to_jax, x64_context


def model(widths, num_outputs, *, interacting, seed):
    """``[n, C]`` (or ``[n]`` when ``num_outputs`` is None) from M inputs ``[n, d_m]``.

    Additive (``Σ_m tanh(x_m W_m)``) or not (``tanh(Σ_m x_m W_m)``), and real-valued
    whatever the input dtype.
    """
    rng = np.random.default_rng(seed)
    width = 1 if num_outputs is None else num_outputs
    ws = [rng.standard_normal((d, width)).astype(np.float32) / 10 for d in widths]

    def fn(xs):
        terms = [jnp.asarray(x, jnp.float32) @ w for x, w in zip(xs, ws, strict=True)]
        out = jnp.tanh(sum(terms)) if interacting else sum(jnp.tanh(t) for t in terms)
        return out if num_outputs is not None else out[:, 0]  # [n, C] or [n]

    return fn


@st.composite
def problem(draw, *, min_n=2):
    num_modalities = draw(st.integers(2, 3))
    n = draw(st.integers(min_n, 5))
    widths = tuple(draw(st.integers(1, 3)) for _ in range(num_modalities))
    num_outputs = draw(st.sampled_from([None, 1, 2]))
    dtype = draw(st.sampled_from(["float16", "bfloat16", "float32", "float64", "int32"]))
    xs = tuple(draw(array((n, d), dtype)) for d in widths)
    return widths, num_outputs, dtype, xs


@settings(max_examples=8)
@given(data=st.data())
def test_additive_models_are_fixed_points_with_the_documented_shape_and_dtype(data):
    widths, num_outputs, dtype, xs = data.draw(problem())
    fn = model(widths, num_outputs, interacting=False, seed=data.draw(st.integers(0, 99)))
    with x64_context([dtype]):
        xs = tuple(to_jax(x, dtype) for x in xs)
        parts = interactions.emap_decompose(fn, xs)
        n = xs[0].shape[0]
        out = (n,) if num_outputs is None else (n, num_outputs)
        assert parts.projected.shape == out
        assert parts.projected.dtype == jnp.float32  # fn returns float32 whatever the inputs
        assert all(np.all(np.isfinite(np.asarray(p))) for p in (parts.projected, *parts.marginals))
        # EMAP is the identity on additive functions
        np.testing.assert_allclose(parts.projected, fn(xs), rtol=1e-5, atol=1e-5)


@settings(max_examples=8)
@given(data=st.data())
def test_decomposition_adds_up_and_float64_outputs_stay_float64(data):
    widths, num_outputs, _, xs = data.draw(problem())
    fn = model(widths, num_outputs, interacting=True, seed=data.draw(st.integers(0, 99)))
    wide = data.draw(st.booleans())
    with x64_context(["float64"] if wide else []):
        run = (lambda xs: fn(xs).astype(jnp.float64)) if wide else fn
        parts = interactions.emap_decompose(run, tuple(jnp.asarray(x, jnp.float32) for x in xs))
        assert parts.projected.dtype == (jnp.float64 if wide else jnp.float32)
        m = len(widths)
        marginals = [np.asarray(x) for x in parts.marginals]
        np.testing.assert_allclose(
            parts.projected,
            sum(marginals) - (m - 1) * np.asarray(parts.grand_mean),
            rtol=1e-5,
            atol=1e-5,
        )


@settings(max_examples=8)
@given(data=st.data())
def test_nonfinite_inputs_raise_instead_of_averaging_nan_into_every_example(data):
    widths, num_outputs, _, xs = data.draw(problem())
    fn = model(widths, num_outputs, interacting=True, seed=0)
    m = data.draw(st.integers(0, len(widths) - 1))
    i = data.draw(st.integers(0, xs[0].shape[0] - 1))
    xs = [np.array(x, np.float32) for x in xs]
    # nan, not inf: a saturating model may rightly map an infinite input to a finite output
    xs[m][i, 0] = np.nan
    kwargs = {}
    if data.draw(st.booleans()):
        kwargs = {"num_samples": 2, "key": jax.random.key(0)}
    with pytest.raises(ValueError, match=r"non-finite outputs \(nan or inf\)"):
        interactions.emap(fn, tuple(xs), **kwargs)


@given(data=st.data())
def test_bad_inputs_raise_clear_errors(data):
    widths, num_outputs, _, xs = data.draw(problem(min_n=0))
    fn = model(widths, num_outputs, interacting=True, seed=0)
    n = xs[0].shape[0]
    xs = [np.asarray(x, np.float32) for x in xs]
    fault = data.draw(st.sampled_from(["size", "one", "scalar", "string", "output"]))
    m = data.draw(st.integers(0, len(widths) - 1))
    error, message = ValueError, None
    if n < 2 and fault != "string":
        message = r"needs N >= 2 paired examples, got N = " + str(n)
        if fault == "one":
            xs, message = xs[:1], "needs at least two modalities"
        elif fault == "scalar":
            xs[m], message = np.float32(1.0), rf"modality {m} is a scalar"
    elif fault == "size":
        xs[m] = np.zeros((n + 1, widths[m]), np.float32)
        message = "leading sizes differ"
    elif fault == "one":
        xs, message = xs[:1], "needs at least two modalities"
    elif fault == "scalar":
        xs[m], message = np.float32(1.0), rf"modality {m} is a scalar"
    elif fault == "string":
        xs[m], error, message = np.full((n, 1), "x"), TypeError, rf"modality {m} must be"
    else:
        fn, message = (lambda xs: jnp.zeros((3, 2))), r"fn returned shape \(3, 2\)"
        if n == 3:
            fn, message = (lambda xs: jnp.zeros((3, 2), jnp.complex64)), "real numbers"
    with pytest.raises(error, match=message):
        interactions.emap(fn, tuple(xs))


def test_monte_carlo_counts_past_int32_do_not_overflow():
    # (M·N)² and N^M exceed int32 here; they once reached JAX as Python ints and overflowed
    n = 40_000
    xs = (jnp.linspace(-1.0, 1.0, n), jnp.linspace(0.0, 1.0, n))
    parts = interactions.emap_decompose(
        lambda xs: xs[0] + xs[1], xs, num_samples=2, key=jax.random.key(0)
    )
    assert np.isfinite(float(parts.grand_mean_stderr))
    np.testing.assert_allclose(parts.grand_mean, 0.5, atol=0.05)
