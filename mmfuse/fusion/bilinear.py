"""Bilinear fusion ``z_k = x_Aᵀ W_k x_B + b_k``, its low-rank forms (MFB, MLB), and the
multiplicative-interactions "matrix" form with both linear terms."""

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
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    check_positive,
    einsum,
    lecun_normal,
    linear,
    matmul,
)
from mmfuse.fusion._registry import register

FACTORIZATIONS = ("mfb", "mlb")


def init_bilinear(
    key: jax.Array,
    in_dims: Sequence[int],
    out_dim: int,
    *,
    rank: int | None = None,
    factorization: str | None = None,
    linear_terms: bool = False,
    kernel_init: Initializer | None = None,
) -> Params:
    """Parameters of ``bilinear``; which keys exist selects the form.

    - full: ``{"kernel": [d_A, d_B, C]}``;
    - ``factorization="mfb"`` (the default with a rank), rank r:
      ``{"u": [d_A, C, r], "v": [d_B, C, r]}``, so that ``W_k = U[:, k, :] V[:, k, :]ᵀ``
      has rank ≤ r for every output k;
    - ``factorization="mlb"``, rank r: ``{"u": [d_A, r], "v": [d_B, r], "p": [r, C]}``, so
      that ``W_k = U diag(P[:, k]) Vᵀ`` (one shared rank-r basis);
    plus ``"bias": [C]`` always and ``{"linear_a": [d_A, C], "linear_b": [d_B, C]}`` with
    ``linear_terms``. Kernels default to variance-preserving normal initialisation.
    """
    name = "bilinear"
    (d_a, d_b), out_dim = check_dims(in_dims, out_dim, name, min_modalities=2, max_modalities=2)
    if rank is None and factorization is not None:
        raise ValueError(
            f"{name}: factorization={factorization!r} needs a rank (rank=None is the full kernel)"
        )
    factorization = check_choice(
        "mfb" if factorization is None else factorization, FACTORIZATIONS, "factorization", name
    )
    keys = jax.random.split(key, 5)
    f32 = jnp.float32
    if rank is None:
        init = kernel_init or lecun_normal(in_axes=(0, 1))
        params = {"kernel": init(keys[0], (d_a, d_b, out_dim), f32)}
    else:
        check_positive(rank, "rank", name)
        if factorization == "mfb":
            init_u = kernel_init or lecun_normal(in_axes=0, out_axes=(1, 2))
            # The r products are summed: spread the unit variance over them.
            init_v = kernel_init or lecun_normal(in_axes=(0, 2), out_axes=1)
            params = {
                "u": init_u(keys[0], (d_a, out_dim, rank), f32),
                "v": init_v(keys[1], (d_b, out_dim, rank), f32),
            }
        else:
            init = kernel_init or lecun_normal()
            params = {
                "u": init(keys[0], (d_a, rank), f32),
                "v": init(keys[1], (d_b, rank), f32),
                "p": init(keys[2], (rank, out_dim), f32),
            }
    params["bias"] = jnp.zeros((out_dim,), f32)
    if linear_terms:
        init = kernel_init or lecun_normal()
        params["linear_a"] = init(keys[3], (d_a, out_dim), f32)
        params["linear_b"] = init(keys[4], (d_b, out_dim), f32)
    return params


def _widths(params: Params) -> tuple[int, int]:
    if "kernel" in params:
        return params["kernel"].shape[0], params["kernel"].shape[1]
    return params["u"].shape[0], params["v"].shape[0]


