"""A multilayer perceptron for feature vectors ``[..., d]``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx

from mmfuse.fusion._core import check_compute_dtype, check_positive, linear
from mmfuse.models._checks import check_input, hidden_widths

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jax.nn.tanh,
    "sigmoid": jax.nn.sigmoid,
}


def get_activation(
    activation: str | Callable[[jax.Array], jax.Array], name: str
) -> Callable[[jax.Array], jax.Array]:
    """An activation given by name (one of ``ACTIVATIONS``) or as a function."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{name}: activation={activation!r} is not one of {tuple(ACTIVATIONS)} or a function"
        )
    return ACTIVATIONS[activation]


class MLP(nnx.Module):
    """``[..., in_dim] -> [..., out_dim]``: linear layers with an activation between them.

    The last layer is linear (no activation), so the MLP can serve as an encoder
    (mid-level features), a unimodal predictor (logits) or a head.

    Args:
      in_dim: the input width d.
      hidden_dims: the widths of the hidden layers, possibly empty (a linear map).
      out_dim: the output width.
      activation: a name in ``ACTIVATIONS`` or a function applied after each hidden layer.
      compute_dtype: the operand dtype of every layer's matmul, e.g. ``jnp.bfloat16``
        (float32 accumulation; biases, activations and parameters stay float32); None
        (default) computes in float32.
      rngs: initialises the weights.
    """

    input_rank = 1  # one example is a vector [d]

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        *,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        hidden_dims = hidden_widths(hidden_dims, "MLP")
        widths = (
            check_positive(in_dim, "in_dim", "MLP"),
            *(check_positive(h, f"hidden_dims[{i}]", "MLP") for i, h in enumerate(hidden_dims)),
            check_positive(out_dim, "out_dim", "MLP"),
        )
        self.in_dim, self.out_dim = in_dim, out_dim
        self.activation = get_activation(activation, "MLP")
        self.compute_dtype = check_compute_dtype(compute_dtype, "MLP")
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])

    def __call__(self, x: jax.typing.ArrayLike) -> jax.Array:
        """``x: [..., in_dim]`` -> ``[..., out_dim]``."""
        x = check_input(x, self.in_dim, "MLP")
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.activation(x)
            x = linear(x, layer.kernel[...], layer.bias[...], compute_dtype=self.compute_dtype)
        return x  # [..., out_dim]
