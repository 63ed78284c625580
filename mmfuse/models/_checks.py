"""Input checks shared by the models: modality count, feature sizes, batch dims, masks.

Every check runs at trace time and names the offending modality and the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse.fusion._core import as_real_array, check_real

# (feature size d_m or None if unknown, per-example rank: 1 for [..., d], 2 for [..., T, d])
InputSpec = tuple[int | None, int | None]


def input_spec(module: Any, default_dim: int | None = None) -> InputSpec:
    """What one modality's input must look like, read off the module that takes it.

    ``None`` stands for the identity (inputs ``[..., default_dim]``). mmfuse encoders
    declare ``in_dim`` and ``input_rank``; ``nnx.Linear`` is ``[..., in_features]``;
    anything else is unchecked.
    """
    if module is None:
        return default_dim, 1
    if isinstance(module, nnx.Linear):
        return module.in_features, 1
    return getattr(module, "in_dim", None), getattr(module, "input_rank", None)


def hidden_widths(hidden_dims: Any, name: str) -> Sequence[Any]:
    """``hidden_dims`` as a sequence (a 1-D NumPy array too), its entries checked by the
    caller; an int or a string is named, with the tuple an int likely meant."""
    if isinstance(hidden_dims, np.ndarray) and hidden_dims.ndim == 1:
        hidden_dims = hidden_dims.tolist()  # e.g. np.array(widths)
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
        raise ValueError(
            f"{name}: hidden_dims must be a sequence of positive ints (possibly empty), "
            f"got {hidden_dims!r}; e.g. ({hidden_dims},) for one hidden layer"
        )
    return hidden_dims


def check_pad_value(value: Any, name: str) -> float | None:
    """``None``, or the finite number whose all-equal tokens count as padding (NaN would
    silently match nothing)."""
    return None if value is None else check_real(value, "pad_value", name)


def as_mask(mask: Any, what: str, name: str) -> jax.Array:
    """A padding mask (True = a real token) as a boolean array.

    Booleans and 0/1 integers (e.g. a tokenizer's attention mask) are accepted; floats
    are refused, since an additive mask (0 = keep, -inf = pad) would read inverted.
    """
    try:
        mask = jnp.asarray(mask)
    except (TypeError, ValueError) as error:  # e.g. ragged lists, strings
        raise ValueError(f"{name}: {what} is not an array of booleans: {error}") from None
    if mask.dtype != bool and not jnp.issubdtype(mask.dtype, jnp.integer):
        raise ValueError(
            f"{name}: {what} must hold booleans (True = a real token) or 0/1 integers, "
            f"got dtype {mask.dtype}"
        )
    if mask.dtype != bool and not isinstance(mask, jax.core.Tracer):
        if np.any((np.asarray(mask) != 0) & (np.asarray(mask) != 1)):
            raise ValueError(f"{name}: {what} holds integers other than 0 and 1")
    return mask.astype(bool)


def zero_padding(x: jax.Array, keep: jax.Array) -> jax.Array:
    """``x [..., T, d]`` with the tokens where ``keep [..., T]`` is False set to 0, so
    that what padding holds (NaN, inf) reaches neither the outputs nor the gradients."""
    return jnp.where(keep[..., None], x, jnp.zeros((), x.dtype))


def check_sequence(xs: Any, num_modalities: int, name: str, what: str = "modalities") -> None:
    """Checks that ``xs`` is a sequence (not an array or a dict) of one entry per modality."""
    if isinstance(xs, (jax.Array, Mapping)) or not isinstance(xs, Sequence):
        raise ValueError(
            f"{name}: expected a sequence of {num_modalities} {what}, got {type(xs).__name__}"
        )
    if len(xs) != num_modalities:
        raise ValueError(f"{name}: expected {num_modalities} {what}, got {len(xs)}")


def as_float(x: jax.typing.ArrayLike, what: str, name: str) -> jax.Array:
    """``x`` as a real floating ``jax.Array`` (``mmfuse.fusion``'s dtype policy).

    Integer, boolean, float16 and bfloat16 inputs become float32; float64 stays float64.

    Raises:
      TypeError: a non-numeric or complex ``x``, naming it as ``what``.
    """
    return as_real_array(x, what, name)


def check_input(x: jax.typing.ArrayLike, dim: int, name: str, *, rank: int = 1) -> jax.Array:
    """Checks one input ``[..., d]`` (rank 1) or ``[..., T, d]`` (rank 2) against ``d = dim``."""
    x = as_float(x, "input", name)
    if x.ndim < rank:
        want = f"[..., {dim}]" if rank == 1 else f"[..., T, {dim}]"
        raise ValueError(f"{name}: input must have shape {want}, got shape {x.shape}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name}: input has feature size {x.shape[-1]} (shape {x.shape}), expected {dim}"
        )
    return x


def check_modalities(
    xs: Sequence[jax.typing.ArrayLike], specs: Sequence[InputSpec], name: str
) -> tuple[jax.Array, ...]:
    """Checks M inputs against per-modality ``(d_m, rank)`` specs; returns float arrays.

    Args:
      xs: M arrays; modality m is ``[*batch, d_m]`` (rank 1) or ``[*batch, T_m, d_m]``
        (rank 2), where ``batch`` are the leading dims every modality shares. A rank-1
        modality may also be ``[*batch, T, d_m]`` next to a rank-2 one ``[*batch, T,
        d_m']``: per-step inputs beside a sequence encoder that keeps its steps
        (``SequenceEncoder(pool="none")``); whether the encodings agree is the fusion's
        check.
      specs: ``(d_m, rank_m)`` per modality; ``None`` entries are not checked.
      name: the model's name, used in error messages.

    Raises:
      TypeError: a non-numeric or complex input, naming the modality.
      ValueError: a wrong number of modalities, an input of too low rank, a feature
        size that differs from ``d_m``, or batch dims that disagree between modalities.
    """
    check_sequence(xs, len(specs), name)
    arrays = []
    for m, (x, (dim, rank)) in enumerate(zip(xs, specs, strict=True)):
        x = as_float(x, f"modality {m}", name)
        if x.ndim < (rank or 1):
            want = f"[..., {dim or 'd'}]" if rank in (None, 1) else f"[..., T, {dim or 'd'}]"
            raise ValueError(f"{name}: modality {m} must have shape {want}, got shape {x.shape}")
        if dim is not None and x.shape[-1] != dim:
            raise ValueError(
                f"{name}: modality {m} has feature size {x.shape[-1]} (shape {x.shape}), "
                f"expected {dim}"
            )
        arrays.append(x)
    known = [
        (m, x.shape[: x.ndim - r], {x.shape[: x.ndim - k] for k in range(1, r + 1)})
        for m, (x, (_, r)) in enumerate(zip(arrays, specs, strict=True))
        if r
    ]
    for m, batch, leading in known[1:]:
        m0, batch0, leading0 = known[0]
        if not leading & leading0:  # no reading of the leading dims that both share
            raise ValueError(
                f"{name}: modality {m} has batch dims {batch} (shape {arrays[m].shape}) but "
                f"modality {m0} has {batch0} (shape {arrays[m0].shape})"
            )
    return tuple(arrays)


def check_tokens(
    xs: Sequence[jax.typing.ArrayLike],
    masks: Sequence[jax.typing.ArrayLike | None] | None,
    in_dims: Sequence[int],
    max_len: int,
    name: str,
    *,
    pad_value: float | None = None,
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """Token sequences and padding masks for the raw-modality transformers.

    Args:
      xs: M arrays ``[B, T_m, d_m]``, or ``[B, d_m]`` for a single-token modality.
      masks: None, or M entries each None or a boolean ``[B, T_m]`` (True = a real
        token); ``[B]`` is accepted for a ``[B, d_m]`` input.
      in_dims: the widths ``d_m``.
      max_len: the longest ``T_m`` allowed.
      name: the model's name, used in error messages.
      pad_value: if given, tokens whose features all equal it are padding too.

    Returns:
      ``(tokens, masks)``: M arrays ``[B, T_m, d_m]``, zero where padded, and M boolean
      ``[B, T_m]``.
    """
    check_sequence(xs, len(in_dims), name)
    if masks is None:
        masks = (None,) * len(in_dims)
    check_sequence(masks, len(in_dims), name, "masks (one per modality, or None)")
    raw = []
    for m, (x, d) in enumerate(zip(xs, in_dims, strict=True)):
        x = as_float(x, f"modality {m}", name)
        if x.ndim not in (2, 3):
            raise ValueError(
                f"{name}: modality {m} must have shape [B, T, {d}] or [B, {d}], got {x.shape}"
            )
        if x.shape[-1] != d:
            raise ValueError(
                f"{name}: modality {m} has feature size {x.shape[-1]} (shape {x.shape}), "
                f"expected in_dims[{m}] = {d}"
            )
        if raw and x.shape[0] != raw[0].shape[0]:
            raise ValueError(
                f"{name}: modality {m} has batch size {x.shape[0]} (shape {x.shape}) but "
                f"modality 0 has {raw[0].shape[0]} (shape {raw[0].shape}); inputs are "
                "batched, [B, T, d] or [B, d] for one token per example"
            )
        raw.append(x)
    tokens, valid = [], []
    for m, (x, mask) in enumerate(zip(raw, masks, strict=True)):
        x = x if x.ndim == 3 else x[:, None, :]  # [B, T_m, d_m]
        if x.shape[1] > max_len:
            raise ValueError(
                f"{name}: modality {m} has {x.shape[1]} tokens (shape {x.shape}), more than "
                f"max_len = {max_len}"
            )
        keep = jnp.ones(x.shape[:2], bool)  # [B, T_m]
        if mask is not None:
            mask = as_mask(mask, f"mask of modality {m}", name)
            if raw[m].ndim == 2 and mask.shape == x.shape[:1]:
                mask = mask[:, None]  # [B, 1]
            if mask.shape != x.shape[:2]:
                raise ValueError(
                    f"{name}: mask of modality {m} has shape {mask.shape}, expected "
                    f"{x.shape[:2]} for input shape {raw[m].shape}"
                )
            keep = mask
        if pad_value is not None:
            keep = keep & jnp.any(x != pad_value, axis=-1)
        tokens.append(zero_padding(x, keep))
        valid.append(keep)
    return tuple(tokens), tuple(valid)
