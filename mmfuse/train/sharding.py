"""Placing a training run on a device mesh: data-parallel batches, optionally sharded parameters.

Everything here is JAX's own distributed runtime (``jax.sharding``): ``fit`` jits its
step with these shardings as ``in_shardings`` / ``out_shardings`` and XLA inserts the
collectives (the gradient all-reduce of data parallelism, the gathers of sharded
parameters). The same code runs on one device, on the 8 devices of one host, or on the
processes of a multi-host slice after ``jax.distributed.initialize()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(shape: Sequence[int] | None = None, axis_names: Sequence[str] = ("data",)) -> Mesh:
    """A mesh over all devices (of all processes), e.g. ``make_mesh((2, 4), ("data", "model"))``.

    Args:
      shape: the mesh shape, whose product is the device count; default: all devices
        along one axis.
      axis_names: one name per mesh axis.
    """
    devices = jax.devices()
    shape = (len(devices),) if shape is None else tuple(shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh shape {shape} and axis names {tuple(axis_names)} differ in length")
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh shape {shape} needs {int(np.prod(shape))} devices, have {len(devices)}"
        )
    return Mesh(np.asarray(devices).reshape(shape), tuple(axis_names))


def _leaf_spec(shape: tuple[int, ...], axis: str | None, size: int) -> PartitionSpec:
    """Shards the largest dimension divisible by the axis size; small or odd leaves replicate."""
    if axis is None or size == 1:
        return PartitionSpec()
    candidates = [d for d, n in enumerate(shape) if n % size == 0 and n >= size]
    if not candidates:
        return PartitionSpec()
    dim = max(candidates, key=lambda d: shape[d])
    return PartitionSpec(*(axis if d == dim else None for d in range(len(shape))))


def state_shardings(abstract_state: Any, mesh: Mesh, *, param_axis: str | None = None) -> Any:
    """``NamedSharding`` of every leaf of a train state: replicated, or sharded over ``param_axis``.

    With ``param_axis`` (a mesh axis such as ``"model"``) each array leaf is split along
    its largest dimension divisible by that axis's size (parameters and the matching
    optimizer moments alike); scalars and leaves with no such dimension are replicated.
    """
    if param_axis is not None and param_axis not in mesh.axis_names:
        raise ValueError(f"param_axis {param_axis!r} is not a mesh axis {mesh.axis_names}")
    size = 1 if param_axis is None else mesh.shape[param_axis]
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, _leaf_spec(tuple(leaf.shape), param_axis, size)),
        abstract_state,
    )


def batch_sharding(mesh: Mesh, data_axis: str = "data") -> NamedSharding:
    """Batches split along their first (example) axis over ``data_axis``."""
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not a mesh axis {mesh.axis_names}")
    return NamedSharding(mesh, PartitionSpec(data_axis))


def put_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Places a global batch ``{key: [B, ...]}`` (the same on every process) on the mesh.

    On several processes each one hands over only the rows its devices hold, so the
    global batch is never copied to every host's devices.
    """
    size = sharding.mesh.shape[sharding.spec[0]]
    for key, value in batch.items():
        if value.shape[0] % size:
            raise ValueError(
                f"batch {key!r} has {value.shape[0]} examples, not divisible by the "
                f"{size} devices of mesh axis {sharding.spec[0]!r}"
            )
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    out = {}
    for key, value in batch.items():
        rows = sorted(
            {
                index[0].indices(value.shape[0])
                for index in sharding.addressable_devices_indices_map(value.shape).values()
            }
        )
        local = np.concatenate([value[slice(*r)] for r in rows])
        out[key] = jax.make_array_from_process_local_data(sharding, local, value.shape)
    return out
