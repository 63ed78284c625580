"""Soft gated fusion: ``z = Σ_m g_m ⊙ h_m``, gates read from a chosen source (GMU and kin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    FusionOperator,
    Initializer,
    Params,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    lecun_normal,
    linear,
)
from mmfuse.fusion._registry import register

PROJECTIONS = ("tanh", "linear")
GATE_SOURCES = ("all", "self", "others")
GATES = ("sigmoid", "softmax", "gmu")
GRANULARITIES = ("feature", "modality")


def _check_options(
    num_modalities: int, *, projection: str, gate_source: str, gate: str, granularity: str
) -> None:
    check_choice(projection, PROJECTIONS, "projection", "gated")
    check_choice(gate_source, GATE_SOURCES, "gate_source", "gated")
    check_choice(gate, GATES, "gate", "gated")
    check_choice(granularity, GRANULARITIES, "granularity", "gated")
    if gate == "gmu":
        if num_modalities != 2:
            raise ValueError(
                f"gated: gate='gmu' is defined for exactly 2 modalities, got {num_modalities}; "
                "use gate='sigmoid' or gate='softmax' for M != 2"
            )
        if gate_source != "all":
            raise ValueError(
                f"gated: gate='gmu' reads both modalities, so gate_source must be 'all', "
                f"got gate_source={gate_source!r}"
            )


def _gate_in_dims(in_dims: Sequence[int], gate_source: str, gate: str) -> tuple[int, ...]:
    """The width each gate reads: one gate for GMU, otherwise one per modality."""
    total = sum(in_dims)
    if gate == "gmu":
        return (total,)
    if gate_source == "all":
        return (total,) * len(in_dims)
    if gate_source == "self":
        return tuple(in_dims)
    return tuple(total - d for d in in_dims)


def _gate_shapes(
    in_dims: Sequence[int], out_dim: int, gate_source: str, gate: str, granularity: str
) -> list[tuple[int, int]]:
    width = out_dim if granularity == "feature" else 1
    return [(s, width) for s in _gate_in_dims(in_dims, gate_source, gate)]


def init_gated(
    key: jax.Array,
    in_dims: Sequence[int],
    out_dim: int,
    *,
    projection: str = "tanh",
    gate_source: str = "all",
    gate: str = "sigmoid",
    granularity: str = "feature",
    kernel_init: Initializer | None = None,
) -> Params:
    """Parameters of gated fusion.

    ``{"kernels": [W_m: [d_m, C]], "biases": [b_m: [C]] (projection="linear" only),
    "gate_kernels": [V_k: [s_k, G]], "gate_biases": [c_k: [G]]}``, where ``G`` is ``C``
    for ``granularity="feature"`` and 1 for ``"modality"``, and ``s_k`` is the width
    the gate reads: ``Σ d_m`` (``gate_source="all"``), ``d_k`` (``"self"``) or
    ``Σ_{m≠k} d_m`` (``"others"``). There is one gate per modality, except for
    ``gate="gmu"``, whose single gate ``g`` weighs modality 0 and ``1 − g`` modality 1.
    Gate biases start at zero, so gates start near 1/2 (sigmoid) or 1/M (softmax).
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "gated", min_modalities=2)
    _check_options(
        len(in_dims),
        projection=projection,
        gate_source=gate_source,
        gate=gate,
        granularity=granularity,
    )
    kernel_init = kernel_init or lecun_normal()
    gate_shapes = _gate_shapes(in_dims, out_dim, gate_source, gate, granularity)
    projection_key, gate_key = jax.random.split(key)
    projection_keys = jax.random.split(projection_key, len(in_dims))
    gate_keys = jax.random.split(gate_key, len(gate_shapes))
    params: Params = {
        "kernels": [
            kernel_init(k, (d, out_dim), jnp.float32)
            for k, d in zip(projection_keys, in_dims, strict=True)
        ]
    }
    if projection == "linear":
        params["biases"] = [jnp.zeros((out_dim,), jnp.float32) for _ in in_dims]
    params["gate_kernels"] = [
        kernel_init(k, shape, jnp.float32) for k, shape in zip(gate_keys, gate_shapes, strict=True)
    ]
    params["gate_biases"] = [jnp.zeros((shape[1],), jnp.float32) for shape in gate_shapes]
    return params


