"""Multimodal residual optimization: interaction branches fit what simpler ones leave over.

A ``ResidualFusion`` model is a sum of branches, one per non-empty subset S of the
M modalities up to ``max_order`` modalities:

    f(x) = Σ_m f_m(x_m) + Σ_{m<n} f_mn(x_m, x_n) + Σ_{l<m<n} f_lmn(x_l, x_m, x_n) + ...

Each branch is an MLP on the concatenated features of its subset. On its own, such a
model may explain an additive target with its interaction branches just as well as
with its unimodal ones. Multimodal residual optimization (MRO) removes the ambiguity
by training the orders in turn on each other's residuals: with ``f^(k)`` the sum of
the order-k branches and ``sg`` the stop-gradient,

    L = Σ_k loss( sg(f^(1) + ... + f^(k-1)) + f^(k), y ),

so the unimodal branches fit ``y`` alone, the bimodal ones only what the unimodal sum
cannot explain, and so on; a higher order is used only where it lowers the loss.

References:
  Wörtwein, Sheeber, Allen, Cohn and Morency, "Beyond Additive Fusion: Learning
  Non-Additive Multimodal Interactions", Findings of EMNLP 2022.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mmfuse.fusion._core import (
    check_compute_dtype,
    check_dims,
    check_positive,
    check_real,
    is_int,
    python_scalar,
)
from mmfuse.models._checks import check_modalities, hidden_widths
from mmfuse.models.encoders.mlp import MLP, get_activation

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class ResidualFusion(nnx.Module):
    """``f(x) = Σ_S f_S(x_S)``: one MLP branch per subset S of at most ``max_order`` modalities.

    Branch ``f_S`` maps the concatenation ``[x_m for m in S]`` (``[B, Σ_{m∈S} d_m]``)
    to ``[B, C]``. For M = 2 the branches are ``f_1, f_2, f_12``; for M = 3 also
    ``f_13, f_23`` and the trimodal ``f_123``. Train with ``residual_loss`` on
    ``branch_outputs`` (multimodal residual optimization); ``model(xs)`` is the sum of
    all branches, the prediction. Any leading dims may stand in for ``B``.

    Args:
      in_dims: the input widths ``d_m`` of the M ≥ 2 modalities.
      out_dim: the output width C (logits or regression outputs).
      hidden_dims: the hidden widths of every branch's MLP.
      max_order: the largest subset size that gets a branch, in [1, M]; default M.
      activation: the MLPs' activation (a name in ``MLP``'s list or a function).
      compute_dtype: the branches' matmul operand dtype, e.g. ``jnp.bfloat16`` (see
        ``MLP``); None (default): float32.
      rngs: initialises the weights.

    Attributes:
      subsets: the modality subsets, one per branch, ordered by size, then
        lexicographically: ``((0,), (1,), (0, 1))`` for M = 2.
      branches: the branch MLPs, in the order of ``subsets``.

    References:
      Wörtwein, Sheeber, Allen, Cohn and Morency, "Beyond Additive Fusion: Learning
      Non-Additive Multimodal Interactions", Findings of EMNLP 2022.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        hidden_dims: Sequence[int] = (32,),
        max_order: int | None = None,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        name = "ResidualFusion"
        self.in_dims, self.out_dim = check_dims(in_dims, out_dim, name, min_modalities=2)
        # checked here so that errors name this model, not the MLPs it builds
        hidden_dims = tuple(
            check_positive(h, f"hidden_dims[{i}]", name)
            for i, h in enumerate(hidden_widths(hidden_dims, name))
        )
        get_activation(activation, name)
        check_compute_dtype(compute_dtype, name)
        num_modalities = len(self.in_dims)
        max_order = num_modalities if max_order is None else max_order
        if not is_int(max_order):
            raise ValueError(f"{name}: max_order must be an int, got {max_order!r}")
        max_order = int(max_order)
        if not 1 <= max_order <= num_modalities:
            raise ValueError(
                f"{name}: max_order must be in [1, M = {num_modalities}], got {max_order}"
            )
        self.max_order = max_order
        self.subsets = tuple(
            subset
            for order in range(1, max_order + 1)
            for subset in itertools.combinations(range(num_modalities), order)
        )
        self.branches = nnx.List(
            [
                MLP(
                    sum(self.in_dims[m] for m in subset),
                    hidden_dims,
                    out_dim,
                    activation=activation,
                    compute_dtype=compute_dtype,
                    rngs=rngs,
                )
                for subset in self.subsets
            ]
        )

    def subset_outputs(
        self, xs: Sequence[jax.typing.ArrayLike]
    ) -> dict[tuple[int, ...], jax.Array]:
        """Every branch's output: ``{subset: f_S(x_S)}``, each ``[B, C]``.

        Args:
          xs: M arrays ``[B, d_m]`` (any leading dims shared by all modalities).

        Raises:
          ValueError: a wrong number of modalities, a feature size other than ``d_m``
            or batch dims that disagree, naming the modality and the shapes.
        """
        arrays = check_modalities(xs, [(d, 1) for d in self.in_dims], "ResidualFusion")
        outputs = {}
        for subset, branch in zip(self.subsets, self.branches, strict=True):
            features = jnp.concatenate([arrays[m] for m in subset], axis=-1)  # [B, Σ d_m]
            outputs[subset] = branch(features)  # [B, C]
        return outputs

    def branch_outputs(self, xs: Sequence[jax.typing.ArrayLike]) -> dict[int, jax.Array]:
        """The summed output of each order: ``{k: Σ_{|S| = k} f_S(x_S)}``, each ``[B, C]``.

        ``{1: unimodal sum, 2: bimodal sum, 3: trimodal, ...}`` up to ``max_order``; the
        input of ``residual_loss`` and ``interaction_share``.

        Args:
          xs: M arrays ``[B, d_m]`` (any leading dims shared by all modalities).
        """
        by_order: dict[int, jax.Array] = {}
        for subset, out in self.subset_outputs(xs).items():
            order = len(subset)
            by_order[order] = out if order not in by_order else by_order[order] + out
        return by_order

    def __call__(self, xs: Sequence[jax.typing.ArrayLike]) -> jax.Array:
        """``x_m: [B, d_m]`` (M of them) -> ``[B, C]``, the sum of all branches."""
        return sum_orders(self.branch_outputs(xs))


