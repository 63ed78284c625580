"""Shared pieces of every fusion operator: input checks, small maths helpers, the NNX base.

Shapes: M modalities, inputs ``xs[m]`` of shape ``[..., d_m]`` whose leading dims
(batch, optional time) agree; outputs ``[..., out_dim]``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.custom_derivatives import SymbolicZero

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
Params = dict[str, Any]

APPEND_POSITIONS = ("last", "first")


def lecun_normal(
    in_axes: int | Sequence[int] = -2, out_axes: int | Sequence[int] = -1
) -> Initializer:
    """Variance-1/fan_in normal initializer; ``fan_in`` is the product of ``in_axes`` sizes.

    Axes named in neither ``in_axes`` nor ``out_axes`` count as a receptive field (they
    multiply fan_in), as in ``jax.nn.initializers.variance_scaling``.
    """
    in_axes = tuple(in_axes) if isinstance(in_axes, Sequence) else in_axes
    out_axes = tuple(out_axes) if isinstance(out_axes, Sequence) else out_axes
    return jax.nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=in_axes, out_axis=out_axes
    )


def check_dims(
    in_dims: Sequence[int],
    out_dim: int,
    name: str,
    *,
    min_modalities: int = 1,
    max_modalities: int | None = None,
) -> tuple[tuple[int, ...], int]:
    """Validates the sizes an operator is built with; returns them as ints."""
    if isinstance(in_dims, np.ndarray) and in_dims.ndim == 1:  # e.g. np.array(widths)
        in_dims = in_dims.tolist()
    if isinstance(in_dims, int) or not isinstance(in_dims, Sequence):
        raise ValueError(f"{name}: in_dims must be a sequence of modality widths, got {in_dims!r}")
    dims = tuple(in_dims)
    for m, d in enumerate(dims):
        if not _is_positive_int(d):
            raise ValueError(
                f"{name}: in_dims[{m}] (modality {m}) must be a positive int, got {d!r}"
            )
    dims = tuple(int(d) for d in dims)  # NumPy integers (e.g. from an array's shape) too
    if len(dims) < min_modalities:
        raise ValueError(
            f"{name} needs at least {min_modalities} modalities, got {len(dims)} (in_dims={dims})"
        )
    if max_modalities is not None and len(dims) > max_modalities:
        raise ValueError(
            f"{name} takes at most {max_modalities} modalities, got {len(dims)} (in_dims={dims})"
        )
    if not _is_positive_int(out_dim):
        raise ValueError(f"{name}: out_dim must be a positive int, got {out_dim!r}")
    return dims, int(out_dim)


def is_int(value: Any) -> bool:
    """A Python or NumPy integer (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return is_int(value) and value >= 1


def python_scalar(value: Any) -> Any:
    """A concrete 0-d NumPy or JAX array (e.g. ``jnp.float32(0.1)``) as its Python
    scalar, so that option checks treat it like the number it holds; anything else
    (a traced value included) unchanged."""
    if (
        isinstance(value, (np.ndarray, np.generic, jax.Array))
        and not isinstance(value, jax.core.Tracer)
        and np.shape(value) == ()
    ):
        return value.item()
    return value


def check_real(value: Any, option: str, name: str, *, bound: str | None = None) -> float:
    """A finite real (Python, NumPy or a concrete 0-d JAX array) as a float, ``bound``
    one of None, ``">= 0"``, ``"> 0"``; raises naming the option."""
    value = python_scalar(value)
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (bound is None or value > 0 or (bound == ">= 0" and value == 0))
    )
    if not ok:
        wanted = "a finite number" + (f" {bound}" if bound else "")
        raise ValueError(f"{name}: {option} must be {wanted}, got {value!r}")
    return float(value)


def check_choice(value: Any, choices: Sequence[Any], option: str, name: str) -> Any:
    if value not in choices:
        raise ValueError(f"{name}: {option}={value!r} is not one of {tuple(choices)}")
    return value


def check_positive(value: Any, option: str, name: str) -> int:
    if not _is_positive_int(value):
        raise ValueError(f"{name}: {option} must be a positive int, got {value!r}")
    return int(value)


