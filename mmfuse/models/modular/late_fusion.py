"""Late fusion: combine the predictions of M unimodal models."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import check_choice
from mmfuse.models._checks import check_sequence
from mmfuse.models.modular._per_modality import apply_per_modality, input_specs

LATE_COMBINES = ("mean", "weighted")


class LateFusion(nnx.Module):
    """``y = Σ_m w_m p_m(x_m)``: a convex combination of unimodal predictions.

    ``combine="mean"`` uses ``w_m = 1/M``; ``"weighted"`` learns ``w = softmax(a)``
    from logits ``a: [M]`` that start at zero (equal weights). Each modality
    contributes on its own, so the output is additive across modalities by
    construction: late fusion models no cross-modal interaction.

    Args:
      predictors: M NNX modules, predictor m mapping ``x_m: [B, ..., d_m]`` to
        ``[B, ..., C]`` (logits or regression outputs); ``None`` takes ``x_m`` as an
        already computed prediction.
      combine: ``"mean"`` or ``"weighted"``.
      in_dims: the input widths ``d_m`` to check against; by default read off the
        predictors (their ``in_dim``, an ``nnx.Linear``'s ``in_features``); given, it
        must agree with those (it is for predictors that declare no width).

    References:
      Baltrušaitis, Ahuja and Morency, "Multimodal Machine Learning: A Survey and
      Taxonomy", TPAMI 2019 (late, decision-level fusion).
    """

    def __init__(
        self,
        predictors: Sequence[nnx.Module | None],
        *,
        combine: str = "mean",
        in_dims: Sequence[int | None] | None = None,
    ):
        name = "LateFusion"
        if isinstance(predictors, nnx.Module) or not isinstance(predictors, Sequence):
            raise ValueError(f"{name}: predictors must be a sequence of modules (or None)")
        if len(predictors) < 1:
            raise ValueError(f"{name} needs at least one predictor")
        self.combine = check_choice(combine, LATE_COMBINES, "combine", name)
        self.input_specs = input_specs(predictors, in_dims, name)
        self.predictors = nnx.List(list(predictors))
        if combine == "weighted":
            self.weight_logits = nnx.Param(jnp.zeros((len(predictors),), jnp.float32))

    def weights(self) -> jax.Array:
        """The combination weights ``[M]``, non-negative and summing to 1."""
        num_modalities = len(self.predictors)
        if self.combine == "mean":
            return jnp.full((num_modalities,), 1.0 / num_modalities, jnp.float32)
        return jax.nn.softmax(self.weight_logits[...])

    def encode(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        *,
        masks: Sequence[jax.typing.ArrayLike | None] | None = None,
    ) -> tuple[jax.Array, ...]:
        """The unimodal predictions ``(p_1(x_1), ..., p_M(x_M))``, each ``[B, ..., C]``.

        Args:
          xs: M arrays ``[B, ..., d_m]``.
          masks: None, or M entries each None or a padding mask passed to that
            modality's predictor as ``mask=``.
        """
        return apply_per_modality(self.predictors, xs, masks, self.input_specs, "LateFusion")

    def fuse(self, predictions: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        """``Σ_m w_m p_m``: M predictions ``[B, ..., C]`` -> ``[B, ..., C]``."""
        name = "LateFusion"
        num_modalities = len(self.predictors)
        check_sequence(predictions, num_modalities, name, "predictions")
        predictions = [jnp.asarray(p) for p in predictions]
        for m, p in enumerate(predictions[1:], start=1):
            if p.shape != predictions[0].shape:
                raise ValueError(
                    f"{name}: the prediction of modality {m} has shape {p.shape} but that of "
                    f"modality 0 has {predictions[0].shape}"
                )
        stacked = jnp.stack(predictions)  # [M, B, ..., C]
        w = jnp.reshape(self.weights(), (num_modalities,) + (1,) * (stacked.ndim - 1))
        return jnp.sum(w * stacked, axis=0)  # [B, ..., C]

    def __call__(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        *,
        masks: Sequence[jax.typing.ArrayLike | None] | None = None,
    ) -> jax.Array:
        """``x_m: [B, ..., d_m]`` (M of them) -> ``[B, ..., C]``."""
        return self.fuse(self.encode(xs, masks=masks))