def _sorted_orders(outputs_by_order: Mapping[int, jax.Array], name: str) -> list[jax.Array]:
    if not isinstance(outputs_by_order, Mapping) or not outputs_by_order:
        raise ValueError(
            f"{name}: outputs_by_order must be a non-empty dict {{order: [B, C]}}, as "
            f"returned by ResidualFusion.branch_outputs; got {type(outputs_by_order).__name__}"
        )
    orders = sorted(outputs_by_order)
    if orders[0] != 1:
        raise ValueError(f"{name}: outputs_by_order needs the unimodal order 1, got {orders}")
    if orders != list(range(1, len(orders) + 1)):  # a missing order would drop its term
        raise ValueError(f"{name}: outputs_by_order must hold orders 1..K, got {orders}")
    outs = [jnp.asarray(outputs_by_order[k]) for k in orders]
    for k, out in zip(orders, outs, strict=True):
        if out.shape != outs[0].shape:
            raise ValueError(
                f"{name}: the order-{k} output has shape {out.shape} but the unimodal one "
                f"has {outs[0].shape}"
            )
    return outs


def _check_batched(outs: list[jax.Array], name: str) -> None:
    """Losses and shares are over a batch: ``[B]`` would be read as one example's C."""
    if outs[0].ndim < 2:
        raise ValueError(
            f"{name}: outputs must be [B, C] (C = 1 for one output), got shape {outs[0].shape}"
        )


def sum_orders(outputs_by_order: Mapping[int, jax.Array]) -> jax.Array:
    """The prediction ``Σ_k f^(k)``: the sum of the per-order outputs, ``[B, C]``."""
    outs = _sorted_orders(outputs_by_order, "sum_orders")
    return sum(outs[1:], start=outs[0])


