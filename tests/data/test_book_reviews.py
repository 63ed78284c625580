"""``book_reviews`` reproduces the lecture's three regressions."""

import numpy as np

from mmfuse import data

PUBLISHED = {
    "y ~ x_A": (4.63, 1.20),
    "y ~ x_A + x_B": (5.29, 1.19, -1.69),
    "y ~ x_A + x_B + x_A*x_B": (5.79, 0.68, -2.94, 1.29),
}
HELD_OUT_SEEDS = range(1000, 1010)  # never used while designing the generator


def _fits(reviews):
    a = reviews["smiling"][:, 0].astype(np.float64)
    b = reviews["critic"][:, 0].astype(np.float64)
    one = np.ones_like(a)
    designs = {
        "y ~ x_A": [one, a],
        "y ~ x_A + x_B": [one, a, b],
        "y ~ x_A + x_B + x_A*x_B": [one, a, b, a * b],
    }
    y = reviews["label"].astype(np.float64)
    return {k: np.linalg.lstsq(np.stack(x, 1), y, rcond=None)[0] for k, x in designs.items()}


def test_three_regressions_match_the_lecture_over_held_out_seeds(data_dir):
    fits = [_fits(data.load("book_reviews", data_dir=data_dir, seed=s)) for s in HELD_OUT_SEEDS]
    for model, published in PUBLISHED.items():
        mean = np.mean([f[model] for f in fits], axis=0)
        np.testing.assert_allclose(mean, published, atol=0.2, err_msg=model)


def test_reviews_shapes_and_design(data_dir):
    reviews = data.load("book_reviews", data_dir=data_dir)
    assert list(reviews) == ["smiling", "critic", "label"]
    assert reviews["smiling"].shape == reviews["critic"].shape == (300, 1)
    assert reviews["label"].shape == (300,) and reviews["label"].dtype == np.float32
    assert set(np.unique(reviews["critic"])) == {0.0, 1.0}
    assert abs(reviews["critic"].mean() - 0.395) < 0.01
    assert (reviews["smiling"] > 0).all() and abs(reviews["smiling"].mean() - 0.97) < 0.1
    metadata = data.info("book_reviews", data_dir=data_dir).metadata
    assert metadata["params"] == {"n": 300, "noise": 0.5, "seed": 0}
    assert metadata["true_weights"]["smiling_x_critic"] == 1.29
