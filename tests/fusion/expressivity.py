"""Tasks that tell which fusion operators can express a cross-modal interaction.

Each operator maps the two raw modalities straight to the two class logits, so what it
can learn is exactly what its fusion equation can express:

- ``xor``: a hidden bit per modality, the label is their XOR. No additive function of
  the modalities beats chance; every operator with a multiplicative term can solve it.
- ``sum``: a hidden Gaussian per modality, the label is whether their sum is positive.
  An additive model is the right model; every operator should do well.

Each modality is its latent (the bit as ±1, or the Gaussian) times a random direction in
``R^8``, plus isotropic noise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmfuse import fusion

TASKS = ("xor", "sum")

# Options that differ from the operators' defaults, chosen for 8-wide inputs and 2 logits.
# A pure bilinear form x_Aᵀ W x_B has no unimodal terms, so the demo uses the
# multiplicative-interactions form (bilinear + both linear terms) that can also be additive.
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "bilinear": {"linear_terms": True},
    "modality_shift": {"beta": 1.0},
    "nonlinear": {"hidden_dims": (32,)},
}


def make_task(
    kind: str, num_examples: int, *, width: int = 8, noise: float = 0.5, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Generates ``((x_A [N, width], x_B [N, width]), labels [N])`` for a demo task."""
    if kind not in TASKS:
        raise ValueError(f"unknown task {kind!r}; tasks: {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(2, width))  # one fixed direction per modality
    if kind == "xor":
        bits = rng.integers(0, 2, size=(num_examples, 2))
        latents = 2.0 * bits - 1.0
        labels = bits[:, 0] ^ bits[:, 1]
    else:
        latents = rng.normal(size=(num_examples, 2))
        labels = (latents.sum(axis=1) > 0).astype(np.int64)
    xs = tuple(
        (
            latents[:, m, None] * directions[m] + noise * rng.normal(size=(num_examples, width))
        ).astype(np.float32)
        for m in range(2)
    )
    return xs, labels.astype(np.int32)


def train_operator(
    name: str,
    train: tuple[Sequence[np.ndarray], np.ndarray],
    test: tuple[Sequence[np.ndarray], np.ndarray],
    *,
    steps: int = 1500,
    batch_size: int = 128,
    learning_rate: float = 1e-2,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains ``name`` (raw modalities -> 2 logits) with Adam; returns test accuracy etc.

    ``options`` are added to the demo options (e.g. ``compute_dtype``)."""
    (train_xs, train_y), (test_xs, test_y) = train, test
    in_dims = tuple(x.shape[-1] for x in train_xs)
    options = {**DEMO_OPTIONS.get(name, {}), **(options or {})}
    op = fusion.create(name, in_dims, 2, rngs=nnx.Rngs(seed), **options)
    stochastic = getattr(op, "stochastic", False)
    graphdef, params = nnx.split(op)
    num_params = sum(x.size for x in jax.tree.leaves(params))
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    def loss_fn(params, xs, labels, key):
        kwargs = {"key": key} if stochastic else {}
        logits = nnx.merge(graphdef, params)(xs, **kwargs)  # [B, 2]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train_step(params, opt_state, xs, labels, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def predict(params, xs):
        return jnp.argmax(nnx.merge(graphdef, params)(xs), axis=-1)  # [N]

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    num_train = train_y.shape[0]
    start = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, num_train, size=batch_size)
        key, step_key = jax.random.split(key)
        batch = tuple(x[idx] for x in train_xs)
        params, opt_state, _ = train_step(params, opt_state, batch, train_y[idx], step_key)
    accuracy = float(np.mean(np.asarray(predict(params, tuple(test_xs))) == test_y))
    return {
        "accuracy": accuracy,
        "params": int(num_params),
        "seconds": time.perf_counter() - start,
    }


def run(
    operators: Sequence[str] | None = None,
    tasks: Sequence[str] = TASKS,
    *,
    num_train: int = 2000,
    num_test: int = 2000,
    seed: int = 0,
    **train_kwargs: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """Results ``{task: {operator: {"accuracy", "params", "seconds"}}}``."""
    operators = tuple(operators or fusion.names())
    results: dict[str, dict[str, dict[str, float]]] = {}
    for task in tasks:
        xs, labels = make_task(task, num_train + num_test, seed=seed)
        train = (tuple(x[:num_train] for x in xs), labels[:num_train])
        test = (tuple(x[num_train:] for x in xs), labels[num_train:])
        results[task] = {
            name: train_operator(name, train, test, seed=seed, **train_kwargs) for name in operators
        }
    return results
