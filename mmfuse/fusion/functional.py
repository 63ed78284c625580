"""Every fusion operator as pure functions: ``init_<op>(key, in_dims, out_dim, ...)`` and
``<op>(params, xs, ...)``.

The NNX modules in ``mmfuse.fusion`` hold the parameters and call these functions;
``module.functional_params()`` returns the pytree they take.
"""

from mmfuse.fusion.additive import additive, init_additive
from mmfuse.fusion.tensor import init_tensor, tensor, tensor_features

__all__ = [
    "additive",
    "init_additive",
    "init_tensor",
    "tensor",
    "tensor_features",
]
