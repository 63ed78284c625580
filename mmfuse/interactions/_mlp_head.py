"""MLP heads split at their first layer: each modality's part computed once per example.

Early (nonlinear) fusion runs one MLP on the concatenated features. Its first layer
acts on the concatenation, so it splits by modality:

    [h_1; …; h_M] W + b = Σ_m h_m W_m + b = Σ_m u_m,   u_1 = h_1 W_1 + b, u_m = h_m W_m.

On EMAP's cross pairs the parts ``u_m`` of the N examples are computed once, and each
pair only adds them and runs the rest of the network ``g``: ``f(x) = g(Σ_m u_m)``.
That saves the first layer on every pair, and for two modalities it lets the whole
pair pass run fused in one kernel (``_mlp_kernel``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import add_bias, matmul
from mmfuse.fusion.nonlinear import ACTIVATIONS, NonlinearFusion
from mmfuse.models.encoders import MLP
from mmfuse.models.modular.fusion_model import FusionModel

Activation = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SplitMLP:
    """``f(h_1, …, h_M) = g(Σ_m h_m W_m + b)``: an MLP head split at its first layer.

    Attributes:
      input_kernels: M arrays ``[e_m, H]``, the first layer's rows for each modality.
      bias: ``[H]``, the first layer's bias.
      layers: ``(kernel [H_l, H_{l+1}], bias [H_{l+1}])`` for each later layer of ``g``,
        the last one ending at the C outputs.
      activations: one per entry of ``layers``, applied before that layer (``None``:
        none, where two linear layers follow each other).
      dtypes: the matmul operand dtype in the model (``None``: the operands' own) of
        the first layer, then of each entry of ``layers`` (the fusion's layers and the
        head's each keep their module's ``compute_dtype``).
    """

    input_kernels: tuple[jax.Array, ...]
    bias: jax.Array
    layers: tuple[tuple[jax.Array, jax.Array], ...]
    activations: tuple[Activation | None, ...]
    dtypes: tuple[Any, ...]

    def parts(self, hs: Sequence[jax.Array], dtype: Any = None) -> tuple[jax.Array, ...]:
        """``u_m = h_m W_m`` (plus the bias on ``u_1``): M arrays ``[N, e_m]`` -> ``[N, H]``.

        ``dtype`` overrides the model's operand dtype (``None``: keep it).
        """
        dtype = dtype or self.dtypes[0]
        us = tuple(
            matmul(h, kernel, dtype) for h, kernel in zip(hs, self.input_kernels, strict=True)
        )
        return (add_bias(us[0], self.bias), *us[1:])

    def rest(self, x: jax.Array, dtype: Any = None) -> jax.Array:
        """``g(x)``: ``[..., H]`` summed parts -> ``[..., C]`` outputs (``dtype`` as for
        ``parts``, for every layer)."""
        for (kernel, bias), act, own in zip(
            self.layers, self.activations, self.dtypes[1:], strict=True
        ):
            if act is not None:
                x = act(x)
            x = add_bias(matmul(x, kernel, dtype or own), bias)  # [..., H_next]
        return x

    def head(self, dtype: Any = None) -> Callable[[Sequence[jax.Array]], jax.Array]:
        """``us -> g(Σ_m u_m)``: the function EMAP pairs, on the parts."""
        return lambda us: self.rest(sum(us[1:], us[0]), dtype)


def split_mlp(model: nnx.Module) -> SplitMLP | None:
    """The split form of a ``FusionModel``'s fusion and head, or ``None`` if it has none.

    Recognised: nonlinear (early) fusion (``mmfuse.fusion.create("nonlinear", ...)``),
    followed by no head, a ``nnx.Linear`` or an ``mmfuse.models.MLP``. The returned
    arrays are the model's current parameters, each layer with the operand dtype its
    module computes in.
    """
    if not isinstance(model, FusionModel) or not isinstance(model.fusion, NonlinearFusion):
        return None
    params = model.fusion.functional_params()
    act = ACTIVATIONS[model.fusion.activation]
    # the fusion MLP: act between layers, its last layer linear
    layers = list(zip(params["kernels"], params["biases"][1:], strict=True))
    activations: list[Activation | None] = [act] * len(layers)
    dtypes = [model.fusion.compute_dtype] * (1 + len(layers))  # its first layer, then the rest
    head = model.head
    if isinstance(head, nnx.Linear):
        # an nnx.Linear computes in its `dtype` (None: its inputs')
        head_layers, head_acts, head_dtype = [head], [None], head.dtype
    elif isinstance(head, MLP):
        head_layers = list(head.layers)
        head_acts = [None] + [head.activation] * (len(head_layers) - 1)
        head_dtype = head.compute_dtype
    elif head is None:
        head_layers, head_acts, head_dtype = [], [], None
    else:
        return None
    dtypes.extend([head_dtype] * len(head_layers))
    for layer in head_layers:
        if layer.bias is None:
            bias = jnp.zeros((layer.out_features,), jnp.float32)
        else:
            bias = layer.bias[...]
        layers.append((layer.kernel[...], bias))
    activations.extend(head_acts)
    return SplitMLP(
        input_kernels=tuple(params["input_kernels"]),
        bias=params["biases"][0],
        layers=tuple(layers),
        activations=tuple(activations),
        dtypes=tuple(dtypes),
    )
