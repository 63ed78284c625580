"""Transformer pieces shared by the raw-modality models: token embedding, blocks, pooling.

Shapes: B batch, T tokens, D = d_model, d the width of one modality's raw tokens.
Masks are boolean ``[B, T]`` with True for real tokens and False for padding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    check_choice,
    check_compute_dtype,
    check_dims,
    check_positive,
    einsum,
    linear,
)
from mmfuse.models._checks import check_pad_value, check_tokens

POSITIONS = ("learned", "sinusoidal")
POOLS = ("mean", "cls")
# float32 like every other parameter, also under jax_enable_x64 (jnp.float_ is float64 there)
EMBED_INIT = functools.partial(nnx.initializers.normal(0.02), dtype=jnp.float32)


def check_transformer_sizes(
    d_model: int, num_heads: int, num_layers: int, mlp_dim: int, max_len: int, name: str
) -> None:
    for value, option in (
        (d_model, "d_model"),
        (num_heads, "num_heads"),
        (num_layers, "num_layers"),
        (mlp_dim, "mlp_dim"),
        (max_len, "max_len"),
    ):
        check_positive(value, option, name)
    if d_model % num_heads:
        raise ValueError(f"{name}: d_model={d_model} is not divisible by num_heads={num_heads}")


def token_positions(mask: jax.Array) -> jax.Array:
    """The index of each token among the real tokens of its row: ``[B, T]`` -> ``[B, T]``.

    Counting only real tokens makes the positions, and so the whole model,
    independent of how much padding sits before a sequence (left padding).
    Padded tokens get the position of the real token before them (or 0).
    """
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def sinusoidal_embedding(positions: jax.Array, d_model: int) -> jax.Array:
    """Fixed sinusoidal position embeddings: int ``[B, T]`` -> ``[B, T, D]``.

    ``[sin(p ω_i), cos(p ω_i)]`` with ``ω_i = 10000^(−2i/D)`` (sines then cosines).

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """
    half = (d_model + 1) // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) * 2.0 / d_model)
    angles = positions.astype(jnp.float32)[..., None] * jnp.reshape(freqs, (1, 1, half))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[..., :d_model]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean over real tokens: ``x [B, T, D]``, ``mask [B, T]`` -> ``[B, D]`` (0 if none)."""
    keep = mask[..., None]  # [B, T, 1]
    count = jnp.maximum(jnp.sum(keep.astype(x.dtype), axis=-2), 1.0)  # [B, 1]
    return jnp.sum(jnp.where(keep, x, jnp.zeros((), x.dtype)), axis=-2) / count


def dense(layer: nnx.Linear, x: jax.Array, compute_dtype: Any = None) -> jax.Array:
    """``layer(x)`` with its matmul under ``compute_dtype`` (see ``fusion._core.matmul``)."""
    bias = None if layer.bias is None else layer.bias[...]
    return linear(x, layer.kernel[...], bias, compute_dtype=compute_dtype)


def broadcast_token(token: jax.Array, batch: int) -> jax.Array:
    """A learned token ``[K, D]`` (or ``[D]``) repeated for every example: ``[B, K, D]``."""
    token = jnp.reshape(token, (1, -1, token.shape[-1]))
    return jnp.broadcast_to(token, (batch, *token.shape[1:]))


