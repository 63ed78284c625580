"""FiLM: feature-wise linear modulation of one modality by the others, ``γ(c) ⊙ x + β(c)``."""

from __future__ import annotations

import itertools
import numbers
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
    check_real,
    lecun_normal,
    linear,
    python_scalar,
)
from mmfuse.fusion._registry import register


def init_film(
    key: jax.Array, in_dims: Sequence[int], out_dim: int, *, kernel_init: Initializer | None = None
) -> Params:
    """Parameters of FiLM (M ≥ 2; modality 0 of width ``d_0`` is modulated).

    Returns:
      ``{"gamma_kernels": [[d_m, d_0]], "gamma_bias": [d_0], "beta_kernels":
      [[d_m, d_0]], "beta_bias": [d_0]}`` with one kernel per conditioning modality
      ``m = 1..M-1``, plus ``"out_kernel": [d_0, out_dim]`` and ``"out_bias":
      [out_dim]`` when ``out_dim != d_0``. Stacked along their first axis, the
      per-modality kernels are the ``[Σ_{m≥1} d_m, d_0]`` kernels ``W_γ``, ``W_β`` that
      act on the concatenated conditioning ``c = [x_1; …; x_{M-1}]``; keeping them
      split lets ``film`` check each modality's width. ``W_γ`` and ``W_β`` are drawn
      whole by ``kernel_init`` (default LeCun normal, fan-in ``Σ_{m≥1} d_m``) and then
      split; biases start at zero.
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "film", min_modalities=2)
    kernel_init = kernel_init or lecun_normal()
    d0, conditioning = in_dims[0], in_dims[1:]
    splits = list(itertools.accumulate(conditioning[:-1]))  # row offsets of each modality
    gamma_key, beta_key, out_key = jax.random.split(key, 3)
    gamma_kernel = kernel_init(gamma_key, (sum(conditioning), d0), jnp.float32)
    beta_kernel = kernel_init(beta_key, (sum(conditioning), d0), jnp.float32)
    params = {
        "gamma_kernels": jnp.split(gamma_kernel, splits, axis=0),
        "gamma_bias": jnp.zeros((d0,), jnp.float32),
        "beta_kernels": jnp.split(beta_kernel, splits, axis=0),
        "beta_bias": jnp.zeros((d0,), jnp.float32),
    }
    if out_dim != d0:
        params["out_kernel"] = kernel_init(out_key, (d0, out_dim), jnp.float32)
        params["out_bias"] = jnp.zeros((out_dim,), jnp.float32)
    return params


def film(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    gamma_offset: float = 1.0,
    compute_dtype: Any = None,
) -> jax.Array:
    """Feature-wise linear modulation ``z = γ(c) ⊙ x + β(c)``.

    ``x = xs[0]`` is the modulated feature and ``c = [x_1; …; x_{M-1}]`` the
    conditioning. ``γ(c) = gamma_offset + W_γ c + b_γ`` and ``β(c) = W_β c + b_β``:
    γ is parameterised as an offset plus a learned ``Δγ``, so with the default offset
    1 and zero-mean ``Δγ`` (zero bias, zero-mean kernel at initialisation) the
    modulation is centred on the identity ``z = x`` rather than on ``z = 0``; zero
    kernels make it exactly the identity. For fixed ``c`` the output is affine in
    ``x``. When ``C != d_0`` a final linear layer ``z @ W_out + b_out`` maps the
    ``d_0``-wide result to ``C``; when ``C == d_0`` there is none.

    Args:
      params: as returned by ``init_film``.
      xs: M ≥ 2 arrays ``[..., d_m]`` with shared leading dims; ``xs[0]`` is modulated.
      gamma_offset: the constant added to the learned ``Δγ`` (FiLM's "predict Δγ").
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation); None (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]``.

    References:
      Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer",
      AAAI 2018.
    """
    cd = check_compute_dtype(compute_dtype, "film")
    if isinstance(python_scalar(gamma_offset), numbers.Real):  # a traced one passes
        check_real(gamma_offset, "gamma_offset", "film")
    in_dims = [params["gamma_bias"].shape[0], *(k.shape[0] for k in params["gamma_kernels"])]
    xs = check_inputs(xs, in_dims, "film")
    x, conditioning = xs[0], xs[1:]
    delta_gamma = sum(
        linear(c, k, compute_dtype=cd)
        for c, k in zip(conditioning, params["gamma_kernels"], strict=True)
    )  # [..., d_0]
    shift = sum(
        linear(c, k, compute_dtype=cd)
        for c, k in zip(conditioning, params["beta_kernels"], strict=True)
    )  # [..., d_0]
    gamma = add_bias(delta_gamma, params["gamma_bias"]) + gamma_offset
    z = gamma * x + add_bias(shift, params["beta_bias"])  # [..., d_0]
    if "out_kernel" in params:
        z = linear(z, params["out_kernel"], params["out_bias"], compute_dtype=cd)  # [..., C]
    return z


@register("film")
class FilmFusion(FusionOperator):
    """FiLM: ``z = γ(c) ⊙ x + β(c)``, modality 0 modulated by the others (M ≥ 2).

    See ``fusion.functional.film`` for the maths. If ``out_dim != d_0`` a final linear
    layer maps the result to ``out_dim``.

    Options:
      gamma_offset: γ is ``gamma_offset + Δγ(c)`` (default 1.0, so the modulation
        starts centred on the identity).
      kernel_init: initializer of the conditioning kernels ``W_γ``, ``W_β`` (each drawn
        whole over ``Σ_{m≥1} d_m`` rows) and of the output kernel (default LeCun normal).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        gamma_offset: float = 1.0,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.gamma_offset = check_real(gamma_offset, "gamma_offset", "film")
        super().__init__(
            in_dims,
            out_dim,
            init_film(rngs.params(), in_dims, out_dim, kernel_init=kernel_init),
            compute_dtype,
        )

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return film(
            self.functional_params(),
            xs,
            gamma_offset=self.gamma_offset,
            compute_dtype=self.compute_dtype,
        )
