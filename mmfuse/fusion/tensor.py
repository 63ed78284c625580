"""Tensor fusion (TFN): ``z = W · vec(⊗_m [x_m; 1])``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse.fusion._core import (
    APPEND_POSITIONS,
    FusionOperator,
    Initializer,
    Params,
    append_one,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    einsum,
    lecun_normal,
    matmul,
)
from mmfuse.fusion._registry import register

_MAX_MODALITIES = 20  # the kernel has one axis per modality: Π(d_m + 1) grows fast


def init_tensor(
    key: jax.Array, in_dims: Sequence[int], out_dim: int, *, kernel_init: Initializer | None = None
) -> Params:
    """Parameters ``{"kernel": [d_1 + 1, ..., d_M + 1, out_dim]}``.

    The kernel is kept as a tensor, one axis per modality, so that the modality
    widths can be read off it; it equals TFN's ``[Π(d_m + 1), out_dim]`` linear
    layer reshaped. There is no separate bias: the all-ones entry of the outer
    product already multiplies one row of the kernel.
    """
    in_dims, out_dim = check_dims(
        in_dims, out_dim, "tensor", min_modalities=2, max_modalities=_MAX_MODALITIES
    )
    num_modalities = len(in_dims)
    kernel_init = kernel_init or lecun_normal(in_axes=tuple(range(num_modalities)))
    shape = (*(d + 1 for d in in_dims), out_dim)
    return {"kernel": kernel_init(key, shape, jnp.float32)}


def tensor_features(xs: Sequence[jax.typing.ArrayLike], *, append: str = "last") -> jax.Array:
    """``vec(⊗_m [x_m; 1])``: M arrays ``[..., d_m]`` -> ``[..., Π_m (d_m + 1)]``.

    The explicit TFN feature vector, in row-major order over the modalities (the
    first modality's index varies slowest). ``tensor`` never builds it; it is here
    for inspection and for fitting the linear layer in closed form. Inputs are
    checked as ``tensor``'s (shared leading dims; integers become float32).
    """
    check_choice(append, APPEND_POSITIONS, "append", "tensor_features")
    if isinstance(xs, (str, jax.Array, np.ndarray)) or not isinstance(xs, Sequence) or not xs:
        raise ValueError(
            "tensor_features: expected a non-empty sequence of modality arrays, got "
            + (
                f"an empty {type(xs).__name__}"
                if isinstance(xs, Sequence) and not xs
                else type(xs).__name__
            )
        )
    for m, x in enumerate(xs):
        if jnp.ndim(x) < 1:
            raise ValueError(
                f"tensor_features: modality {m} must have shape [..., d_m], got a scalar"
            )
    # checked against their own widths: what matters here is the shared leading dims
    xs = check_inputs(xs, [jnp.shape(x)[-1] for x in xs], "tensor_features")
    feats = None
    for x in xs:
        z = append_one(x, append)  # [..., d_m + 1]
        if feats is None:
            feats = z
        else:
            width = feats.shape[-1] * z.shape[-1]  # explicit: -1 is ambiguous for B = 0
            feats = (feats[..., :, None] * z[..., None, :]).reshape(*z.shape[:-1], width)
    return feats


def tensor(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    append: str = "last",
    compute_dtype: Any = None,
) -> jax.Array:
    """Tensor fusion ``z = W · vec(⊗_m [x_m; 1])``.

    The contraction follows the kernel's own axis order (the outer product of the first
    modalities, one matmul with the kernel, then a batched contraction per remaining
    modality), which equals the TFN definition, never transposes (copies) the kernel,
    and materialises the full ``Π(d_m + 1)`` outer product only where that is the
    smallest intermediate. Appending the 1
    keeps every lower-order term: unimodal, bimodal, ...,
    M-modal products all appear in the feature vector.

    Args:
      params: ``{"kernel": [d_1 + 1, ..., d_M + 1, C]}``.
      xs: M arrays ``[..., d_m]`` with shared leading dims.
      append: where the constant 1 goes, ``"last"`` (``[x; 1]``) or ``"first"`` (``[1; x]``).
      compute_dtype: the operand dtype of the contractions with the kernel, e.g.
        ``jnp.bfloat16`` (float32 accumulation); None (default) computes in the
        inputs' dtype. The outer products are formed in the inputs' dtype.

    Returns:
      ``[..., C]``.

    References:
      Zadeh et al., "Tensor Fusion Network for Multimodal Sentiment Analysis", EMNLP 2017.
    """
    check_choice(append, APPEND_POSITIONS, "append", "tensor")
    compute_dtype = check_compute_dtype(compute_dtype, "tensor")
    kernel = params["kernel"]
    in_dims = [s - 1 for s in kernel.shape[:-1]]
    xs = check_inputs(xs, in_dims, "tensor")
    zs = [append_one(x, append) for x in xs]  # M x [..., d_m + 1]
    lead = zs[0].shape[:-1]
    zs = [z.reshape(-1, z.shape[-1]) for z in zs]  # M x [B, d_m + 1], B = prod(lead)
    batch, sizes, out_dim = zs[0].shape[0], [z.shape[-1] for z in zs], kernel.shape[-1]
    # The outer product of the first k modalities meets the kernel, viewed as
    # [Π_{m<k}(d_m+1), Π_{m>=k}(d_m+1)·C], in one matmul; the other modalities are then
    # contracted one by one. k is chosen for the smallest intermediates per example.
    k = min(
        range(1, len(zs) + 1),
        key=lambda k: (math.prod(sizes[:k]) if k > 1 else 0) + math.prod(sizes[k:]) * out_dim,
    )
    feats = zs[0]
    for z in zs[1:k]:
        width = feats.shape[1] * z.shape[1]  # explicit: -1 is ambiguous for B = 0
        feats = (feats[:, :, None] * z[:, None, :]).reshape(batch, width)  # [B, Π_{m<k}]
    out = matmul(feats, kernel.reshape(feats.shape[-1], -1), compute_dtype)  # [B, Π_{m>=k}·C]
    for z in zs[k:]:
        out = out.reshape(batch, z.shape[-1], out.shape[1] // z.shape[-1])
        out = einsum("bk,bkr->br", z, out, compute_dtype=compute_dtype)  # [B, rest]
    return out.reshape(*lead, kernel.shape[-1])  # [..., C]


@register("tensor")
class TensorFusion(FusionOperator):
    """TFN: ``z = W · vec(⊗_m [x_m; 1])`` (2 ≤ M ≤ 20).

    Options:
      append_one: ``"last"`` (``[x; 1]``, as in TFN) or ``"first"`` (``[1; x]``).
      kernel_init: initializer of the ``[d_1 + 1, ..., d_M + 1, C]`` kernel (default
        LeCun normal over all modality axes).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        append_one: str = "last",
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.append_one = check_choice(append_one, APPEND_POSITIONS, "append_one", "tensor")
        super().__init__(
            in_dims,
            out_dim,
            init_tensor(rngs.params(), in_dims, out_dim, kernel_init=kernel_init),
            compute_dtype,
        )

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return tensor(
            self.functional_params(),
            xs,
            append=self.append_one,
            compute_dtype=self.compute_dtype,
        )
