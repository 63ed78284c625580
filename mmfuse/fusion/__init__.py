"""Fusion operators: pure functions (``fusion.functional``), thin NNX modules, a registry.

>>> from flax import nnx
>>> from mmfuse import fusion
>>> op = fusion.create("tensor", in_dims=(8, 4), out_dim=2, rngs=nnx.Rngs(0))
"""

from mmfuse.fusion import functional
from mmfuse.fusion._core import FusionOperator
from mmfuse.fusion._registry import create, get, names, options, register
from mmfuse.fusion.additive import AdditiveFusion
from mmfuse.fusion.bilinear import BilinearFusion
from mmfuse.fusion.film import FilmFusion
from mmfuse.fusion.gated import GatedFusion
from mmfuse.fusion.hard_gated import HardGateAux, HardGatedFusion, reinforce_surrogate
from mmfuse.fusion.low_rank_tensor import LowRankTensorFusion
from mmfuse.fusion.modality_shift import ModalityShiftFusion
from mmfuse.fusion.multiplicative import MultiplicativeFusion
from mmfuse.fusion.nonlinear import NonlinearFusion
from mmfuse.fusion.tensor import TensorFusion

__all__ = [
    "AdditiveFusion",
    "BilinearFusion",
    "FilmFusion",
    "FusionOperator",
    "GatedFusion",
    "HardGateAux",
    "HardGatedFusion",
    "LowRankTensorFusion",
    "ModalityShiftFusion",
    "MultiplicativeFusion",
    "NonlinearFusion",
    "TensorFusion",
    "create",
    "functional",
    "get",
    "names",
    "options",
    "register",
    "reinforce_surrogate",
]
