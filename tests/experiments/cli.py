"""Running the experiments' entry point from the tests."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_main(*args: str, data_dir: pathlib.Path, **popen_kwargs) -> subprocess.CompletedProcess:
    """``python -m experiments.main ARGS`` from the repository root; output captured."""
    env = {**os.environ, "TFDS_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **popen_kwargs,
    )
