"""EMAP: the projection of a multimodal model onto additive functions of its modalities.

For M modalities with N paired examples ``x^i = (x_0^i, ..., x_{M-1}^i)``, EMAP evaluates
``f`` on every cross pair, i.e. under the product of the modalities' empirical marginals,
and keeps the best additive approximation:

    f̃(x^i) = Σ_m E[f | x_m = x_m^i] − (M − 1)·E[f],

where ``E[f | x_m = x_m^i]`` averages ``f`` over all N^(M-1) choices of the other
modalities' examples and ``E[f]`` over all N^M pairs. For M = 2 and the logit grid
``F[i, j] = f(a_i, b_j)``: ``f̃_i = mean_j F[i, j] + mean_j F[j, i] − mean_{j,k} F[j, k]``.
``f̃`` is the least-squares additive fit to ``f`` on the grid: it leaves additive
functions unchanged, is linear in ``f`` and idempotent. A model whose accuracy drops
under EMAP relies on cross-modal interactions.

References:
  Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
  harder to tell than you might think!", EMNLP 2020.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mmfuse.interactions._checks import (
    MAX_INDEX,
    ModelFn,
    accumulation_dtype,
    call_flat,
    check_inputs,
    check_mode,
    elements_per_example,
    output_spec,
)
from mmfuse.interactions._exact import (
    BlockFn,
    default_block_size,
    exact_sums,
    saturating_add,
)
from mmfuse.interactions._monte_carlo import sampled_moments


class EmapDecomposition(NamedTuple):
    """What EMAP computes, for N examples, M modalities and outputs of shape ``[*out]``.

    ``*out`` is ``fn``'s trailing output shape: ``[C]`` for logits ``[n, C]``, empty for
    ``[n]``. Values are float32 (float64 for float64 outputs), whatever ``fn``'s dtype.

    Attributes:
      original: ``[N, *out]``, ``f(x^i)`` on the paired examples.
      marginals: M arrays ``[N, *out]``, ``E[f | x_m = x_m^i]``: ``f`` averaged over the
        other modalities' examples (exact, or estimated in Monte-Carlo mode).
      grand_mean: ``[*out]``, ``E[f]`` over all cross pairs.
      projected: ``[N, *out]``, ``f̃(x^i) = Σ_m marginals[m] − (M − 1)·grand_mean``.
      marginal_stderr: Monte-Carlo mode: M arrays ``[N, *out]``, the standard error of
        each marginal estimate; ``None`` when exact.
      grand_mean_stderr: Monte-Carlo mode: ``[*out]``; ``None`` when exact.
      projected_stderr: Monte-Carlo mode: ``[N, *out]``; ``None`` when exact.
      num_nonfinite: int32 scalar, the number of evaluated pairs whose output has a
        non-finite entry (saturates at 2^31 − 1). Outside ``jax.jit`` a positive count
        raises ``ValueError``; under ``jax.jit`` the non-finite values propagate into
        the results and this count tells how many pairs produced them.
    """

    original: jax.Array
    marginals: tuple[jax.Array, ...]
    grand_mean: jax.Array
    projected: jax.Array
    marginal_stderr: tuple[jax.Array, ...] | None
    grand_mean_stderr: jax.Array | None
    projected_stderr: jax.Array | None
    num_nonfinite: jax.Array

    @property
    def residual(self) -> jax.Array:
        """``[N, *out]``, the interaction residual ``f − f̃``: what additivity cannot explain."""
        return self.original - self.projected


def emap_decompose(
    fn: ModelFn,
    inputs: Any,
    *,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> EmapDecomposition:
    """EMAP of ``fn`` at N paired examples, with its parts (Hessel and Lee, EMNLP 2020).

    Exact mode (the default) evaluates ``fn`` on all N^M cross pairs in one blocked
    pass: each block is a ``jax.vmap`` of ``fn`` over B "rows" (one example of each of
    modalities 0..M-2) against all N examples of the last modality, so ``fn`` always
    sees batches of N and whatever it computes from the last modality alone is shared
    by the block. The pass accumulates every modality's marginal sums at once (row sums,
    column sums and hence the total), in float32 (bf16 / f16 outputs included), as
    deviations from the mean original output, summed pairwise over a block's rows and
    with Kahan compensation across blocks; memory is O(M·N·C) plus one block (B·N·C
    outputs and ``fn``'s activations for B·N pairs), never the N^M grid.

    Monte-Carlo mode (``num_samples=K``) draws, for each example i and modality m, K
    partners whose other modalities' indices are independent and uniform over [N]:
    ``E[f | x_m = x_m^i]`` is estimated without bias by the mean over the K draws, with
    standard error ``s / √K``; ``E[f]`` by the mean of all draws. Cost: N·K·M
    evaluations, for N where N^M is too many.

    Works under ``jax.jit`` (``fn`` and the sizes are static; ``key`` may be traced).
    Each call compiles the whole computation as one program, tracing ``fn`` afresh and
    caching nothing about it; to evaluate many checkpoints of one model, jit a function
    of the parameters instead, e.g. ``jax.jit(lambda p, xs: emap(partial(apply, p), xs))``.

    Args:
      fn: ``fn(xs) -> [n, C]`` or ``[n]`` (any ``[n, *out]``): model outputs, typically
        logits, for a tuple ``xs`` of M batches ``[n, ...]``. Each example's output
        must depend only on that example.
      inputs: M arrays ``[N, ...]`` paired along axis 0 (M ≥ 2, N ≥ 2).
      block_size: exact mode: rows per block, each row being N pairs; Monte-Carlo
        mode: examples per block, each giving M·K pairs. Any positive int; the last
        block is padded. Default: blocks of about 2^25 (CPU) or 2^27 (GPU / TPU)
        input-plus-output elements.
      num_samples: K ≥ 2 to use Monte-Carlo mode; ``None`` for exact.
      key: a PRNG key, required with (and only with) ``num_samples``.

    Returns:
      An ``EmapDecomposition`` (stderr fields ``None`` in exact mode).

    Raises:
      ValueError: inputs that are not M ≥ 2 arrays with one leading size N ≥ 2; ``fn``
        returning anything but ``[n, ...]`` for a batch of n; non-finite outputs of
        ``fn`` (with the count of affected pairs; only outside ``jax.jit``); bad
        ``block_size`` / ``num_samples``, or ``num_samples`` without ``key``.

    Example:
      >>> grid = jnp.array([[-1.3, 0.3, -0.2], [0.8, 3.0, 1.1], [1.1, -0.1, 0.7]])
      >>> idx = jnp.arange(3)
      >>> parts = emap_decompose(lambda xs: grid[xs[0], xs[1]], (idx, idx))
      >>> jnp.round(parts.projected, 6)  # Hessel and Lee (2020), Appendix G
      Array([-0.8,  2.1,  0.5], dtype=float32)

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    return decompose(fn, inputs, block_size=block_size, num_samples=num_samples, key=key)


# ``pair_sums(xs, shift, dtype, block_size) -> (sums, count)``: exact mode's pass over the
# pairs, in the form of ``exact_sums`` (a fused kernel can stand in for the blocked vmap)
PairSums = Callable[
    [tuple[jax.Array, ...], jax.Array, Any, "int | None"],
    tuple[tuple[jax.Array, ...], jax.Array],
]


def decompose(
    fn: ModelFn,
    inputs: Any,
    *,
    block_size: int | None,
    num_samples: int | None,
    key: jax.Array | None,
    pair_sums: PairSums | None = None,
    name: str = "emap",
) -> EmapDecomposition:
    """``emap_decompose``, with exact mode's pass over the pairs optionally replaced."""
    xs = check_inputs(inputs, name, auto_axes=True)
    num_modalities, n = len(xs), xs[0].shape[0]
    block_size, num_samples = check_mode(block_size, num_samples, key, name)

    # rows are indexed in int32: N^(M-1) plus at most one block of N^(M-1) rows of padding
    if num_samples is None and 2 * n ** (num_modalities - 1) > MAX_INDEX:
        raise ValueError(
            f"{name}: exact EMAP over N^M = {n}^{num_modalities} pairs is too many to index; "
            "use Monte-Carlo mode (num_samples=..., key=...)"
        )

    spec = output_spec(fn, xs, name)
    # One XLA program per call: a jit of a fresh closure, so that an eager call is not
    # dispatched op by op and nothing about fn outlives the call; under an outer
    # jax.jit it is inlined.
    compute = functools.partial(
        _decompose,
        fn,
        out_shape=tuple(spec.shape[1:]),
        dtype=accumulation_dtype(spec.dtype),
        block_size=block_size,
        num_samples=num_samples,
        pair_sums=pair_sums,
        name=name,
    )
    parts = jax.jit(compute)(xs, key)
    _raise_if_nonfinite(parts, n, num_modalities, num_samples, name)
    return parts


def _decompose(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    key: jax.Array | None,
    *,
    out_shape: tuple[int, ...],
    dtype: Any,
    block_size: int | None,
    num_samples: int | None,
    pair_sums: PairSums | None,
    name: str,
) -> EmapDecomposition:
    """The computation of ``emap_decompose`` on checked arguments."""
    num_modalities, n = len(xs), xs[0].shape[0]
    original = call_flat(fn, xs, n, dtype, name)  # [N, C]
    # Sums are taken of deviations from the mean original output: the projection commutes
    # with constant shifts, and small deviations lose less to rounding than raw logits.
    shift = jnp.mean(original, axis=0)  # [C]
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))
    pair_elements = elements_per_example(xs) + math.prod(out_shape)

    if num_samples is None:
        if pair_sums is None:
            pair_sums = functools.partial(blocked_sums, fn, pair_elements=pair_elements, name=name)
        sums, num_nonfinite = pair_sums(xs, shift, dtype, block_size)  # M x [N, C]
        marginals, grand = _exact_means(sums, n)
        marginal_se = grand_se = projected_se = None
    else:
        marginals, grand, num_nonfinite, (marginal_se, grand_se, projected_se) = _sampled(
            fn, xs, shift, num_samples, key, block_size, pair_elements, name
        )
        # the paired examples themselves need not be among the draws: count them too
        bad_original = ~jnp.all(jnp.isfinite(original), axis=-1)  # [N]
        num_nonfinite = saturating_add(num_nonfinite, jnp.sum(bad_original, dtype=jnp.int32))

    projected = sum(marginals) - (num_modalities - 1) * grand[None, :] + shift[None, :]
    marginals = tuple(m + shift[None, :] for m in marginals)
    grand = grand + shift

    def shaped(a: jax.Array | None, batched: bool = True) -> jax.Array | None:
        if a is None:
            return None
        return a.reshape((n, *out_shape) if batched else out_shape)

    return EmapDecomposition(
        original=shaped(original),
        marginals=tuple(shaped(m) for m in marginals),
        grand_mean=shaped(grand, batched=False),
        projected=shaped(projected),
        marginal_stderr=None if marginal_se is None else tuple(shaped(s) for s in marginal_se),
        grand_mean_stderr=shaped(grand_se, batched=False),
        projected_stderr=shaped(projected_se),
        num_nonfinite=num_nonfinite,
    )


