"""EMAP of an mmfuse model: encode each modality once, cross-pair only the fusion head."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from mmfuse.interactions import _emap, _sharded
from mmfuse.interactions._checks import ModelFn, check_inputs, elements_per_example
from mmfuse.interactions._emap import EmapDecomposition
from mmfuse.interactions._mlp_head import SplitMLP, split_mlp
from mmfuse.interactions._tensor_head import TensorHead, tensor_head
from mmfuse.models import PureModel, as_pure

Model = nnx.Module | PureModel
KERNELS = ("xla", "pallas")
KERNEL_OPTIONS = ("block_cols", "rows_per_step", "hidden_chunk", "num_warps", "num_stages")


class _View(NamedTuple):
    """What EMAP needs to know about a model, worked out once per call."""

    pure: PureModel
    module: nnx.Module
    split: SplitMLP | None  # an early-fusion MLP head, split at its first layer
    tensor: TensorHead | None  # tensor fusion and the head after it
    dtype: Any  # the matmul operand dtype of the split or tensor path (None: the model's)


def _view(model: Model, compute_dtype: Any) -> _View:
    if isinstance(model, PureModel):
        pure, module = model, nnx.merge(model.graphdef, model.params)
    else:
        pure, module = as_pure(model), model
    split = split_mlp(module)
    if split is not None:  # None keeps each layer's own dtype, the fusion's and the head's
        return _View(pure, module, split, None, compute_dtype)
    if compute_dtype is None:  # the precision the model computes its fusion in
        compute_dtype = getattr(getattr(module, "fusion", None), "compute_dtype", None)
    return _View(pure, module, None, tensor_head(module, compute_dtype), compute_dtype)


def model_fn(
    model: Model, inputs: Any, *, compute_dtype: Any = None
) -> tuple[ModelFn, tuple[jax.Array, ...]]:
    """The function and inputs on which EMAP of ``model`` is cheapest to compute.

    For a model that factorizes as ``head(enc_1(x_1), ..., enc_M(x_M))`` (see
    ``mmfuse.models.as_pure``), EMAP of the model at the raw inputs equals EMAP of the
    head at the encodings: every cross pair ``(x_0^{i_0}, ..., x_{M-1}^{i_{M-1}})`` is
    encoded as ``(h_0^{i_0}, ..., h_{M-1}^{i_{M-1}})``. So the N examples are encoded
    once and only the head runs on the N^M pairs. Other models run whole on each pair.

    When the head is an MLP on the concatenated encodings (``"nonlinear"`` fusion,
    then no head, an ``nnx.Linear`` or an ``mmfuse.models.MLP``), its first layer
    splits by modality, ``[h_1; …; h_M] W + b = Σ_m h_m W_m + b``: the parts
    ``u_m = h_m W_m`` are computed once too, and each pair runs ``g(Σ_m u_m)``, the
    rest of the network.

    For tensor fusion, ``fn`` contracts the kernel with all but the last modality
    first; ``emap_model`` uses that to contract it once per row of the pair grid.

    Args:
      model: an NNX model called as ``model(xs)`` on M arrays ``[B, ...]``, or its
        ``as_pure`` view.
      inputs: M arrays ``[N, ...]`` paired along axis 0.
      compute_dtype: for a split MLP head or tensor fusion only: the matmul
        operands' dtype (e.g. ``jnp.bfloat16``), with float32 accumulation and
        outputs; ``None`` computes as the model does: each layer of a split MLP head
        in its module's ``compute_dtype`` (the fusion operator's, the head's), tensor
        fusion and its head in the fusion operator's.

    Returns:
      ``(fn, xs)``: ``head`` (or ``apply``) with the parameters bound, and the M
      encodings ``[N, e_m]`` (first-layer parts ``[N, H]`` for a split MLP head; the
      inputs for a model that does not factorize).

    Raises:
      ValueError: ``compute_dtype`` for a model with neither a split MLP head nor
        tensor fusion.
    """
    xs = check_inputs(inputs, "emap_model")
    return _fn_and_inputs(_view(model, compute_dtype), xs, compute_dtype)


def _fn_and_inputs(
    view: _View, xs: tuple[jax.Array, ...], compute_dtype: Any
) -> tuple[ModelFn, tuple[jax.Array, ...]]:
    """``model_fn`` on a model's ``_View``."""
    pure = view.pure
    if view.split is not None:
        us = view.split.parts(pure.encode(pure.params, xs), view.dtype)  # M x [N, H]
        return view.split.head(view.dtype), us
    if view.tensor is not None:
        return view.tensor.pairs, tuple(pure.encode(pure.params, xs))
    if compute_dtype is not None:
        raise ValueError(
            "emap_model: compute_dtype applies to MLP heads on the concatenated encodings "
            f'("nonlinear" fusion) and to tensor fusion; {_describe(view.module)} has neither'
        )
    if pure.factorizes:
        hs = pure.encode(pure.params, xs)  # M x [N, e_m]
        return functools.partial(pure.head, pure.params), tuple(hs)
    return functools.partial(pure.apply, pure.params), xs


