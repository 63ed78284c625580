"""Fusion operators: pure functions (``fusion.functional``), thin NNX modules, a registry.

>>> from flax import nnx
>>> from mmfuse import fusion
>>> op = fusion.create("tensor", in_dims=(8, 4), out_dim=2, rngs=nnx.Rngs(0))
"""

from mmfuse.fusion import functional
from mmfuse.fusion._core import FusionOperator
from mmfuse.fusion._registry import create, get, names, options, register
from mmfuse.fusion.additive import AdditiveFusion
from mmfuse.fusion.tensor import TensorFusion

__all__ = [
    "AdditiveFusion",
    "FusionOperator",
    "TensorFusion",
    "create",
    "functional",
    "get",
    "names",
    "options",
    "register",
]