def as_real_array(x: Any, what: str, name: str) -> jax.Array:
    """``x`` as a real floating ``jax.Array`` of at least float32 precision.

    The dtype policy of every fusion operator and model: integer and boolean inputs
    become float32; float16 and bfloat16 inputs are computed in float32 (the
    parameters' dtype, and the precision the sums inside the operators need); float64
    inputs stay float64 (with ``jax_enable_x64``, else JAX stores them as float32).

    Args:
      x: an array-like ``[...]``.
      what: which input it is, e.g. ``"modality 1"``, for error messages.
      name: the operator's or model's name, for error messages.

    Raises:
      TypeError: ``x`` is not numeric (strings, objects, ``None``) or is complex.
      ValueError: ``x`` is a ragged nest of lists.
    """
    if x is None:
        raise TypeError(f"{name}: {what} is None; expected a numeric array")
    try:
        x = jnp.asarray(x)
    except ValueError as error:  # e.g. [[1, 2], [3]]: numpy cannot make it an array
        raise ValueError(f"{name}: {what} is not an array of one shape: {error}") from None
    except TypeError as error:
        raise TypeError(
            f"{name}: {what} must be a numeric array, got {type(x).__name__} "
            f"with dtype {getattr(x, 'dtype', None)}"
        ) from error
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{name}: {what} has complex dtype {x.dtype} (shape {x.shape}); pass real "
            "features, e.g. jnp.real(x) and jnp.imag(x) concatenated"
        )
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise TypeError(f"{name}: {what} must be numeric, got dtype {x.dtype} (shape {x.shape})")
    # half-precision inputs join float32 parameters anyway; promoting up front keeps
    # norms and products of raw inputs from overflowing float16's range
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def check_inputs(
    xs: Sequence[jax.typing.ArrayLike], in_dims: Sequence[int], name: str
) -> tuple[jax.Array, ...]:
    """Checks M inputs against ``in_dims`` and returns them as floating arrays.

    Args:
      xs: M arrays ``[..., d_m]`` sharing their leading (batch[, time]) dims.
      in_dims: the widths ``d_m`` the operator was built for.
      name: the operator's name, used in error messages.

    Returns:
      The inputs as real floating ``jax.Array``s (see ``as_real_array``): integer,
      boolean, float16 and bfloat16 inputs become float32, float64 stays float64.

    Raises:
      TypeError: a non-numeric or complex input, naming the modality.
      ValueError: wrong number of modalities, a rank-0 input, a feature size that
        differs from ``in_dims[m]``, or leading dims that disagree. Raised at trace
        time, naming the modality and the shapes.
    """
    if isinstance(xs, (jax.Array, Mapping)) or not isinstance(xs, Sequence):
        raise ValueError(
            f"{name}: expected a sequence of {len(in_dims)} modality arrays, "
            f"got {type(xs).__name__}"
        )
    if len(xs) != len(in_dims):
        shapes = [getattr(x, "shape", type(x).__name__) for x in xs]
        raise ValueError(
            f"{name}: expected {len(in_dims)} modalities (in_dims={tuple(in_dims)}), got "
            f"{len(xs)} of shapes {shapes}"
        )
    arrays = []
    for m, (x, d) in enumerate(zip(xs, in_dims, strict=True)):
        x = as_real_array(x, f"modality {m}", name)
        if x.ndim < 1:
            raise ValueError(f"{name}: modality {m} must have shape [..., {d}], got a scalar")
        if x.shape[-1] != d:
            raise ValueError(
                f"{name}: modality {m} has feature size {x.shape[-1]} "
                f"(shape {x.shape}), expected in_dims[{m}] = {d}"
            )
        arrays.append(x)
    lead = arrays[0].shape[:-1]
    for m, x in enumerate(arrays[1:], start=1):
        if x.shape[:-1] != lead:
            raise ValueError(
                f"{name}: modality {m} has leading dims {x.shape[:-1]} (shape "
                f"{x.shape}) but modality 0 has {lead} (shape {arrays[0].shape}); "
                "all modalities must share batch[/time] dims"
            )
    return tuple(arrays)


def check_compute_dtype(dtype: Any, name: str) -> jnp.dtype | None:
    """``None`` or a floating dtype (a name such as ``"bfloat16"`` works too) as a ``jnp.dtype``.

    Raises:
      ValueError: ``dtype`` is not a dtype, or not a real floating one.
    """
    if dtype is None:
        return None
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(
            f"{name}: compute_dtype={dtype!r} is not a dtype; use e.g. jnp.bfloat16 or None"
        ) from error
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: compute_dtype must be a floating dtype (e.g. jnp.bfloat16), got {dtype}"
        )
    return dtype


def matmul(a: jax.Array, b: jax.Array, compute_dtype: Any = None) -> jax.Array:
    """``a @ b``; with ``compute_dtype``, on operands of that dtype, accumulated in float32.

    The mixed-precision rule of every operator: matmul operands are cast to
    ``compute_dtype`` (e.g. bfloat16) and products accumulated and returned in
    float32 (or in ``compute_dtype`` where that is wider); everything between the
    matmuls (biases, products of projections, norms, gates) stays float32. The
    backward pass multiplies in ``compute_dtype`` too: the output's cotangent is cast
    to it, so the gradient matmuls also run on low-precision operands, their products
    rounded to ``compute_dtype`` (as under ``torch.autocast``); the gradients come back
    in the operands' own dtype. With ``compute_dtype=None`` it is
    ``jnp.matmul(a, b)`` in the operands' own dtype.
    """
    if compute_dtype is None:
        return jnp.matmul(a, b)
    return _mixed_precision(jnp.matmul, compute_dtype, a, b)


def einsum(spec: str, *operands: jax.Array, compute_dtype: Any = None) -> jax.Array:
    """``jnp.einsum(spec, *operands)`` under the same mixed-precision rule as ``matmul``."""
    if compute_dtype is None:
        return jnp.einsum(spec, *operands)
    return _mixed_precision(functools.partial(jnp.einsum, spec), compute_dtype, *operands)


