"""Per-modality encoders: an MLP for vectors, a GRU for sequences."""

from mmfuse.models.encoders.mlp import MLP
from mmfuse.models.encoders.sequence import SequenceEncoder

__all__ = ["MLP", "SequenceEncoder"]
