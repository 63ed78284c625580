"""Transformers over raw modality tokens: early fusion and bottleneck (MBT) fusion."""

from mmfuse.models.transformers.bottleneck import BottleneckFusion
from mmfuse.models.transformers.early_fusion import EarlyFusionTransformer

__all__ = ["BottleneckFusion", "EarlyFusionTransformer"]
