"""Meshes whose axes leave the shardings of intermediate values to XLA.

``jax.make_mesh`` builds meshes with ``Explicit`` axes by default: the sharding becomes
part of every array's type, and operations whose output sharding is ambiguous (a
gather over a sharded axis, a contraction of two sharded operands) refuse to trace.
mmfuse's computations are written for ``Auto`` axes, where XLA propagates shardings
and inserts the collectives (the behaviour of ``Mesh(...)`` and
``mmfuse.train.make_mesh``). The same devices under the same axis names with ``Auto``
types hold the same arrays, so a user's explicit mesh is relabelled, not refused.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding


def auto_mesh(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``Auto``: the same devices, shape and names."""
    types = tuple(getattr(mesh, "axis_types", ()) or ())
    if all(t == AxisType.Auto for t in types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(types))


def _explicit_spec(x: jax.Array) -> bool:
    """Whether ``x``'s type carries a sharding over an ``Explicit`` mesh axis."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh, spec = getattr(sharding, "mesh", None), getattr(sharding, "spec", None)
    if mesh is None or not spec:
        return False
    explicit = {
        name
        for name, kind in zip(mesh.axis_names, getattr(mesh, "axis_types", ()) or (), strict=False)
        if kind == AxisType.Explicit
    }
    named = {
        n
        for entry in spec
        if entry is not None
        for n in (entry if isinstance(entry, tuple) else (entry,))
    }
    return bool(explicit & named)


def with_auto_axes(x: jax.Array, what: str) -> jax.Array:
    """``x`` placed on the ``Auto`` version of its mesh if it is sharded over an
    ``Explicit`` axis (the same devices and spec: no data moves).

    Raises:
      ValueError: ``x`` is such an array inside ``jax.jit`` (its type cannot be
        relabelled there), naming ``what``.
    """
    if not isinstance(x, jax.Array) or not _explicit_spec(x):
        return x
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            f"{what} is sharded over a mesh with Explicit axes (jax.make_mesh's default) "
            "inside jax.jit, where its sharding cannot be relabelled; build the mesh with "
            "axis_types=(jax.sharding.AxisType.Auto, ...) (as mmfuse.train.make_mesh does), "
            "or pass the arrays from outside jit"
        )
    sharding = x.sharding
    return jax.device_put(x, NamedSharding(auto_mesh(sharding.mesh), sharding.spec))
