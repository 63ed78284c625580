"""Pure functional views of the models, for jit / vmap / grad and the interaction measures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class PureModel:
    """A model split into its state and pure functions of that state.

    Attributes:
      graphdef: the model's static structure (``nnx.split``).
      params: the model's ``nnx.State`` (every variable; a pytree of arrays), a
        snapshot: later in-place changes to the module do not reach it.
      apply: ``apply(params, xs, **kwargs) -> outputs``, the model's call.
      encode: ``encode(params, xs, **kwargs) -> (h_1, ..., h_M)``, the per-modality
        stage of a model that factorizes as ``head(enc_1(x_1), ..., enc_M(x_M))``;
        ``None`` for a model that does not (e.g. the transformers).
      head: ``head(params, hs, **kwargs) -> outputs``, the rest of such a model; ``None``
        where ``encode`` is.

    Every function re-merges the module from ``params`` on each call, so they work
    under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` with ``params`` as an argument.
    Variable updates made during a call (none in mmfuse's models) are discarded.
    """

    graphdef: nnx.GraphDef
    params: nnx.State
    apply: Callable[..., jax.Array]
    encode: Callable[..., tuple[jax.Array, ...]] | None = None
    head: Callable[..., jax.Array] | None = None

    @property
    def factorizes(self) -> bool:
        """Whether ``encode`` and ``head`` are available."""
        return self.encode is not None


def as_pure(model: nnx.Module) -> PureModel:
    """Splits an NNX model into ``params`` and pure ``apply`` (and ``encode`` / ``head``).

    A model factorizes when it has ``encode(xs)`` and ``fuse(hs)`` methods with
    ``model(xs) == model.fuse(model.encode(xs))``, as ``FusionModel`` (encoders, then
    fusion and head) and ``LateFusion`` (the unimodal predictions, then their
    combination) do. Then ``head(params, encode(params, xs))`` equals
    ``apply(params, xs)``, and the head can be evaluated on encodings paired across
    examples: EMAP (Hessel and Lee, EMNLP 2020) encodes N examples once and runs only
    the head on the N^M cross pairs.

    Args:
      model: an NNX module called as ``model(xs, **kwargs)`` on M arrays ``[B, ..., d_m]``.

    Returns:
      A ``PureModel``; ``apply(params, xs)`` returns what ``model(xs)`` returns
      (``[B, C]`` for the mmfuse models).

    Example:
      >>> pure = as_pure(model)
      >>> logits = jax.jit(pure.apply)(pure.params, xs)
      >>> hs = pure.encode(pure.params, xs)   # factorizing models only
      >>> logits = pure.head(pure.params, hs)
    """
    graphdef, state = nnx.split(model)
    # nnx.split hands out the module's own Variables; fresh ones (over the same
    # immutable arrays) keep later in-place changes to the module out of ``params``.
    params = jax.tree.map(lambda leaf: leaf, state)

    def apply(params: nnx.State, xs: Sequence[jax.typing.ArrayLike], **kwargs: Any) -> jax.Array:
        return nnx.merge(graphdef, params)(xs, **kwargs)

    if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "fuse", None))):
        return PureModel(graphdef, params, apply)

    def encode(
        params: nnx.State, xs: Sequence[jax.typing.ArrayLike], **kwargs: Any
    ) -> tuple[jax.Array, ...]:
        return tuple(nnx.merge(graphdef, params).encode(xs, **kwargs))

    def head(params: nnx.State, hs: Sequence[jax.typing.ArrayLike], **kwargs: Any) -> jax.Array:
        return nnx.merge(graphdef, params).fuse(hs, **kwargs)

    return PureModel(graphdef, params, apply, encode, head)
