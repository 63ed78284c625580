"""Test-wide settings: strict shape semantics, CPU-only runs, one tfds folder and one XLA
compilation cache per session."""

import os
import pathlib
import shutil
import tempfile

import pytest

# Set before jax is imported anywhere: implicit rank promotion hides shape bugs.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most tests run small programs once, so compiling dominates their time: skip XLA's
# backend (LLVM) optimization. The HLO passes, hence the computed program and its
# memory plan, are unchanged; only the machine code is slower. Inherited by the
# experiment subprocesses. Tests whose time is spent running use `optimized_compiles`.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def pytest_configure(config):
    # Many tests compile the same programs (a model's train step, an experiment's run in
    # a subprocess): a compilation cache shared by the session's workers and subprocesses
    # (they inherit the environment) compiles each once. A run of its own, so no stale
    # entry is ever read; removed at the end. Set here, before any test imports jax.
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # a worker inherits the session's cache; a user's own cache is kept
    cache = tempfile.mkdtemp(prefix="mmfuse-test-xla-cache-")
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # small programs too


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
