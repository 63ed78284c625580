"""pid_from_samples: discrete samples, k-means on continuous modalities, errors.

The tables come in two padded shapes, (8, 8, 8) and (16, 16, 8), so the solver
compiles twice for the whole file.
"""

import numpy as np
import pytest

from mmfuse import data, interactions

N = 4000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def bits(seed, n=N):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n), rng.integers(0, 2, n)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [(np.bitwise_xor, (0, 0, 0, 1)), (np.bitwise_and, (0.3113, 0, 0, 0.5))],
    ids=["xor", "and"],
)
def test_discrete_samples_match_the_exact_joint(fn, expected):
    a, b = bits(0)
    result, counted = interactions.pid_from_samples(a, b, fn(a, b), return_discretized=True)
    np.testing.assert_allclose(result[:4], expected, atol=0.02)
    assert counted.joint.shape == (2, 2, 2)
    np.testing.assert_allclose(counted.joint.sum(), 1.0)
    np.testing.assert_array_equal(counted.codes_1, a)
    np.testing.assert_allclose(
        interactions.pid(counted.joint)[:4], result[:4], atol=1e-5
    )  # zero padding changes nothing
    # q* is the joint's: same shape, same (x1, y) and (x2, y) marginals
    assert result.q.shape == counted.joint.shape
    np.testing.assert_allclose(result.q.sum(1), counted.joint.sum(1), atol=1e-4)
    np.testing.assert_allclose(result.q.sum(0), counted.joint.sum(0), atol=1e-4)


def test_model_pid_uses_predictions_as_labels():
    a, b = bits(1)
    predictions = a  # a model that ignores x2
    r, u1, u2, s = (float(v) for v in interactions.pid_from_samples(a, b, predictions)[:4])
    assert u1 > 0.95 and max(r, u2, s) < 0.02


def test_continuous_targets_need_label_bins():
    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    target = x1[:, 0] + 0.1 * rng.standard_normal(N)
    with pytest.raises(ValueError, match="label_bins"):
        interactions.pid_from_samples(x1, x2, target)
    result, counted = interactions.pid_from_samples(
        x1, x2, target, label_bins=2, num_clusters=8, return_discretized=True
    )
    assert counted.joint.shape[2] == 2 and np.bincount(counted.labels).min() == N // 2
    assert float(result.unique_1) > 5 * max(float(result.redundancy), float(result.unique_2))


def test_tied_targets_keep_their_values_together_in_the_bins():
    rng = np.random.default_rng(0)
    x1, x2 = (rng.random(1000) < 0.3).astype(int), rng.integers(0, 2, 1000)
    p = x1.mean()
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))  # I(x1; y) = H(x1) for y = x1
    results = []
    for target in (x1.astype(float), 1.0 - x1):  # two values: each is its own class
        result, counted = interactions.pid_from_samples(
            x1, x2, target, label_bins=2, return_discretized=True
        )
        np.testing.assert_array_equal(counted.labels, np.unique(target, return_inverse=True)[1])
        np.testing.assert_allclose(float(result.unique_1 + result.redundancy), h, atol=1e-4)
        assert float(result.unique_1) > 0.8
        results.append([float(v) for v in result[:4]])
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)  # the same information
    # 60% zeros, the rest continuous: the zeros fill the lower bin alone
    y = np.where(rng.random(1000) < 0.6, 0.0, rng.normal(size=1000) + 3)
    _, two = interactions.pid_from_samples(x1, x2, y, label_bins=2, return_discretized=True)
    np.testing.assert_array_equal(two.labels, (y != 0).astype(int))
    _, four = interactions.pid_from_samples(x1, x2, y, label_bins=4, return_discretized=True)
    counts = np.bincount(four.labels)
    assert counts[0] == np.sum(y == 0) and len(counts) == 3  # the 3/4-quantile still cuts
    assert abs(counts[0] + counts[1] - 750) <= 1


def test_bfloat16_features_are_clustered_like_float32_and_pca_stays_below_n():
    import jax.numpy as jnp

    rng = np.random.default_rng(4)
    x1 = rng.standard_normal((200, 3)).astype(np.float32)
    x2, y = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    low = jnp.asarray(x1, jnp.bfloat16)
    _, as_bf16 = interactions.pid_from_samples(low, x2, y, return_discretized=True)
    _, as_f32 = interactions.pid_from_samples(
        np.asarray(low, np.float32), x2, y, return_discretized=True
    )
    np.testing.assert_array_equal(as_bf16.codes_1, as_f32.codes_1)
    wide = rng.standard_normal((25, 50))  # 30 components asked, 25 samples
    result = interactions.pid_from_samples(wide, x2[:25], y[:25], pca_dims=30, num_clusters=4)
    assert np.isfinite(float(result.synergy))


def test_fewer_distinct_points_than_clusters_gives_no_empty_cluster():
    rng = np.random.default_rng(3)
    x1 = rng.integers(0, 3, (N, 2)).astype(np.float32)  # 9 distinct points, 16 clusters
    x2 = rng.standard_normal((N, 4)).astype(np.float32)
    y = (x1[:, 0] > 0).astype(int)
    result, counted = interactions.pid_from_samples(
        x1, x2, y, num_clusters=16, return_discretized=True
    )
    assert counted.joint.shape[0] == 9
    assert np.all(counted.joint.sum((1, 2)) > 0)
    assert all(np.isfinite(float(v)) for v in result[:4])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(5, int), np.zeros(4, int), np.arange(5) % 2), r"lengths differ.*\(4,\)"),
        ((np.zeros(5, int), np.zeros(5, int), np.zeros(5, int)), "single class"),
        ((np.zeros((5, 2, 2)), np.zeros(5, int), np.arange(5) % 2), r"x1 must be .*\(5, 2, 2\)"),
        ((np.zeros(5, int), np.full((5, 2), np.nan), np.arange(5) % 2), "x2 has 10 non-finite"),
        ((np.zeros(5, int), np.zeros(5, int), np.zeros((5, 2), int)), "label array"),
        ((np.ones(5, complex), np.zeros(5, int), np.arange(5) % 2), "x1 must hold real numbers"),
    ],
    ids=["lengths", "one_class", "rank", "nan", "label_rank", "complex"],
)
def test_bad_samples_name_the_problem(args, match):
    with pytest.raises(ValueError, match=match):
        interactions.pid_from_samples(*args)


@pytest.mark.parametrize(
    ("kind", "dominant"),
    [("redundancy", 0), ("uniqueness", 1), ("xor", 3)],
)
def test_synthetic_sets_show_the_interaction_they_were_built_for(data_dir, kind, dominant):
    # Two latent dimensions per block and clustering the raw 16-d features keep the
    # label-bearing latents visible to 10 clusters; 2000 examples keep the counts stable.
    xs = data.load(
        f"synthetic/{kind}", "train", data_dir=data_dir, sizes=(2000, 8, 8), latent_dim=2
    )
    result = interactions.pid_from_samples(
        xs["x1"], xs["x2"], xs["label"], num_clusters=10, pca_dims=None, max_iters=500
    )
    terms = [float(v) for v in result[:4]]
    assert int(np.argmax(terms)) == dominant, terms
    assert terms[dominant] > 2 * sorted(terms)[-2], terms
