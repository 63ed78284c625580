"""Monte-Carlo EMAP: K sampled partners per example and modality, O(N·K·M) evaluations.

For example i and modality m, ``E[f | x_m = x_m^i]`` under the product of the empirical
marginals is the mean of ``f`` over all N^(M-1) choices of the other modalities'
examples. Drawing each other index independently and uniformly from [N] samples that
distribution exactly, so the mean of K draws is unbiased and its standard error is
``s / √K`` (s the sample standard deviation). Draws are independent across (m, i).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mmfuse.interactions._checks import ModelFn, call_flat
from mmfuse.interactions._exact import saturating_add


def sampled_moments(
    fn: ModelFn,
    xs: tuple[jax.Array, ...],
    shift: jax.Array,
    num_samples: int,
    key: jax.Array,
    block_size: int,
    dtype: Any,
    name: str,
    *,
    start: jax.Array | int = 0,
    num_examples: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-(modality, example) sample mean and variance of ``f - shift`` over K partners.

    Args:
      fn: ``fn(xs) -> [n, ...]`` for a tuple of M batches ``[n, ...]``.
      xs: M arrays ``[N, ...]``.
      shift: ``[C]``, subtracted from every output.
      num_samples: K ≥ 2 draws per example and modality.
      key: a PRNG key; block b uses ``fold_in(key, b)``.
      block_size: B examples per block; each block evaluates ``M·B·K`` pairs in one call.
      dtype: the accumulation dtype.
      name: for error messages.
      start, num_examples: estimate for examples ``start .. start + num_examples - 1`` only (a
        device's shard), their partners still drawn from all N; default all N.

    Returns:
      ``means [M, n, C]``, ``variances [M, n, C]`` (unbiased sample variances, ddof 1)
      for the ``n = num_examples`` examples, and the number of sampled pairs with a non-finite
      output (int32, saturating).
    """
    num_modalities, n = len(xs), xs[0].shape[0]
    num_outputs, k = shift.shape[0], num_samples
    num_examples = n if num_examples is None else num_examples
    num_blocks = -(-num_examples // block_size)
    pairs = num_modalities * block_size * k
    # own[t, ..., m]: in the draws for target modality t, modality m keeps the example
    own = jnp.eye(num_modalities, dtype=bool)[:, None, None, :]  # [M, 1, 1, M]

    def block(count, b):
        examples = b * block_size + jnp.arange(block_size)  # [B]
        valid = examples < num_examples  # the last block is padded
        examples = start + jnp.minimum(examples, num_examples - 1)
        shape = (num_modalities, block_size, k, num_modalities)  # [target, B, K, modality]
        draws = jax.random.randint(jax.random.fold_in(key, b), shape, 0, n)
        idx = jnp.where(own, examples[None, :, None, None], draws)  # [M, B, K, M]
        batch = tuple(x[idx[..., m].reshape(-1)] for m, x in enumerate(xs))  # M x [M·B·K, ...]
        out = call_flat(fn, batch, pairs, dtype, name)
        out = out.reshape(num_modalities, block_size, k, num_outputs)  # [M, B, K, C]
        bad = jnp.logical_and(~jnp.all(jnp.isfinite(out), axis=-1), valid[None, :, None])
        count = saturating_add(count, jnp.sum(bad, dtype=jnp.int32))
        out = out - shift[None, None, None, :]
        mean = jnp.mean(out, axis=2)  # [M, B, C]
        # two passes (mean, then squared deviations) for a stable variance
        var = jnp.sum(jnp.square(out - mean[:, :, None, :]), axis=2) / (k - 1)  # [M, B, C]
        return count, (mean, var)

    count, (means, variances) = jax.lax.scan(
        block, jnp.zeros((), jnp.int32), jnp.arange(num_blocks)
    )  # [num_blocks, M, B, C] each

    def unblock(a: jax.Array) -> jax.Array:
        a = jnp.moveaxis(a, 1, 0).reshape(num_modalities, num_blocks * block_size, num_outputs)
        return a[:, :num_examples]  # [M, n, C]

    return unblock(means), unblock(variances), count