def bilinear(
    params: Params, xs: Sequence[jax.typing.ArrayLike], *, compute_dtype: Any = None
) -> jax.Array:
    """Bilinear fusion of two modalities: ``z_k = x_Aᵀ W_k x_B [+ U_kᵀ x_A + V_kᵀ x_B] + b_k``.

    Every output is a full bilinear form in the two inputs, so every pairwise product
    ``x_A,i · x_B,j`` is available. The low-rank forms never build ``W``: MFB computes
    ``Σ_r (Uᵀx_A)_{k,r} (Vᵀx_B)_{k,r}`` (sum pooling over r factors per output), MLB
    ``Pᵀ(Uᵀx_A ⊙ Vᵀx_B)`` (the Hadamard product of rank-r projections; kept linear here so
    the operator stays bilinear). With ``linear_a``/``linear_b`` present this is the
    multiplicative-interactions matrix form ``x_Bᵀ𝒲 x_A + x_Aᵀ U + x_Bᵀ V + b``.

    Args:
      params: see ``init_bilinear``.
      xs: two arrays ``[..., d_A]``, ``[..., d_B]`` with shared leading dims.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation); None (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]``.

    References:
      Tenenbaum & Freeman, "Separating Style and Content with Bilinear Models", 2000;
      Kim et al., "Hadamard Product for Low-rank Bilinear Pooling" (MLB), ICLR 2017;
      Yu et al., "Multi-modal Factorized Bilinear Pooling" (MFB), ICCV 2017;
      Jayakumar et al., "Multiplicative Interactions and Where to Find Them", ICLR 2020.
    """
    cd = check_compute_dtype(compute_dtype, "bilinear")
    x_a, x_b = check_inputs(xs, _widths(params), "bilinear")
    if "kernel" in params:
        # x_A first, with the kernel viewed as [d_A, d_B·C]: a plain matmul that never
        # transposes (copies) the kernel, then the batched contraction with x_B.
        kernel = params["kernel"]
        d_a, d_b, out = kernel.shape
        h = matmul(x_a, kernel.reshape(d_a, d_b * out), cd)  # [..., d_B·C]
        h = h.reshape(*h.shape[:-1], d_b, out)  # [..., d_B, C]
        z = einsum("...b,...bk->...k", x_b, h, compute_dtype=cd)  # [..., C]
    elif "p" in params:
        h = linear(x_a, params["u"], compute_dtype=cd) * linear(
            x_b, params["v"], compute_dtype=cd
        )  # [..., r]
        z = linear(h, params["p"], compute_dtype=cd)  # [..., C]
    else:
        h_a = einsum("...a,akr->...kr", x_a, params["u"], compute_dtype=cd)  # [..., C, r]
        h_b = einsum("...b,bkr->...kr", x_b, params["v"], compute_dtype=cd)  # [..., C, r]
        z = jnp.sum(h_a * h_b, axis=-1)  # [..., C]
    if "linear_a" in params:
        z = (
            z
            + linear(x_a, params["linear_a"], compute_dtype=cd)
            + linear(x_b, params["linear_b"], compute_dtype=cd)
        )
    return add_bias(z, params["bias"])


def bilinear_kernel(params: Params) -> jax.Array:
    """The full ``[d_A, d_B, C]`` kernel that any form's parameters represent."""
    if "kernel" in params:
        return params["kernel"]
    if "p" in params:
        return jnp.einsum("ar,br,rk->abk", params["u"], params["v"], params["p"])
    return jnp.einsum("akr,bkr->abk", params["u"], params["v"])


@register("bilinear")
class BilinearFusion(FusionOperator):
    """``z_k = x_Aᵀ W_k x_B + b_k`` for exactly two modalities.

    Options:
      rank: None (default) for the full ``[d_A, d_B, C]`` kernel; an int r for a low-rank
        kernel in the form chosen by ``factorization``.
      factorization: with a rank, ``"mfb"`` (the default; rank r per output, sum
        pooling) or ``"mlb"`` (one shared rank-r Hadamard basis and an output
        projection).
      linear_terms: add ``U x_A + V x_B`` (the multiplicative-interactions matrix form).
      kernel_init: initializer of every kernel (default: variance-preserving normal).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        rank: int | None = None,
        factorization: str | None = None,
        linear_terms: bool = False,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        params = init_bilinear(
            rngs.params(),
            in_dims,
            out_dim,
            rank=rank,
            factorization=factorization,
            linear_terms=linear_terms,
            kernel_init=kernel_init,
        )
        super().__init__(in_dims, out_dim, params, compute_dtype)

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return bilinear(self.functional_params(), xs, compute_dtype=self.compute_dtype)
