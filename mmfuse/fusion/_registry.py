"""Name -> operator registry behind ``fusion.names()`` and ``fusion.create(...)``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, TypeVar

from flax import nnx

from mmfuse.fusion._core import FusionOperator

_REGISTRY: dict[str, type[FusionOperator]] = {}
_BUILD_ARGS = ("self", "in_dims", "out_dim", "rngs")

T = TypeVar("T", bound=type[FusionOperator])


def register(name: str):
    """Class decorator adding a fusion operator to the registry under ``name``.

    The class subclasses ``FusionOperator`` and takes ``(in_dims, out_dim, *, rngs,
    **options)``; its keyword options become ``create``'s. Registering a class of the
    same module and name again (a re-run notebook cell) replaces it; any other class
    under a taken name is refused.
    """

    def wrap(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, FusionOperator)):
            raise TypeError(f"fusion.register({name!r}): {cls!r} is not a FusionOperator subclass")
        known = _REGISTRY.get(name)
        same = known is not None and (known.__module__, known.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if known is not None and not same:
            raise ValueError(
                f"fusion operator {name!r} is already registered "
                f"({known.__module__}.{known.__qualname__})"
            )
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def names() -> tuple[str, ...]:
    """The registered operator names, sorted."""
    return tuple(sorted(_REGISTRY))


def get(name: str) -> type[FusionOperator]:
    """The operator class registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown fusion operator {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name]


def options(name: str) -> dict[str, Any]:
    """The keyword options ``create(name, ...)`` accepts, with their defaults."""
    signature = inspect.signature(get(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name not in _BUILD_ARGS and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def create(
    name: str, in_dims: Sequence[int], out_dim: int, *, rngs: nnx.Rngs, **opts: Any
) -> FusionOperator:
    """Builds the operator registered under ``name``.

    Args:
      name: one of ``names()``.
      in_dims: the modality widths ``(d_1, ..., d_M)``.
      out_dim: the output width.
      rngs: the ``nnx.Rngs`` that initialise the parameters.
      **opts: operator options (see each operator's docstring or ``options(name)``).

    Raises:
      ValueError: an unknown name (listing the registered ones), an unknown option
        (listing the valid ones), or invalid sizes.
      TypeError: ``rngs`` is not an ``nnx.Rngs``.
    """
    cls = get(name)
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"{name}: rngs must be an nnx.Rngs (e.g. rngs=nnx.Rngs(0)), got {type(rngs).__name__}"
        )
    valid = options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(valid) or '(none)'}"
        )
    return cls(in_dims, out_dim, rngs=rngs, **opts)
