"""Argument checks and the one way EMAP calls the model: shapes validated at trace time."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse._mesh import with_auto_axes

# Largest flat row index EMAP addresses with int32 arithmetic (N^(M-1) plus one block).
MAX_INDEX = 2**31 - 1

ModelFn = Callable[[tuple[jax.Array, ...]], jax.Array]


def check_inputs(
    inputs: Any, name: str = "emap", *, auto_axes: bool = False
) -> tuple[jax.Array, ...]:
    """``inputs``, a sequence of M ≥ 2 arrays ``[N, ...]`` paired on axis 0, as jax arrays.

    The arrays keep their dtypes: ``fn`` receives them as given. With ``auto_axes``
    (the single-program passes, whose code leaves shardings to XLA), arrays sharded
    over ``Explicit`` mesh axes are placed on the same mesh with ``Auto`` axes
    (``mmfuse._mesh.with_auto_axes``); the sharded passes take them as they are.

    Raises:
      TypeError: an input that is not a numeric array (strings, objects), naming it.
      ValueError: not a sequence, fewer than two modalities, an input without a
        leading axis, leading sizes that differ, or N < 2.
    """
    if isinstance(inputs, (jax.Array, np.ndarray, Mapping)) or not isinstance(inputs, Sequence):
        raise ValueError(
            f"{name}: inputs must be a sequence of M arrays [N, ...], one per modality, "
            f"got {type(inputs).__name__}"
        )
    if len(inputs) < 2:
        raise ValueError(
            f"{name}: needs at least two modalities (M >= 2), got {len(inputs)}; EMAP "
            "removes cross-modal interactions, which a single modality does not have"
        )
    xs = tuple(_as_array(x, m, name) for m, x in enumerate(inputs))
    if auto_axes:  # e.g. placed on a jax.make_mesh
        xs = tuple(with_auto_axes(x, f"{name}: modality {m}") for m, x in enumerate(xs))
    for m, x in enumerate(xs):
        if x.ndim == 0:
            raise ValueError(f"{name}: modality {m} is a scalar; expected an array [N, ...]")
    sizes = [x.shape[0] for x in xs]
    if len(set(sizes)) > 1:
        shapes = ", ".join(f"modality {m}: {x.shape}" for m, x in enumerate(xs))
        stacked = [m for m, x in enumerate(inputs) if isinstance(x, (tuple, list))]
        hint = (
            f"; modality {stacked[0]} was a {type(inputs[stacked[0]]).__name__}, stacked into "
            "one array: fn takes one array per modality (e.g. tokens and their mask as "
            "separate modalities)"
            if stacked
            else ""
        )
        raise ValueError(
            f"{name}: the inputs must be paired on axis 0 but their leading sizes differ "
            f"({shapes}){hint}"
        )
    if sizes[0] < 2:
        raise ValueError(f"{name}: needs N >= 2 paired examples, got N = {sizes[0]}")
    return xs


def _as_array(x: Any, m: int, name: str) -> jax.Array:
    """Modality ``m``'s input as a ``jax.Array``, or a ``TypeError`` that names it."""
    parts = isinstance(x, (tuple, list)) and any(isinstance(e, (np.ndarray, jax.Array)) for e in x)
    ragged = parts and len({np.shape(e) for e in x}) > 1
    if ragged or isinstance(x, Mapping):  # arrays of one shape are stacked (e.g. rows)
        raise TypeError(
            f"{name}: modality {m} must be one array [N, ...], got a {type(x).__name__} of "
            f"{len(x)} parts; fn receives one array per modality (pass parts such as tokens "
            "and their mask as separate modalities)"
        )
    if x is None:
        raise TypeError(f"{name}: modality {m} is None; expected a numeric array [N, ...]")
    try:
        x = jnp.asarray(x)
    except ValueError as error:  # e.g. [[1, 2], [3]]: numpy cannot make it an array
        raise ValueError(f"{name}: modality {m} is not an array of one shape: {error}") from None
    except TypeError as error:
        raise TypeError(
            f"{name}: modality {m} must be a numeric array [N, ...], got "
            f"{type(x).__name__} with dtype {getattr(x, 'dtype', None)}"
        ) from error
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise TypeError(f"{name}: modality {m} must be numeric, got dtype {x.dtype}")
    return x


