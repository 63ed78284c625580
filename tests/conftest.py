"""Test-wide settings: strict shape semantics and CPU-only runs."""

import os

# Set before jax is imported anywhere: implicit rank promotion hides shape bugs.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
