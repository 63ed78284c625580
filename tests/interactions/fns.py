"""Test functions with known EMAP structure, and a float64 brute-force EMAP over the full grid."""

import itertools

import jax.numpy as jnp
import numpy as np


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def inputs(seed, n, widths):
    """M arrays [N, d_m]."""
    return tuple(normal(seed + m, (n, d)) for m, d in enumerate(widths))


def interacting(widths, num_outputs=3, seed=100):
    """``tanh(Σ_m x_m W_m) V``: [n, C] logits with cross-modal interactions."""
    ws = [np.random.default_rng(seed + m).standard_normal((d, 8)) for m, d in enumerate(widths)]
    v = np.random.default_rng(seed - 1).standard_normal((8, num_outputs))
    ws = [jnp.asarray(w, jnp.float32) for w in ws]
    v = jnp.asarray(v, jnp.float32)

    def fn(xs):
        return jnp.tanh(sum(x @ w for x, w in zip(xs, ws, strict=True))) @ v  # [n, C]

    return fn


def additive(widths, num_outputs=3, seed=200):
    """``Σ_m tanh(x_m W_m) V_m``: nonlinear in each modality but additive across them."""
    rng = np.random.default_rng(seed)
    ws = [jnp.asarray(rng.standard_normal((d, 5)), jnp.float32) for d in widths]
    vs = [jnp.asarray(rng.standard_normal((5, num_outputs)), jnp.float32) for _ in widths]

    def fn(xs):
        return sum(jnp.tanh(x @ w) @ v for x, w, v in zip(xs, ws, vs, strict=True))  # [n, C]

    return fn


def grid(fn, xs):
    """All N^M outputs ``[N, ..., N, C]`` (float64), from one call on the flat cross batch."""
    n, m = xs[0].shape[0], len(xs)
    idx = np.array(list(itertools.product(range(n), repeat=m)))  # [N^M, M]
    out = np.asarray(fn(tuple(x[idx[:, k]] for k, x in enumerate(xs))), np.float64)
    return out.reshape((n,) * m + out.shape[1:])


def brute_force(values, num_modalities):
    """EMAP of a grid ``[N, ..., N, *out]`` (M axes of N): marginals, grand mean, projected."""
    m = num_modalities
    n = values.shape[0]
    axes = tuple(range(m))
    marginals = [values.mean(axis=tuple(a for a in axes if a != k)) for k in axes]  # [N, *out]
    grand = values.mean(axis=axes)  # [*out]
    projected = sum(marginals) - (m - 1) * grand
    diagonal = values[(np.arange(n),) * m]  # [N, *out]
    return marginals, grand, projected, diagonal
