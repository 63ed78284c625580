"""Models that factorize as ``head(enc_1(x_1), ..., enc_M(x_M))``."""

from mmfuse.models.modular.fusion_model import FusionModel
from mmfuse.models.modular.late_fusion import LateFusion

__all__ = ["FusionModel", "LateFusion"]
