"""Applying one module per modality, the first stage of the modular models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from mmfuse.models._checks import InputSpec, check_modalities, check_sequence


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
    check_sequence(masks, len(xs), name, "masks (or None)")
    outs = []
    for m, (module, x, mask) in enumerate(zip(modules, xs, masks, strict=True)):
        if module is None:
            if mask is not None:
                raise ValueError(f"{name}: modality {m} has no encoder to take its mask")
            outs.append(x)
        else:
            outs.append(module(x) if mask is None else module(x, mask=mask))
    return tuple(outs)
