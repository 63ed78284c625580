"""What bad input gets: a ValueError that names the problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse import interactions
from tests.interactions.fns import inputs, interacting

FN = interacting((3, 2))
XS = inputs(30, 6, (3, 2))


def test_leading_sizes_differ():
    with pytest.raises(ValueError, match=r"leading sizes differ.*\(6, 3\).*\(5, 2\)"):
        interactions.emap(FN, (XS[0], XS[1][:5]))


@pytest.mark.parametrize("bad", [(XS[0],), ()], ids=["one", "none"])
def test_fewer_than_two_modalities(bad):
    with pytest.raises(ValueError, match="at least two modalities"):
        interactions.emap(lambda xs: xs[0][:, 0], bad)


def test_a_single_array_is_not_a_sequence_of_modalities():
    with pytest.raises(ValueError, match="sequence of M arrays"):
        interactions.emap(FN, jnp.zeros((6, 3)))


def test_too_few_examples():
    with pytest.raises(ValueError, match="N >= 2"):
        interactions.emap(FN, tuple(x[:1] for x in XS))


def test_fn_returning_another_batch_size():
    with pytest.raises(ValueError, match=r"fn returned shape \(5, 3\) for a batch of n = 6"):
        interactions.emap(lambda xs: FN(xs)[:5], XS)
    with pytest.raises(ValueError, match=r"fn returned shape \(\)"):
        interactions.emap(lambda xs: jnp.sum(FN(xs)), XS)
    with pytest.raises(ValueError, match="one array"):
        interactions.emap(lambda xs: (FN(xs), FN(xs)), XS)


def test_nonfinite_outputs_report_the_count_of_pairs():
    n = 6
    idx = (jnp.arange(n), jnp.arange(n))

    def fn(xs):  # nan at the cross pairs (1, 2) and (4, 0): two of the 36 pairs
        a, b = xs
        bad = ((a == 1) & (b == 2)) | ((a == 4) & (b == 0))
        return jnp.where(bad, jnp.nan, (a + b).astype(jnp.float32))  # [n]

    with pytest.raises(ValueError, match=r"non-finite outputs .* for 2 of the 6\^2 = 36"):
        interactions.emap(fn, idx)
    with pytest.raises(ValueError, match=r"non-finite .* for 1 of the 6\^3 = 216"):
        interactions.emap(
            lambda xs: jnp.where((xs[0] == 0) & (xs[1] == 3) & (xs[2] == 5), jnp.inf, 0.0),
            (jnp.arange(n),) * 3,
        )
    # under jit nothing can raise: the nan reaches the results and the count is returned
    parts = jax.jit(lambda idx: interactions.emap_decompose(fn, idx, block_size=4))(idx)
    assert int(parts.num_nonfinite) == 2
    assert np.all(np.isnan(parts.projected))


def test_nonfinite_in_monte_carlo_mode():
    def fn(xs):
        return jnp.where(xs[0][:, 0] > 1e9, jnp.nan, 0.0) + jnp.log(xs[1][:, 0])  # log < 0: nan

    xs = (XS[0], jnp.abs(XS[1]).at[2, 0].set(-1.0))  # example 2 of modality 1 gives nan
    with pytest.raises(ValueError, match=r"non-finite outputs .* sampled pairs"):
        interactions.emap(fn, xs, num_samples=50, key=jax.random.key(0))


def test_num_samples_needs_a_key():
    with pytest.raises(ValueError, match="needs a PRNG key"):
        interactions.emap(FN, XS, num_samples=8)
    with pytest.raises(ValueError, match="only used in Monte-Carlo mode"):
        interactions.emap(FN, XS, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"key must be a jax.random key, .*; got 0$"):
        interactions.emap(FN, XS, num_samples=8, key=0)
    with pytest.raises(ValueError, match=r"got an array of dtype float32 and shape \(2,\)"):
        interactions.emap(FN, XS, num_samples=8, key=jnp.zeros(2))
    batch = jax.random.split(jax.random.key(0), 1)  # one key, but in a batch of keys
    with pytest.raises(ValueError, match=r"key must be a jax.random key"):
        interactions.emap(FN, XS, num_samples=8, key=batch)
    typed = interactions.emap(FN, XS, num_samples=8, key=jax.random.key(3))
    raw = interactions.emap(FN, XS, num_samples=8, key=jax.random.PRNGKey(3))  # legacy keys too
    np.testing.assert_array_equal(typed, raw)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": 0}, "block_size must be an int >= 1"),
        ({"block_size": 2.5}, "block_size must be an int >= 1"),
        ({"num_samples": 1, "key": jax.random.key(0)}, "num_samples must be an int >= 2"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        interactions.emap(FN, XS, **kwargs)


def test_too_many_pairs_for_exact_mode_points_to_monte_carlo():
    xs = tuple(jnp.zeros((2048, 1)) for _ in range(4))  # 2048^3 rows exceed int32
    with pytest.raises(ValueError, match="use Monte-Carlo mode"):
        interactions.emap(lambda xs: xs[0][:, 0], xs)


def test_a_none_or_ragged_modality_is_named():
    with pytest.raises(TypeError, match="emap: modality 0 is None; expected a numeric array"):
        interactions.emap(FN, (None, XS[1]))
    with pytest.raises(ValueError, match="emap: modality 1 is not an array of one shape"):
        interactions.emap(FN, (XS[0], [[1.0, 2.0], [3.0]]))


def test_a_modality_given_as_a_tuple_of_arrays_is_named():
    a, b = jnp.ones((6, 2)), jnp.ones((6, 3))
    tokens, mask = jnp.ones((6, 4, 2)), jnp.ones((6, 4))
    with pytest.raises(
        TypeError, match=r"modality 0 must be one array \[N, \.\.\.\], got a tuple of 2 parts"
    ):
        interactions.emap(lambda xs: xs[1].sum(-1), ((tokens, mask), b))
    with pytest.raises(ValueError, match=r"leading sizes differ .* modality 0 was a list, stacked"):
        interactions.emap(lambda xs: xs[1].sum(-1), ([a, a], b))
    # rows (a tuple of per-example arrays) and nested lists of numbers stack as before
    rows = tuple(jnp.arange(6.0).reshape(3, 2))
    out = interactions.emap(lambda xs: xs[0][:, 0] * xs[1][:, 0], (rows, jnp.ones((3, 1))))
    assert out.shape == (3,)
    nested = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    out = interactions.emap(lambda xs: xs[0][:, 0] * xs[1][:, 0], (nested, jnp.ones((3, 1))))
    assert out.shape == (3,)


def test_finite_outputs_whose_sums_overflow_are_named():
    a, b = jnp.array([[3e38], [3e38], [1.0]]), jnp.ones((3, 1))

    def fn(xs):
        return xs[0][:, 0] + xs[1][:, 0]

    with pytest.raises(
        ValueError, match=r"outputs are finite but their sums .* overflowed float32"
    ):
        interactions.emap(fn, (a, b))
    with jax.enable_x64(True):  # float64 sums hold them
        wide = interactions.emap(fn, (a.astype(jnp.float64), b.astype(jnp.float64)))
        # additive: EMAP is fn, up to float64 rounding at the outputs' 3e38 scale
        np.testing.assert_allclose(wide, fn((a, b)), rtol=0, atol=1e-12 * 3e38)
