"""Training on a mesh of 8 (simulated CPU) devices equals training on one; checkpoints move."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _check(mode, directory, devices):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out = subprocess.run(
        [sys.executable, "-m", "tests.train.sharded_fit_checks", mode, str(directory)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == devices
    return result


def test_data_parallel_and_2x4_mesh_steps_equal_the_single_device_run(tmp_path):
    result = _check("compare", tmp_path, devices=8)
    # Same maths, different summation order across devices.
    assert result["data_parallel_diff"] < 1e-5 * max(1.0, result["param_scale"])
    assert result["mesh_2x4_diff"] < 1e-5 * max(1.0, result["param_scale"])
    assert result["explicit_mesh_diff"] < 1e-5 * max(1.0, result["param_scale"])
    assert result["explicit_placed_data_diff"] < 1e-5 * max(1.0, result["param_scale"])
    assert any("model" in spec for spec in result["sharded_specs"])  # parameters were split


def test_batch_statistics_and_rng_counters_train_on_a_mesh_as_on_one_device(tmp_path):
    # BatchNorm's batch mean is over the global batch, dropout's masks do not depend on
    # how the batch is split, and the state that is not a Param follows param_axis too
    result = _check("stateful", tmp_path, devices=8)
    assert result["data_parallel_diff"] < 1e-5 and result["mesh_2x4_diff"] < 1e-5
    assert abs(result["mean_shift"] - 3.0) < 0.5  # the running mean moved to the data's
    assert result["rng_count"] == 12 and result["same_rng_counts"]  # one draw per step


def test_a_checkpoint_saved_on_8_devices_restores_on_1_and_the_run_continues(tmp_path):
    saved = _check("save", tmp_path, devices=8)
    assert saved["steps"] == [6, 12]
    resumed = _check("resume", tmp_path, devices=1)
    assert resumed["step"] == 12
    assert resumed["diff"] < 1e-5
    # Checkpointer.restore_saved reads it on one device too, without a target
    assert resumed["as_saved_paths_match"] and resumed["as_saved_diff"] == 0.0
