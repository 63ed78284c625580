"""Additive fusion: ``z = Σ_m W_m x_m + b``, the late-fusion / ensemble view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    FusionOperator,
    Initializer,
    Params,
    add_bias,
    check_compute_dtype,
    check_dims,
    check_inputs,
    lecun_normal,
    linear,
)
from mmfuse.fusion._registry import register


def init_additive(
    key: jax.Array, in_dims: Sequence[int], out_dim: int, *, kernel_init: Initializer | None = None
) -> Params:
    """Parameters ``{"kernels": [W_m: [d_m, out_dim]], "bias": [out_dim]}``."""
    in_dims, out_dim = check_dims(in_dims, out_dim, "additive")
    kernel_init = kernel_init or lecun_normal()
    keys = jax.random.split(key, len(in_dims))
    return {
        "kernels": [
            kernel_init(k, (d, out_dim), jnp.float32) for k, d in zip(keys, in_dims, strict=True)
        ],
        "bias": jnp.zeros((out_dim,), jnp.float32),
    }


def additive(
    params: Params, xs: Sequence[jax.typing.ArrayLike], *, compute_dtype: Any = None
) -> jax.Array:
    """Additive fusion ``z = Σ_m W_m x_m + b``.

    Each modality contributes on its own, so the output has no cross-modal
    interaction: with per-modality predictors in front it is late fusion.

    Args:
      params: ``{"kernels": [W_m: [d_m, C]], "bias": [C]}``.
      xs: M arrays ``[..., d_m]`` with shared leading dims.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation); None (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]``.
    """
    compute_dtype = check_compute_dtype(compute_dtype, "additive")
    in_dims = [k.shape[0] for k in params["kernels"]]
    xs = check_inputs(xs, in_dims, "additive")
    z = sum(
        linear(x, k, compute_dtype=compute_dtype)
        for x, k in zip(xs, params["kernels"], strict=True)
    )  # [..., C]
    return add_bias(z, params["bias"])


@register("additive")
class AdditiveFusion(FusionOperator):
    """``z = Σ_m W_m x_m + b`` (any M ≥ 1).

    Options:
      kernel_init: initializer of each ``W_m`` (default LeCun normal over ``d_m``).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_dims,
            out_dim,
            init_additive(rngs.params(), in_dims, out_dim, kernel_init=kernel_init),
            compute_dtype,
        )

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return additive(self.functional_params(), xs, compute_dtype=self.compute_dtype)