def _check_params(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    projection: str,
    gate_source: str,
    gate: str,
    granularity: str,
) -> tuple[jax.Array, ...]:
    """Validates options, inputs and the parameter layout; returns the checked inputs."""
    in_dims = [k.shape[0] for k in params["kernels"]]
    out_dim = params["kernels"][0].shape[-1]
    _check_options(
        len(in_dims),
        projection=projection,
        gate_source=gate_source,
        gate=gate,
        granularity=granularity,
    )
    xs = check_inputs(xs, in_dims, "gated")
    if (projection == "linear") != ("biases" in params):
        raise ValueError(
            f"gated: projection={projection!r} "
            + ("needs params['biases']" if projection == "linear" else "takes no biases")
            + "; build the params with the same projection"
        )
    expected = _gate_shapes(in_dims, out_dim, gate_source, gate, granularity)
    got = [tuple(k.shape) for k in params["gate_kernels"]]
    if got != expected:
        raise ValueError(
            f"gated: gate kernels have shapes {got}, but gate={gate!r}, "
            f"gate_source={gate_source!r}, granularity={granularity!r} need {expected}; "
            "build the params with the same options"
        )
    return xs


def _gates(
    params: Params, xs: Sequence[jax.Array], *, gate_source: str, gate: str, compute_dtype: Any
) -> jax.Array:
    """Gate values ``[..., M, G]`` for checked inputs."""
    if gate == "gmu" or gate_source == "all":
        joint = jnp.concatenate(xs, axis=-1)  # [..., Σ d_m]
        sources = [joint] * len(params["gate_kernels"])
    elif gate_source == "self":
        sources = list(xs)
    else:
        sources = [
            jnp.concatenate([x for j, x in enumerate(xs) if j != m], axis=-1)  # [..., s_m]
            for m in range(len(xs))
        ]
    logits = jnp.stack(
        [
            linear(s, k, b, compute_dtype=compute_dtype)
            for s, k, b in zip(sources, params["gate_kernels"], params["gate_biases"], strict=True)
        ],
        axis=-2,
    )  # [..., M, G] ([..., 1, G] for GMU)
    if gate == "softmax":
        return jax.nn.softmax(logits, axis=-2)
    g = jax.nn.sigmoid(logits)
    if gate == "gmu":
        return jnp.concatenate([g, 1.0 - g], axis=-2)  # [..., 2, G]
    return g


def soft_gates(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    gate_source: str = "all",
    gate: str = "sigmoid",
    granularity: str = "feature",
    projection: str = "tanh",
    compute_dtype: Any = None,
) -> jax.Array:
    """The gates ``g_m`` that ``gated`` applies, for inspection.

    Args:
      params: as built by ``init_gated`` with the same options.
      xs: M arrays ``[..., d_m]`` with shared leading dims.
      gate_source, gate, granularity, projection, compute_dtype: as for ``gated``.

    Returns:
      ``[..., M, G]``: ``G = C`` per-feature gates or ``G = 1`` per-modality gates.
      Softmax gates sum to 1 over the M axis; GMU's are ``[g, 1 − g]``.
    """
    xs = _check_params(
        params,
        xs,
        projection=projection,
        gate_source=gate_source,
        gate=gate,
        granularity=granularity,
    )
    return _gates(
        params,
        xs,
        gate_source=gate_source,
        gate=gate,
        compute_dtype=check_compute_dtype(compute_dtype, "gated"),
    )


