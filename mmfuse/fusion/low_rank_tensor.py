"""Low-rank multimodal fusion (LMF): tensor fusion through rank-r modality factors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    APPEND_POSITIONS,
    FusionOperator,
    Initializer,
    Params,
    add_bias,
    append_one,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    check_positive,
    einsum,
    lecun_normal,
)
from mmfuse.fusion._registry import register

RANK_WEIGHTS = ("learned", "uniform")


def init_low_rank_tensor(
    key: jax.Array,
    in_dims: Sequence[int],
    out_dim: int,
    *,
    rank: int = 4,
    rank_weights: str = "learned",
    kernel_init: Initializer | None = None,
) -> Params:
    """Parameters ``{"factors": [W_m: [r, d_m + 1, C]], "bias": [C]}`` and, with learned
    rank weights, ``"rank_weights": [r]``.

    ``r·Σ_m(d_m + 1)·C + r + C`` numbers in all (``+ r`` only when learned), against
    ``Π_m(d_m + 1)·C`` for the tensor-fusion kernel they stand for. Each factor is
    normal with variance ``1/(d_m + 1)`` so every rank-one term starts near unit scale;
    the rank weights start at ``1/sqrt(r)``.
    """
    name = "low_rank_tensor"
    in_dims, out_dim = check_dims(in_dims, out_dim, name, min_modalities=2)
    check_positive(rank, "rank", name)
    check_choice(rank_weights, RANK_WEIGHTS, "rank_weights", name)
    kernel_init = kernel_init or lecun_normal(in_axes=1, out_axes=(0, 2))
    keys = jax.random.split(key, len(in_dims))
    params = {
        "factors": [
            kernel_init(k, (rank, d + 1, out_dim), jnp.float32)
            for k, d in zip(keys, in_dims, strict=True)
        ],
        "bias": jnp.zeros((out_dim,), jnp.float32),
    }
    if rank_weights == "learned":
        params["rank_weights"] = jnp.full((rank,), rank**-0.5, jnp.float32)
    return params


def low_rank_tensor(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    append: str = "last",
    compute_dtype: Any = None,
) -> jax.Array:
    """LMF: ``z = Σ_r w_r Π_m (W_m^(r)ᵀ [x_m; 1]) + b``.

    Each modality is projected once per rank component (``[..., r, C]``), the M
    projections are multiplied elementwise and the r components summed with weights
    ``w_r`` (all ones when ``params`` has no ``"rank_weights"``). This equals tensor
    fusion with the CP-structured kernel
    ``W[i_1, …, i_M, k] = Σ_r w_r Π_m W_m^(r)[i_m, k]`` (``low_rank_to_tensor``), at a
    cost linear in the modality widths: the ``Π_m(d_m + 1)`` tensor is never built.

    Args:
      params: ``{"factors": [W_m: [r, d_m + 1, C]], "bias": [C]}`` and optionally
        ``"rank_weights": [r]``.
      xs: M ≥ 2 arrays ``[..., d_m]`` with shared leading dims.
      append: where the constant 1 goes, ``"last"`` or ``"first"``.
      compute_dtype: the operand dtype of the per-modality projections, e.g.
        ``jnp.bfloat16`` (float32 accumulation); the product over modalities and the
        weighted sum over ranks stay float32. None (default) computes in the inputs'
        dtype.

    Returns:
      ``[..., C]``.

    References:
      Liu et al., "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors",
      ACL 2018.
    """
    check_choice(append, APPEND_POSITIONS, "append", "low_rank_tensor")
    cd = check_compute_dtype(compute_dtype, "low_rank_tensor")
    factors = params["factors"]
    xs = check_inputs(xs, [f.shape[1] - 1 for f in factors], "low_rank_tensor")
    product = None
    for x, factor in zip(xs, factors, strict=True):
        h = einsum("...d,rdk->...rk", append_one(x, append), factor, compute_dtype=cd)
        product = h if product is None else product * h
    if "rank_weights" in params:
        weights = jnp.reshape(params["rank_weights"], (1,) * (product.ndim - 2) + (-1, 1))
        z = jnp.sum(product * weights, axis=-2)  # [..., C], a weighted sum in float32
    else:
        z = jnp.sum(product, axis=-2)  # [..., C]
    return add_bias(z, params["bias"])


def low_rank_to_tensor(params: Params) -> jax.Array:
    """The tensor-fusion kernel ``[d_1 + 1, …, d_M + 1, C]`` that LMF factors represent.

    For checks and small cases only: it builds the full ``Π_m(d_m + 1)·C`` tensor. Add
    ``params["bias"]`` to the output of ``tensor`` to reproduce ``low_rank_tensor``.
    """
    factors = params["factors"]
    rank = factors[0].shape[0]
    weights = params.get("rank_weights", jnp.ones((rank,), factors[0].dtype))
    # one modality at a time (an M-operand einsum's path search grows exponentially in M)
    kernel = factors[0] * jnp.reshape(weights, (rank, 1, 1))  # [r, K_1, C]
    for factor in factors[1:]:
        shape = (rank,) + (1,) * (kernel.ndim - 2) + factor.shape[1:]
        kernel = kernel[..., None, :] * jnp.reshape(factor, shape)  # [r, K_1, …, K_m, C]
    return jnp.sum(kernel, axis=0)  # [K_1, …, K_M, C]


@register("low_rank_tensor")
class LowRankTensorFusion(FusionOperator):
    """LMF: ``z = Σ_r w_r Π_m (W_m^(r)ᵀ [x_m; 1]) + b`` (M ≥ 2); every factor is trainable.

    Options:
      rank: the number r of rank-one components (default 4).
      rank_weights: ``"learned"`` (default; a trainable ``w_r`` per component, as in LMF)
        or ``"uniform"`` (all ``w_r = 1``: a plain sum, no parameter).
      append_one: ``"last"`` (``[x; 1]``) or ``"first"`` (``[1; x]``).
      kernel_init: initializer of each ``[r, d_m + 1, C]`` factor (default normal with
        variance ``1/(d_m + 1)``).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        rank: int = 4,
        rank_weights: str = "learned",
        append_one: str = "last",
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.append_one = check_choice(
            append_one, APPEND_POSITIONS, "append_one", "low_rank_tensor"
        )
        params = init_low_rank_tensor(
            rngs.params(),
            in_dims,
            out_dim,
            rank=rank,
            rank_weights=rank_weights,
            kernel_init=kernel_init,
        )
        super().__init__(in_dims, out_dim, params, compute_dtype)

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return low_rank_tensor(
            self.functional_params(),
            xs,
            append=self.append_one,
            compute_dtype=self.compute_dtype,
        )
