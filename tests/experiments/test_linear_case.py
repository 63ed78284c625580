"""The linear fusion case: OLS with standard errors, operator weights read as coefficients."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import linear_case as linear_case_config
from experiments import linear_case
from mmfuse import fusion
from tests.experiments.cli import run_main

PUBLISHED = {
    "y ~ x_A": (4.63, 1.20),
    "y ~ x_A + x_B": (5.29, 1.19, -1.69),
    "y ~ x_A + x_B + x_A*x_B": (5.79, 0.68, -2.94, 1.29),
}


def test_ols_and_standard_errors_match_the_closed_form_on_a_hand_case():
    # y = a + b x on five points: x̄ = 2, Sxx = 10, Sxy = 8, so b = 0.8, a = 1.4;
    # residuals (−0.4, 0.8, −1.0, 1.2, −0.6), RSS = 3.6, σ² = 3.6 / 3 = 1.2;
    # SE(b) = sqrt(σ² / Sxx), SE(a) = sqrt(σ² (1/n + x̄² / Sxx)); R² = 1 − 3.6 / 10.
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    design = linear_case.design(x, np.zeros_like(x), 2)
    coef, se = linear_case.ols(design, y)
    np.testing.assert_allclose(coef, [1.4, 0.8], rtol=1e-12)
    np.testing.assert_allclose(se, [np.sqrt(1.2 * 0.6), np.sqrt(0.12)], rtol=1e-12)
    assert linear_case.r_squared(design, y, coef) == pytest.approx(0.64, rel=1e-12)


def test_ols_needs_more_examples_than_coefficients():
    x = np.arange(3.0)
    with pytest.raises(ValueError, match="n=3, p=4"):
        linear_case.ols(linear_case.design(x, x, 4), x)


@pytest.mark.parametrize("append", ["last", "first"])
def test_tensor_kernel_maps_exactly_to_the_four_coefficients(append):
    w0, w1, w2, w3 = 5.75, -0.5, 2.25, 1.125
    # K[i, j] multiplies [x_A; 1]_i [x_B; 1]_j ([1; x]_i for append="first").
    kernel = [[w3, w1], [w2, w0]] if append == "last" else [[w0, w2], [w1, w3]]
    kernel = jnp.asarray(kernel, jnp.float32)[..., None]  # [2, 2, 1]
    op = fusion.create(
        "tensor", (1, 1), 1, rngs=nnx.Rngs(0), append_one=append, kernel_init=lambda *_: kernel
    )
    coef = linear_case.operator_coefficients("tensor", op.functional_params(), append=append)
    assert coef.tolist() == [w0, w1, w2, w3]
    a = np.array([[0.0], [1.0], [0.5], [-2.0]], np.float32)
    b = np.array([[1.0], [0.0], [3.0], [1.0]], np.float32)
    np.testing.assert_allclose(
        np.asarray(op([a, b]))[:, 0],
        linear_case.design(a[:, 0], b[:, 0], 4) @ coef,
        rtol=1e-6,
    )


def test_additive_parameters_map_to_intercept_and_slopes():
    op = fusion.create("additive", (1, 1), 1, rngs=nnx.Rngs(3))
    params = op.functional_params()
    coef = linear_case.operator_coefficients("additive", params)
    assert coef.tolist() == [
        float(params["bias"][0]),
        float(params["kernels"][0][0, 0]),
        float(params["kernels"][1][0, 0]),
    ]
    x = np.array([[0.3], [2.0]], np.float32)
    np.testing.assert_allclose(
        np.asarray(op([x, 1.0 - x]))[:, 0],
        linear_case.design(x[:, 0], 1.0 - x[:, 0], 3) @ coef,
        rtol=1e-6,
    )
    single = fusion.create("additive", (1,), 1, rngs=nnx.Rngs(3))
    assert linear_case.operator_coefficients("additive", single.functional_params()).shape == (2,)


@pytest.mark.parametrize("num_terms", [2, 3, 4])
def test_coefficients_on_standardized_data_map_back_to_the_original_scale(num_terms):
    rng = np.random.default_rng(0)
    x_a, x_b = rng.gamma(6.0, 0.2, 50), rng.integers(0, 2, 50).astype(np.float64)
    scaling = linear_case.Scaling.fit(x_a, x_b, rng.normal(5.0, 2.0, 50))
    c = rng.normal(size=num_terms)
    u_a = (x_a - scaling.mean[0]) / scaling.std[0]
    u_b = (x_b - scaling.mean[1]) / scaling.std[1]
    on_standardized = linear_case.design(u_a, u_b, num_terms) @ c
    w = linear_case.to_original_scale(c, scaling)
    np.testing.assert_allclose(
        linear_case.design(x_a, x_b, num_terms) @ w,
        scaling.y_mean + scaling.y_std * on_standardized,
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data_dir):
    """One run of ``configs/linear_case.py:quick`` through the entry point."""
    workdir = tmp_path_factory.mktemp("linear_case")
    out = run_main(
        "--config=configs/linear_case.py:quick", f"--workdir={workdir}", data_dir=data_dir
    )
    return workdir, out


def test_quick_run_reproduces_the_lecture_and_the_operators_match_ols(quick_run):
    workdir, out = quick_run
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["dataset_seeds"] == [0, 1, 2]
    r2 = []
    for name, published in PUBLISHED.items():
        model = results["models"][name]
        assert model["n"] == 300
        assert len(model["per_seed"]) == 3
        np.testing.assert_allclose(model["ols"]["coef"], published, atol=0.2, err_msg=name)
        assert all(0.0 < se < 0.3 for se in model["ols"]["se"]), name
        # the fusion operators are the regressions: full-batch Adam reaches the OLS optimum
        np.testing.assert_allclose(
            model["operator_fit"]["coef"], model["ols"]["coef"], atol=0.01, err_msg=name
        )
        assert model["operator_fit"]["max_abs_diff_from_ols"] < 0.01
        r2.append(model["ols"]["r2"])
    assert 0.0 < r2[0] < r2[1] < r2[2] < 1.0  # each added term explains more
    # the published table beside ours, printed at the end
    assert "| y ~ x_A + x_B + x_A*x_B | lecture | 5.79 | 0.68 | −2.94 | 1.29 |" in out.stdout
    assert "| tensor |" in out.stdout
    for name in (
        "config.json",
        "table.md",
        "plots/linear_case.png",
        "plots/table.png",
        "runs/seed_2/tensor_ab/metrics.jsonl",
        "runs/seed_0/additive_a/checkpoints",
    ):
        assert (workdir / name).exists(), name


def test_rerun_in_process_resumes_the_finished_run_with_the_same_results(quick_run):
    workdir, out = quick_run
    assert out.returncode == 0, out.stderr[-3000:]
    expected = json.loads((workdir / "results.json").read_text())
    config = linear_case_config.get_config("quick")
    assert linear_case.train_and_evaluate(config, str(workdir)) == expected


def test_seed_in_data_options_is_refused(tmp_path):
    config = linear_case_config.get_config("quick")
    config.data.options.seed = 4
    with pytest.raises(ValueError, match=r"config\.data\.seeds"):
        linear_case.train_and_evaluate(config, str(tmp_path))


def test_generator_options_are_in_the_config_and_reach_the_data():
    config = linear_case_config.get_config("quick")
    assert set(config.data.options) == {"n", "noise"}  # every option but the seed
    assert len(linear_case._load(config.data, seed=0)[0]) == 300
    config.data.options.n = 40  # as --config.data.options.n=40 sets it
    x_a, x_b, y = linear_case._load(config.data, seed=0)
    assert x_a.shape == x_b.shape == y.shape == (40,)
