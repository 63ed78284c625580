"""Every fusion operator as pure functions: ``init_<op>(key, in_dims, out_dim, ...)`` and
``<op>(params, xs, ...)``.

The NNX modules in ``mmfuse.fusion`` hold the parameters and call these functions;
``module.functional_params()`` returns the pytree they take.
"""

from mmfuse.fusion.additive import additive, init_additive
from mmfuse.fusion.bilinear import bilinear, bilinear_kernel, init_bilinear
from mmfuse.fusion.film import film, init_film
from mmfuse.fusion.gated import gated, init_gated, soft_gates
from mmfuse.fusion.hard_gated import hard_gated, init_hard_gated, reinforce_surrogate
from mmfuse.fusion.low_rank_tensor import (
    init_low_rank_tensor,
    low_rank_tensor,
    low_rank_to_tensor,
)
from mmfuse.fusion.modality_shift import (
    init_modality_shift,
    modality_shift,
    modality_shift_displacement,
)
from mmfuse.fusion.multiplicative import init_multiplicative, multiplicative
from mmfuse.fusion.nonlinear import init_nonlinear, nonlinear
from mmfuse.fusion.tensor import init_tensor, tensor, tensor_features

__all__ = [
    "additive",
    "bilinear",
    "bilinear_kernel",
    "film",
    "gated",
    "hard_gated",
    "init_additive",
    "init_bilinear",
    "init_film",
    "init_gated",
    "init_hard_gated",
    "init_low_rank_tensor",
    "init_modality_shift",
    "init_multiplicative",
    "init_nonlinear",
    "init_tensor",
    "low_rank_tensor",
    "low_rank_to_tensor",
    "modality_shift",
    "modality_shift_displacement",
    "multiplicative",
    "nonlinear",
    "reinforce_surrogate",
    "soft_gates",
    "tensor",
    "tensor_features",
]
