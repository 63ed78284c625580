"""EMAP of early-fusion MLP heads: the first layer split per modality, and the fused kernel.

The Pallas kernel runs in interpret mode here (no GPU); it must give what the plain
blocked pass gives on the same head, and what EMAP of the whole model gives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion, interactions, models
from mmfuse.interactions import _mlp_kernel
from mmfuse.interactions._mlp_head import split_mlp
from mmfuse.interactions._mlp_kernel import fused_pair_sums


def inputs(seed, n, widths):
    keys = jax.random.split(jax.random.key(seed), len(widths))
    return tuple(jax.random.normal(k, (n, d)) for k, d in zip(keys, widths, strict=True))


def early_fusion(widths=(7, 3), hidden=(24, 20), out=3, head=None, activation="relu", seed=0):
    """An MLP encoder for modality 0, identity for the others, nonlinear fusion, a head."""
    rngs = nnx.Rngs(seed)
    dims = (5, *widths[1:])
    encoders = [models.MLP(widths[0], (), 5, rngs=rngs), *([None] * (len(widths) - 1))]
    fused = out if head is None else 6
    op = fusion.create(
        "nonlinear", dims, fused, hidden_dims=hidden, activation=activation, rngs=rngs
    )
    if head == "linear":
        head = nnx.Linear(fused, out, rngs=rngs)
    elif head == "mlp":
        head = models.MLP(fused, (9,), out, activation="tanh", rngs=rngs)
    return models.FusionModel(encoders, op, head)


def whole_model_emap(model, xs):
    pure = models.as_pure(model)
    return interactions.emap_decompose(lambda batch: pure.apply(pure.params, batch), xs)


def assert_same(got, want, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(got.original, want.original, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.projected, want.projected, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.grand_mean, want.grand_mean, rtol=rtol, atol=atol)
    for a, b in zip(got.marginals, want.marginals, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert int(got.num_nonfinite) == int(want.num_nonfinite)


@pytest.mark.parametrize("head", [None, "linear", "mlp"])
def test_split_head_runs_the_rest_of_the_network_on_summed_parts(head):
    model, xs = early_fusion(head=head), inputs(1, 9, (7, 3))
    fn, us = interactions.model_fn(model, xs)
    # the first layer's parts, computed once per example: [N, H]
    assert [u.shape for u in us] == [(9, 24), (9, 24)]
    np.testing.assert_allclose(fn(us), model(xs), rtol=1e-5, atol=1e-6)
    # the parts of a cross pair give the model on that pair
    crossed = (xs[0][:1].repeat(9, 0), xs[1])
    np.testing.assert_allclose(fn((us[0][:1].repeat(9, 0), us[1])), model(crossed), rtol=1e-5)


def test_models_without_an_mlp_on_the_concatenation_are_not_split():
    rngs = nnx.Rngs(0)
    tensor = models.FusionModel([None, None], fusion.create("tensor", (3, 2), 4, rngs=rngs))
    assert split_mlp(tensor) is None
    custom_head = models.FusionModel(
        [None, None],
        fusion.create("nonlinear", (3, 2), 4, rngs=rngs),
        nnx.Sequential(nnx.Linear(4, 2, rngs=rngs)),
    )
    assert split_mlp(custom_head) is None


@pytest.mark.parametrize(
    ("head", "activation", "tiles"),
    [
        (None, "relu", {}),
        ("linear", "gelu", {"block_size": 4}),
        ("mlp", "silu", {"block_size": 8}),
    ],
)
def test_fused_kernel_equals_the_blocked_pass_and_the_whole_model(head, activation, tiles):
    # 37 examples: neither rows nor columns fill whole tiles, so padding is masked out
    model, xs = early_fusion(head=head, activation=activation), inputs(2, 37, (7, 3))
    want = whole_model_emap(model, xs)
    split = interactions.emap_model(model, xs, decompose=True)
    fused = interactions.emap_model(model, xs, decompose=True, kernel="pallas", **tiles)
    # also through emap_model's kernel options: one row per step, 16-column tiles
    options = {"block_cols": 16, "rows_per_step": 1}
    assert_same(
        interactions.emap_model(model, xs, decompose=True, kernel="pallas", kernel_options=options),
        want,
    )
    assert_same(split, want)
    assert_same(fused, want)
    # the model does use interactions: the comparison is not between zeros
    assert np.max(np.abs(want.residual)) > 1e-2


@pytest.mark.parametrize(
    ("hidden", "block_cols", "rows_per_step", "block_rows", "hidden_chunk"),
    [
        ((20,), 16, 1, 8, 16),  # one layer after the split: nothing to slice
        ((20, 40), 8, 4, 16, 16),  # the 40 (64 padded) hidden units in 4 slices
        ((20, 40), 16, 2, 4, None),  # all at once
    ],
)
def test_fused_kernel_tiles(hidden, block_cols, rows_per_step, block_rows, hidden_chunk):
    model, xs = early_fusion(hidden=hidden, out=2), inputs(3, 29, (7, 3))
    fn, us = interactions.model_fn(model, xs)
    split = split_mlp(model)
    shift = jnp.array([0.25, -0.5])
    (rows, cols), count = fused_pair_sums(
        *us,
        split.layers,
        split.activations,
        shift,
        block_rows=block_rows,
        block_cols=block_cols,
        rows_per_step=rows_per_step,
        hidden_chunk=hidden_chunk,
    )
    # the brute-force grid F[i, j] = f(u_i, v_j)
    grid = jax.vmap(lambda u: fn((jnp.broadcast_to(u, us[1].shape), us[1])))(us[0])
    grid = grid - shift[None, None, :]  # [N, N, C]
    np.testing.assert_allclose(rows, grid.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cols, grid.sum(0), rtol=1e-5, atol=1e-5)
    assert int(count) == 0


def test_bfloat16_operands_with_float32_accumulation():
    model, xs = early_fusion(head="linear"), inputs(4, 33, (7, 3))
    exact = interactions.emap_model(model, xs, decompose=True)
    split = interactions.emap_model(model, xs, decompose=True, compute_dtype=jnp.bfloat16)
    fused = interactions.emap_model(
        model, xs, decompose=True, kernel="pallas", compute_dtype=jnp.bfloat16
    )
    assert fused.projected.dtype == jnp.float32
    # the two bf16 paths round the same operands; both are near the float32 values
    assert_same(fused, split, rtol=1e-3, atol=1e-3)
    scale = np.max(np.abs(exact.projected))
    assert np.max(np.abs(split.projected - exact.projected)) < 2e-2 * scale
    assert np.max(np.abs(split.projected - exact.projected)) > 0  # bf16 did round


def test_a_model_built_in_bf16_gets_emap_in_bf16_by_default():
    model, xs = early_fusion(head="mlp"), inputs(4, 33, (7, 3))
    low = early_fusion(head="mlp")  # the same parameters (same seed), fusion and head in bf16
    low.fusion.compute_dtype = low.head.compute_dtype = jnp.dtype(jnp.bfloat16)
    # the split path follows the fusion operator's compute_dtype...
    assert_same(
        interactions.emap_model(low, xs, decompose=True),
        interactions.emap_model(model, xs, decompose=True, compute_dtype=jnp.bfloat16),
        rtol=0,
        atol=0,
    )
    # ...and so agrees with EMAP of the whole model, which computes the fusion in bf16
    assert_same(
        interactions.emap_model(low, xs, decompose=True),
        whole_model_emap(low, xs),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("low_part", ["fusion", "head"])
def test_fusion_and_head_each_keep_their_own_compute_dtype(low_part):
    xs = inputs(4, 33, (7, 3))
    mixed = early_fusion(head="mlp")
    getattr(mixed, low_part).compute_dtype = jnp.dtype(jnp.bfloat16)  # the other stays f32
    whole = whole_model_emap(mixed, xs)
    split = interactions.emap_model(mixed, xs, decompose=True)
    assert_same(split, whole, rtol=1e-5, atol=1e-5)
    # one dtype for every layer (what the split path did before) is visibly off
    for dtype in (jnp.bfloat16, jnp.float32):
        one = interactions.emap_model(mixed, xs, decompose=True, compute_dtype=dtype)
        assert np.max(np.abs(one.projected - whole.projected)) > 1e-4
    # the fused kernel has one dtype for all layers, so it asks for one
    with pytest.raises(ValueError, match=r"layers compute in bfloat16 and float32; pass"):
        interactions.emap_model(mixed, xs, kernel="pallas")
    pinned = interactions.emap_model(mixed, xs, kernel="pallas", compute_dtype=jnp.bfloat16)
    np.testing.assert_allclose(
        pinned, interactions.emap_model(mixed, xs, compute_dtype=jnp.bfloat16), atol=1e-3
    )


def test_an_explicit_float32_head_is_the_float32_the_fusion_computes_in():
    model, xs = early_fusion(head="mlp"), inputs(4, 9, (7, 3))
    model.head.compute_dtype = jnp.dtype(jnp.float32)  # the fusion's is None: its inputs'
    fused = interactions.emap_model(model, xs, decompose=True, kernel="pallas")
    assert_same(fused, interactions.emap_model(model, xs, decompose=True))


def test_non_finite_pairs_are_counted_as_by_the_blocked_pass():
    model, xs = early_fusion(hidden=(8,), out=2), inputs(5, 21, (7, 3))
    # one huge example of modality 1 overflows the hidden layer for every pair it is in
    big = xs[1].at[4].set(3e38)
    xs = (xs[0], big)
    want = jax.jit(lambda: whole_model_emap(model, xs))()
    got = jax.jit(lambda: interactions.emap_model(model, xs, decompose=True, kernel="pallas"))()
    assert int(want.num_nonfinite) > 0
    assert int(got.num_nonfinite) == int(want.num_nonfinite)
    with pytest.raises(ValueError, match=r"non-finite outputs .* for \d+ of the 21\^2"):
        interactions.emap_model(model, xs, kernel="pallas")


def test_split_head_in_three_modalities_and_monte_carlo():
    model, xs = early_fusion(widths=(7, 3, 4), hidden=(16,)), inputs(6, 11, (7, 3, 4))
    assert_same(interactions.emap_model(model, xs, decompose=True), whole_model_emap(model, xs))
    sampled = interactions.emap_model(
        model, xs, decompose=True, num_samples=64, key=jax.random.key(0)
    )
    exact = whole_model_emap(model, xs)
    z = (sampled.projected - exact.projected) / sampled.projected_stderr
    assert np.max(np.abs(z)) < 5


def test_fused_kernel_works_under_jit_and_matches_eager():
    model, xs = early_fusion(), inputs(7, 19, (7, 3))
    eager = interactions.emap_model(model, xs, kernel="pallas")
    jitted = jax.jit(lambda xs: interactions.emap_model(model, xs, kernel="pallas"))(xs)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


def test_errors_name_the_problem():
    model, xs = early_fusion(), inputs(8, 6, (7, 3))
    with pytest.raises(ValueError, match="kernel='cuda' is not one of"):
        interactions.emap_model(model, xs, kernel="cuda")
    rngs = nnx.Rngs(0)
    tensor = models.FusionModel([None, None], fusion.create("tensor", (7, 3), 2, rngs=rngs))
    with pytest.raises(ValueError, match=r"fusion TensorFusion\) has none; use kernel='xla'"):
        interactions.emap_model(tensor, xs, kernel="pallas")
    additive = models.FusionModel([None, None], fusion.create("additive", (7, 3), 2, rngs=rngs))
    with pytest.raises(ValueError, match=r"compute_dtype applies .* AdditiveFusion\) has neither"):
        interactions.emap_model(additive, xs, compute_dtype=jnp.bfloat16)
    three, xs3 = early_fusion(widths=(7, 3, 4)), inputs(8, 6, (7, 3, 4))
    with pytest.raises(ValueError, match="pairs two modalities; this model has 3"):
        interactions.emap_model(three, xs3, kernel="pallas")
    with pytest.raises(ValueError, match="computes exact EMAP; for Monte-Carlo use kernel='xla'"):
        interactions.emap_model(model, xs, kernel="pallas", num_samples=4, key=jax.random.key(0))
    sequences = tuple(np.stack([x, x], axis=1) for x in xs)  # [N, T=2, d_m]
    with pytest.raises(ValueError, match=r"one vector per example.*\(6, 2, 24\).*use kernel='xla'"):
        interactions.emap_model(model, sequences, kernel="pallas")
    # Triton tiles have power-of-two sides: the rows of a program are one
    with pytest.raises(
        ValueError, match=r"block_size \(rows per program\) must be a power of two, got 6"
    ):
        interactions.emap_model(model, xs, kernel="pallas", block_size=6)
    options = {"rows_per_step": 4}
    with pytest.raises(ValueError, match="multiple of rows_per_step=4, got 2"):
        interactions.emap_model(model, xs, kernel="pallas", block_size=2, kernel_options=options)
    # each program stores [N, C] column sums: too many programs would rival the N² grid
    many = (
        jax.ShapeDtypeStruct((2050, 7), jnp.float32),
        jax.ShapeDtypeStruct((2050, 3), jnp.float32),
    )
    message = r"block_size=2 .* gives 1025 programs for N = 2050.* at most 1024: block_size >= 4"
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(
            lambda *xs: interactions.emap_model(model, xs, kernel="pallas", block_size=2), *many
        )
    with pytest.raises(ValueError, match="block_cols must be a power of two, got 24"):
        interactions.emap_model(model, xs, kernel="pallas", kernel_options={"block_cols": 24})
    with pytest.raises(ValueError, match="hidden_chunk must be a power of two, got 48"):
        interactions.emap_model(model, xs, kernel="pallas", kernel_options={"hidden_chunk": 48})
    for options, match in [
        ({"num_warps": 3}, "num_warps must be a power of two, got 3"),
        ({"num_warps": 64}, r"num_warps must be at most 32 \(1,024 threads\), got 64"),
        ({"num_stages": 0}, "num_stages must be at least 1, got 0"),
        ({"num_stages": "x"}, "num_stages must be an int, got 'x'"),
        ({"block_cols": 16.0}, "block_cols must be an int, got 16.0"),
        ({"block_cols": 2**20}, "block_cols must be at most 1024, got 1048576"),
    ]:
        with pytest.raises(ValueError, match=match):
            interactions.emap_model(model, xs, kernel="pallas", kernel_options=options)
    tiles = {"block_cols": np.int64(16), "rows_per_step": np.int32(2)}  # NumPy ints are ints
    tiles |= {"num_warps": None, "num_stages": None}  # None: the defaults
    fused = interactions.emap_model(model, xs, kernel="pallas", kernel_options=tiles)
    np.testing.assert_allclose(fused, interactions.emap_model(model, xs), rtol=1e-5, atol=1e-6)
    with jax.enable_x64(True):  # float64 parts would be computed in float32: refused
        wide = tuple(np.asarray(x, np.float64) for x in xs)
        with pytest.raises(
            ValueError, match=r"computes in float32 .* are float64; use kernel='xla'"
        ):
            interactions.emap_model(model, wide, kernel="pallas")
    with pytest.raises(ValueError, match=r"unknown kernel_options \['tile'\]"):
        interactions.emap_model(model, xs, kernel="pallas", kernel_options={"tile": 8})
    with pytest.raises(ValueError, match="kernel_options are for kernel='pallas'"):
        interactions.emap_model(model, xs, kernel_options={"block_cols": 16})


# JAX 0.12 deprecates Pallas's Triton backend (in favour of Mosaic GPU) with a warning
@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated:DeprecationWarning")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "tiles",  # the defaults, then the tilings scripts/bench_gpu.sh times
    [
        {},
        {"block_cols": 64, "rows_per_step": 1, "num_warps": 4},
        {"block_cols": 128, "rows_per_step": 1, "num_warps": 8, "hidden_chunk": 32},
        {"block_cols": 64, "rows_per_step": 2, "num_warps": 8, "hidden_chunk": 128},
        {"block_cols": 128, "rows_per_step": 2, "num_warps": 8},
        {"hidden_chunk": None},
    ],
)
def test_kernel_lowers_to_triton_for_a_gpu(tiles, dtype):
    """The kernel uses only what Pallas can lower to Triton (checked without a GPU), for
    the benchmark's head (two 256-unit hidden layers after the split) and tilings.

    The lowering targets an abstract H100; Triton's own compilation to GPU code
    (register and shared-memory limits) happens only on a GPU.
    """
    model, xs = early_fusion(hidden=(256, 256), out=2), inputs(9, 100, (7, 3))
    split = split_mlp(model)

    def sums(u, v, shift):
        kw = {"compute_dtype": dtype, "interpret": False, **tiles}
        return fused_pair_sums(u, v, split.layers, split.activations, shift, **kw)

    _, us = interactions.model_fn(model, xs)
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (*us, jnp.zeros(2))]
    # the GPU to lower for, which Pallas asks of the context mesh when none is present
    h100 = jax.sharding.AbstractDevice(device_kind="NVIDIA H100", num_cores=None, platform="gpu")
    with jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h100)
    ):
        lowered = jax.jit(sums).trace(*args).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "__gpu$xla.gpu.triton" in text and 'name = "emap_mlp_pair_sums"' in text


def test_the_kernels_relu_keeps_nan_and_float32_inputs_work_under_x64():
    # Triton lowers jnp.maximum to a max that drops NaN: the kernel's relu must not, or a
    # non-finite input would give finite EMAP instead of the error
    relu = _mlp_kernel._keep_nan(jax.nn.relu)
    values = jnp.array([jnp.nan, -jnp.inf, -1.0, 0.0, 2.0, jnp.inf])
    np.testing.assert_array_equal(relu(values), [jnp.nan, 0.0, 0.0, 0.0, 2.0, jnp.inf])
    assert _mlp_kernel._keep_nan(jnp.tanh) is jnp.tanh
    relu6 = _mlp_kernel._keep_nan(jax.nn.relu6)  # any other activation: NaN guarded
    np.testing.assert_array_equal(relu6(values), [jnp.nan, 0.0, 0.0, 0.0, 2.0, 6.0])
    model, xs = early_fusion(), inputs(8, 6, (7, 3))
    with jax.enable_x64(True):  # float32 inputs: the kernel's constants stay float32
        fused = interactions.emap_model(model, xs, kernel="pallas")
        plain = interactions.emap_model(model, xs)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