def residual_loss(
    outputs_by_order: Mapping[int, jax.Array],
    targets: jax.typing.ArrayLike,
    loss_fn: LossFn,
    *,
    penalty: float = 0.0,
) -> jax.Array:
    """The multimodal residual optimization (MRO) loss, a scalar.

    With ``f^(k)`` the order-k output and ``sg`` the stop-gradient,

        L = Σ_k loss_fn( sg(Σ_{j<k} f^(j)) + f^(k), targets ) + penalty · Σ_{k≥2} mean(f^(k)²).

    Order 1 (the unimodal sum) fits the targets alone; order k is trained only on
    what the lower orders leave over, and its loss term sends no gradient into them,
    so the unimodal branches are the same whatever the interaction branches do. The
    optional L2 penalty on the interaction outputs (mean over all their entries)
    further keeps them at zero unless they lower the loss.

    Args:
      outputs_by_order: ``{k: [B, C]}``, as returned by ``ResidualFusion.branch_outputs``;
        must contain order 1.
      targets: whatever ``loss_fn`` takes as its second argument (e.g. ``[B]`` integer
        labels or ``[B, C]`` regression targets).
      loss_fn: ``loss_fn(predictions [B, C], targets) -> scalar``, e.g. the batch mean of
        ``optax.softmax_cross_entropy_with_integer_labels``.
      penalty: the weight (≥ 0) of the L2 penalty on the interaction outputs; a traced
        scalar too (e.g. a weight scheduled inside ``jax.jit``), unchecked.

    Returns:
      The scalar loss.

    References:
      Wörtwein, Sheeber, Allen, Cohn and Morency, "Beyond Additive Fusion: Learning
      Non-Additive Multimodal Interactions", Findings of EMNLP 2022.
    """
    name = "residual_loss"
    outs = _sorted_orders(outputs_by_order, name)
    _check_batched(outs, name)
    penalty = python_scalar(penalty)
    traced = isinstance(penalty, jax.core.Tracer)  # e.g. a weight scheduled inside jit
    if not traced:
        check_real(penalty, "penalty", name, bound=">= 0")
    lower = jnp.zeros_like(outs[0])  # [B, C], the sum of the orders below k
    total = jnp.zeros((), outs[0].dtype)
    for out in outs:
        total = total + jnp.asarray(loss_fn(jax.lax.stop_gradient(lower) + out, targets))
        lower = lower + out
    if (traced or penalty) and len(outs) > 1:
        total = total + penalty * sum(jnp.mean(jnp.square(out)) for out in outs[1:])
    return total


def interaction_share(outputs_by_order: Mapping[int, jax.Array]) -> jax.Array:
    """The share of the output variance over the batch that the interaction branches carry.

    With ``u = f^(1)`` the unimodal sum and ``v = Σ_{k≥2} f^(k)`` the interaction sum,

        share = V(v) / (V(u) + V(v)),   V(z) = Σ_c Var_b z[b, c],

    the variance over the batch summed over the C outputs. It is 0 for a model whose
    interaction branches are constant, 1 for one whose unimodal sum is, and does not
    depend on the covariance of ``u`` and ``v`` (so it is in [0, 1]); 0 when neither
    varies.

    Args:
      outputs_by_order: ``{k: [B, C]}``, as returned by ``ResidualFusion.branch_outputs``
        (any leading dims stand for the batch); must contain order 1.

    Returns:
      A scalar in [0, 1].
    """
    outs = _sorted_orders(outputs_by_order, "interaction_share")
    _check_batched(outs, "interaction_share")
    unimodal = outs[0]
    interaction = sum(outs[1:], start=jnp.zeros_like(unimodal))
    batch_axes = tuple(range(unimodal.ndim - 1))

    def variance(z: jax.Array) -> jax.Array:
        return jnp.sum(jnp.var(z, axis=batch_axes))

    v_uni, v_int = variance(unimodal), variance(interaction)
    total = v_uni + v_int
    return jnp.where(total > 0, v_int / jnp.where(total > 0, total, 1.0), 0.0)
