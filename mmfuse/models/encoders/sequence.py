"""A GRU sequence encoder for ``[B, T, d]`` inputs, padding aware."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import check_choice, check_compute_dtype, check_positive, linear
from mmfuse.models._checks import as_mask, check_input, check_pad_value, zero_padding

SEQUENCE_POOLS = ("last", "mean", "none")


def gru_scan(
    gates_x: jax.Array,
    mask: jax.Array,
    kernel_h: jax.Array,
    bias_h: jax.Array,
    compute_dtype: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs a GRU over time, leaving its state unchanged at padded steps.

    With ``[r, z, n]`` the reset, update and candidate parts of the last axis:
    ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``, ``n = tanh(x_n + r ⊙ h_n)``,
    ``h' = (1 − z) ⊙ n + z ⊙ h``, where ``x_· = W_x x + b_x`` and ``h_· = W_h h + b_h``.

    Args:
      gates_x: ``[..., T, 3H]``, the input projections ``W_x x_t + b_x`` of every step.
      mask: boolean ``[..., T]``; False marks padding, where the state is carried over.
      kernel_h: ``[H, 3H]``, the recurrent kernel ``W_h``.
      bias_h: ``[3H]``, the recurrent bias ``b_h``.
      compute_dtype: the operand dtype of the recurrent matmul, e.g. ``jnp.bfloat16``
        (float32 accumulation; the gates and states stay float32); None computes in
        the state's dtype.

    Returns:
      ``(states, last)``: the state after every step ``[..., T, H]`` and the final
      state ``[..., H]``, which is the state after the last real step for left or
      right padding alike.

    References:
      Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for
      Statistical Machine Translation", EMNLP 2014.
    """
    hidden = kernel_h.shape[0]

    def step(h, inputs):
        gx, keep = inputs  # [..., 3H], [..., 1]
        gh = linear(h, kernel_h, bias_h, compute_dtype=compute_dtype)  # [..., 3H]
        xr, xz, xn = jnp.split(gx, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h_next = jnp.where(keep, (1.0 - z) * n + z * h, h)  # [..., H]
        return h_next, h_next

    h0 = jnp.zeros((*gates_x.shape[:-2], hidden), gates_x.dtype)
    time_major = (jnp.moveaxis(gates_x, -2, 0), jnp.moveaxis(mask, -1, 0)[..., None])
    last, states = jax.lax.scan(step, h0, time_major)  # [..., H], [T, ..., H]
    return jnp.moveaxis(states, 0, -2), last  # [..., T, H], [..., H]


class SequenceEncoder(nnx.Module):
    """A one-layer GRU over ``[B, T, in_dim]`` with padding masks and pooling.

    A recurrent encoder keeps the model small and order aware without position
    embeddings. Padded steps leave the GRU state unchanged, so a left-padded
    sequence (as in the CMU-MOSI features) encodes exactly as its unpadded version.

    Pooling: ``"last"`` the final state ``[B, out_dim]``; ``"mean"`` the mean state
    over the real steps ``[B, out_dim]``; ``"none"`` every state ``[B, T, out_dim]``,
    zero at padded steps. Any leading dims may stand in for ``B``.

    Args:
      in_dim: the token width d.
      out_dim: the GRU state width.
      pool: ``"last"``, ``"mean"`` or ``"none"``.
      pad_value: if given, tokens whose features all equal it count as padding.
      compute_dtype: the operand dtype of the input and recurrent matmuls, e.g.
        ``jnp.bfloat16`` (float32 accumulation; gates, states and parameters stay
        float32); None (default) computes in float32.
      rngs: initialises the weights.

    References:
      Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for
      Statistical Machine Translation", EMNLP 2014.
    """

    input_rank = 2  # one example is a sequence [T, d]

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        pool: str = "last",
        pad_value: float | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        name = "SequenceEncoder"
        self.compute_dtype = check_compute_dtype(compute_dtype, name)
        self.in_dim = check_positive(in_dim, "in_dim", name)
        self.out_dim = check_positive(out_dim, "out_dim", name)
        self.pool = check_choice(pool, SEQUENCE_POOLS, "pool", name)
        self.pad_value = check_pad_value(pad_value, name)
        self.inputs = nnx.Linear(in_dim, 3 * out_dim, rngs=rngs)
        self.recurrent = nnx.Linear(
            out_dim, 3 * out_dim, kernel_init=nnx.initializers.orthogonal(), rngs=rngs
        )

    def __call__(
        self, x: jax.typing.ArrayLike, mask: jax.typing.ArrayLike | None = None
    ) -> jax.Array:
        """Encodes ``x: [B, T, in_dim]`` with an optional boolean ``mask: [B, T]``.

        Returns:
          ``[B, out_dim]`` for ``pool="last"`` or ``"mean"``, ``[B, T, out_dim]`` for ``"none"``.
        """
        name = "SequenceEncoder"
        x = check_input(x, self.in_dim, name, rank=2)
        keep = jnp.ones(x.shape[:-1], bool)  # [B, T]
        if mask is not None:
            mask = as_mask(mask, "mask", name)
            if mask.shape != x.shape[:-1]:
                raise ValueError(
                    f"{name}: mask has shape {mask.shape}, expected {x.shape[:-1]} for input "
                    f"shape {x.shape}"
                )
            keep = mask
        if self.pad_value is not None:
            keep = keep & jnp.any(x != self.pad_value, axis=-1)
        gates_x = linear(
            zero_padding(x, keep),
            self.inputs.kernel[...],
            self.inputs.bias[...],
            compute_dtype=self.compute_dtype,
        )  # [B, T, 3H]
        states, last = gru_scan(
            gates_x,
            keep,
            self.recurrent.kernel[...],
            self.recurrent.bias[...],
            self.compute_dtype,
        )  # [B, T, H], [B, H]
        if self.pool == "last":
            return last
        weights = keep.astype(states.dtype)[..., None]  # [B, T, 1]
        if self.pool == "none":
            return states * weights
        count = jnp.maximum(jnp.sum(weights, axis=-2), 1.0)  # [B, 1]
        return jnp.sum(states * weights, axis=-2) / count  # [B, H]
