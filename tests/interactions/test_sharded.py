"""Sharded EMAP on a 2x4 mesh of simulated CPU devices equals single-device EMAP.

jax fixes its device count at start-up, so the checks run in a fresh process
(``tests/interactions/sharded_checks.py``) with 8 host devices, and these tests
assert on the measurements it prints.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.interactions.sharded_checks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_emap_takes_arrays_placed_on_an_explicit_axes_mesh(results):
    # jax.make_mesh's default axis types: emap relabels the mesh Auto and computes
    checks = results["explicit_mesh"]
    assert all(error < 1e-5 for error in checks["errors"].values()), checks["errors"]
    assert checks["inside_jit"].startswith(
        "emap: modality 0 is sharded over a mesh with Explicit axes"
    )
    assert "AxisType.Auto" in checks["inside_jit"]


def test_runs_on_eight_devices(results):
    assert results["device_count"] == 8


@pytest.mark.parametrize(
    "label", ["M2_both_axes", "M3_one_axis", "M2_swapped_axes", "M3_other_axis"]
)
def test_exact_mode_equals_single_device(results, label):
    check = results["exact"][label]
    assert check["error"] < 1e-5  # float32 summation order only
    assert check["shape"] == [16, 3]
    assert check["spec"] == [check["axes"]]  # the result stays sharded by rows


def test_factorized_model_encodes_shard_locally_and_matches(results):
    assert results["model"] < 1e-5


def test_monte_carlo_is_unbiased_with_the_single_device_standard_errors(results):
    mc = results["monte_carlo"]
    assert mc["original_error"] == 0.0
    assert mc["max_abs_z"] < 5.0
    assert 0.6 < mc["mean_sq_z"] < 1.6  # standard errors are calibrated
    assert abs(mc["mean_z"]) < 4.0 / mc["num_z"] ** 0.5  # no bias beyond sampling noise
    assert 0.8 < mc["stderr_ratio_median"] < 1.25  # the same error model as one device


def test_monte_carlo_scales_to_a_million_examples(results):
    large = results["large"]
    assert large["shape"] == [1_000_000, 1]
    assert large["finite"]
    assert large["grand_z"] < 5.0


def test_exact_mode_traces_beyond_two_billion_pairs_per_example(results):
    assert results["huge_exact_shape"] == [1296]


def test_errors_are_clear(results):
    errors = results["errors"]
    assert "N = 12 examples do not split evenly over the 8 devices" in errors["indivisible"]
    assert "pad or trim N to a multiple of 8" in errors["indivisible"]
    assert "axis_name='z' must name distinct axes of the mesh" in errors["bad_axis"]
    assert "mesh must be a jax.sharding.Mesh" in errors["not_a_mesh"]
    assert "non-finite outputs (nan or inf) for 8 of the 8^2 = 64" in errors["nonfinite"]


@pytest.mark.parametrize("label", ["tensor", "tensor_bf16", "split_mlp", "split_mlp_bf16"])
def test_sharded_emap_model_takes_the_fast_paths_and_matches_one_device(results, label):
    check = results["model_paths"][label]
    assert check["error"] < 1e-5  # float32 summation order only (bf16 rounds the same)
    assert check["sharded_rows"]


def test_sharded_emap_model_monte_carlo_and_errors(results):
    paths = results["model_paths"]
    assert paths["monte_carlo_finite"]
    assert "sharded_emap_model: N = 12 examples do not split evenly" in paths["indivisible"]