def emap(
    fn: ModelFn,
    inputs: Any,
    *,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """The EMAP projection ``Σ_m E[f | x_m] − (M−1)·E[f]`` at N paired examples.

    See ``emap_decompose`` for the method, the arguments and the errors; this returns
    its ``projected`` field.

    Args:
      fn: ``fn(xs) -> [n, C]`` or ``[n]`` for a tuple ``xs`` of M batches ``[n, ...]``.
      inputs: M arrays ``[N, ...]`` paired along axis 0.
      block_size: rows (exact) or examples (Monte-Carlo) per block; automatic by default.
      num_samples: K partners per example and modality for Monte-Carlo mode.
      key: a PRNG key, with ``num_samples``.

    Returns:
      ``[N, C]`` (or ``[N]``): the additive projection of ``fn`` at each example.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    return emap_decompose(
        fn, inputs, block_size=block_size, num_samples=num_samples, key=key
    ).projected


def blocked_sums(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    shift: jax.Array,
    dtype: Any,
    block_size: int | None,
    *,
    pair_elements: int,
    name: str,
    block_fn: BlockFn | None = None,
) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Exact mode's pass: ``exact_sums`` with a default block size."""
    num_modalities, n = len(xs), xs[0].shape[0]
    num_rows = n ** (num_modalities - 1)
    if block_size is None:
        block_size = default_block_size(num_rows, n * pair_elements)
    block_size = min(block_size, num_rows)
    return exact_sums(fn, xs, shift, block_size, dtype, name, block_fn)


def _exact_means(sums: tuple[jax.Array, ...], n: int) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Marginals ``M x [N, C]`` and grand mean ``[C]`` from the marginal sums of N^M pairs."""
    num_modalities = len(sums)
    # every S_m sums the same N^M values: average their totals for E[f]
    total = sum(jnp.sum(s, axis=0) for s in sums) / num_modalities  # [C]
    marginals = tuple(s / float(n) ** (num_modalities - 1) for s in sums)  # M x [N, C]
    # counts as Python floats: N^M overflows the int32 that JAX would make of an int
    return marginals, total / float(n) ** num_modalities


def _sampled(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    shift: jax.Array,
    num_samples: int,
    key: jax.Array,
    block_size: int | None,
    pair_elements: int,
    name: str,
) -> tuple[tuple[jax.Array, ...], jax.Array, jax.Array, tuple[Any, jax.Array, jax.Array]]:
    """Monte-Carlo marginals and grand mean of ``f - shift``, the bad count, standard errors."""
    num_modalities, n = len(xs), xs[0].shape[0]
    if block_size is None:
        block_size = default_block_size(n, num_modalities * num_samples * pair_elements)
    block_size = min(block_size, n)
    means, variances, num_nonfinite = sampled_moments(
        fn, xs, shift, num_samples, key, block_size, shift.dtype, name
    )  # [M, N, C] each
    grand = jnp.mean(means, axis=(0, 1))  # [C], the mean of all M·N·K draws
    # Each (m, i) estimate is an independent mean of K draws, of variance var / K. The
    # grand mean averages all M·N of them, so it holds 1/(M·N) of each marginal estimate:
    # Var(Σ_m marg_m[i] − (M−1)·grand)
    #   = (1 − 2(M−1)/(M·N))·Σ_m Var(marg_m[i]) + (M−1)²·Var(grand).
    sq_se = variances / num_samples  # [M, N, C]
    grand_var = jnp.sum(sq_se, axis=(0, 1)) / float(num_modalities * n) ** 2  # [C]
    covariance_share = 2 * (num_modalities - 1) / (num_modalities * n)
    projected_var = (1 - covariance_share) * jnp.sum(sq_se, axis=0) + (
        num_modalities - 1
    ) ** 2 * grand_var[None, :]  # [N, C]
    stderr = (tuple(jnp.sqrt(sq_se)), jnp.sqrt(grand_var), jnp.sqrt(projected_var))
    return tuple(means), grand, num_nonfinite, stderr


def _raise_if_nonfinite(
    parts: EmapDecomposition, n: int, num_modalities: int, num_samples: int | None, name: str
) -> None:
    """Raises when ``fn`` produced non-finite outputs, or finite ones whose sums
    overflowed; a no-op while tracing (jit)."""
    count = parts.num_nonfinite
    if isinstance(count, jax.core.Tracer):
        return
    count = int(count)
    if count == 0:
        projected = parts.projected
        if not bool(jnp.all(jnp.isfinite(projected))):
            raise ValueError(
                f"{name}: fn's outputs are finite but their sums over the pairs overflowed "
                f"{projected.dtype} (the largest finite |original output| is "
                f"{float(jnp.max(jnp.abs(parts.original))):.3g}); rescale the outputs, or "
                "use float64 (jax_enable_x64)"
            )
        return
    if num_samples is None:
        evaluated = f"{n}^{num_modalities} = {n**num_modalities} cross pairs"
    else:
        evaluated = f"{num_modalities * n * num_samples} sampled pairs and {n} paired examples"
    bound = "at least " if count == jnp.iinfo(jnp.int32).max else ""
    raise ValueError(
        f"{name}: fn returned non-finite outputs (nan or inf) for {bound}{count} of the "
        f"{evaluated}; EMAP averages over all of them"
    )
