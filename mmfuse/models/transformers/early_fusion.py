"""Early fusion on raw modalities: one transformer over every modality's tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.models.transformers.layers import (
    EMBED_INIT,
    RawTokenModel,
    TransformerBlock,
    broadcast_token,
    dense,
    masked_mean,
)


class EarlyFusionTransformer(RawTokenModel):
    """A transformer over the concatenated token sequences of all modalities.

    Modality m's tokens ``[B, T_m, d_m]`` are embedded as ``W_m x_t + pos(t) + e_m``
    (a linear map to D, a position embedding counted over the real tokens, and a
    learned modality embedding ``e_m`` that tells the modalities apart), the M
    sequences are concatenated into ``[B, Σ T_m, D]``, ``num_layers`` pre-LayerNorm
    blocks attend across all of them, and the real tokens are mean-pooled (or a
    learned CLS token is read) before a linear head. Every layer mixes every
    modality, so this is the fullest form of early fusion.

    Args:
      in_dims: the raw token widths ``(d_1, ..., d_M)``.
      out_dim: the output width C.
      d_model: the model width D.
      num_heads: attention heads (dividing D).
      num_layers: transformer blocks.
      mlp_dim: the hidden width of each block's MLP.
      pool: ``"mean"`` (over real tokens) or ``"cls"`` (a learned token put first).
      max_len: the longest ``T_m``.
      positions: ``"learned"`` or ``"sinusoidal"`` position embeddings.
      pad_value: if given, tokens whose features all equal it count as padding (e.g.
        0 for the left-padded CMU-MOSI features), in addition to any masks passed.
      compute_dtype: the operand dtype of every matmul (projections, attention,
        MLPs, head), e.g. ``jnp.bfloat16`` (float32 accumulation; layer norms,
        softmax, embeddings and parameters stay float32); None (default): float32.
      rngs: initialises the weights.

    Deterministic: no dropout.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Tsai et al.,
      "Multimodal Transformer for Unaligned Multimodal Language Sequences", ACL 2019.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_dim: int = 128,
        pool: str = "mean",
        max_len: int = 512,
        positions: str = "learned",
        pad_value: float | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_dims,
            out_dim,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
            mlp_dim=mlp_dim,
            pool=pool,
            max_len=max_len,
            positions=positions,
            pad_value=pad_value,
            compute_dtype=compute_dtype,
            rngs=rngs,
        )
        self.modality_embedding = nnx.Param(EMBED_INIT(rngs.params(), (len(self.in_dims), d_model)))
        if pool == "cls":
            self.cls_token = nnx.Param(EMBED_INIT(rngs.params(), (d_model,)))
        self.blocks = nnx.List(
            [
                TransformerBlock(
                    d_model, num_heads, mlp_dim, compute_dtype=self.compute_dtype, rngs=rngs
                )
                for _ in range(num_layers)
            ]
        )
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, out_dim, rngs=rngs)

    def __call__(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        masks: Sequence[jax.typing.ArrayLike | None] | None = None,
    ) -> jax.Array:
        """Predicts from raw modalities.

        Args:
          xs: M arrays ``[B, T_m, d_m]``, or ``[B, d_m]`` for B examples of one token:
            always batched (one example is ``[1, T_m, d_m]``, also under ``jax.vmap``),
            unlike a ``FusionModel``'s sequence encoders. Values at padded tokens are
            ignored, NaN and inf included.
          masks: None, or M entries each None or ``[B, T_m]`` booleans or 0/1 integers
            (True / 1 = a real token).

        Returns:
          ``[B, C]``.
        """
        seqs, valid = self.embed_tokens(xs, masks)  # M x [B, T_m, D], M x [B, T_m]
        modality = self.modality_embedding[...]  # [M, D]
        seqs = [s + jnp.reshape(modality[m], (1, 1, -1)) for m, s in enumerate(seqs)]
        batch = seqs[0].shape[0]
        if self.pool == "cls":
            seqs.insert(0, broadcast_token(self.cls_token[...], batch))  # [B, 1, D]
            valid.insert(0, jnp.ones((batch, 1), bool))
        x = jnp.concatenate(seqs, axis=1)  # [B, T, D], T = Σ T_m (+ 1)
        mask = jnp.concatenate(valid, axis=1)  # [B, T]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        pooled = x[:, 0] if self.pool == "cls" else masked_mean(x, mask)  # [B, D]
        return dense(self.head, pooled, self.compute_dtype)  # [B, C]
