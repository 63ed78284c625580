"""Shared fixtures: a per-session tfds data folder, so that no test writes under the home."""

import pathlib

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(autouse=True)
def _tfds_data_dir(monkeypatch, data_dir):
    # A call without data_dir must not write under the user's home either.
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
