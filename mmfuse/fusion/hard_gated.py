"""Hard gated fusion: one modality's expert per example, trained by Gumbel or REINFORCE."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse.fusion._core import (
    FusionOperator,
    Initializer,
    Params,
    check_choice,
    check_compute_dtype,
    check_dims,
    check_inputs,
    lecun_normal,
    linear,
    python_scalar,
)
from mmfuse.fusion._registry import register

ESTIMATORS = ("gumbel", "reinforce")


class HardGateAux(NamedTuple):
    """What a hard gate chose, for the REINFORCE surrogate and for inspection.

    Attributes:
      choice: ``[..., M]`` one-hot choice (no gradient).
      log_prob: ``[...]`` log-probability of the chosen modality under ``softmax(l)``
        (differentiable in the gate parameters).
      probs: ``[..., M]`` gate probabilities ``softmax(l)``.
    """

    choice: jax.Array
    log_prob: jax.Array
    probs: jax.Array


def _check_temperature(temperature: object) -> None:
    temperature = python_scalar(temperature)  # a concrete jnp scalar is checked too
    if isinstance(temperature, bool) or not isinstance(
        temperature, (numbers.Real, np.ndarray, jax.Array)
    ):
        raise ValueError(f"hard_gated: temperature must be a positive number, got {temperature!r}")
    if np.ndim(temperature) != 0:  # traced ones too: one τ for every example and modality
        raise ValueError(
            f"hard_gated: temperature must be a scalar, got shape {np.shape(temperature)}"
        )
    if isinstance(temperature, numbers.Real) and not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"hard_gated: temperature must be a positive number, got {temperature!r}")


def init_hard_gated(
    key: jax.Array, in_dims: Sequence[int], out_dim: int, *, kernel_init: Initializer | None = None
) -> Params:
    """Parameters ``{"kernels": [W_m: [d_m, C]], "biases": [b_m: [C]],
    "gate_kernel": [Σ d_m, M], "gate_bias": [M]}``.

    The gate bias starts at zero, so before training the gate favours no modality
    beyond what the random gate kernel implies.
    """
    in_dims, out_dim = check_dims(in_dims, out_dim, "hard_gated", min_modalities=2)
    kernel_init = kernel_init or lecun_normal()
    num_modalities = len(in_dims)
    keys = jax.random.split(key, num_modalities + 1)
    return {
        "kernels": [
            kernel_init(k, (d, out_dim), jnp.float32)
            for k, d in zip(keys[:-1], in_dims, strict=True)
        ],
        "biases": [jnp.zeros((out_dim,), jnp.float32) for _ in in_dims],
        "gate_kernel": kernel_init(keys[-1], (sum(in_dims), num_modalities), jnp.float32),
        "gate_bias": jnp.zeros((num_modalities,), jnp.float32),
    }


def hard_gated(
    params: Params,
    xs: Sequence[jax.typing.ArrayLike],
    *,
    key: jax.Array | None = None,
    estimator: str = "gumbel",
    temperature: float | jax.Array = 1.0,
    return_aux: bool = False,
    compute_dtype: Any = None,
) -> jax.Array | tuple[jax.Array, HardGateAux]:
    """Hard gated fusion: ``z = Σ_m c_m h_m`` with ``c`` one-hot, one modality per example.

    Experts ``h_m = W_m x_m + b_m`` and gate logits ``l = V [x_1; …; x_M] + c``
    (``[..., M]``). The forward value always uses exactly one expert per example;
    only the gradient differs between modes:

    - no ``key`` (evaluation): ``c = one_hot(argmax l)``; the gate gets no gradient.
    - ``key`` and ``estimator="gumbel"``: straight-through Gumbel-softmax. With Gumbel
      noise ``ε``, ``y_soft = softmax((l + ε) / τ)`` and ``y_hard = one_hot(argmax(l + ε))``
      (a sample of ``Categorical(softmax(l))``); ``c = y_hard + (y_soft − sg(y_soft))``
      equals ``y_hard`` exactly in the forward pass and has ``y_soft``'s gradient.
      Biased but low-variance; lower ``τ`` makes the bias smaller and the variance larger.
    - ``key`` and ``estimator="reinforce"``: ``c ~ Categorical(softmax(l))`` with no
      gradient through the choice; the gate learns only from ``reinforce_surrogate``
      applied to ``aux.log_prob``. Unbiased, higher variance.

    Args:
      params: ``{"kernels": [W_m: [d_m, C]], "biases": [b_m: [C]],
        "gate_kernel": [Σ d_m, M], "gate_bias": [M]}``.
      xs: M arrays ``[..., d_m]`` with shared leading dims (batch[, time]); each
        ``[...]`` position chooses independently.
      key: PRNG key for a training-mode sample; ``None`` for the deterministic argmax.
      estimator: ``"gumbel"`` or ``"reinforce"``; used only with a ``key``.
      temperature: ``τ > 0`` of the Gumbel-softmax relaxation (a Python number, or a
        scalar array so that it can be annealed under ``jit``); used only by the
        ``"gumbel"`` estimator.
      return_aux: also return a ``HardGateAux``.
      compute_dtype: the matmul operand dtype, e.g. ``jnp.bfloat16`` (float32
        accumulation; gate logits, probabilities and the choice stay float32); None
        (default) computes in the inputs' dtype.

    Returns:
      ``z``: ``[..., C]``, or ``(z, HardGateAux)`` with ``return_aux=True``.

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
      Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
      Reinforcement Learning", Machine Learning 1992.
    """
    check_choice(estimator, ESTIMATORS, "estimator", "hard_gated")
    _check_temperature(temperature)
    cd = check_compute_dtype(compute_dtype, "hard_gated")
    in_dims = [k.shape[0] for k in params["kernels"]]
    xs = check_inputs(xs, in_dims, "hard_gated")
    num_modalities = len(in_dims)
    experts = jnp.stack(
        [
            linear(x, k, b, compute_dtype=cd)
            for x, k, b in zip(xs, params["kernels"], params["biases"], strict=True)
        ],
        axis=-2,
    )  # [..., M, C]
    joint = jnp.concatenate(xs, axis=-1)  # [..., Σ d_m]
    logits = linear(joint, params["gate_kernel"], params["gate_bias"], compute_dtype=cd)
    log_probs = jax.nn.log_softmax(logits, axis=-1)

    if key is None:
        index = jnp.argmax(logits, axis=-1)  # [...]
        hard = jax.nn.one_hot(index, num_modalities, dtype=logits.dtype)
        choice = hard
    elif estimator == "gumbel":
        perturbed = logits + jax.random.gumbel(key, logits.shape, logits.dtype)  # [..., M]
        index = jnp.argmax(perturbed, axis=-1)
        hard = jax.nn.one_hot(index, num_modalities, dtype=logits.dtype)
        soft = jax.nn.softmax(perturbed / temperature, axis=-1)
        # Bracketed so that the forward value is y_hard + 0, exactly one-hot.
        choice = hard + (soft - jax.lax.stop_gradient(soft))
    else:
        index = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1)
        hard = jax.nn.one_hot(index, num_modalities, dtype=logits.dtype)
        choice = hard

    z = jnp.sum(choice[..., None] * experts, axis=-2)  # [..., C]
    if not return_aux:
        return z
    log_prob = jnp.take_along_axis(log_probs, index[..., None], axis=-1)[..., 0]  # [...]
    return z, HardGateAux(choice=hard, log_prob=log_prob, probs=jnp.exp(log_probs))


def reinforce_surrogate(
    log_prob: jax.typing.ArrayLike,
    loss: jax.typing.ArrayLike,
    baseline: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Score-function surrogate ``mean(sg(loss − baseline) · log_prob)``.

    Its gradient is the REINFORCE estimate of ``∇ E[mean(loss)]`` through the sampled
    choices; its value is not a loss to report. A trainer adds it to the task loss,
    which carries the gradient of the chosen experts:

        z, aux = op(xs, key=key, return_aux=True)          # estimator="reinforce"
        per_example = loss_fn(z, y)                        # [B]
        total = per_example.mean() + reinforce_surrogate(aux.log_prob, per_example)

    ``loss[i]`` must depend on the sampled choices only through the choice(s) whose
    log-probability is ``log_prob[i]``: when one example's loss depends on several
    choices (e.g. one per time step), pass ``aux.log_prob.sum(-1)`` and the
    per-example loss.

    Args:
      log_prob: ``[...]`` log-probabilities of the sampled choices (``aux.log_prob``).
      loss: ``[...]`` per-example losses, same shape (treated as constants).
      baseline: a scalar or a ``[...]`` array subtracted from ``loss`` to reduce the
        variance; it must not depend on example ``i``'s own choice. ``None`` uses the
        leave-one-out mean ``b_i = (Σ_j loss_j − loss_i) / (n − 1)`` over all ``n``
        examples, which keeps the estimate unbiased (zero when ``n = 1``).

    Returns:
      A scalar.

    References:
      Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
      Reinforcement Learning", Machine Learning 1992.
    """
    log_prob = jnp.asarray(log_prob)
    loss = jnp.asarray(loss)
    if log_prob.shape != loss.shape:
        raise ValueError(
            f"reinforce_surrogate: log_prob has shape {log_prob.shape} but loss has shape "
            f"{loss.shape}; pass one loss per sampled choice"
        )
    if baseline is None:
        n = loss.size
        baseline = (jnp.sum(loss) - loss) / (n - 1) if n > 1 else jnp.zeros_like(loss)
    else:
        baseline = jnp.asarray(baseline)
        if baseline.ndim and baseline.shape != loss.shape:
            raise ValueError(
                f"reinforce_surrogate: baseline has shape {baseline.shape}; expected a "
                f"scalar or loss's shape {loss.shape}"
            )
    advantage = jax.lax.stop_gradient(loss - baseline)
    return jnp.mean(advantage * log_prob)