def _describe(module: nnx.Module) -> str:
    """``this FusionModel (fusion TensorFusion)`` or the class name."""
    fusion = getattr(module, "fusion", None)
    name = type(module).__name__
    return name if fusion is None else f"this {name} (fusion {type(fusion).__name__})"


def emap_model(
    model: Model,
    inputs: Any,
    *,
    decompose: bool = False,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
    kernel: str = "xla",
    compute_dtype: Any = None,
    kernel_options: dict[str, Any] | None = None,
) -> jax.Array | EmapDecomposition:
    """EMAP of an mmfuse model, encoding each modality once when the model factorizes.

    Gives the same values as ``emap(lambda xs: model(xs), inputs)`` (up to rounding) at a
    fraction of the cost when the encoders dominate: N encoder evaluations instead
    of N^M. An MLP head on the concatenated encodings also has its first layer
    computed once per example (see ``model_fn``); tensor fusion contracts its kernel
    with each row of the pair grid once, leaving one ``[K_M] · [K_M, F]`` product per
    pair (exact mode).

    ``kernel="pallas"`` runs the exact pass of a two-modality split MLP head as one
    fused Pallas kernel (``interactions._mlp_kernel``): every pair's activations stay
    on chip instead of being written to device memory between layers. It is compiled
    with Triton on a GPU and run by the Pallas interpreter elsewhere (slowly: for
    tests). ``"xla"`` (the default) is the blocked pass of ``emap_decompose`` and
    works for any model.

    Args:
      model: an NNX model or ``mmfuse.models.PureModel``; ``model(xs) -> [B, C]``.
      inputs: M arrays ``[N, ...]`` paired along axis 0.
      decompose: return the whole ``EmapDecomposition`` instead of ``projected``.
      block_size, num_samples, key: as for ``emap_decompose`` (with the Pallas kernel,
        ``block_size`` is the rows per program, a power of two, each program storing its ``[N, C]``
        column sums: at most 1,024 programs; by default about 256).
      kernel: ``"xla"`` or ``"pallas"``.
      compute_dtype: the matmul operand dtype of a split MLP head or tensor fusion
        (see ``model_fn``; ``None``: the model's own). The Pallas kernel computes every
        layer in one dtype, so a model whose fusion and head differ needs one here.
      kernel_options: with ``kernel="pallas"``, the kernel's tiling and launch
        parameters: ``block_cols`` (columns per tile, default 64), ``rows_per_step``
        (rows paired with a tile at once, default 2), ``hidden_chunk`` (the last
        hidden layer's units computed at a time, default 64; ``None``: all),
        ``num_warps`` (default 8, a power of two up to 32), ``num_stages`` (Triton's
        pipelining stages, default 1: each stage buffers the weights in shared
        memory).

    Returns:
      ``[N, C]`` projected outputs, or the ``EmapDecomposition``.

    Raises:
      ValueError: as ``emap_decompose``; an unknown ``kernel``; ``kernel="pallas"``
        for a model without a split MLP head, for M ≠ 2 or in Monte-Carlo mode.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    if kernel not in KERNELS:
        raise ValueError(f"emap_model: kernel={kernel!r} is not one of {KERNELS}")
    view = _view(model, compute_dtype)
    xs = check_inputs(inputs, "emap_model", auto_axes=True)
    fn, xs = _fn_and_inputs(view, xs, compute_dtype)
    pair_sums = None
    if kernel == "pallas":
        pair_sums = _pallas_pair_sums(view, len(xs), num_samples, kernel_options or {})
    elif kernel_options:
        raise ValueError("emap_model: kernel_options are for kernel='pallas'")
    elif num_samples is None and view.tensor is not None:
        # each row's contraction with the kernel is shared by the row's N pairs
        pair_sums = functools.partial(
            _emap.blocked_sums,
            fn,
            pair_elements=elements_per_example(xs) + 2 * view.tensor.kernel.shape[-1],
            name="emap_model",
            block_fn=view.tensor.block,
        )
    result = _emap.decompose(
        fn,
        xs,
        block_size=block_size,
        num_samples=num_samples,
        key=key,
        pair_sums=pair_sums,
        name="emap_model",
    )
    return result if decompose else result.projected


def _pallas_pair_sums(
    view: _View,
    num_modalities: int,
    num_samples: int | None,
    options: dict[str, Any],
) -> _emap.PairSums:
    """Exact mode's pass over the pairs as the fused kernel, for a split MLP head."""
    # imported here: `import mmfuse` need not load Pallas
    from mmfuse.interactions._mlp_kernel import fused_pair_sums

    split = view.split
    advice = "use kernel='xla'"
    if split is None:
        raise ValueError(
            "emap_model: kernel='pallas' fuses MLP heads on the concatenated encodings "
            f'("nonlinear" fusion); {_describe(view.module)} has none; {advice}'
        )
    if num_modalities != 2:
        raise ValueError(
            f"emap_model: kernel='pallas' pairs two modalities; this model has "
            f"{num_modalities}; {advice}"
        )
    if num_samples is not None:
        raise ValueError(
            f"emap_model: kernel='pallas' computes exact EMAP; for Monte-Carlo {advice}"
        )
    unknown = set(options) - set(KERNEL_OPTIONS)
    if unknown:
        raise ValueError(
            f"emap_model: unknown kernel_options {sorted(unknown)}; valid: {KERNEL_OPTIONS}"
        )
    operand_dtype = view.dtype or _one_dtype(split, advice)

    def pair_sums(us, shift, dtype, block_size):
        if any(u.ndim != 2 for u in us):
            shapes = " and ".join(str(tuple(u.shape)) for u in us)
            raise ValueError(
                "emap_model: kernel='pallas' pairs one vector per example, but the first "
                f"layer's parts have shapes {shapes} (a time axis?); {advice}"
            )
        # the kernel sums in float32 whatever the model's dtype
        sums, count = fused_pair_sums(
            us[0],
            us[1],
            split.layers,
            split.activations,
            shift,
            compute_dtype=operand_dtype,
            block_rows=block_size,
            **options,
        )
        return tuple(s.astype(dtype) for s in sums), count

    return pair_sums


