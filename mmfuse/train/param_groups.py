"""Per-parameter-group learning rates: frozen or slower pre-trained parts of a model."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import optax


def _key_name(key: Any) -> str | None:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return None if key.name == "value" else key.name  # an nnx.Variable's value
    return str(key)


def param_path(path: tuple[Any, ...]) -> str:
    """``"encoders/0/layers/1/kernel"``: a parameter's pytree path, joined by ``/``."""
    return "/".join(name for name in map(_key_name, path) if name is not None)


def _matches(path: str, prefix: str) -> bool:
    parts, wanted = path.split("/"), prefix.strip("/").split("/")
    return parts[: len(wanted)] == wanted


def scale_by_path(
    optimizer: optax.GradientTransformation, scales: Mapping[str, float], params: Any
) -> optax.GradientTransformation:
    """``optimizer`` with the learning rate of some parameter groups scaled, or frozen.

    A group is every parameter whose path (``param_path``: ``"encoders/0/..."`` in an
    ``nnx.State``) starts with one of ``scales``' prefixes, whole components only
    (``"encoders/1"`` is not ``"encoders/10"``). A factor of 0 freezes the group: its
    updates are zero and the optimizer keeps no state for it (no Adam moments, no
    weight decay). The other parameters share one ``optimizer`` (a gradient clipping
    in it sees their global norm, as without groups), and a group's updates are then
    multiplied by its factor (for Adam: its learning rate). Parameters no prefix
    matches train as ``optimizer`` says.

    Args:
      optimizer: the optax transformation of the whole model.
      scales: ``{path prefix: factor >= 0}``; the first prefix that matches wins.
      params: the parameters (e.g. ``nnx.state(model, nnx.Param)``), whose paths are
        checked: a prefix that matches no parameter is an error, not a no-op.

    Raises:
      ValueError: a negative or non-finite factor, or a prefix matching no parameter
        (the message lists the parameters' top-level groups).
    """
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for prefix, factor in scales.items():
        real = isinstance(factor, numbers.Real) and not isinstance(factor, bool)
        if not (real and 0 <= factor < float("inf")):
            raise ValueError(f"the factor of {prefix!r} must be finite and >= 0, got {factor!r}")
        if not any(_matches(p, prefix) for p in paths):
            groups = sorted({"/".join(p.split("/")[:2]) for p in paths})
            raise ValueError(
                f"no parameter's path starts with {prefix!r}; paths start with {', '.join(groups)}"
            )

    def factor_of(path: tuple[Any, ...]) -> float:
        name = param_path(path)
        return next((float(f) for prefix, f in scales.items() if _matches(name, prefix)), 1.0)

    def labels(tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if factor_of(path) == 0 else "trained", tree
        )

    def scale_updates(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda p, u: u * factor_of(p), updates)
        return scaled, state

    trained_or_frozen = optax.multi_transform(
        {"trained": optimizer, "frozen": optax.set_to_zero()}, labels
    )
    by_factor = optax.GradientTransformation(lambda params: optax.EmptyState(), scale_updates)
    return optax.chain(trained_or_frozen, by_factor)
