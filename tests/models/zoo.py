"""Tiny models of every kind, inputs for them, and compiled callers shared by the tests.

Calls go through ``jit_call`` (or a jitted pure apply) rather than eager execution:
eager JAX compiles every new primitive shape, and a GRU's scan on every call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse import fusion, models

B = 4
C = 2
TRANSFORMER_SIZES = dict(d_model=8, num_heads=2, mlp_dim=16, max_len=8)


def normal(seed, shape):
    """Standard normal test data (NumPy: a new shape costs no compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


@nnx.jit
def jit_call(module, *args, **kwargs):
    """``module(*args, **kwargs)``, compiled once per module structure and input shapes."""
    return module(*args, **kwargs)


def fusion_mlp_tensor(seed=0):
    """Vectors [B, 3], [B, 5] -> MLP encoders -> tensor fusion -> MLP head."""
    rngs = nnx.Rngs(seed)
    return models.FusionModel(
        [models.MLP(3, (6,), 4, rngs=rngs), models.MLP(5, (6,), 3, rngs=rngs)],
        fusion.create("tensor", (4, 3), 5, rngs=rngs),
        models.MLP(5, (6,), C, activation="tanh", rngs=rngs),
    )


def fusion_sequence_additive(seed=0):
    """Sequences [B, 6, 3] and a vector [B, 2] -> GRU / identity -> additive fusion."""
    rngs = nnx.Rngs(seed)
    return models.FusionModel(
        [models.SequenceEncoder(3, 4, pool="mean", rngs=rngs), None],
        fusion.create("additive", (4, 2), C, rngs=rngs),
        None,
    )


def late_fusion(seed=0, combine="weighted"):
    """Vectors [B, 3], [B, 5] -> one MLP predictor each -> mean or learned weights."""
    rngs = nnx.Rngs(seed)
    model = models.LateFusion(
        [models.MLP(3, (6,), C, rngs=rngs), models.MLP(5, (6,), C, rngs=rngs)], combine=combine
    )
    if combine == "weighted":  # unequal weights, so tests see them
        model.weight_logits[...] = normal(seed + 100, (2,))
    return model


def early_transformer(seed=0, **options):
    """Raw tokens [B, 5, 3], [B, 4, 2], [B, 3] (one token) -> one joint transformer layer."""
    options = {**TRANSFORMER_SIZES, "num_layers": 1, **options}
    return models.EarlyFusionTransformer((3, 2, 3), C, **options, rngs=nnx.Rngs(seed))


def bottleneck(seed=0, **options):
    """Raw tokens [B, 5, 3], [B, 4, 2] -> one unimodal layer, two fusion layers, 2 bottlenecks."""
    options = {**TRANSFORMER_SIZES, "num_layers": 3, "num_bottlenecks": 2, **options}
    return models.BottleneckFusion((3, 2), C, **options, rngs=nnx.Rngs(seed))


def vector_inputs(seed=0, batch=B):
    return (normal(seed, (batch, 3)), normal(seed + 1, (batch, 5)))


def sequence_inputs(seed=0, batch=B):
    return (normal(seed, (batch, 6, 3)), normal(seed + 1, (batch, 2)))


def early_inputs(seed=0, batch=B):
    return (
        normal(seed, (batch, 5, 3)),
        normal(seed + 1, (batch, 4, 2)),
        normal(seed + 2, (batch, 3)),
    )


def bottleneck_inputs(seed=0, batch=B):
    return (normal(seed, (batch, 5, 3)), normal(seed + 1, (batch, 4, 2)))


def all_real(xs):
    """Masks that keep every token: [B, T_m] (or [B] for a one-token [B, d_m] input)."""
    return tuple(jnp.ones(x.shape[:-1], bool) for x in xs)


# name -> (build, make_inputs): one model of each kind
KINDS = {
    "fusion_mlp_tensor": (fusion_mlp_tensor, vector_inputs),
    "fusion_sequence_additive": (fusion_sequence_additive, sequence_inputs),
    "late_fusion": (late_fusion, vector_inputs),
    "early_transformer": (early_transformer, early_inputs),
    "bottleneck": (bottleneck, bottleneck_inputs),
}
FACTORIZING = ("fusion_mlp_tensor", "fusion_sequence_additive", "late_fusion")
TRANSFORMERS = ("early_transformer", "bottleneck")


@functools.cache
def built(name):
    """``KINDS[name]`` built once (seed 0); tests must not change it."""
    return KINDS[name][0]()


@functools.cache
def pure_and_jit(name):
    """The PureModel of ``built(name)`` and its jitted ``apply``, made once."""
    pure = models.as_pure(built(name))
    return pure, jax.jit(pure.apply)
