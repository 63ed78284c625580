"""EMAP over inputs sharded across devices: every device pairs its own rows with all columns.

The N paired examples are split by rows over D devices of a ``jax.sharding.Mesh``
(``N = D·n``). In exact mode device d holds examples ``d·n .. d·n + n − 1`` of
modality 0 and gathers the other modalities whole (``all_gather``, O(N·d_m) memory);
its blocked pass over ``[n] × [N]^(M−1)`` cross pairs gives the complete marginal sums
of its own modality-0 rows, and partial sums of every other modality, which a
``psum_scatter`` adds up and leaves sharded like the inputs. The grand total is a
``psum``. Each pair is evaluated by exactly one device, so the result equals
single-device EMAP up to the order of float32 summation.

In Monte-Carlo mode device d estimates the marginals of its own n examples, drawing
their K partners per modality from all N examples (gathered), with an independent
key per device; the grand mean and its standard error are ``psum``s.

References:
  Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
  harder to tell than you might think!", EMNLP 2020.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
from mmfuse.interactions._emap import EmapDecomposition, _raise_if_nonfinite
from mmfuse.interactions._exact import (
    BlockFn,
    default_block_size,
    exact_sums,
    saturating_add,
)
from mmfuse.interactions._monte_carlo import sampled_moments

try:  # jax >= 0.6 exports shard_map at the top level
    _shard_map = jax.shard_map
except AttributeError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

# The model is arbitrary user code: its outputs are per-device values whatever the
# replication checker would infer, so the check (renamed across jax versions) is off.
_NO_CHECK = (
    {"check_vma": False}
    if "check_vma" in inspect.signature(_shard_map).parameters
    else {"check_rep": False}
)


def _row_axes(mesh: Mesh, axis_name: str | Sequence[str] | None, name: str) -> tuple[str, ...]:
    """The mesh axes the rows are split over (all of them by default), checked."""
    if not isinstance(mesh, Mesh):
        raise ValueError(f"{name}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    axes = mesh.axis_names if axis_name is None else axis_name
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    unknown = [a for a in axes if a not in mesh.axis_names]
    if unknown or not axes or len(set(axes)) != len(axes):
        raise ValueError(
            f"{name}: axis_name={axis_name!r} must name distinct axes of the mesh, whose "
            f"axes are {tuple(mesh.axis_names)}"
        )
    return axes


def sharded_emap_decompose(
    fn: ModelFn,
    inputs: Any,
    *,
    mesh: Mesh,
    axis_name: str | Sequence[str] | None = None,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> EmapDecomposition:
    """``emap_decompose`` with the N examples sharded by rows over the devices of ``mesh``.

    Exact mode evaluates the same N^M cross pairs as ``emap_decompose``, each on one
    device, and agrees with it up to float32 summation order. Monte-Carlo mode draws
    K partners per example and modality from all N examples, with a key per device,
    so its estimates are unbiased with the same standard errors as on one device
    (different draws, though, so not the same numbers).

    For a model that factorizes, pass the head and the encodings:
    ``sharded_emap_decompose(*model_fn(model, inputs), mesh=mesh)``; encoding is
    per example, so with sharded inputs it runs shard-locally too.

    Args:
      fn: ``fn(xs) -> [n, C]`` or ``[n]`` for a tuple ``xs`` of M batches ``[n, ...]``;
        each example's output must depend only on that example.
      inputs: M arrays ``[N, ...]`` paired along axis 0 (M ≥ 2), N a multiple of the
        number D of devices along ``axis_name``. Placed on the mesh sharded by rows
        (``NamedSharding(mesh, P(axis_name))``) if they are not already.
      mesh: the devices, e.g. ``jax.make_mesh((2, 4), ("data", "model"))``.
      axis_name: the mesh axis (or axes) the rows are split over; default all of them.
        Devices along the other axes hold copies and repeat the same work.
      block_size: rows (exact) or examples (Monte-Carlo) per block on each device;
        automatic by default.
      num_samples: K ≥ 2 for Monte-Carlo mode; ``None`` for exact.
      key: a PRNG key, required with (and only with) ``num_samples``.

    Returns:
      An ``EmapDecomposition`` whose ``[N, ...]`` fields are sharded by rows like the
      inputs and whose ``grand_mean`` is replicated.

    Raises:
      ValueError: as ``emap_decompose``; also a ``mesh`` that is not a ``Mesh``, an
        ``axis_name`` that is not one of its axes, or N not a multiple of D (pad or
        trim the examples: a padded copy would enter every other example's average).

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    return decompose(
        fn,
        check_inputs(inputs, "sharded_emap"),
        mesh=mesh,
        axis_name=axis_name,
        block_size=block_size,
        num_samples=num_samples,
        key=key,
        name="sharded_emap",
    )


def row_sharding(
    mesh: Mesh, axis_name: str | Sequence[str] | None, n: int, name: str
) -> NamedSharding:
    """``NamedSharding(mesh, P(axes))`` for N examples split by rows, checked."""
    axes = _row_axes(mesh, axis_name, name)
    num_devices = math.prod(mesh.shape[a] for a in axes)
    if n % num_devices:
        raise ValueError(
            f"{name}: N = {n} examples do not split evenly over the {num_devices} devices "
            f"of mesh axes {axes}; pad or trim N to a multiple of {num_devices}"
        )
    return NamedSharding(mesh, P(axes))


def decompose(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    *,
    mesh: Mesh,
    axis_name: str | Sequence[str] | None,
    block_size: int | None,
    num_samples: int | None,
    key: jax.Array | None,
    name: str,
    block_fn: BlockFn | None = None,
    block_elements: int = 0,
) -> EmapDecomposition:
    """``sharded_emap_decompose`` on checked inputs; ``block_fn`` as for ``exact_sums``
    (exact mode), with ``block_elements`` more values per pair for the block size."""
    rows = row_sharding(mesh, axis_name, xs[0].shape[0], name)
    axes = _row_axes(mesh, axis_name, name)
    num_modalities, n = len(xs), xs[0].shape[0]
    local = n // math.prod(mesh.shape[a] for a in axes)
    block_size, num_samples = check_mode(block_size, num_samples, key, name)
    if num_samples is None and 2 * local * n ** (num_modalities - 2) > MAX_INDEX:
        raise ValueError(
            f"{name}: exact EMAP over N^M = {n}^{num_modalities} pairs is too many to index "
            "per device; use Monte-Carlo mode (num_samples=..., key=...)"
        )

    spec = output_spec(fn, xs, name)
    xs = tuple(jax.device_put(x, rows) for x in xs)
    out_shape = tuple(spec.shape[1:])
    compute = functools.partial(
        _local,
        fn,
        axes=axes,
        sizes=tuple(mesh.shape[a] for a in axes),
        n=n,
        out_shape=out_shape,
        dtype=accumulation_dtype(spec.dtype),
        block_size=block_size,
        num_samples=num_samples,
        name=name,
        block_fn=block_fn,
        block_elements=block_elements,
    )
    batched = P(axes)
    exact = num_samples is None
    out_specs = EmapDecomposition(
        original=batched,
        marginals=(batched,) * num_modalities,
        grand_mean=P(),
        projected=batched,
        marginal_stderr=None if exact else (batched,) * num_modalities,
        grand_mean_stderr=None if exact else P(),
        projected_stderr=None if exact else batched,
        num_nonfinite=P(),
    )
    key_spec = None if key is None else P()
    mapped = _shard_map(
        compute,
        mesh=mesh,
        in_specs=((batched,) * num_modalities, key_spec),
        out_specs=out_specs,
        **_NO_CHECK,
    )
    parts = jax.jit(mapped)(xs, key)
    _raise_if_nonfinite(parts, n, num_modalities, num_samples, name)
    return parts


def sharded_emap(
    fn: ModelFn,
    inputs: Any,
    *,
    mesh: Mesh,
    axis_name: str | Sequence[str] | None = None,
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """The EMAP projection ``[N, C]`` (or ``[N]``) of ``fn``, computed shard-locally.

    See ``sharded_emap_decompose`` for the arguments and errors; this returns its
    ``projected`` field, sharded by rows over ``mesh``.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    return sharded_emap_decompose(
        fn,
        inputs,
        mesh=mesh,
        axis_name=axis_name,
        block_size=block_size,
        num_samples=num_samples,
        key=key,
    ).projected


def _device_index(axes: tuple[str, ...], sizes: tuple[int, ...]) -> jax.Array:
    """This device's position along the row axes, in the order ``P(axes)`` lays out rows."""
    index = jnp.zeros((), jnp.int32)
    for axis, size in zip(axes, sizes, strict=True):
        index = index * size + jax.lax.axis_index(axis)
    return index


def _local(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    key: jax.Array | None,
    *,
    axes: tuple[str, ...],
    sizes: tuple[int, ...],
    n: int,
    out_shape: tuple[int, ...],
    dtype: Any,
    block_size: int | None,
    num_samples: int | None,
    name: str,
    block_fn: BlockFn | None,
    block_elements: int,
) -> EmapDecomposition:
    """One device's part: its n = N/D rows ``xs[m]: [n, ...]`` -> its rows of the result."""
    num_modalities, local = len(xs), xs[0].shape[0]
    original = call_flat(fn, xs, local, dtype, name)  # [n, C]
    # deviations from the mean original output, as in emap_decompose (less cancellation)
    shift = jax.lax.psum(jnp.sum(original, axis=0), axes) / n  # [C]
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))
    pair_elements = elements_per_example(xs) + math.prod(out_shape)

    def gather(x: jax.Array) -> jax.Array:
        return jax.lax.all_gather(x, axes, axis=0, tiled=True)  # [N, ...]

    if num_samples is None:
        # this device's modality-0 rows against every example of the other modalities
        paired = (xs[0], *(gather(x) for x in xs[1:]))
        num_rows = local * n ** (num_modalities - 2)
        rows = block_size or default_block_size(num_rows, n * (pair_elements + block_elements))
        sums, count = exact_sums(
            fn, paired, shift, min(rows, num_rows), dtype, name, block_fn=block_fn
        )
        # S_0 is complete for the local rows; the others sum over every device's rows
        # a float: an int above 2^31 - 1 overflows when traced (N^(M-1) pairs per example)
        per_example = float(n) ** (num_modalities - 1)
        scattered = [
            jax.lax.psum_scatter(s, axes, scatter_dimension=0, tiled=True) for s in sums[1:]
        ]  # M-1 x [n, C]
        marginals = tuple(s / per_example for s in (sums[0], *scattered))  # M x [n, C]
        grand = jax.lax.psum(jnp.sum(sums[0], axis=0), axes) / float(n) ** num_modalities  # [C]
        count = _psum_count(count, axes)
        stderr = (None, None, None)
    else:
        full = tuple(gather(x) for x in xs)
        device = _device_index(axes, sizes)
        examples = block_size or default_block_size(
            local, num_modalities * num_samples * pair_elements
        )
        means, variances, count = sampled_moments(
            fn,
            full,
            shift,
            num_samples,
            jax.random.fold_in(key, device),  # independent draws on every device
            min(examples, local),
            dtype,
            name,
            start=device * local,
            num_examples=local,
        )  # [M, n, C] each
        bad_original = ~jnp.all(jnp.isfinite(original), axis=-1)  # [n]
        count = saturating_add(count, jnp.sum(bad_original, dtype=jnp.int32))
        count = _psum_count(count, axes)
        marginals = tuple(means)
        grand = jax.lax.psum(jnp.sum(means, axis=(0, 1)), axes) / (num_modalities * n)  # [C]
        stderr = _stderr(variances, num_samples, n, axes)

    projected = sum(marginals) - (num_modalities - 1) * grand[None, :] + shift[None, :]

    def shaped(a: jax.Array | None, batched: bool = True) -> jax.Array | None:
        if a is None:
            return None
        return a.reshape((local, *out_shape) if batched else out_shape)

    marginal_se, grand_se, projected_se = stderr
    return EmapDecomposition(
        original=shaped(original),
        marginals=tuple(shaped(m + shift[None, :]) for m in marginals),
        grand_mean=shaped(grand + shift, batched=False),
        projected=shaped(projected),
        marginal_stderr=None if marginal_se is None else tuple(shaped(s) for s in marginal_se),
        grand_mean_stderr=shaped(grand_se, batched=False),
        projected_stderr=shaped(projected_se),
        num_nonfinite=count,
    )