def gated(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    projection: str = "tanh",
    gate_source: str = "all",
    gate: str = "sigmoid",
    granularity: str = "feature",
    compute_dtype: Any = None,
) -> jax.Array:
    """Soft gated fusion ``z = Σ_m g_m ⊙ h_m``.

    Each modality is projected to the output width, ``h_m = tanh(W_m x_m)``
    (``projection="tanh"``, as in GMU) or ``h_m = W_m x_m + b_m`` (``"linear"``), and
    weighed by a gate computed from

    - ``gate_source="all"``: ``[x_1; …; x_M]``, so a gate can react to cross-modal
      context (e.g. trust vision less when the audio says the scene is dark);
    - ``"self"``: ``x_m`` alone, so a modality rates its own reliability;
    - ``"others"``: ``[x_j]_{j≠m}``, so the other modalities decide how much of ``x_m``
      to let through.

    ``gate="sigmoid"`` gives independent gates ``g_m = σ(V_m s_m + c_m)``;
    ``"softmax"`` normalises the logits across modalities, ``Σ_m g_m = 1`` (which
    couples the gates: with ``gate_source="self"`` each *logit* reads only its own
    modality, but every normalised gate depends on all of them); ``"gmu"`` is the
    Gated Multimodal Unit for M = 2, ``g = σ(V [x_1; x_2] + c)``,
    ``z = g ⊙ h_1 + (1 − g) ⊙ h_2``. ``granularity="feature"`` gates each output
    feature, ``"modality"`` gives one scalar per modality per example.

    Args:
      params: as built by ``init_gated`` with the same options (``kernels``
        ``[d_m, C]``, ``biases`` ``[C]`` for a linear projection, ``gate_kernels``
        ``[s_k, G]``, ``gate_biases`` ``[G]``).
      xs: M arrays ``[..., d_m]`` with shared leading dims (batch[, time]).
      projection: ``"tanh"`` or ``"linear"``.
      gate_source: ``"all"``, ``"self"`` or ``"others"``.
      gate: ``"sigmoid"``, ``"softmax"`` or ``"gmu"`` (M = 2 and ``gate_source="all"``).
      granularity: ``"feature"`` or ``"modality"``.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation; gates and the weighted sum stay float32); None (default)
        computes in the inputs' dtype.

    Returns:
      ``[..., C]``.

    Raises:
      ValueError: a bad option (naming it), params built with other options, or
        inputs that do not match the params.

    References:
      Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR Workshop 2017.
    """
    xs = _check_params(
        params,
        xs,
        projection=projection,
        gate_source=gate_source,
        gate=gate,
        granularity=granularity,
    )
    cd = check_compute_dtype(compute_dtype, "gated")
    if projection == "tanh":
        hs = [
            jnp.tanh(linear(x, k, compute_dtype=cd))
            for x, k in zip(xs, params["kernels"], strict=True)
        ]
    else:
        hs = [
            linear(x, k, b, compute_dtype=cd)
            for x, k, b in zip(xs, params["kernels"], params["biases"], strict=True)
        ]
    h = jnp.stack(hs, axis=-2)  # [..., M, C]
    g = _gates(params, xs, gate_source=gate_source, gate=gate, compute_dtype=cd)  # [..., M, G]
    return jnp.sum(g * h, axis=-2)  # [..., C]


@register("gated")
class GatedFusion(FusionOperator):
    """Soft gated fusion ``z = Σ_m g_m ⊙ h_m`` (any M ≥ 2; GMU for M = 2).

    Options:
      projection: ``"tanh"`` (``h_m = tanh(W_m x_m)``, GMU; default) or ``"linear"``
        (``h_m = W_m x_m + b_m``).
      gate_source: what each gate reads: ``"all"`` modalities (default), ``"self"``
        (its own modality) or ``"others"`` (the other modalities).
      gate: ``"sigmoid"`` (independent gates, default), ``"softmax"`` (normalised over
        modalities) or ``"gmu"`` (exactly GMU; needs M = 2 and ``gate_source="all"``).
      granularity: ``"feature"`` (a gate per output feature, default) or
        ``"modality"`` (one scalar per modality per example).
      kernel_init: initializer of the projection and gate kernels (default LeCun
        normal over the input axis).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).

    References:
      Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR Workshop 2017.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        projection: str = "tanh",
        gate_source: str = "all",
        gate: str = "sigmoid",
        granularity: str = "feature",
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.projection = projection
        self.gate_source = gate_source
        self.gate = gate
        self.granularity = granularity
        super().__init__(
            in_dims,
            out_dim,
            init_gated(
                rngs.params(),
                in_dims,
                out_dim,
                projection=projection,
                gate_source=gate_source,
                gate=gate,
                granularity=granularity,
                kernel_init=kernel_init,
            ),
            compute_dtype,
        )

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        return gated(
            self.functional_params(),
            xs,
            projection=self.projection,
            gate_source=self.gate_source,
            gate=self.gate,
            granularity=self.granularity,
            compute_dtype=self.compute_dtype,
        )

    def gates(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        """The gates ``[..., M, G]`` this module applies to ``xs`` (see ``soft_gates``)."""
        return soft_gates(
            self.functional_params(),
            xs,
            projection=self.projection,
            gate_source=self.gate_source,
            gate=self.gate,
            granularity=self.granularity,
            compute_dtype=self.compute_dtype,
        )