def _one_dtype(split: SplitMLP, advice: str) -> Any:
    """The single operand dtype the fused kernel runs a split head in, as the model does."""
    # None computes in the operands' own dtype: the parameters' (float32 unless cast)
    params = jnp.result_type(*(k for k, _ in split.layers))
    own = {jnp.dtype(params if d is None else d) for d in split.dtypes}
    if len(own) == 1:
        return own.pop()
    names = sorted(d.name for d in own)
    raise ValueError(
        "emap_model: kernel='pallas' computes every layer in one dtype, but this model's "
        f"layers compute in {' and '.join(names)}; pass compute_dtype= (or {advice})"
    )


def sharded_emap_model(
    model: Model,
    inputs: Any,
    *,
    mesh: Mesh,
    axis_name: str | Sequence[str] | None = None,
    decompose: bool = False,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
    compute_dtype: Any = None,
) -> jax.Array | EmapDecomposition:
    """``emap_model`` with the N examples sharded by rows over the devices of ``mesh``.

    The inputs are placed on the mesh first, so each device encodes only its own rows
    (and, for an early-fusion MLP head, computes its first-layer parts); then
    ``sharded_emap_decompose`` pairs each device's rows with all columns. Tensor
    fusion contracts its kernel once per row of the pair grid on every device, as in
    ``emap_model``. Exact results equal ``emap_model``'s up to float32 summation order.

    Args:
      model: an NNX model or ``mmfuse.models.PureModel``; ``model(xs) -> [B, C]``.
      inputs: M arrays ``[N, ...]`` paired along axis 0, N a multiple of the number of
        devices along ``axis_name``.
      mesh, axis_name: as for ``sharded_emap_decompose``.
      decompose: return the whole ``EmapDecomposition`` instead of ``projected``.
      block_size, num_samples, key: as for ``sharded_emap_decompose``.
      compute_dtype: as for ``emap_model``.

    Returns:
      ``[N, C]`` projected outputs sharded by rows, or the ``EmapDecomposition``.

    Raises:
      ValueError: as ``sharded_emap_decompose`` and ``model_fn``.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    name = "sharded_emap_model"
    xs = check_inputs(inputs, name)
    rows = _sharded.row_sharding(mesh, axis_name, xs[0].shape[0], name)
    xs = tuple(jax.device_put(x, rows) for x in xs)
    view = _view(model, compute_dtype)
    fn, xs = _fn_and_inputs(view, xs, compute_dtype)
    tensor = view.tensor if num_samples is None else None
    result = _sharded.decompose(
        fn,
        xs,
        mesh=mesh,
        axis_name=axis_name,
        block_size=block_size,
        num_samples=num_samples,
        key=key,
        name=name,
        block_fn=None if tensor is None else tensor.block,
        block_elements=0 if tensor is None else 2 * tensor.kernel.shape[-1],
    )
    return result if decompose else result.projected
