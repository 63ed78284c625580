"""mmfuse: multimodal fusion operators, models and interaction measures in JAX / Flax NNX."""

from mmfuse import data, fusion, interactions, models

__version__ = "0.1.0"

__all__ = ["data", "fusion", "interactions", "models"]
