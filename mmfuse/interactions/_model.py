"""EMAP of an mmfuse model: encode each modality once, cross-pair only the fusion head."""

from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from mmfuse.interactions._checks import ModelFn, check_inputs
from mmfuse.interactions._emap import EmapDecomposition, emap_decompose
from mmfuse.models import PureModel, as_pure

Model = nnx.Module | PureModel


def model_fn(model: Model, inputs: Any) -> tuple[ModelFn, tuple[jax.Array, ...]]:
    """The function and inputs on which EMAP of ``model`` is cheapest to compute.

    For a model that factorizes as ``head(enc_1(x_1), ..., enc_M(x_M))`` (see
    ``mmfuse.models.as_pure``), EMAP of the model at the raw inputs equals EMAP of the
    head at the encodings: every cross pair ``(x_0^{i_0}, ..., x_{M-1}^{i_{M-1}})`` is
    encoded as ``(h_0^{i_0}, ..., h_{M-1}^{i_{M-1}})``. So the N examples are encoded
    once and only the head runs on the N^M pairs. Other models run whole on each pair.

    Args:
      model: an NNX model called as ``model(xs)`` on M arrays ``[B, ...]``, or its
        ``as_pure`` view.
      inputs: M arrays ``[N, ...]`` paired along axis 0.

    Returns:
      ``(fn, xs)``: ``head`` (or ``apply``) with the parameters bound, and the M
      encodings ``[N, e_m]`` (or the inputs).
    """
    xs = check_inputs(inputs, "emap_model")
    pure = model if isinstance(model, PureModel) else as_pure(model)
    if pure.factorizes:
        hs = pure.encode(pure.params, xs)  # M x [N, e_m]
        return functools.partial(pure.head, pure.params), tuple(hs)
    return functools.partial(pure.apply, pure.params), xs


def emap_model(
    model: Model,
    inputs: Any,
    *,
    decompose: bool = False,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> jax.Array | EmapDecomposition:
    """EMAP of an mmfuse model, encoding each modality once when the model factorizes.

    Gives the same values as ``emap(lambda xs: model(xs), inputs)`` (up to rounding) at a
    fraction of the cost when the encoders dominate: N encoder evaluations instead
    of N^M. See ``model_fn``.

    Args:
      model: an NNX model or ``mmfuse.models.PureModel``; ``model(xs) -> [B, C]``.
      inputs: M arrays ``[N, ...]`` paired along axis 0.
      decompose: return the whole ``EmapDecomposition`` instead of ``projected``.
      block_size, num_samples, key: as for ``emap_decompose``.

    Returns:
      ``[N, C]`` projected outputs, or the ``EmapDecomposition``.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    fn, xs = model_fn(model, inputs)
    result = emap_decompose(fn, xs, block_size=block_size, num_samples=num_samples, key=key)
    return result if decompose else result.projected
