"""Exact EMAP sums of a split MLP head over all N² pairs, fused in one Pallas kernel.

For two modalities whose head is ``g(u_i + v_j)`` (``u``, ``v``: the per-modality parts
of an MLP's first layer, see ``_mlp_head``), the plain blocked pass materializes, for
every block of rows, the ``[B, N, H]`` activations of each layer in device memory
and reads them back for the next matmul: on a GPU the pass is bound by memory
traffic, not by the matmuls. This kernel keeps a pair's activations on chip: a
program owns a block of rows ``i``, walks over the columns ``j`` in tiles, and for
each row adds ``u_i`` to the tile's ``v_j``, applies the activation and multiplies by
the next weight, layer after layer, writing only the ``C`` outputs' row sums and
column sums. Each program's column sums are summed afterwards, in a fixed order, so
results are deterministic; they take ``programs · N · max(C, 16)`` floats of device
memory, so the number of programs is bounded (``MAX_PROGRAMS``): the memory stays
O(N · C), never that of the N² grid.

Every in-kernel array has power-of-two sides (Triton's requirement): the widths are
zero-padded, which changes nothing (a padded unit is ``act(0)`` times a zero row of
the next weight), and padded pairs are masked out of the sums.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from mmfuse.interactions._exact import pairwise_sum, saturating_add

# Each step pairs a few rows with a tile of columns: a [rows · cols, H] @ [H, H'] matmul.
DEFAULT_BLOCK_COLS = 64
DEFAULT_ROWS_PER_STEP = 2
# 8 warps for the default [128, H] @ [H, H'] step: a [128, 256] float32 accumulator is
# 128 registers per thread, where 4 warps would need 256 and spill.
DEFAULT_NUM_WARPS = 8
# The last hidden layer in slices of this many units: a 256 x 256 float32 weight alone
# (256 KB) would exceed an H100's 227 KB of shared memory.
DEFAULT_HIDDEN_CHUNK = 64
# Programs to aim for when choosing rows per program: a few per SM of a large GPU.
TARGET_PROGRAMS = 256
# Each program stores its own [N, C] column sums: more programs than this would make
# them a sizeable fraction of the N² grid the pass exists to avoid.
MAX_PROGRAMS = 1024
# Triton's dot needs every side to be at least 16.
MIN_DOT_SIDE = 16
# Software pipelining stages (Triton's num_stages). The weight slices are read inside the
# row loop, so each stage buffers all of them in shared memory: for the 2x128 -> 256 ->
# 256 -> 2 head, 3 stages (Pallas's default) need about 420 KB, 2 about 280 KB, 1 about
# 64 KB of an H100 / H200's 227 KB.
DEFAULT_NUM_STAGES = 1
# Columns per tile: each step holds a [rows_per_step · block_cols, H] tile on chip.
MAX_BLOCK_COLS = 1024
# Threads per block: warps of 32 threads, at most 1,024 threads.
MAX_NUM_WARPS = 32
# The kernel addresses its outputs with int32 offsets.
MAX_INDEX = 2**31 - 1


def _relu(x: jax.Array) -> jax.Array:
    """max(x, 0) that keeps NaN: Triton lowers ``jnp.maximum`` to a max that returns
    the number when one operand is NaN, which would hide a non-finite pair."""
    return jnp.where(x < 0, jnp.zeros_like(x), x)


# Activations whose Triton lowering already propagates NaN (no max or min inside).
_NAN_SAFE = (jnp.tanh, jax.nn.gelu, jax.nn.silu, jax.nn.sigmoid)


def _keep_nan(act: Callable[[jax.Array], jax.Array] | None) -> Callable | None:
    """``act`` in a form whose output is NaN where its input is: relu rewritten, any
    other activation but the known-safe ones guarded (e.g. relu6, a user's clip)."""
    if act is None or act in _NAN_SAFE:
        return act
    if act is jax.nn.relu:
        return _relu
    return lambda x: jnp.where(jnp.isnan(x), x, act(x))


def _padded(size: int, minimum: int = MIN_DOT_SIDE) -> int:
    """The next power of two ≥ ``max(size, minimum)``."""
    return max(minimum, 1 << max(size - 1, 0).bit_length())


def _pad_to(x: jax.Array, shape: Sequence[int]) -> jax.Array:
    """``x`` zero-padded at the end of each axis to ``shape``."""
    return jnp.pad(x, [(0, s - d) for d, s in zip(x.shape, shape, strict=True)])


def default_block_rows(num_rows: int) -> int:
    """Rows per program: a power of two giving about ``TARGET_PROGRAMS`` programs."""
    per_program = -(-num_rows // TARGET_PROGRAMS)
    return min(_padded(per_program, minimum=8), _padded(num_rows, minimum=1))


def _kernel(
    u_ref,
    v_ref,
    row_valid_ref,
    col_valid_ref,
    shift_ref,
    *refs,
    activations: tuple[Callable[[jax.Array], jax.Array] | None, ...],
    block_rows: int,
    block_cols: int,
    rows_per_step: int,
    num_col_blocks: int,
    hidden_chunk: int | None,
    compute_dtype: Any,
):
    """One program: its ``block_rows`` rows against every column, a tile at a time.

    Each step pairs ``rows_per_step`` rows with a tile of ``block_cols`` columns: one
    ``[R·T, H]`` matmul per layer, everything in between on chip.
    """
    num_layers = len(activations)
    layer_refs = refs[: 2 * num_layers]
    row_out, col_out, bad_out = refs[2 * num_layers :]
    row_out[...] = jnp.zeros(row_out.shape, jnp.float32)
    bad_out[...] = jnp.zeros(bad_out.shape, jnp.float32)
    shift = shift_ref[...]  # [Cp]

    def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(compute_dtype), kernel, preferred_element_type=jnp.float32)

    def head(x: jax.Array) -> jax.Array:  # [P, H] pairs' pre-activations -> [P, Cp] outputs
        last = num_layers - 1
        chunked = hidden_chunk is not None and num_layers >= 2
        for layer in range(last - 1 if chunked else last + 1):
            if activations[layer] is not None:
                x = activations[layer](x)
            x = dense(x, layer_refs[2 * layer][...]) + layer_refs[2 * layer + 1][...][None, :]
        if not chunked:
            return x
        # The last hidden layer and the output layer, a slice of the hidden units at a
        # time: each slice's weights ([H, h] and [h, Cp]) and activations ([P, h]) are
        # what must fit on chip, not the whole [H, H'] weight.
        hidden = last - 1
        if activations[hidden] is not None:
            x = activations[hidden](x)
        w_hidden, b_hidden = layer_refs[2 * hidden], layer_refs[2 * hidden + 1]
        w_out, b_out = layer_refs[2 * last], layer_refs[2 * last + 1]
        out = jnp.zeros((x.shape[0], w_out.shape[1]), jnp.float32)  # [P, Cp]
        for start in range(0, w_hidden.shape[1], hidden_chunk):
            units = pl.ds(start, hidden_chunk)
            y = dense(x, w_hidden[:, units]) + b_hidden[units][None, :]  # [P, h]
            if activations[last] is not None:
                y = activations[last](y)
            out = out + dense(y, w_out[units, :])
        return out + b_out[...][None, :]

    def column_block(jt, carry):
        start = pl.multiple_of(jt * block_cols, block_cols)
        v = v_ref[pl.ds(start, block_cols), :]  # [T, H]
        col_ok = col_valid_ref[pl.ds(start, block_cols)] > 0  # [T]

        def rows(step, col_sums):
            first = pl.multiple_of(step * rows_per_step, rows_per_step)
            u = u_ref[pl.ds(first, rows_per_step), :]  # [R, H]
            pairs = (u[:, None, :] + v[None, :, :]).reshape(-1, v.shape[1])  # [R·T, H]
            z = head(pairs).reshape(rows_per_step, block_cols, -1)  # [R, T, Cp]
            z = z - shift[None, None, :]
            row_ok = row_valid_ref[pl.ds(first, rows_per_step)] > 0  # [R]
            ok = jnp.logical_and(row_ok[:, None], col_ok[None, :])  # [R, T]
            # a pair is bad when any output is; padded output columns are sums of
            # zero weights, non-finite exactly when the real ones are
            zero, one = jnp.float32(0), jnp.float32(1)  # float32 also under x64
            nonfinite = jnp.sum(jnp.where(jnp.isfinite(z), zero, one), axis=2)  # [R, T]
            bad = jnp.where(jnp.logical_and(ok, nonfinite > 0), one, zero)  # [R, T]
            z = jnp.where(ok[:, :, None], z, 0.0)  # [R, T, Cp]
            row_out[pl.ds(first, rows_per_step), :] += jnp.sum(z, axis=1)
            bad_out[pl.ds(first, rows_per_step)] += jnp.sum(bad, axis=1)
            return col_sums + jnp.sum(z, axis=0)

        zeros = jnp.zeros((block_cols, shift.shape[0]), jnp.float32)
        steps = block_rows // rows_per_step
        col_out[pl.ds(start, block_cols), :] = jax.lax.fori_loop(0, steps, rows, zeros)
        return carry

    jax.lax.fori_loop(0, num_col_blocks, column_block, 0)


def fused_pair_sums(
    u: jax.Array,
    v: jax.Array,
    layers: Sequence[tuple[jax.Array, jax.Array]],
    activations: Sequence[Callable[[jax.Array], jax.Array] | None],
    shift: jax.Array,
    *,
    compute_dtype: Any = jnp.float32,
    block_rows: int | None = None,
    block_cols: int = DEFAULT_BLOCK_COLS,
    rows_per_step: int = DEFAULT_ROWS_PER_STEP,
    hidden_chunk: int | None = DEFAULT_HIDDEN_CHUNK,
    num_warps: int | None = DEFAULT_NUM_WARPS,
    num_stages: int | None = DEFAULT_NUM_STAGES,
    interpret: bool | None = None,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Row and column sums of ``g(u_i + v_j) - shift`` over all pairs, and the bad count.

    ``g(x)`` applies, for each layer l, ``activations[l]`` (``None``: none) and then
    ``x @ kernel_l + bias_l``. The result has the form of ``exact_sums`` for M = 2.

    Args:
      u: ``[N_0, H]``, the first modality's parts (rows of the pair grid).
      v: ``[N_1, H]``, the second modality's parts (columns).
      layers: ``(kernel [H_l, H_{l+1}], bias [H_{l+1}])`` per layer, the last one
        ending at the C outputs.
      activations: one per layer, applied before it.
      shift: ``[C]``, subtracted from every output before summing.
      compute_dtype: the matmul operands' dtype (accumulation is float32).
      block_rows: rows per program, a power of two and a multiple of
        ``rows_per_step`` (default: a power of two giving about ``TARGET_PROGRAMS``
        programs).
      block_cols: columns per tile, a power of two.
      rows_per_step: rows paired with a tile at once, a power of two; each matmul
        has ``rows_per_step · block_cols`` ≥ 16 rows.
      hidden_chunk: the last hidden layer's units computed at a time, a power of two
        (``None``: all at once); with two or more layers, only ``[H, h]`` and
        ``[h, C]`` slices of the last two weights need to be on chip at once.
      num_warps, num_stages: Triton's launch parameters (GPU only): warps per
        program, a power of two up to 32; software-pipelining stages, each buffering
        the weights in shared memory (default 1, see ``DEFAULT_NUM_STAGES``).
      interpret: run the kernel with the Pallas interpreter (default: off a GPU).

    Returns:
      ``((S_0 [N_0, C], S_1 [N_1, C]), count)``: float32 sums of deviations and the
      number of pairs with a non-finite output (int32, saturating).
    """
    num_rows, num_cols = u.shape[0], v.shape[0]
    num_outputs = shift.shape[0]
    for name, x in (("first modality", u), ("second modality", v)):
        if x.dtype == jnp.float64:
            raise ValueError(
                f"emap_model: kernel='pallas' computes in float32 (or bf16) but the "
                f"{name}'s first-layer parts are float64; use kernel='xla' for float64"
            )
    block_cols = _option_int("block_cols", block_cols)
    rows_per_step = _option_int("rows_per_step", rows_per_step)
    # None: the default (as before these became checked ints)
    num_warps = _option_int("num_warps", DEFAULT_NUM_WARPS if num_warps is None else num_warps)
    num_stages = _option_int("num_stages", DEFAULT_NUM_STAGES if num_stages is None else num_stages)
    tiles = [("block_cols", block_cols), ("rows_per_step", rows_per_step)]
    tiles.append(("num_warps", num_warps))
    if hidden_chunk is not None:
        hidden_chunk = _option_int("hidden_chunk", hidden_chunk)
        tiles.append(("hidden_chunk", hidden_chunk))
    if block_rows is not None:
        block_rows = _option_int("block_size", block_rows)
        tiles.append(("block_size (rows per program)", block_rows))
    for label, value in tiles:
        if value < 1 or value & (value - 1):
            raise ValueError(f"emap_model: {label} must be a power of two, got {value}")
    if num_warps > MAX_NUM_WARPS:
        raise ValueError(
            f"emap_model: num_warps must be at most {MAX_NUM_WARPS} (1,024 threads), "
            f"got {num_warps}"
        )
    if num_stages < 1:
        raise ValueError(f"emap_model: num_stages must be at least 1, got {num_stages}")
    if block_cols > MAX_BLOCK_COLS:  # a [rows_per_step · block_cols, H] tile per step
        raise ValueError(
            f"emap_model: block_cols must be at most {MAX_BLOCK_COLS}, got {block_cols}"
        )
    if rows_per_step * block_cols < MIN_DOT_SIDE:
        raise ValueError(
            f"emap_model: rows_per_step * block_cols must be at least {MIN_DOT_SIDE} (the "
            f"matmul's rows), got {rows_per_step} * {block_cols}"
        )
    if block_rows is None:
        block_rows = max(default_block_rows(num_rows), rows_per_step)
    elif block_rows % rows_per_step:
        raise ValueError(
            f"emap_model: block_size (rows per program) must be a multiple of "
            f"rows_per_step={rows_per_step}, got {block_rows}"
        )
    elif (programs := -(-num_rows // block_rows)) > MAX_PROGRAMS:
        least = max(_padded(-(-num_rows // MAX_PROGRAMS), minimum=1), rows_per_step)
        raise ValueError(
            f"emap_model: block_size={block_rows} (rows per program) gives {programs} "
            f"programs for N = {num_rows}, each storing its [N, C] column sums; the Pallas "
            f"kernel takes at most {MAX_PROGRAMS}: block_size >= {least}, or None for the "
            "default"
        )
    if interpret is None:
        interpret = jax.default_backend() != "gpu"

    # pad every width to a power of two, and the pair grid to whole tiles
    widths = [u.shape[1], *(kernel.shape[1] for kernel, _ in layers)]
    padded = [_padded(w) for w in widths]
    rows_pad = -(-num_rows // block_rows) * block_rows
    cols_pad = -(-num_cols // block_cols) * block_cols
    f32 = jnp.float32
    u = _pad_to(u.astype(f32), (rows_pad, padded[0]))
    v = _pad_to(v.astype(f32), (cols_pad, padded[0]))
    operands = []
    for (kernel, bias), d_in, d_out in zip(layers, padded[:-1], padded[1:], strict=True):
        operands.append(_pad_to(kernel.astype(compute_dtype), (d_in, d_out)))
        operands.append(_pad_to(bias.astype(f32), (d_out,)))
    row_valid = (jnp.arange(rows_pad) < num_rows).astype(f32)
    col_valid = (jnp.arange(cols_pad) < num_cols).astype(f32)
    shift_pad = _pad_to(shift.astype(f32), (padded[-1],))

    if hidden_chunk is not None and len(layers) >= 2:
        hidden_chunk = min(hidden_chunk, padded[-2])  # [-2]: the last hidden width
    num_programs = rows_pad // block_rows
    if num_programs * cols_pad * padded[-1] > MAX_INDEX:
        raise ValueError(
            f"emap_model: kernel='pallas' would store {num_programs} programs' column sums "
            f"of {cols_pad} x {padded[-1]} floats, beyond the kernel's int32 offsets; use a "
            "larger block_size (fewer programs), or kernel='xla'"
        )
    whole = lambda a: pl.BlockSpec(a.shape, lambda p: (0,) * a.ndim)  # noqa: E731
    in_specs = [
        pl.BlockSpec((block_rows, padded[0]), lambda p: (p, 0)),  # u: the program's rows
        whole(v),
        pl.BlockSpec((block_rows,), lambda p: (p,)),
        whole(col_valid),
        whole(shift_pad),
        *(whole(a) for a in operands),
    ]
    out_shape = (
        jax.ShapeDtypeStruct((rows_pad, padded[-1]), f32),  # row sums
        jax.ShapeDtypeStruct((num_programs, cols_pad, padded[-1]), f32),  # column partials
        jax.ShapeDtypeStruct((rows_pad,), f32),  # non-finite pairs per row
    )
    out_specs = (
        pl.BlockSpec((block_rows, padded[-1]), lambda p: (p, 0)),
        pl.BlockSpec((None, cols_pad, padded[-1]), lambda p: (p, 0, 0)),
        pl.BlockSpec((block_rows,), lambda p: (p,)),
    )
    kernel = functools.partial(
        _kernel,
        activations=tuple(_keep_nan(a) for a in activations),
        block_rows=block_rows,
        block_cols=block_cols,
        rows_per_step=rows_per_step,
        num_col_blocks=cols_pad // block_cols,
        hidden_chunk=hidden_chunk,
        compute_dtype=compute_dtype,
    )
    rows, col_partials, bad = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(num_programs,),
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="emap_mlp_pair_sums",
    )(u, v, row_valid, col_valid, shift_pad, *operands)
    cols = pairwise_sum(col_partials)  # [cols_pad, Cp], summed in a fixed order
    # each row's count is at most N_1 < 2^24, exact in float32; their total may not fit
    count = jax.lax.reduce(
        bad[:num_rows].astype(jnp.int32), jnp.int32(0), saturating_add, dimensions=(0,)
    )
    sums = (rows[:num_rows, :num_outputs], cols[:num_cols, :num_outputs])
    return sums, count


def _option_int(label: str, value: Any) -> int:
    """A kernel option as a Python int (NumPy integers too), or a ValueError naming it."""
    if isinstance(value, bool):
        raise ValueError(f"emap_model: {label} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"emap_model: {label} must be an int, got {value!r}") from None
