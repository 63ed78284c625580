"""Exact EMAP: the paper's worked example, the projection's algebra, blocking, jit, M = 3."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse import interactions
from tests.interactions.fns import additive, brute_force, grid, inputs, interacting, normal

# Hessel and Lee (2020), Appendix G: F[i, j] = f(a_i, b_j)
PAPER_GRID = [[-1.3, 0.3, -0.2], [0.8, 3.0, 1.1], [1.1, -0.1, 0.7]]
PAPER_EMAP = [-0.8, 2.1, 0.5]


def grid_fn(values):
    """A function of example indices whose cross-pair outputs are the given grid."""
    values = jnp.asarray(values)
    return lambda xs: values[tuple(xs)]  # [n, *out]


def indices(n, m):
    return (jnp.arange(n),) * m


def test_paper_appendix_g_grid_float32():
    parts = interactions.emap_decompose(grid_fn(PAPER_GRID), indices(3, 2))
    np.testing.assert_allclose(parts.projected, PAPER_EMAP, atol=1e-6)
    np.testing.assert_allclose(parts.original, [-1.3, 3.0, 0.7], atol=1e-7)
    assert parts.projected.shape == (3,) and parts.grand_mean.shape == ()
    np.testing.assert_allclose(parts.grand_mean, 0.6, atol=1e-7)  # 5.4 / 9
    np.testing.assert_allclose(parts.marginals[0], [-0.4, 4.9 / 3, 1.7 / 3], atol=1e-6)
    np.testing.assert_allclose(parts.marginals[1], [0.2, 3.2 / 3, 1.6 / 3], atol=1e-6)
    assert parts.marginal_stderr is None and parts.projected_stderr is None
    assert int(parts.num_nonfinite) == 0


def test_paper_appendix_g_grid_float64():
    with jax.enable_x64(True):
        values = jnp.asarray(PAPER_GRID, jnp.float64)
        projected = interactions.emap(grid_fn(values), indices(3, 2), block_size=2)
        assert projected.dtype == jnp.float64
        np.testing.assert_allclose(projected, PAPER_EMAP, rtol=0, atol=1e-14)


@pytest.mark.parametrize("widths", [(3, 2), (3, 2, 4)], ids=["M=2", "M=3"])
def test_identity_on_additive_functions(widths):
    fn, xs = additive(widths), inputs(0, 9, widths)
    parts = interactions.emap_decompose(fn, xs)
    np.testing.assert_allclose(parts.projected, fn(xs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parts.residual, 0, atol=1e-5)


@pytest.mark.parametrize("widths", [(3, 2), (3, 2, 4)], ids=["M=2", "M=3"])
def test_idempotent(widths):
    # EMAP of the projection, as a function on the same grid, is the projection again
    n = 7
    fn, xs = interacting(widths), inputs(1, n, widths)
    parts = interactions.emap_decompose(fn, xs)
    marginals, grand = parts.marginals, parts.grand_mean

    def projection(idx):  # f̃ at any cross pair of example indices
        total = sum(mm[i] for mm, i in zip(marginals, idx, strict=True))  # [n, C]
        return total - (len(idx) - 1) * grand[None, :]

    twice = interactions.emap_decompose(projection, indices(n, len(widths)))
    np.testing.assert_allclose(twice.projected, parts.projected, rtol=1e-5, atol=1e-5)
    for again, once in zip(twice.marginals, marginals, strict=True):
        np.testing.assert_allclose(again, once, rtol=1e-5, atol=1e-5)


def test_linear_in_f():
    widths, xs = (3, 2), inputs(2, 11, (3, 2))
    f, g = interacting(widths, seed=1), interacting(widths, seed=2)

    def combined(xs):
        return 2.5 * f(xs) - 0.75 * g(xs)

    expected = 2.5 * interactions.emap(f, xs) - 0.75 * interactions.emap(g, xs)
    np.testing.assert_allclose(interactions.emap(combined, xs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_modalities, n", [(2, 8), (3, 5)])
def test_equals_least_squares_additive_fit_on_the_grid(num_modalities, n):
    widths = (3, 2, 4)[:num_modalities]
    fn, xs = interacting(widths, num_outputs=2), inputs(3, n, widths)
    values = grid(fn, xs)  # [N]*M + [C]
    # design: one indicator column per (modality, example): f ≈ Σ_m u_m[i_m]
    cells = np.array(list(itertools.product(range(n), repeat=num_modalities)))  # [N^M, M]
    design = np.zeros((cells.shape[0], num_modalities * n))
    for m in range(num_modalities):
        design[np.arange(cells.shape[0]), m * n + cells[:, m]] = 1.0
    coef, *_ = np.linalg.lstsq(design, values.reshape(cells.shape[0], -1), rcond=None)
    fitted = sum(coef[m * n : (m + 1) * n] for m in range(num_modalities))  # [N, C] on the diagonal
    np.testing.assert_allclose(interactions.emap(fn, xs), fitted, rtol=1e-5, atol=1e-5)


def test_product_closed_form():
    # f = g(a)·h(b) per output: EMAP_i = ḡ·h(b_i) + g(a_i)·h̄ − ḡ·h̄
    n = 10
    a, b = normal(4, (n, 3)), normal(5, (n, 2))
    p, q = normal(6, (3, 4)), normal(7, (2, 4))
    g, h = jnp.tanh(a @ p), jnp.sin(b @ q)  # [N, C]
    projected = interactions.emap(lambda xs: jnp.tanh(xs[0] @ p) * jnp.sin(xs[1] @ q), (a, b))
    g_bar, h_bar = g.mean(axis=0, keepdims=True), h.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(
        projected, g_bar * h + g * h_bar - g_bar * h_bar, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("block_size", [1, 4, 100])
def test_blocked_equals_dense_for_any_block_size(block_size):
    n, widths = 13, (3, 2)  # 4 does not divide 13; 100 > N clips to one block
    fn, xs = interacting(widths), inputs(8, n, widths)
    marginals, grand, projected, diagonal = brute_force(grid(fn, xs), 2)
    parts = interactions.emap_decompose(fn, xs, block_size=block_size)
    np.testing.assert_allclose(parts.projected, projected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parts.grand_mean, grand, rtol=1e-5, atol=1e-6)
    for got, want in zip(parts.marginals, marginals, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts.original, diagonal, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("block_size", [None, 5])
def test_jit_equals_eager(block_size):
    n, widths = 9, (3, 2, 2)
    fn, xs = interacting(widths), inputs(9, n, widths)

    def run(xs):
        return interactions.emap_decompose(fn, xs, block_size=block_size)

    eager, jitted = run(xs), jax.jit(run)(xs)
    np.testing.assert_allclose(jitted.projected, eager.projected, rtol=1e-6, atol=1e-6)
    for a, b in zip(jitted.marginals, eager.marginals, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert int(jitted.num_nonfinite) == 0


def test_three_modalities_match_brute_force_n_cubed():
    n, widths = 6, (3, 2, 4)
    fn, xs = interacting(widths, num_outputs=2), inputs(10, n, widths)
    marginals, grand, projected, _ = brute_force(grid(fn, xs), 3)
    for block_size in (None, 5):  # 5 divides neither N nor N² = 36 rows
        parts = interactions.emap_decompose(fn, xs, block_size=block_size)
        np.testing.assert_allclose(parts.projected, projected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(parts.grand_mean, grand, rtol=1e-5, atol=1e-6)
        for got, want in zip(parts.marginals, marginals, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the projection subtracts (M−1)·E[f], so additive parts survive (not E[f] once)
    np.testing.assert_allclose(
        parts.projected, sum(parts.marginals) - 2 * parts.grand_mean[None, :], rtol=1e-6
    )


def test_output_shapes_follow_fn():
    n, xs = 5, inputs(11, 5, (3, 2))
    vector = interactions.emap_decompose(lambda xs: xs[0][:, 0] * xs[1][:, 1], xs)
    assert vector.projected.shape == (n,) and vector.grand_mean.shape == ()
    matrix = interactions.emap_decompose(lambda xs: xs[0][:, :, None] * xs[1][:, None, :], xs)
    assert matrix.projected.shape == (n, 3, 2) and matrix.grand_mean.shape == (3, 2)
    assert all(m.shape == (n, 3, 2) for m in matrix.marginals)


def test_bf16_outputs_accumulate_in_float32():
    n, widths = 64, (3, 2)
    fn, xs = interacting(widths), inputs(12, n, widths)

    def low(xs):
        return fn(xs).astype(jnp.bfloat16)

    parts = interactions.emap_decompose(low, xs, block_size=5)
    assert parts.projected.dtype == jnp.float32
    _, _, projected, _ = brute_force(grid(low, xs), 2)  # the same bf16 values in float64
    np.testing.assert_allclose(parts.projected, projected, rtol=1e-5, atol=1e-5)


def test_large_offset_logits_keep_float32_accuracy():
    # logits around 1e4 with O(1) variation: raw float32 sums of 2^22 values would lose
    # the variation; deviations from the mean output plus compensation keep it
    n, widths = 2048, (2, 2)
    base = interacting(widths, num_outputs=2)
    xs = inputs(13, n, widths)

    def fn(xs):
        return base(xs) + 1e4

    p = interactions.emap_decompose(fn, xs, block_size=16)
    # EMAP commutes with constants: compare with the projection of the O(1) part
    q = interactions.emap_decompose(base, xs, block_size=16)
    np.testing.assert_allclose(p.projected - 1e4, q.projected, atol=2e-3)
    # and a product f = g(a)·h(b) + 1e4 against its closed form in float64
    g = np.asarray(xs[0][:, :1], np.float64) + 3.0  # [N, 1]
    h = np.asarray(xs[1][:, :1], np.float64) - 1.0
    exact = g.mean() * h + g * h.mean() - g.mean() * h.mean()
    got = interactions.emap(lambda xs: (xs[0][:, :1] + 3.0) * (xs[1][:, :1] - 1.0) + 1e4, xs)
    np.testing.assert_allclose(np.asarray(got, np.float64) - 1e4, exact, atol=2e-3)
