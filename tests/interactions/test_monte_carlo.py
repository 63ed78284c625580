"""Monte-Carlo EMAP: unbiased estimates with honest standard errors, error ∝ 1/√K."""

import jax
import numpy as np
import pytest

from mmfuse import interactions
from tests.interactions.fns import inputs, interacting


def z_scores(parts, exact):
    """Standardized errors of every estimate: marginals, grand mean and projection."""
    pairs = [
        *zip(parts.marginals, parts.marginal_stderr, exact.marginals, strict=True),
        (parts.grand_mean, parts.grand_mean_stderr, exact.grand_mean),
        (parts.projected, parts.projected_stderr, exact.projected),
    ]
    return [np.ravel((np.asarray(e) - np.asarray(x)) / np.asarray(s)) for e, s, x in pairs]


@pytest.mark.parametrize("widths", [(3, 2), (3, 2, 2)], ids=["M=2", "M=3"])
def test_estimates_lie_within_a_few_standard_errors(widths):
    n = 48
    fn, xs = interacting(widths), inputs(20, n, widths)
    exact = interactions.emap_decompose(fn, xs)
    parts = interactions.emap_decompose(fn, xs, num_samples=128, key=jax.random.key(0))
    np.testing.assert_allclose(parts.original, exact.original, rtol=1e-6)
    z = np.concatenate(z_scores(parts, exact))  # n·C·(M + 1) + C values
    assert np.max(np.abs(z)) < 5.0
    # standard errors are calibrated: z has unit variance (mean square ≈ 1)
    assert 0.6 < np.mean(z**2) < 1.6
    assert abs(np.mean(z)) < 4.0 / np.sqrt(z.size)  # no bias beyond sampling noise


def test_error_shrinks_like_one_over_sqrt_k():
    n, widths = 128, (3, 2)
    fn, xs = interacting(widths), inputs(21, n, widths)
    exact = interactions.emap(fn, xs)
    rms, stderr = {}, {}
    for k in (8, 128):
        parts = interactions.emap_decompose(fn, xs, num_samples=k, key=jax.random.key(k))
        rms[k] = np.sqrt(np.mean((np.asarray(parts.projected) - np.asarray(exact)) ** 2))
        stderr[k] = np.sqrt(np.mean(np.asarray(parts.projected_stderr) ** 2))
    # 16 times the samples: 4 times smaller error and standard error
    assert 3.2 < rms[8] / rms[128] < 5.0
    assert 3.2 < stderr[8] / stderr[128] < 5.0


def test_grand_mean_is_unbiased_over_keys():
    n, widths = 16, (3, 2)
    fn, xs = interacting(widths), inputs(22, n, widths)
    exact = interactions.emap_decompose(fn, xs).grand_mean

    @jax.jit
    def estimate(key):
        parts = interactions.emap_decompose(fn, xs, num_samples=4, key=key)
        return parts.grand_mean, parts.grand_mean_stderr

    runs = [estimate(jax.random.key(s)) for s in range(64)]
    means = np.stack([np.asarray(m) for m, _ in runs])  # [64, C]
    spread = np.sqrt(np.mean(np.stack([np.asarray(s) for _, s in runs]) ** 2, axis=0))
    # the average of 64 independent unbiased estimates is within 4 of its standard errors
    assert np.all(np.abs(means.mean(axis=0) - exact) < 4 * spread / np.sqrt(64))
    # and the reported standard error matches the spread across keys
    np.testing.assert_allclose(means.std(axis=0, ddof=1), spread, rtol=0.35)


def test_jit_equals_eager_in_monte_carlo_mode():
    n, widths = 10, (3, 2)
    fn, xs = interacting(widths), inputs(23, n, widths)

    def run(xs, key):  # 3 examples per block: the last block of N = 10 is padded
        return interactions.emap_decompose(fn, xs, num_samples=6, key=key, block_size=3)

    key = jax.random.key(3)
    eager, jitted = run(xs, key), jax.jit(run)(xs, key)
    np.testing.assert_allclose(jitted.projected, eager.projected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jitted.projected_stderr, eager.projected_stderr, rtol=1e-5)
