"""Test-wide settings: strict shape semantics, CPU-only runs, one tfds folder per session."""

import os
import pathlib

import pytest

# Set before jax is imported anywhere: implicit rank promotion hides shape bugs.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """The session's tfds data folder: datasets are built once, never under the home."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(autouse=True)
def _tfds_data_dir(monkeypatch, data_dir):
    # A call without data_dir must not write under the user's home either.
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
