"""Experiment tests share one tfds data folder per session and never write under the home."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(autouse=True)
def _tfds_data_dir(monkeypatch, data_dir):
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))


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
