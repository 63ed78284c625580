"""Nonlinear (early) fusion: one MLP on the concatenated features, ``z = MLP([x_1; …; x_M])``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    FusionOperator,
    Initializer,
    Params,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    check_positive,
    lecun_normal,
    linear,
)
from mmfuse.fusion._registry import register

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,  # the tanh approximation, jax.nn.gelu's default
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
}


def _check_hidden_dims(hidden_dims: Sequence[int], name: str = "nonlinear") -> tuple[int, ...]:
    """A non-empty sequence of positive ints; raises ``ValueError`` naming ``hidden_dims``."""
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
        raise ValueError(
            f"{name}: hidden_dims must be a non-empty sequence of positive ints, "
            f"got {hidden_dims!r}"
        )
    if not hidden_dims:
        raise ValueError(f"{name}: hidden_dims must name at least one hidden layer, got ()")
    return tuple(check_positive(h, f"hidden_dims[{i}]", name) for i, h in enumerate(hidden_dims))


def init_nonlinear(
    key: jax.Array,
    in_dims: Sequence[int],
    out_dim: int,
    *,
    hidden_dims: Sequence[int] = (64,),
    kernel_init: Initializer | None = None,
) -> Params:
    """Parameters of an MLP on ``[x_1; …; x_M]`` with layer widths ``(*hidden_dims, out_dim)``.

    Returns:
      ``{"input_kernels": [[d_m, h_1]], "kernels": [[h_1, h_2], …, [h_L, out_dim]],
      "biases": [[h_1], …, [h_L], [out_dim]]}``. The first layer's kernel, which acts
      on the concatenation, is kept split by modality rows (stacked along their first
      axis, ``input_kernels`` form the ``[Σ d_m, h_1]`` kernel) so that ``nonlinear``
      can check each modality's width. Every kernel is drawn whole by ``kernel_init``
      (default LeCun normal over the fan-in; ``Σ d_m`` for the first layer); biases
      start at zero.
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "nonlinear")
    hidden_dims = _check_hidden_dims(hidden_dims)
    kernel_init = kernel_init or lecun_normal()
    widths = (sum(in_dims), *hidden_dims, out_dim)
    keys = jax.random.split(key, len(widths) - 1)
    kernels = [
        kernel_init(k, (fan_in, fan_out), jnp.float32)
        for k, fan_in, fan_out in zip(keys, widths[:-1], widths[1:], strict=True)
    ]
    splits = list(itertools.accumulate(in_dims[:-1]))  # row offsets of each modality
    return {
        "input_kernels": jnp.split(kernels[0], splits, axis=0),
        "kernels": kernels[1:],
        "biases": [jnp.zeros((w,), jnp.float32) for w in widths[1:]],
    }


def nonlinear(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    activation: str = "relu",
    compute_dtype: Any = None,
) -> jax.Array:
    """Nonlinear (early) fusion ``z = MLP([x_1; …; x_M])``.

    The features are concatenated first, so the network can model any interaction
    between modalities from its first layer on. Every hidden layer is
    ``act(h W + b)``; the last layer is linear (no activation), as for logits.

    Args:
      params: ``{"input_kernels": [[d_m, h_1]], "kernels": [[h_l, h_{l+1}]] ending in
        ``[h_L, C]``, "biases": [[h_1], …, [h_L], [C]]}`` (see ``init_nonlinear``).
      xs: M ≥ 1 arrays ``[..., d_m]`` with shared leading dims.
      activation: ``"relu"``, ``"gelu"`` (tanh approximation), ``"tanh"`` or ``"silu"``.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation); None (default) computes in the inputs' dtype.

    Returns:
      ``[..., C]``.

    References:
      Baltrušaitis, Ahuja and Morency, "Multimodal Machine Learning: A Survey and
      Taxonomy", IEEE TPAMI 2019 (early fusion).
    """
    check_choice(activation, tuple(ACTIVATIONS), "activation", "nonlinear")
    act = ACTIVATIONS[activation]
    cd = check_compute_dtype(compute_dtype, "nonlinear")
    in_dims = [k.shape[0] for k in params["input_kernels"]]
    xs = check_inputs(xs, in_dims, "nonlinear")
    h = jnp.concatenate(xs, axis=-1)  # [..., Σ d_m]
    first_kernel = jnp.concatenate(params["input_kernels"], axis=0)  # [Σ d_m, h_1]
    kernels = [first_kernel, *params["kernels"]]
    for i, (kernel, bias) in enumerate(zip(kernels, params["biases"], strict=True)):
        h = linear(h, kernel, bias, compute_dtype=cd)  # [..., h_{i+1}]
        if i < len(kernels) - 1:
            h = act(h)
    return h  # [..., C]


@register("nonlinear")
class NonlinearFusion(FusionOperator):
    """Early fusion ``z = MLP([x_1; …; x_M])`` (any M ≥ 1).

    Options:
      hidden_dims: the hidden layer widths, a non-empty sequence of positive ints
        (default ``(64,)``).
      activation: ``"relu"`` (default), ``"gelu"``, ``"tanh"`` or ``"silu"``, after every
        hidden layer; the output layer is linear.
      kernel_init: initializer of every kernel (default LeCun normal over the fan-in).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        hidden_dims: Sequence[int] = (64,),
        activation: str = "relu",
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.activation = check_choice(activation, tuple(ACTIVATIONS), "activation", "nonlinear")
        self.hidden_dims = _check_hidden_dims(hidden_dims)
        super().__init__(
            in_dims,
            out_dim,
            init_nonlinear(
                rngs.params(),
                in_dims,
                out_dim,
                hidden_dims=self.hidden_dims,
                kernel_init=kernel_init,
            ),
            compute_dtype,
        )

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return nonlinear(
            self.functional_params(),
            xs,
            activation=self.activation,
            compute_dtype=self.compute_dtype,
        )
