"""What each operator can express: interaction-capable operators solve XOR, additive cannot."""

import numpy as np
import pytest

from mmfuse import fusion
from tests.fusion import expressivity

INTERACTION_CAPABLE = ("tensor", "low_rank_tensor", "bilinear", "multiplicative", "nonlinear")


@pytest.fixture(scope="module")
def results():
    return expressivity.run(steps=600, num_train=1000, num_test=1000)


def test_xor_is_solved_by_interaction_operators_and_not_by_additive(results):
    xor = {name: r["accuracy"] for name, r in results["xor"].items()}
    for name in INTERACTION_CAPABLE:
        assert xor[name] >= 0.97, (name, xor)
    assert xor["additive"] <= 0.6, xor
    assert min(xor[n] for n in INTERACTION_CAPABLE) - xor["additive"] >= 0.35


def test_every_operator_does_well_without_interactions(results):
    assert set(results["sum"]) == set(fusion.names())
    for name, r in results["sum"].items():
        assert r["accuracy"] >= 0.85, (name, r)


def test_tasks_are_seeded_and_labels_match_their_definition():
    (a, b), y = expressivity.make_task("xor", 64, seed=3)
    (a2, b2), y2 = expressivity.make_task("xor", 64, seed=3)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(y, y2)
    assert set(np.unique(y)) == {0, 1}
    # Without noise each modality is ±(its direction): recover the bits up to a global flip.
    (a, b), y = expressivity.make_task("xor", 64, noise=0.0, seed=3)
    bit_a, bit_b = (a @ a[0] > 0), (b @ b[0] > 0)
    parity = (bit_a ^ bit_b).astype(np.int32)
    assert np.array_equal(y, parity) or np.array_equal(y, 1 - parity)
    (a, b), y = expressivity.make_task("sum", 64, noise=0.0, seed=3)
    assert 0 < y.mean() < 1
    with pytest.raises(ValueError, match="unknown task 'and'; tasks: xor, sum"):
        expressivity.make_task("and", 4)


def test_operators_trained_in_bf16_solve_xor_too():
    results = expressivity.run(
        ("tensor", "low_rank_tensor", "nonlinear", "additive"),
        ("xor",),
        steps=600,
        num_train=1000,
        num_test=1000,
        options={"compute_dtype": "bfloat16"},
    )["xor"]
    for name in ("tensor", "low_rank_tensor", "nonlinear"):
        assert results[name]["accuracy"] >= 0.97, (name, results)
    assert results["additive"]["accuracy"] <= 0.6, results
