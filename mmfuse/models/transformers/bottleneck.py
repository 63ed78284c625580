"""Intermediate fusion through shared bottleneck tokens (MBT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import check_positive, is_int
from mmfuse.models.transformers.layers import (
    EMBED_INIT,
    RawTokenModel,
    TransformerBlock,
    broadcast_token,
    dense,
    masked_mean,
)


class BottleneckFusion(RawTokenModel):
    """Multimodal bottleneck transformer: modalities exchange information only
    through K shared bottleneck tokens.

    Each modality has its own token embedding and its own transformer blocks. The
    first ``fusion_layer`` layers are unimodal (each modality attends to its own
    tokens). From layer ``fusion_layer`` on, modality m runs its block over
    ``[its tokens; the K bottleneck tokens]`` and the bottleneck tokens that come
    out are averaged across the modalities:

        [x_m; b_m] = Block_{l,m}([x_m; b]),   b = (1/M) Σ_m b_m.

    Cross-modal flow is squeezed through K tokens, which forces each modality to
    condense what it shares. It takes two fusion layers for anything to cross: in
    the first the bottleneck tokens read every modality, in the next the modalities
    read the averaged bottleneck (the first fusion layer's modalities only see the
    learned initial tokens), hence ``fusion_layer ≤ num_layers − 2``.

    The output is the mean over modalities of each modality's pooled tokens, then a
    linear head (equal to averaging per-modality linear predictions). With mean
    pooling, a modality whose tokens in an example are all padding is left out of
    that example's final mean over modalities (an example with none gets the head's
    bias); its bottleneck tokens, which read only the shared tokens, still enter the
    fusion layers' average. With CLS pooling every modality's CLS token counts, a
    missing modality's too: it is a real token, which reads the bottleneck tokens.

    Args:
      in_dims: the raw token widths ``(d_1, ..., d_M)``.
      out_dim: the output width C.
      d_model: the model width D.
      num_heads: attention heads (dividing D).
      num_layers: layers in each modality's stack (at least 2).
      fusion_layer: the first fusion layer, ``0 ≤ fusion_layer ≤ num_layers − 2``
        (default ``min(num_layers // 2, num_layers − 2)``; 0 fuses from the start).
      num_bottlenecks: K, the number of shared tokens.
      mlp_dim: the hidden width of each block's MLP.
      pool: ``"mean"`` (over real tokens) or ``"cls"`` (a learned token per modality).
      max_len: the longest ``T_m``.
      positions: ``"learned"`` or ``"sinusoidal"`` position embeddings.
      pad_value: if given, tokens whose features all equal it count as padding, in
        addition to any masks passed.
      compute_dtype: the operand dtype of every matmul (projections, attention,
        MLPs, head), e.g. ``jnp.bfloat16`` (float32 accumulation; layer norms,
        softmax, embeddings and parameters stay float32); None (default): float32.
      rngs: initialises the weights.

    Deterministic: no dropout.

    References:
      Nagrani et al., "Attention Bottlenecks for Multimodal Fusion", NeurIPS 2021.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        fusion_layer: int | None = None,
        num_bottlenecks: int = 4,
        mlp_dim: int = 128,
        pool: str = "mean",
        max_len: int = 512,
        positions: str = "learned",
        pad_value: float | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        name = "BottleneckFusion"
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
        check_positive(num_bottlenecks, "num_bottlenecks", name)
        if num_layers < 2:
            raise ValueError(
                f"{name}: num_layers must be at least 2 (two fusion layers), got {num_layers}"
            )
        if fusion_layer is None:
            fusion_layer = min(num_layers // 2, num_layers - 2)
        if not is_int(fusion_layer) or not 0 <= fusion_layer <= num_layers - 2:
            raise ValueError(
                f"{name}: fusion_layer must be an int in [0, num_layers - 2 = {num_layers - 2}] "
                f"so that at least two layers fuse, got {fusion_layer!r}"
            )
        self.fusion_layer = int(fusion_layer)
        num_modalities = len(self.in_dims)
        if pool == "cls":
            self.cls_tokens = nnx.Param(EMBED_INIT(rngs.params(), (num_modalities, d_model)))
        self.bottleneck = nnx.Param(EMBED_INIT(rngs.params(), (num_bottlenecks, d_model)))
        self.blocks = nnx.List(
            [
                nnx.List(
                    [
                        TransformerBlock(
                            d_model, num_heads, mlp_dim, compute_dtype=self.compute_dtype, rngs=rngs
                        )
                        for _ in range(num_modalities)
                    ]
                )
                for _ in range(num_layers)
            ]
        )  # blocks[l][m]
        self.norms = nnx.List([nnx.LayerNorm(d_model, rngs=rngs) for _ in range(num_modalities)])
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
        batch = seqs[0].shape[0]
        if self.pool == "cls":
            cls = self.cls_tokens[...]  # [M, D]
            seqs = [
                jnp.concatenate([broadcast_token(cls[m], batch), s], axis=1)
                for m, s in enumerate(seqs)
            ]  # M x [B, 1 + T_m, D]
            valid = [jnp.concatenate([jnp.ones((batch, 1), bool), v], axis=1) for v in valid]
        shared = broadcast_token(self.bottleneck[...], batch)  # [B, K, D]
        keep_shared = jnp.ones(shared.shape[:2], bool)  # [B, K]
        num_shared = shared.shape[1]
        for layer, blocks in enumerate(self.blocks):
            if layer < self.fusion_layer:  # unimodal layers
                seqs = [block(s, v) for block, s, v in zip(blocks, seqs, valid, strict=True)]
                continue
            outs = [
                block(
                    jnp.concatenate([s, shared], axis=1),  # [B, T_m + K, D]
                    jnp.concatenate([v, keep_shared], axis=1),
                )
                for block, s, v in zip(blocks, seqs, valid, strict=True)
            ]
            seqs = [out[:, :-num_shared] for out in outs]  # M x [B, T_m, D]
            shared = jnp.mean(jnp.stack([out[:, -num_shared:] for out in outs]), axis=0)
        pooled = []
        for norm, s, v in zip(self.norms, seqs, valid, strict=True):
            x = norm(s)
            pooled.append(x[:, 0] if self.pool == "cls" else masked_mean(x, v))  # [B, D]
        if self.pool == "cls":
            pooled = jnp.mean(jnp.stack(pooled), axis=0)  # [B, D]
        else:
            # A modality with no real tokens in an example (missing there) has nothing
            # to pool: average the modalities present rather than let a zero vector
            # stand in for it and shrink the others by (M - 1) / M.
            present = jnp.stack([jnp.any(v, axis=-1) for v in valid], axis=1)  # [B, M]
            pooled = masked_mean(jnp.stack(pooled, axis=1), present)  # [B, D]
        return dense(self.head, pooled, self.compute_dtype)  # [B, C]
