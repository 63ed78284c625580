"""Exact EMAP sums: one blocked pass over all N^M cross pairs, never holding the grid.

The index space ``(i_0, ..., i_{M-1}) ∈ [N]^M`` is laid out as N^(M-1) rows (modalities
0..M-2, flattened with modality 0 slowest) by N columns (the last modality). A block
of B rows is one ``jax.vmap`` of ``fn`` over the rows, each row pairing one example of
modalities 0..M-2 with all N examples of the last modality: ``[B, N, C]`` outputs.
From each block the pass accumulates, for every modality m, the marginal sums
``S_m[i] = Σ_{pairs with i_m = i} f`` (the last modality's are column sums, the
others are row sums scattered to their index), so row sums, column sums and the
total come out of the same pass. Memory is O(M·N·C) for the sums plus one block.

Accuracy in float32: outputs are summed as deviations from a reference (the mean
original output), over a block's rows by a balanced tree of adds, and into the running
sums with Kahan compensation, so the error does not grow with the number of blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mmfuse.interactions._checks import ModelFn, call_flat

BlockFn = Callable[[tuple[jax.Array, ...], jax.Array], jax.Array]

# Default block: about this many array elements (inputs plus outputs per pair, times
# the pairs in a block) before the model's own activations: 128 MiB of float32 on CPU,
# where smaller blocks stay nearer the caches; 512 MiB on accelerators, where each loop
# iteration has a fixed launch cost that larger blocks amortize.
CPU_BLOCK_ELEMENTS = 1 << 25
ACCELERATOR_BLOCK_ELEMENTS = 1 << 27


def default_block_size(num_rows: int, row_elements: int, budget: int | None = None) -> int:
    """Rows per block: within ``budget`` elements, then evened out to waste little padding."""
    if budget is None:
        cpu = jax.default_backend() == "cpu"
        budget = CPU_BLOCK_ELEMENTS if cpu else ACCELERATOR_BLOCK_ELEMENTS
    block = max(1, min(num_rows, budget // max(row_elements, 1)))
    num_blocks = -(-num_rows // block)
    return -(-num_rows // num_blocks)


def kahan_add(total: jax.Array, comp: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of compensated (Kahan) summation; the sum is ``total - comp``.

    ``comp`` carries the low-order bits that ``total`` could not hold, so the error
    over many blocks stays at a few ulps instead of growing with the number of blocks.
    """
    y = x - comp
    t = total + y
    return t, (t - total) - y


def pairwise_sum(x: jax.Array) -> jax.Array:
    """``Σ_b x[b]`` over the leading axis by halving: a balanced tree of elementwise adds.

    Rounding error grows like log2(B) rather than B, and the adds are plain vectorized
    elementwise ops, which XLA fuses with the producer on every backend (its reduction
    over a leading axis is slow on CPU).
    """
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        pairs = x[:half] + x[half : 2 * half]
        x = jnp.concatenate([pairs, x[2 * half :]]) if x.shape[0] % 2 else pairs
    return x[0]


def saturating_add(count: jax.Array, x: jax.Array) -> jax.Array:
    """``count + x`` for non-negative int32 values, capped at 2^31 - 1 instead of wrapping."""
    return count + jnp.minimum(x, jnp.iinfo(jnp.int32).max - count)


def exact_sums(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    shift: jax.Array,
    block_size: int,
    dtype: Any,
    name: str,
    block_fn: BlockFn | None = None,
) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Marginal sums of ``f - shift`` over all N^M cross pairs, and the non-finite count.

    Args:
      fn: ``fn(xs) -> [n, ...]`` for a tuple of M batches ``[n, ...]``.
      xs: M arrays ``[N_m, ...]``; usually all N_m = N, but the pass covers any
        product ``[N_0] × ... × [N_{M-1}]`` (a device's shard of modality 0 against
        all examples of the others, for instance).
      shift: ``[C]``, subtracted from every output before summing (sums of deviations
        from a reference lose less to cancellation than sums of raw logits).
      block_size: B, rows (combinations of modalities 0..M-2) per block.
      dtype: the accumulation dtype.
      name: for error messages.
      block_fn: ``block_fn(rows, last) -> [B, N, C]``, the outputs of a block from its
        rows (M-1 arrays ``[B, ...]``) and the last modality ``[N_{M-1}, ...]``; for a
        model that can share work across a row. Default: ``fn`` vmapped over the rows.

    Returns:
      ``(S_0, ..., S_{M-1})``, each ``[N_m, C]`` with ``S_m[i] = Σ_{i_m = i} (f - shift)``,
      and the number of pairs with a non-finite output (int32, saturating).
    """
    sizes = [x.shape[0] for x in xs]
    n = sizes[-1]
    num_outputs = shift.shape[0]
    num_rows = math.prod(sizes[:-1])
    num_blocks = -(-num_rows // block_size)
    # row r holds i_m = (r // Π_{m<k<M-1} N_k) % N_m for m < M-1
    strides = [math.prod(sizes[m + 1 : -1]) for m in range(len(xs) - 1)]
    last = xs[-1]

    def row(*row_xs: jax.Array) -> jax.Array:
        # one example of each of modalities 0..M-2 against all N examples of the last;
        # anything fn computes from the last modality alone is shared by the whole block
        paired = (*(jnp.broadcast_to(x[None], (n, *x.shape)) for x in row_xs), last)
        return call_flat(fn, paired, n, dtype, name)  # [N, C]

    def block(b, carry):
        sums, comps, count = carry
        rows = b * block_size + jnp.arange(block_size)  # [B]
        valid = rows < num_rows  # the last block is padded
        rows = jnp.minimum(rows, num_rows - 1)
        idx = [(rows // s) % size for s, size in zip(strides, sizes, strict=False)]  # M-1 x [B]
        rows_xs = tuple(x[i] for x, i in zip(xs, idx, strict=False))  # M-1 x [B, ...]
        if block_fn is None:
            out = jax.vmap(row)(*rows_xs)  # [B, N, C]
        else:
            out = block_fn(rows_xs, last).reshape(block_size, n, num_outputs).astype(dtype)
        bad = jnp.logical_and(~jnp.all(jnp.isfinite(out), axis=-1), valid[:, None])  # [B, N]
        count = saturating_add(count, jnp.sum(bad, dtype=jnp.int32))
        out = jnp.where(valid[:, None, None], out - shift[None, None, :], 0)  # [B, N, C]
        row_sums = jnp.sum(out, axis=1)  # [B, C]
        deltas = [
            jnp.zeros((size, num_outputs), dtype).at[i].add(row_sums)
            for i, size in zip(idx, sizes, strict=False)
        ]
        deltas.append(pairwise_sum(out))  # [N, C] column sums
        new = [kahan_add(s, c, d) for s, c, d in zip(sums, comps, deltas, strict=True)]
        return tuple(s for s, _ in new), tuple(c for _, c in new), count

    zeros = tuple(jnp.zeros((size, num_outputs), dtype) for size in sizes)
    sums, comps, count = jax.lax.fori_loop(
        0, num_blocks, block, (zeros, zeros, jnp.zeros((), jnp.int32))
    )
    return tuple(s - c for s, c in zip(sums, comps, strict=True)), count