def _mixed_precision(product: Callable[..., jax.Array], dtype: Any, *operands: jax.Array):
    """``product(*operands)`` (a matmul or einsum) on ``dtype`` operands, see ``matmul``.

    Differentiating through plain casts would leave the backward matmuls with one
    float32 operand (the cotangent of the float32 product), which XLA then computes
    in float32. The custom JVP instead multiplies each tangent, cast to ``dtype``, by
    the other ``dtype`` operands (``product`` is linear in each operand) and only then
    widens the result: its transpose, the backward pass, casts the cotangent down to
    ``dtype`` and runs the gradient matmuls on ``dtype`` operands. Forward mode
    (``jax.jvp``, ``jax.jacfwd``) and higher derivatives work as for any function;
    operands that are not differentiated cost no tangent matmul.
    """
    accumulate = jnp.promote_types(dtype, jnp.float32)

    @jax.custom_jvp
    def apply(*xs):
        return product(*(x.astype(dtype) for x in xs), preferred_element_type=accumulate)

    def jvp(primals, tangents):
        low = tuple(x.astype(dtype) for x in primals)
        out = product(*low, preferred_element_type=accumulate)
        terms = [  # d product = sum_i product(..., d operand_i, ...), each in dtype
            product(*low[:i], t.astype(dtype), *low[i + 1 :]).astype(accumulate)
            for i, t in enumerate(tangents)
            if not isinstance(t, SymbolicZero)
        ]
        return out, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)

    apply.defjvp(jvp, symbolic_zeros=True)
    return apply(*operands)


def linear(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    compute_dtype: Any = None,
) -> jax.Array:
    """``x @ kernel + bias``: ``x [..., d]``, ``kernel [d, o]``, ``bias [o]`` -> ``[..., o]``.

    ``compute_dtype``: the matmul's operand dtype (see ``matmul``); the bias is added
    to the float32 product.
    """
    y = matmul(x, kernel, compute_dtype)  # [..., o]
    return y if bias is None else add_bias(y, bias)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` for ``y: [..., o]``, ``bias: [o]``, written without rank promotion."""
    return y + broadcast_last(bias, y.ndim)


def append_one(x: jax.Array, position: str = "last") -> jax.Array:
    """``[x; 1]`` (or ``[1; x]`` for ``position="first"``): ``[..., d]`` -> ``[..., d + 1]``."""
    one = jnp.ones((*x.shape[:-1], 1), x.dtype)
    return jnp.concatenate([x, one] if position == "last" else [one, x], axis=-1)


def broadcast_last(v: jax.Array, ndim: int) -> jax.Array:
    """Reshapes a vector ``[o]`` to ``[1, ..., 1, o]`` with ``ndim`` dims (no rank promotion)."""
    return jnp.reshape(v, (1,) * (ndim - 1) + v.shape)


def _wrap(tree: Any) -> Any:
    """Turns a pytree of arrays (dicts, lists) into NNX Params inside NNX containers."""
    if isinstance(tree, Mapping):
        return nnx.Dict({k: _wrap(v) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return nnx.List([_wrap(v) for v in tree])
    return nnx.Param(tree)


def _unwrap(tree: Any) -> Any:
    if isinstance(tree, nnx.Variable):
        return tree[...]
    if isinstance(tree, (Mapping, nnx.Dict)):
        return {k: _unwrap(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple, nnx.List)):
        return [_unwrap(v) for v in tree]
    return tree


class FusionOperator(nnx.Module):
    """Base of the NNX fusion modules: parameters live here, the maths in pure functions.

    A subclass builds its parameters with its pure ``init_*`` function, hands them to
    ``__init__`` (each array becomes an ``nnx.Param`` at the attribute of the same
    name) and calls its pure apply function with ``self.functional_params()`` and
    ``compute_dtype=self.compute_dtype``.

    Every operator takes ``compute_dtype`` (default None): the dtype of its matmul
    operands, e.g. ``jnp.bfloat16`` for mixed precision; products accumulate in float32
    and everything else (biases, elementwise products, norms, gates, the parameters
    and their gradients) stays float32 (see ``matmul``).

    ``stochastic`` says whether the operator samples, and so takes ``key=`` when called
    (``hard_gated``; ``modality_shift`` with dropout); the others take no key.
    """

    stochastic: bool = False

    def __init__(
        self, in_dims: Sequence[int], out_dim: int, params: Params, compute_dtype: Any = None
    ):
        # plain ints (checked by the init function), also when given NumPy integers
        self.in_dims = tuple(int(d) for d in in_dims)
        self.out_dim = int(out_dim)
        self.compute_dtype = check_compute_dtype(
            compute_dtype, getattr(self, "name", type(self).__name__)
        )
        self._param_names = tuple(params)
        for key, value in params.items():
            setattr(self, key, _wrap(value))

    def functional_params(self) -> Params:
        """The parameters as the plain pytree the functional form takes."""
        return {key: _unwrap(getattr(self, key)) for key in self._param_names}
