"""Modality-shifting fusion (MAG / RAVEN): the primary modality moved by a gated displacement.

Modality 0 is the primary one (``z``, e.g. language); modalities ``1..M-1`` are
secondary (e.g. vision, acoustics). Each secondary modality proposes a displacement
of ``z`` through a gate that reads ``z`` and that modality; the summed displacement
is rescaled so that it never outgrows ``β·‖z‖``, added to ``z`` and layer-normalised.
"""

from __future__ import annotations

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
    broadcast_last,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    check_real,
    lecun_normal,
    linear,
    python_scalar,
)
from mmfuse.fusion._registry import register

GATES = ("relu", "sigmoid")
_GATE_FNS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def init_modality_shift(
    key: jax.Array, in_dims: Sequence[int], out_dim: int, *, kernel_init: Initializer | None = None
) -> Params:
    """Parameters of modality-shifting fusion (M ≥ 2, primary width ``d_0``).

    Returns:
      ``{"gate_kernels": [W_gm: [d_0 + d_m, d_0]], "gate_biases": [b_m: [d_0]],
      "shift_kernels": [W_m: [d_m, d_0]], "shift_bias": b_H [d_0],
      "norm_scale": [d_0], "norm_bias": [d_0]}`` with one list entry per secondary
      modality ``m = 1..M-1``, plus ``"out_kernel": [d_0, out_dim]`` and
      ``"out_bias": [out_dim]`` when ``out_dim != d_0``. Kernels use ``kernel_init``
      (default LeCun normal over the fan-in); biases start at zero, the layer-norm
      scale at one.
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "modality_shift", min_modalities=2)
    if in_dims[0] < 2:  # the layer norm of one feature is its bias, whatever the input
        raise ValueError(
            "modality_shift: the primary modality (in_dims[0]) needs at least 2 features "
            f"for the layer norm of z + α·H, got in_dims={tuple(in_dims)}"
        )
    kernel_init = kernel_init or lecun_normal()
    d0, secondary = in_dims[0], in_dims[1:]
    gate_keys = jax.random.split(jax.random.fold_in(key, 0), len(secondary))
    shift_keys = jax.random.split(jax.random.fold_in(key, 1), len(secondary))
    params = {
        "gate_kernels": [
            kernel_init(k, (d0 + d, d0), jnp.float32)
            for k, d in zip(gate_keys, secondary, strict=True)
        ],
        "gate_biases": [jnp.zeros((d0,), jnp.float32) for _ in secondary],
        "shift_kernels": [
            kernel_init(k, (d, d0), jnp.float32) for k, d in zip(shift_keys, secondary, strict=True)
        ],
        "shift_bias": jnp.zeros((d0,), jnp.float32),
        "norm_scale": jnp.ones((d0,), jnp.float32),
        "norm_bias": jnp.zeros((d0,), jnp.float32),
    }
    if out_dim != d0:
        params["out_kernel"] = kernel_init(jax.random.fold_in(key, 2), (d0, out_dim), jnp.float32)
        params["out_bias"] = jnp.zeros((out_dim,), jnp.float32)
    return params


def _in_dims(params: Params) -> list[int]:
    return [params["norm_scale"].shape[0], *(k.shape[0] for k in params["shift_kernels"])]


def _safe_norm(x: jax.Array) -> jax.Array:
    """``‖x‖`` over the feature axis, ``[..., d] -> [..., 1]``, with a zero gradient at 0.

    ``sqrt`` has an infinite derivative at 0, which times the zero derivative of the
    squared sum gives NaN; the inner ``where`` keeps the masked branch away from 0.
    """
    sq = jnp.sum(x * x, axis=-1, keepdims=True)  # [..., 1]
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """Layer norm over the feature axis: ``[..., d]`` with ``scale, bias: [d]`` -> ``[..., d]``."""
    mean = jnp.mean(x, axis=-1, keepdims=True)  # [..., 1]
    centred = x - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)  # [..., 1]
    normed = centred * jax.lax.rsqrt(var + eps)
    return add_bias(normed * broadcast_last(scale, x.ndim), bias)


def _displacement(
    params: Params,
    z: jax.Array,
    secondary: Sequence[jax.Array],
    gate: str,
    beta,
    eps,
    compute_dtype: Any,
) -> jax.Array:
    """``α·H`` for an already checked primary ``z [..., d_0]`` and secondary inputs."""
    act = _GATE_FNS[gate]
    h = None
    for x, gate_kernel, gate_bias, shift_kernel in zip(
        secondary,
        params["gate_kernels"],
        params["gate_biases"],
        params["shift_kernels"],
        strict=True,
    ):
        zx = jnp.concatenate([z, x], axis=-1)  # [..., d_0 + d_m]
        g = act(linear(zx, gate_kernel, gate_bias, compute_dtype=compute_dtype))  # [..., d_0]
        term = g * linear(x, shift_kernel, compute_dtype=compute_dtype)  # [..., d_0]
        h = term if h is None else h + term
    h = add_bias(h, params["shift_bias"])  # [..., d_0]
    # α = min(β‖z‖ / (‖H‖ + ε), 1), one scale per example (and time step).
    alpha = jnp.minimum(beta * _safe_norm(z) / (_safe_norm(h) + eps), 1.0)  # [..., 1]
    return alpha * h


def modality_shift_displacement(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    gate: str = "relu",
    beta: float = 1e-3,
    eps: float = 1e-6,
    compute_dtype: Any = None,
) -> jax.Array:
    """The scaled displacement ``α·H`` that modality-shifting fusion adds to the primary input.

    ``H = Σ_{m≥1} g_m ⊙ (W_m x_m) + b_H`` with gates ``g_m = act(W_gm [z; x_m] + b_m)``
    and ``α = min(β·‖z‖ / (‖H‖ + ε), 1)``, norms over the feature axis. Hence
    ``‖α·H‖ ≤ min(β·‖z‖, ‖H‖)``: the secondary modalities can move ``z`` by at most a
    fraction ``β`` of its length.

    Args:
      params: as returned by ``init_modality_shift``.
      xs: M ≥ 2 arrays ``[..., d_m]`` with shared leading dims (``[B, d_m]`` or
        ``[B, T, d_m]``); ``xs[0]`` is the primary modality ``z``.
      gate: ``"relu"`` (MAG) or ``"sigmoid"`` (RAVEN).
      beta: ``β ≥ 0``, the largest shift relative to ``‖z‖``.
      eps: ``ε > 0`` in the denominator of ``α``.
      compute_dtype: as for ``modality_shift``.

    Returns:
      ``[..., d_0]``.
    """
    check_choice(gate, GATES, "gate", "modality_shift")
    _check_scalars(beta=beta, eps=eps)
    cd = check_compute_dtype(compute_dtype, "modality_shift")
    xs = check_inputs(xs, _in_dims(params), "modality_shift")
    return _displacement(params, xs[0], xs[1:], gate, beta, eps, cd)


def modality_shift(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    gate: str = "relu",
    beta: float = 1e-3,
    eps: float = 1e-6,
    layer_norm_eps: float = 1e-5,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    compute_dtype: Any = None,
) -> jax.Array:
    """Modality-shifting fusion ``LayerNorm(z + α·H)`` (MAG; RAVEN with sigmoid gates).

    The primary modality ``z = xs[0]`` is shifted by a displacement ``H`` built from
    the secondary modalities, each through a gate that reads ``z`` and that modality:

      ``g_m = act(W_gm [z; x_m] + b_m)``,  ``H = Σ_{m≥1} g_m ⊙ (W_m x_m) + b_H``,
      ``α = min(β·‖z‖ / (‖H‖ + ε), 1)``,  ``out = LayerNorm(z + α·H)``

    with a learned layer-norm scale and bias. Everything happens per example (and per
    time step for ``[B, T, d]`` sequences): the norms run over the feature axis only.
    With ``β = 0`` the output is exactly ``LayerNorm(z)``. When ``C != d_0`` a final
    linear layer ``out @ W_out + b_out`` maps the ``d_0``-wide result to ``C``; when
    ``C == d_0`` there is none. MAG's dropout follows the layer norm (before that
    linear layer): with a ``key`` each feature is zeroed with probability ``dropout``
    and the kept ones are scaled by ``1 / (1 - dropout)``; without a key (evaluation)
    there is none.

    Args:
      params: as returned by ``init_modality_shift``.
      xs: M ≥ 2 arrays ``[..., d_m]`` with shared leading dims (``[B, d_m]`` or
        ``[B, T, d_m]``); ``xs[0]`` is the primary modality.
      gate: ``"relu"`` (MAG) or ``"sigmoid"`` (RAVEN).
      beta: ``β ≥ 0``, the largest shift relative to ``‖z‖`` (MAG's default 1e-3).
      eps: ``ε > 0`` in the denominator of ``α``.
      layer_norm_eps: added to the variance in the layer norm.
      dropout: the dropout rate after the layer norm, in ``[0, 1)`` (MAG uses 0.5);
        applied only with a ``key``.
      key: PRNG key for a training-mode dropout mask; ``None`` is deterministic.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation; the norms, ``α`` and the layer norm stay float32); None
        (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]``.

    References:
      Rahman et al., "Integrating Multimodal Information in Large Pretrained
      Transformers", ACL 2020 (MAG).
      Wang et al., "Words Can Shift: Dynamically Adjusting Word Representations Using
      Nonverbal Behaviors", AAAI 2019 (RAVEN).
    """
    check_choice(gate, GATES, "gate", "modality_shift")
    _check_scalars(beta=beta, eps=eps, layer_norm_eps=layer_norm_eps)
    cd = check_compute_dtype(compute_dtype, "modality_shift")
    dropout = _check_rate(dropout)
    xs = check_inputs(xs, _in_dims(params), "modality_shift")
    z = xs[0]
    shifted = z + _displacement(params, z, xs[1:], gate, beta, eps, cd)  # [..., d_0]
    out = _layer_norm(shifted, params["norm_scale"], params["norm_bias"], layer_norm_eps)
    if key is not None and dropout > 0:
        keep = 1.0 - dropout
        kept = jax.random.bernoulli(key, keep, out.shape)  # [..., d_0], one draw per feature
        out = jnp.where(kept, out / keep, 0.0).astype(out.dtype)
    if "out_kernel" in params:
        out = linear(out, params["out_kernel"], params["out_bias"], compute_dtype=cd)
    return out


def _check_real(value: Any, option: str) -> float:
    """``beta ≥ 0``, ``eps > 0``, ``layer_norm_eps > 0``: finite numbers, else raises."""
    return check_real(value, option, "modality_shift", bound=">= 0" if option == "beta" else "> 0")


def _check_scalars(**values: Any) -> None:
    """The functional form's ``_check_real`` of the options that are numbers (a traced
    value, e.g. a learned β, passes unchecked)."""
    for option, value in values.items():
        value = python_scalar(value)  # a concrete jnp scalar is checked too
        if isinstance(value, numbers.Real):
            _check_real(value, option)


def _check_rate(value) -> float:
    """A dropout rate in ``[0, 1)``; raises naming the option."""
    value = python_scalar(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) < 1  # NaN fails too
    ):
        raise ValueError(f"modality_shift: dropout must be a number in [0, 1), got {value!r}")
    return float(value)


@register("modality_shift")
class ModalityShiftFusion(FusionOperator):
    """MAG / RAVEN: ``LayerNorm(z + α·H)``, modality 0 shifted by the others (M ≥ 2).

    See ``fusion.functional.modality_shift`` for the maths. If ``out_dim != d_0`` a
    final linear layer maps the result to ``out_dim``. With ``dropout > 0`` the
    operator is ``stochastic``: pass ``key=`` in training steps to drop features after
    the layer norm; without a key it is deterministic.

    Options:
      gate: ``"relu"`` (MAG, default) or ``"sigmoid"`` (RAVEN).
      beta: the largest shift relative to ``‖z‖``, ``≥ 0`` (default 1e-3 as in MAG).
      eps: ``> 0``, stabilises ``α``'s denominator (default 1e-6).
      layer_norm_eps: ``> 0``, added to the layer norm's variance (default 1e-5).
      dropout: rate in ``[0, 1)`` after the layer norm, applied with a ``key``
        (default 0; MAG uses 0.5).
      kernel_init: initializer of every kernel (default LeCun normal over the fan-in).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        gate: str = "relu",
        beta: float = 1e-3,
        eps: float = 1e-6,
        layer_norm_eps: float = 1e-5,
        dropout: float = 0.0,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.gate = check_choice(gate, GATES, "gate", "modality_shift")
        self.dropout = _check_rate(dropout)
        self.beta = _check_real(beta, "beta")
        self.eps = _check_real(eps, "eps")
        self.layer_norm_eps = _check_real(layer_norm_eps, "layer_norm_eps")
        super().__init__(
            in_dims,
            out_dim,
            init_modality_shift(rngs.params(), in_dims, out_dim, kernel_init=kernel_init),
            compute_dtype,
        )

    @property
    def stochastic(self) -> bool:
        """Whether training steps should pass ``key=`` (there is dropout to sample)."""
        return self.dropout > 0

    def __call__(
        self, xs: Sequence[jax.typing.ArrayLike], *, key: jax.Array | None = None
    ) -> jax.Array:
        """``z: [..., C]``; ``key`` samples the dropout mask (training only)."""
        return modality_shift(
            self.functional_params(),
            xs,
            gate=self.gate,
            beta=self.beta,
            eps=self.eps,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout,
            key=key,
            compute_dtype=self.compute_dtype,
        )
