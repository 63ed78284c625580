"""Two processes on one machine train as one run: the same result as one process."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(process_id, num_processes, port, workdir, devices):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.train.multiprocess_checks",
            str(process_id),
            str(num_processes),
            str(port),
            str(workdir),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_with_two_devices_each_equal_one_process_with_four(tmp_path):
    port = _free_port()
    processes = [_start(i, 2, port, tmp_path / "multi", devices=2) for i in range(2)]
    multi = [_result(p) for p in processes]
    single = _result(_start(0, 1, 0, tmp_path / "single", devices=4))
    assert [r["devices"] for r in multi] == [4, 4] and single["devices"] == 4
    for process in multi:
        assert process["best_step"] == single["best_step"]
        for a, b in zip(process["params"], single["params"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Only process 0 wrote the metrics, once; the checkpoint restores (the run is done).
    assert multi[0]["metric_lines"] == single["metric_lines"] > 0
    assert (tmp_path / "multi" / "checkpoints" / "24").is_dir()
