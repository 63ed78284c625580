"""Applying one module per modality, the first stage of the modular models."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import jax

from mmfuse.fusion._core import is_int
from mmfuse.models._checks import InputSpec, check_modalities, check_sequence, input_spec


def input_specs(
    modules: Sequence[Any],
    in_dims: Sequence[int | None] | None,
    name: str,
    *,
    default_dims: Sequence[int] | None = None,
) -> tuple[InputSpec, ...]:
    """What each modality's input must look like: ``(d_m, rank_m)`` per module.

    Args:
      modules: M modules (``None`` for the identity).
      in_dims: widths ``d_m`` given by the user, for modules that declare none (a
        declared width must agree); ``None`` entries are not checked.
      name: the model's name, used in error messages.
      default_dims: the widths an identity module passes on (e.g. a fusion
        operator's ``in_dims``).
    """
    specs = [
        input_spec(module, None if default_dims is None else default_dims[m])
        for m, module in enumerate(modules)
    ]
    if in_dims is None:
        return tuple(specs)
    if len(in_dims) != len(modules):
        raise ValueError(
            f"{name}: in_dims={tuple(in_dims)} has {len(in_dims)} entries for "
            f"{len(modules)} modalities"
        )
    for m, (d, (declared, _)) in enumerate(zip(in_dims, specs, strict=True)):
        if d is None:
            continue
        if not (is_int(d) and d >= 1):
            raise ValueError(f"{name}: in_dims[{m}] must be a positive int or None, got {d!r}")
        if declared is not None and d != declared:
            owner = (
                f"the fusion operator (modality {m} has no encoder)"
                if modules[m] is None
                else f"modality {m}'s {type(modules[m]).__name__}"
            )
            raise ValueError(f"{name}: in_dims[{m}] = {d}, but {owner} takes width {declared}")
    return tuple(
        (None if d is None else int(d), rank) for d, (_, rank) in zip(in_dims, specs, strict=True)
    )


def apply_per_modality(
    modules: Sequence[Any],
    xs: Sequence[jax.typing.ArrayLike],
    masks: Sequence[jax.typing.ArrayLike | None] | None,
    specs: Sequence[InputSpec],
    name: str,
) -> tuple[jax.Array, ...]:
    """``(module_1(x_1), ..., module_M(x_M))`` after checking the inputs.

    Args:
      modules: M modules; ``None`` is the identity.
      xs: M arrays ``[B, ..., d_m]``.
      masks: None, or M entries each None or a padding mask passed to that modality's
        module as ``mask=``.
      specs: what each modality's input must look like (see ``_checks.input_spec``).
      name: the model's name, used in error messages.
    """
    xs = check_modalities(xs, specs, name)
    if masks is None:
        masks = (None,) * len(xs)
    check_sequence(masks, len(xs), name, "masks (one per modality, or None)")
    outs = []
    for m, (module, x, mask) in enumerate(zip(modules, xs, masks, strict=True)):
        if module is None:
            if mask is not None:
                raise ValueError(f"{name}: modality {m} has no encoder to take its mask")
            outs.append(x)
        elif mask is not None and not _takes_mask(module):
            raise ValueError(
                f"{name}: modality {m}'s {type(module).__name__} takes no mask (one vector "
                "per example); pass None as its mask"
            )
        else:
            outs.append(module(x) if mask is None else module(x, mask=mask))
    return tuple(outs)


def _takes_mask(module: Any) -> bool:
    """Whether ``module(x, mask=...)`` is a call its signature accepts."""
    try:
        parameters = inspect.signature(module).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
