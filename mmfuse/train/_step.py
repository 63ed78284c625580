"""The train state and the pure train step that ``fit`` jits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Batch = Mapping[str, Any]
LossFn = Callable[[nnx.Module, Batch, jax.Array], jax.Array | tuple[jax.Array, dict[str, Any]]]


def _tree_where(condition: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


class TrainStep:
    """``model`` split into ``(graphdef, params, rest)``, and the pure functions of training.

    ``nnx.Param`` leaves are trained. The other variables (BatchNorm statistics, the
    counters of an ``nnx.Rngs`` the model holds) keep what the loss's call of the model
    leaves in them; they travel in the train state, so that they are checkpointed and
    resumed. The state is a dict: ``step``, ``params``, ``opt_state``, ``best_params``,
    ``loss_sum`` (since the last reset), ``nan_step`` (the first non-finite step, or -1),
    and with such variables ``rest`` and ``best_rest``.

    Args:
      model: the NNX module to train (not modified).
      loss_fn: ``loss_fn(model, batch, key) -> loss`` or ``(loss, aux)``.
      optimizer: an optax transformation.
      seed: step ``s`` gets the key ``fold_in(key(seed), s)``.
    """

    def __init__(
        self, model: nnx.Module, loss_fn: LossFn, optimizer: optax.GradientTransformation, seed: int
    ):
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.stateful = bool(jax.tree.leaves(self.rest))
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.base_key = jax.random.key(seed)

    def init_state(self) -> dict[str, Any]:
        """The state before the first step."""
        # Copies: the state is donated to the train step, and must not alias the
        # caller's model or itself.
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": jax.tree.map(jnp.copy, self.params),
            "opt_state": self.optimizer.init(self.params),
            "best_params": jax.tree.map(jnp.copy, self.params),
            "loss_sum": jnp.zeros((), jnp.float32),
            "nan_step": jnp.full((), -1, jnp.int32),
        }
        if self.stateful:
            state["rest"] = jax.tree.map(jnp.copy, self.rest)
            state["best_rest"] = jax.tree.map(jnp.copy, self.rest)
        return state

    def variables(self, state: dict[str, Any], best: bool = False) -> nnx.State:
        """The non-parameter variables of ``state`` (the best evaluation's with ``best``)."""
        return state["best_rest" if best else "rest"] if self.stateful else self.rest

    def keep_best(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with its current parameters (and variables) recorded as the best."""
        state = {**state, "best_params": jax.tree.map(jnp.copy, state["params"])}
        if self.stateful:
            state["best_rest"] = jax.tree.map(jnp.copy, state["rest"])
        return state

    def merge(self, params: nnx.State, rest: nnx.State) -> nnx.Module:
        return nnx.merge(self.graphdef, params, rest)

    def _loss(
        self, params: nnx.State, rest: nnx.State, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, nnx.State]:
        # fresh variables, created under the gradient's trace, so that the model may update them
        stepped = nnx.merge(self.graphdef, params, jax.tree.map(lambda x: x, rest))
        out = self.loss_fn(stepped, batch, key)
        loss = out[0] if isinstance(out, tuple) else out
        return loss, nnx.split(stepped, nnx.Param, ...)[2]

    def __call__(self, state: dict[str, Any], batch: Batch) -> dict[str, Any]:
        """One update: the loss's gradient and the optimizer's step, or, when the loss, the
        gradient or the new parameters are not all finite, no change but ``nan_step``."""
        key = jax.random.fold_in(self.base_key, state["step"])
        (loss, new_rest), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state["params"], self.variables(state), batch, key
        )
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        # a finite loss can still have a NaN gradient (e.g. the norm of a zero vector):
        # such an update would leave NaN parameters in the next checkpoint
        finite = jnp.isfinite(loss)
        for tree in (grads, new_params):
            for leaf in jax.tree.leaves(tree):
                finite = finite & jnp.all(jnp.isfinite(leaf))
        first_bad = (state["nan_step"] < 0) & ~finite
        if self.stateful:
            state = {**state, "rest": _tree_where(finite, new_rest, state["rest"])}
        return {
            **state,
            "step": state["step"] + 1,
            "params": _tree_where(finite, new_params, state["params"]),
            "opt_state": _tree_where(finite, opt_state, state["opt_state"]),
            "loss_sum": state["loss_sum"] + jnp.where(finite, loss, 0.0),
            # counted as metrics and checkpoints count: step k is the k-th update
            "nan_step": jnp.where(first_bad, state["step"] + 1, state["nan_step"]),
        }
