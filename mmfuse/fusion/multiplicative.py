"""Multiplicative fusion: the elementwise product of per-modality projections."""

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
    check_compute_dtype,
    check_dims,
    check_inputs,
    check_positive,
    lecun_normal,
    linear,
)
from mmfuse.fusion._registry import register


def init_multiplicative(
    key: jax.Array,
    in_dims: Sequence[int],
    out_dim: int,
    *,
    hidden_dim: int | None = None,
    kernel_init: Initializer | None = None,
) -> Params:
    """Parameters of ``multiplicative``.

    ``{"kernels": [W_m: [d_m, H]], "biases": [b_m: [H]]}`` with ``H = out_dim``, plus
    ``{"out_kernel": [H, out_dim], "out_bias": [out_dim]}`` when ``hidden_dim = H`` is given.
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "multiplicative", min_modalities=2)
    if hidden_dim is not None:
        check_positive(hidden_dim, "hidden_dim", "multiplicative")
    width = out_dim if hidden_dim is None else hidden_dim
    kernel_init = kernel_init or lecun_normal()
    keys = jax.random.split(key, len(in_dims) + 1)
    params = {
        "kernels": [
            kernel_init(k, (d, width), jnp.float32) for k, d in zip(keys, in_dims, strict=False)
        ],
        "biases": [jnp.zeros((width,), jnp.float32) for _ in in_dims],
    }
    if hidden_dim is not None:
        params["out_kernel"] = kernel_init(keys[-1], (width, out_dim), jnp.float32)
        params["out_bias"] = jnp.zeros((out_dim,), jnp.float32)
    return params


def multiplicative(
    params: Params, xs: Sequence[jax.typing.ArrayLike], *, compute_dtype: Any = None
) -> jax.Array:
    """Multiplicative fusion ``z = ⊙_m (W_m x_m + b_m)``, optionally followed by a linear layer.

    With equal widths and identity projections this is the lecture's ``x_A ⊙ x_B``; the
    projections let modalities of different widths meet in one space, and their biases
    keep the lower-order (unimodal) terms inside the product.

    Args:
      params: ``{"kernels": [W_m: [d_m, H]], "biases": [b_m: [H]]}`` and optionally
        ``{"out_kernel": [H, C], "out_bias": [C]}``.
      xs: M ≥ 2 arrays ``[..., d_m]`` with shared leading dims.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation); None (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]`` (``C = H`` without the output layer).

    References:
      Jayakumar et al., "Multiplicative Interactions and Where to Find Them", ICLR 2020.
    """
    cd = check_compute_dtype(compute_dtype, "multiplicative")
    in_dims = [k.shape[0] for k in params["kernels"]]
    xs = check_inputs(xs, in_dims, "multiplicative")
    z = None
    for x, kernel, bias in zip(xs, params["kernels"], params["biases"], strict=True):
        projected = linear(x, kernel, bias, compute_dtype=cd)  # [..., H]
        z = projected if z is None else z * projected
    if "out_kernel" in params:
        z = linear(z, params["out_kernel"], params["out_bias"], compute_dtype=cd)  # [..., C]
    return z


@register("multiplicative")
class MultiplicativeFusion(FusionOperator):
    """``z = ⊙_m (W_m x_m + b_m)`` [then ``W_o z + b_o``] (M ≥ 2).

    Options:
      hidden_dim: width ``H`` of the product; when given, a linear layer maps it to
        ``out_dim``; when None (default) the product is the output (``H = out_dim``).
      kernel_init: initializer of every kernel (default LeCun normal).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        hidden_dim: int | None = None,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        params = init_multiplicative(
            rngs.params(), in_dims, out_dim, hidden_dim=hidden_dim, kernel_init=kernel_init
        )
        super().__init__(in_dims, out_dim, params, compute_dtype)

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return multiplicative(self.functional_params(), xs, compute_dtype=self.compute_dtype)
