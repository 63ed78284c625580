"""Test-wide settings: strict shape semantics, CPU-only runs, one tfds folder per session."""

import os
import pathlib

import pytest

# Set before jax is imported anywhere: implicit rank promotion hides shape bugs.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most tests run small programs once, so compiling dominates their time: skip XLA's
# backend (LLVM) optimization. The HLO passes, hence the computed program and its
# memory plan, are unchanged; only the machine code is slower. Inherited by the
# experiment subprocesses. Tests whose time is spent running use `optimized_compiles`.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """The session's tfds data folder: datasets are built once, never under the home."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture
def optimized_compiles():
    """Fully optimized XLA compilation for a test that runs long programs."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(autouse=True)
def _tfds_data_dir(monkeypatch, data_dir):
    # A call without data_dir must not write under the user's home either.
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