@register("hard_gated")
class HardGatedFusion(FusionOperator):
    """Hard gated fusion: each example uses exactly one modality's expert (any M ≥ 2).

    Deterministic (argmax) without a key; pass ``key=`` while training to sample the
    choice and get gate gradients from the chosen estimator. ``stochastic = True``
    tells a trainer to pass a key in training steps.

    Options:
      estimator: ``"gumbel"`` (straight-through Gumbel-softmax, default) or
        ``"reinforce"`` (score function; add ``reinforce_surrogate`` to the loss).
      temperature: Gumbel-softmax temperature ``τ > 0`` (default 1.0); the
        ``"reinforce"`` estimator has none, and refuses another value.
      kernel_init: initializer of the expert and gate kernels (default LeCun normal
        over the input axis).
      compute_dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (see ``FusionOperator``).

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
      Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
      Reinforcement Learning", Machine Learning 1992.
    """

    stochastic = True

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dim: int,
        *,
        estimator: str = "gumbel",
        temperature: float = 1.0,
        kernel_init: Initializer | None = None,
        compute_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.estimator = check_choice(estimator, ESTIMATORS, "estimator", "hard_gated")
        temperature = python_scalar(temperature)
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise ValueError(
                f"hard_gated: temperature must be a positive number, got {temperature!r}"
            )
        _check_temperature(temperature)
        if self.estimator == "reinforce" and temperature != 1.0:
            raise ValueError(
                f"hard_gated: temperature={temperature!r} applies to the 'gumbel' estimator "
                "only; 'reinforce' samples from softmax(logits) and has no temperature"
            )
        self.temperature = float(temperature)
        super().__init__(
            in_dims,
            out_dim,
            init_hard_gated(rngs.params(), in_dims, out_dim, kernel_init=kernel_init),
            compute_dtype,
        )

    def __call__(
        self,
        xs: Sequence[jax.typing.ArrayLike],
        *,
        key: jax.Array | None = None,
        return_aux: bool = False,
    ) -> jax.Array | tuple[jax.Array, HardGateAux]:
        """``z: [..., C]`` (and ``HardGateAux`` with ``return_aux``); see ``hard_gated``."""
        return hard_gated(
            self.functional_params(),
            xs,
            key=key,
            estimator=self.estimator,
            temperature=self.temperature,
            return_aux=return_aux,
            compute_dtype=self.compute_dtype,
        )