def check_positive_int(value: Any, option: str, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: {option} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _is_key(key: Any) -> bool:
    """One typed PRNG key (``jax.random.key``) or a raw one (``jax.random.PRNGKey``: uint32[2])."""
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return tuple(key.shape) == ()  # not a batch of keys
    return dtype == jnp.uint32 and tuple(key.shape) == (2,)


def check_mode(
    block_size: Any, num_samples: Any, key: Any, name: str
) -> tuple[int | None, int | None]:
    """``block_size`` and ``num_samples`` checked; ``key`` goes with ``num_samples`` only."""
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size", name)
    if num_samples is not None:
        num_samples = check_positive_int(num_samples, "num_samples", name, minimum=2)
        if key is None:
            raise ValueError(f"{name}: num_samples={num_samples} needs a PRNG key (key=...)")
        if not _is_key(key):
            given = (
                f"an array of dtype {key.dtype} and shape {key.shape}"
                if hasattr(key, "dtype")
                else repr(key)
            )
            raise ValueError(
                f"{name}: key must be a jax.random key, e.g. jax.random.key(0); got {given}"
            )
    elif key is not None:
        raise ValueError(f"{name}: key is only used in Monte-Carlo mode; pass num_samples too")
    return block_size, num_samples


def output_spec(fn: ModelFn, xs: tuple[jax.Array, ...], name: str) -> jax.ShapeDtypeStruct:
    """The abstract output of ``fn`` on the paired inputs, checked to be ``[N, ...]``."""
    specs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs)
    out = jax.eval_shape(fn, specs)
    return check_output(out, xs[0].shape[0], name)


def check_output(out: Any, n: int, name: str) -> Any:
    """Checks that one output of ``fn`` on a batch of ``n`` is an array ``[n, ...]``."""
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise ValueError(
            f"{name}: fn must return one array [n] or [n, C], got {type(out).__name__}"
        )
    if len(out.shape) == 0 or out.shape[0] != n:
        raise ValueError(
            f"{name}: fn returned shape {tuple(out.shape)} for a batch of n = {n} "
            f"examples; expected [n] or [n, C] with n = {n} (one output per example)"
        )
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        # the projection is defined on real logits; a cast would drop the imaginary part
        raise ValueError(
            f"{name}: fn must return real numbers, got complex dtype {out.dtype}; "
            "project the real and imaginary parts separately"
        )
    if not (jnp.issubdtype(out.dtype, jnp.number) or out.dtype == jnp.bool_):
        raise ValueError(f"{name}: fn must return numbers, got dtype {out.dtype}")
    return out


def accumulation_dtype(out_dtype: Any) -> Any:
    """float32, or float64 for float64 outputs: bf16 / f16 outputs accumulate in float32."""
    if jnp.issubdtype(out_dtype, jnp.floating):
        return jnp.promote_types(out_dtype, jnp.float32)
    return jnp.dtype(jnp.float32)


def call_flat(fn: ModelFn, xs: tuple[jax.Array, ...], n: int, dtype: Any, name: str) -> jax.Array:
    """``fn(xs)`` for a batch of ``n``, flattened to ``[n, C]`` in the accumulation ``dtype``."""
    out = check_output(fn(xs), n, name)
    return jnp.reshape(out, (n, -1)).astype(dtype)  # [n, C]


def elements_per_example(xs: Sequence[jax.Array]) -> int:
    """Array elements one example holds across all modalities (for block sizes)."""
    return sum(math.prod(x.shape[1:]) for x in xs)
