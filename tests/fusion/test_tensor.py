"""Tensor fusion (TFN): hand values, the feature map, and the lecture's regression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F


@pytest.mark.parametrize("append", ["last", "first"])
def test_tensor_matches_a_hand_computed_float64_value(append):
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(2, 2)), rng.normal(size=(2, 1)), rng.normal(size=(2, 2))
    kernel = rng.normal(size=(3, 2, 3, 4))

    def extend(x):
        one = np.ones((x.shape[0], 1))
        return np.concatenate([x, one] if append == "last" else [one, x], axis=1)

    ea, eb, ec = extend(a), extend(b), extend(c)
    expected = np.zeros((2, 4))
    for n in range(2):
        for i in range(3):
            for j in range(2):
                for k in range(3):
                    expected[n] += ea[n, i] * eb[n, j] * ec[n, k] * kernel[i, j, k]
    with jax.enable_x64(True):
        z = F.tensor({"kernel": jnp.asarray(kernel)}, (a, b, c), append=append)
        assert z.dtype == jnp.float64
        np.testing.assert_allclose(z, expected, rtol=1e-12)


def test_tensor_features_are_the_row_major_outer_product():
    a, b = np.array([[2.0, 3.0]]), np.array([[5.0]])
    feats = F.tensor_features((a, b))
    # [a; 1] ⊗ [b; 1] = [2, 3, 1] ⊗ [5, 1], flattened with a's index slowest.
    np.testing.assert_allclose(feats, [[10.0, 2.0, 15.0, 3.0, 5.0, 1.0]])
    feats_first = F.tensor_features((a, b), append="first")
    np.testing.assert_allclose(feats_first, [[1.0, 5.0, 2.0, 10.0, 3.0, 15.0]])


def test_tensor_features_check_their_inputs_as_tensor_does():
    assert F.tensor_features((np.ones((2, 1), int), np.ones((2, 1), int))).dtype == np.float32
    with pytest.raises(
        ValueError, match=r"modality 1 has leading dims \(5,\) .* modality 0 has \(1,\)"
    ):
        F.tensor_features((np.ones((1, 3)), np.ones((5, 4))))  # would broadcast to [5, 20]
    with pytest.raises(
        ValueError, match="non-empty sequence of modality arrays, got an empty list"
    ):
        F.tensor_features([])
    with pytest.raises(ValueError, match="non-empty sequence of modality arrays, got ndarray"):
        F.tensor_features(np.ones((2, 3)))
    with pytest.raises(ValueError, match="modality 1 must have shape"):
        F.tensor_features((np.ones((2, 3)), 1.0))


def test_module_equals_features_times_flattened_kernel():
    op = fusion.create("tensor", (3, 2), 4, rngs=nnx.Rngs(1))
    xs = (
        jax.random.normal(jax.random.key(0), (5, 3)),
        jax.random.normal(jax.random.key(1), (5, 2)),
    )
    kernel = op.functional_params()["kernel"].reshape(-1, 4)
    np.testing.assert_allclose(op(xs), F.tensor_features(xs) @ kernel, rtol=1e-5, atol=1e-6)


def test_tfn_with_least_squares_layer_is_the_lectures_interaction_regression():
    """With 1-D inputs, [x_A; 1] ⊗ [x_B; 1] = [x_A·x_B, x_A, x_B, 1]: TFN followed by a
    least-squares linear layer *is* OLS on [1, x_A, x_B, x_A·x_B] (the lecture's linear
    fusion case)."""
    rng = np.random.default_rng(0)
    n = 300
    smiling = rng.gamma(4.0, 0.25, size=n)
    critic = (rng.random(n) < 0.39).astype(np.float64)
    score = 5.79 + 0.68 * smiling - 2.94 * critic + 1.29 * smiling * critic
    score += rng.normal(0.0, 0.5, size=n)

    design = np.stack([np.ones(n), smiling, critic, smiling * critic], axis=1)
    ols, *_ = np.linalg.lstsq(design, score, rcond=None)  # w0, w1, w2, w3

    with jax.enable_x64(True):
        xs = (smiling[:, None], critic[:, None])
        feats = np.asarray(F.tensor_features(xs))  # [n, 4]
        fitted, *_ = np.linalg.lstsq(feats, score, rcond=None)
        kernel = jnp.asarray(fitted.reshape(2, 2, 1))
        predictions = F.tensor({"kernel": kernel}, xs)[:, 0]
    np.testing.assert_allclose(predictions, design @ ols, rtol=1e-10)
    # The kernel holds the regression's coefficients: [x_A or 1] × [x_B or 1].
    w0, w1, w2, w3 = ols
    np.testing.assert_allclose(kernel[..., 0], [[w3, w1], [w2, w0]], rtol=1e-8)
    np.testing.assert_allclose(ols, [5.79, 0.68, -2.94, 1.29], atol=0.25)


def test_tensor_needs_two_modalities():
    with pytest.raises(ValueError, match="tensor needs at least 2 modalities"):
        fusion.create("tensor", (3,), 2, rngs=nnx.Rngs(0))


def test_tensor_rejects_an_unknown_append_position():
    with pytest.raises(ValueError, match=r"append_one='middle' is not one of \('last', 'first'\)"):
        fusion.create("tensor", (3, 2), 2, append_one="middle", rngs=nnx.Rngs(0))
    # the functional forms name their own argument
    xs = [jnp.ones((1, 2)), jnp.ones((1, 3))]
    with pytest.raises(ValueError, match=r"^tensor_features: append='middle' is not one of"):
        F.tensor_features(xs, append="middle")
    params = F.init_tensor(jax.random.key(0), (2, 3), 4)
    with pytest.raises(ValueError, match=r"^tensor: append='middle' is not one of"):
        F.tensor(params, xs, append="middle")