def _psum_count(count: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """The devices' non-finite counts added up, saturating at 2^31 − 1 rather than wrapping."""
    total = jax.lax.psum(count.astype(jnp.float32), axes)
    return jnp.minimum(total, jnp.iinfo(jnp.int32).max).astype(jnp.int32)


def _stderr(
    variances: jax.Array, num_samples: int, n: int, axes: tuple[str, ...]
) -> tuple[tuple[jax.Array, ...], jax.Array, jax.Array]:
    """Standard errors of the local marginals ``M x [n, C]``, the grand mean, the projection.

    The same propagation as single-device Monte-Carlo EMAP: each (m, i) estimate is an
    independent mean of K draws, and the grand mean holds 1/(M·N) of each of them.
    """
    num_modalities = variances.shape[0]
    sq_se = variances / num_samples  # [M, n, C]
    grand_var = jax.lax.psum(jnp.sum(sq_se, axis=(0, 1)), axes) / float(num_modalities * n) ** 2
    covariance_share = 2 * (num_modalities - 1) / (num_modalities * n)
    projected_var = (1 - covariance_share) * jnp.sum(sq_se, axis=0) + (
        num_modalities - 1
    ) ** 2 * grand_var[None, :]  # [n, C]
    return tuple(jnp.sqrt(sq_se)), jnp.sqrt(grand_var), jnp.sqrt(projected_var)
