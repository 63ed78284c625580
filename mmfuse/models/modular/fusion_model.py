"""``head(fusion(enc_1(x_1), ..., enc_M(x_M)))``: encoders, a fusion operator, a head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from mmfuse.models.modular._per_modality import apply_per_modality, input_specs


def _width(module: Any, attr: str, linear_attr: str) -> int | None:
    """A module's declared input or output width, if it declares one."""
    if isinstance(module, nnx.Linear):
        return getattr(module, linear_attr)
    return getattr(module, attr, None)


class FusionModel(nnx.Module):
    """A multimodal model ``y = head(fusion([enc_1(x_1), ..., enc_M(x_M)]))``.

    The one composition covers the classic fusion stages:

    - intermediate fusion: encoders produce mid-level features that the operator fuses;
    - early fusion: identity encoders (``None``) and the ``"nonlinear"`` operator, one
      network over the concatenated low-level features;
    - late fusion: unimodal predictors as encoders and the ``"additive"`` operator.

    Because the model factorizes, the interaction measures can encode each modality
    once and pair encodings across examples through ``fuse`` alone (see ``as_pure``).

    The batch dims are whatever leading dims the inputs share, none included: one
    unbatched example works, which is what ``jax.vmap`` over examples passes. So a
    sequence encoder given ``[B, d]`` vectors reads them as one unbatched sequence of
    B steps; give it ``[B, 1, d]`` for one-step sequences.

    Args:
      encoders: M NNX modules (or ``None`` for the identity), encoder m mapping
        ``x_m: [B, ..., d_m]`` to ``[B, ..., e_m]`` where ``e_m`` is the fusion
        operator's ``in_dims[m]``.
      fusion: a fusion operator (``mmfuse.fusion.create(...)``) or any module
        ``fusion(hs) -> [B, ..., F]``.
      head: an NNX module ``[B, ..., F] -> [B, ..., C]``, or ``None`` (output the fusion).
      in_dims: the input widths ``d_m`` to check against; by default read off the
        encoders (their ``in_dim``, an ``nnx.Linear``'s ``in_features``) and, for
        identity encoders, the fusion operator's ``in_dims``. Given, it must agree with
        those (it is for encoders that declare no width); ``None`` entries are not
        checked.

    References:
      Baltrušaitis, Ahuja and Morency, "Multimodal Machine Learning: A Survey and
      Taxonomy", TPAMI 2019 (early, late and intermediate fusion).
    """

    def __init__(
        self,
        encoders: Sequence[nnx.Module | None],
        fusion: nnx.Module,
        head: nnx.Module | None = None,
        *,
        in_dims: Sequence[int | None] | None = None,
    ):
        name = "FusionModel"
        if isinstance(encoders, nnx.Module) or not isinstance(encoders, Sequence):
            raise ValueError(f"{name}: encoders must be a sequence of modules (or None)")
        num_modalities = len(encoders)
        fused_dims = getattr(fusion, "in_dims", None)
        if fused_dims is not None:
            if len(fused_dims) != num_modalities:
                raise ValueError(
                    f"{name}: {num_modalities} encoders but the fusion operator takes "
                    f"{len(fused_dims)} modalities (in_dims={tuple(fused_dims)})"
                )
            for m, (encoder, d) in enumerate(zip(encoders, fused_dims, strict=True)):
                width = None if encoder is None else _width(encoder, "out_dim", "out_features")
                if width is not None and width != d:
                    raise ValueError(
                        f"{name}: encoder {m} outputs width {width} but the fusion operator "
                        f"expects in_dims[{m}] = {d}"
                    )
        fused_width = getattr(fusion, "out_dim", None)
        head_width = None if head is None else _width(head, "in_dim", "in_features")
        if None not in (fused_width, head_width) and fused_width != head_width:
            raise ValueError(
                f"{name}: the fusion operator outputs width {fused_width} but the head takes "
                f"{head_width}"
            )
        self.input_specs = input_specs(encoders, in_dims, name, default_dims=fused_dims)
        self.encoders = nnx.List(list(encoders))
        self.fusion = fusion
        self.head = head

    def encode(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        *,
        masks: Sequence[jax.typing.ArrayLike | None] | None = None,
    ) -> tuple[jax.Array, ...]:
        """``(enc_1(x_1), ..., enc_M(x_M))``.

        Args:
          xs: M arrays ``[B, ..., d_m]``.
          masks: None, or M entries each None or a padding mask passed to that
            modality's encoder as ``mask=`` (e.g. ``[B, T_m]`` for a ``SequenceEncoder``).

        Returns:
          M encodings ``[B, ..., e_m]``.
        """
        return apply_per_modality(self.encoders, xs, masks, self.input_specs, "FusionModel")

    def fuse(self, hs: Sequence[jax.Array], **fusion_kwargs: Any) -> Any:
        """``head(fusion(hs))``: M encodings ``[B, ..., e_m]`` -> ``[B, ..., C]``.

        ``fusion_kwargs`` go to the fusion operator (e.g. ``key=`` for hard gates and
        dropout). With ``return_aux=True`` the operator returns ``(z, aux)`` (a hard
        gate's choices and their log-probabilities); the result is then
        ``(head(z), aux)``.
        """
        out = self.fusion(hs, **fusion_kwargs)  # [B, ..., F], or (that, aux)
        if not fusion_kwargs.get("return_aux", False):
            return out if self.head is None else self.head(out)  # [B, ..., C]
        z, aux = out
        return (z if self.head is None else self.head(z)), aux

    def __call__(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        *,
        masks: Sequence[jax.typing.ArrayLike | None] | None = None,
        **fusion_kwargs: Any,
    ) -> Any:
        """``x_m: [B, ..., d_m]`` (M of them) -> ``[B, ..., C]`` (and the operator's aux with
        ``return_aux=True``); see ``encode`` and ``fuse``."""
        return self.fuse(self.encode(xs, masks=masks), **fusion_kwargs)
