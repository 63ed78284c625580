"""N = 16,384 examples (2.7e8 pairs, C = 16) on the CPU without the N×N×C grid."""

import jax
import numpy as np

from mmfuse import interactions
from tests.interactions.fns import normal

N, C, RANK = 16384, 16, 2


def test_sixteen_thousand_examples_never_hold_the_grid(optimized_compiles):
    a, b = normal(50, (N, RANK)), normal(51, (N, RANK))
    p, q = normal(52, (RANK, C)), normal(53, (RANK, C))

    def fn(xs):  # a low-rank product g(a)·h(b) per output: [n, C]
        return (xs[0] @ p) * (xs[1] @ q)

    compiled = jax.jit(lambda a, b: interactions.emap(fn, (a, b))).lower(a, b).compile()
    memory = compiled.memory_analysis()
    grid_bytes = N * N * C * 4  # 17.2 GB
    used = memory.temp_size_in_bytes + memory.output_size_in_bytes
    assert used < grid_bytes / 20  # one block of rows and the O(N·C) sums, not the grid
    projected = np.asarray(compiled(a, b), np.float64)
    # f = g(a)·h(b): EMAP_i = ḡ·h(b_i) + g(a_i)·h̄ − ḡ·h̄
    g, h = np.asarray(a @ p, np.float64), np.asarray(b @ q, np.float64)
    g_bar, h_bar = g.mean(axis=0), h.mean(axis=0)
    expected = g_bar * h + g * h_bar - g_bar * h_bar
    np.testing.assert_allclose(projected, expected, rtol=1e-4, atol=1e-5)