class TokenEmbedding(nnx.Module):
    """One modality's raw tokens to model tokens: ``W x_t + b + pos(t)``.

    Args:
      in_dim: the raw token width d.
      d_model: the model width D.
      max_len: the longest sequence (size of the learned position table).
      positions: ``"learned"`` or ``"sinusoidal"``.
      compute_dtype: the projection's matmul operand dtype (None: float32).
      rngs: initialises the weights.
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        *,
        max_len: int,
        positions: str,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.positions = check_choice(positions, POSITIONS, "positions", "TokenEmbedding")
        self.d_model = d_model
        self.compute_dtype = compute_dtype
        self.project = nnx.Linear(in_dim, d_model, rngs=rngs)
        if positions == "learned":
            self.position_table = nnx.Param(EMBED_INIT(rngs.params(), (max_len, d_model)))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """``x: [B, T, d]``, ``mask: [B, T]`` -> ``[B, T, D]``."""
        positions = token_positions(mask)  # [B, T]
        if self.positions == "learned":
            pos = jnp.take(self.position_table[...], positions, axis=0)  # [B, T, D]
        else:
            pos = sinusoidal_embedding(positions, self.d_model)  # [B, T, D]
        return dense(self.project, x, self.compute_dtype) + pos


def token_embeddings(
    in_dims: tuple[int, ...],
    d_model: int,
    *,
    max_len: int,
    positions: str,
    name: str,
    compute_dtype: Any = None,
    rngs: nnx.Rngs,
) -> nnx.List:
    """One ``TokenEmbedding`` per modality (``[B, T_m, d_m] -> [B, T_m, d_model]``)."""
    check_choice(positions, POSITIONS, "positions", name)
    return nnx.List(
        [
            TokenEmbedding(
                d,
                d_model,
                max_len=max_len,
                positions=positions,
                compute_dtype=compute_dtype,
                rngs=rngs,
            )
            for d in in_dims
        ]
    )


class RawTokenModel(nnx.Module):
    """What the raw-modality transformers share: checked sizes, one token embedding per
    modality, the pooling choice, and the checks of raw inputs and masks.

    Subclasses build their blocks after ``super().__init__`` and start their call with
    ``embed_tokens``. Errors name the subclass.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        d_model: int,
        num_heads: int,
        num_layers: int,
        mlp_dim: int,
        pool: str,
        max_len: int,
        positions: str,
        pad_value: float | None,
        compute_dtype: Any,
        rngs: nnx.Rngs,
    ):
        name = type(self).__name__
        self.compute_dtype = check_compute_dtype(compute_dtype, name)
        self.in_dims, self.out_dim = check_dims(in_dims, out_dim, name)
        check_transformer_sizes(d_model, num_heads, num_layers, mlp_dim, max_len, name)
        self.pool = check_choice(pool, POOLS, "pool", name)
        self.max_len = max_len
        self.pad_value = check_pad_value(pad_value, name)
        self.embed = token_embeddings(
            self.in_dims,
            d_model,
            max_len=max_len,
            positions=positions,
            name=name,
            compute_dtype=self.compute_dtype,
            rngs=rngs,
        )

    def embed_tokens(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        masks: Sequence[jax.typing.ArrayLike | None] | None,
    ) -> tuple[list[jax.Array], list[jax.Array]]:
        """M raw arrays ``[B, T_m, d_m]`` (or ``[B, d_m]``) and their masks -> the embedded
        sequences ``M x [B, T_m, D]`` and which tokens are real ``M x [B, T_m]``."""
        tokens, valid = check_tokens(
            xs, masks, self.in_dims, self.max_len, type(self).__name__, pad_value=self.pad_value
        )
        seqs = [embed(x, keep) for embed, x, keep in zip(self.embed, tokens, valid, strict=True)]
        return seqs, list(valid)


class SelfAttention(nnx.Module):
    """Multi-head self-attention over ``[B, T, D]`` that ignores padded keys.

    The key projection has no bias: a key bias adds the same logit ``q · b`` to every
    key of a query, which the softmax cancels, so it could never be trained.

    Args:
      d_model: the model width D.
      num_heads: attention heads H (dividing D).
      compute_dtype: the matmul operand dtype (None: float32); the softmax is float32.
      rngs: initialises the weights.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(self, d_model: int, num_heads: int, *, compute_dtype: Any = None, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.compute_dtype = compute_dtype
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """``x: [B, T, D]``, ``mask: [B, T]`` (keys that may be read) -> ``[B, T, D]``."""
        batch, length, width = x.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        cd = self.compute_dtype
        q = jnp.reshape(dense(self.query, x, cd), heads)  # [B, T, H, D/H]
        k = jnp.reshape(dense(self.key, x, cd), heads)
        v = jnp.reshape(dense(self.value, x, cd), heads)
        scale = jnp.sqrt(float(heads[-1]))
        logits = einsum("bqhd,bkhd->bhqk", q, k, compute_dtype=cd) / scale  # [B, H, T, T]
        # A finite floor rather than -inf: a row with no real key stays finite (uniform).
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = einsum("bhqk,bkhd->bqhd", weights, v, compute_dtype=cd)  # [B, T, H, D/H]
        return dense(self.out, jnp.reshape(out, x.shape), cd)  # [B, T, D]


class TransformerBlock(nnx.Module):
    """A pre-LayerNorm encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``.

    Padded tokens are masked out as keys, so no real token reads them; they still
    get (unused) outputs of their own. Deterministic: no dropout.

    Args:
      d_model: the model width D.
      num_heads: attention heads (dividing D).
      mlp_dim: the hidden width of the MLP (GELU).
      compute_dtype: the matmul operand dtype (None: float32); layer norms are float32.
      rngs: initialises the weights.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Xiong et al., "On
      Layer Normalization in the Transformer Architecture", ICML 2020 (pre-LN).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        mlp_dim: int,
        *,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.compute_dtype = compute_dtype
        self.attention_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = SelfAttention(d_model, num_heads, compute_dtype=compute_dtype, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, mlp_dim, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """``x: [B, T, D]``, ``mask: [B, T]`` -> ``[B, T, D]``."""
        x = x + self.attention(self.attention_norm(x), mask)
        hidden = jax.nn.gelu(dense(self.mlp_in, self.mlp_norm(x), self.compute_dtype))
        return x + dense(self.mlp_out, hidden, self.compute_dtype)
