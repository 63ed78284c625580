"""Soft gated fusion: hand-computed values, GMU, gate sources and normalisation, options."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import functional as F

OPTION_GRID = [
    dict(projection=p, gate_source=s, gate=g, granularity=r)
    for p, s, g, r in itertools.product(
        ("tanh", "linear"),
        ("all", "self", "others"),
        ("sigmoid", "softmax"),
        ("feature", "modality"),
    )
] + [
    dict(projection=p, gate_source="all", gate="gmu", granularity=r)
    for p in ("tanh", "linear")
    for r in ("feature", "modality")
]


def _ids(options):
    return "-".join(str(v) for v in options.values())


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(params, xs, *, projection, gate_source, gate, granularity):
    """Gated fusion written out example by example in numpy float64."""
    kernels = [np.asarray(k, np.float64) for k in params["kernels"]]
    gate_kernels = [np.asarray(k, np.float64) for k in params["gate_kernels"]]
    gate_biases = [np.asarray(b, np.float64) for b in params["gate_biases"]]
    xs = [np.asarray(x, np.float64) for x in xs]
    num_modalities, batch, out_dim = len(xs), xs[0].shape[0], kernels[0].shape[1]
    z = np.zeros((batch, out_dim))
    for i in range(batch):
        h = []
        for m in range(num_modalities):
            pre = xs[m][i] @ kernels[m]
            h.append(
                np.tanh(pre)
                if projection == "tanh"
                else pre + np.asarray(params["biases"][m], np.float64)
            )
        if gate == "gmu":
            joint = np.concatenate([xs[0][i], xs[1][i]])
            g = _sigmoid(joint @ gate_kernels[0] + gate_biases[0])
            z[i] = g * h[0] + (1.0 - g) * h[1]
            continue
        logits = []
        for m in range(num_modalities):
            if gate_source == "all":
                source = np.concatenate([x[i] for x in xs])
            elif gate_source == "self":
                source = xs[m][i]
            else:
                source = np.concatenate([xs[j][i] for j in range(num_modalities) if j != m])
            logits.append(source @ gate_kernels[m] + gate_biases[m])
        logits = np.stack(logits)  # [M, G]
        if gate == "sigmoid":
            g = _sigmoid(logits)
        else:
            e = np.exp(logits - logits.max(axis=0))
            g = e / e.sum(axis=0)
        for m in range(num_modalities):
            z[i] += g[m] * h[m]  # g[m] is [G], G = out_dim or 1
    return z


def random_params(rng, in_dims, out_dim, options):
    """Float64 parameters of the layout ``init_gated`` builds, with nonzero biases."""
    layout = F.init_gated(jax.random.key(0), in_dims, out_dim, **options)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float64), layout)


def inputs(rng, in_dims, batch, dtype=jnp.float64):
    return tuple(jnp.asarray(rng.normal(size=(batch, d)), dtype) for d in in_dims)


def test_hand_computed_value_two_modalities():
    # d = (1, 1), C = 1: every term can be checked on paper.
    with jax.enable_x64(True):
        params = {
            "kernels": [jnp.array([[2.0]]), jnp.array([[-1.0]])],
            "gate_kernels": [jnp.array([[1.0], [0.5]]), jnp.array([[-1.0], [0.0]])],
            "gate_biases": [jnp.array([0.25]), jnp.array([0.0])],
        }
        xs = (jnp.array([[0.5]]), jnp.array([[2.0]]))
        z = F.gated(params, xs)
        assert z.dtype == jnp.float64
    h1, h2 = np.tanh(1.0), np.tanh(-2.0)
    g1 = 1.0 / (1.0 + np.exp(-(0.5 + 1.0 + 0.25)))  # σ(1·0.5 + 0.5·2 + 0.25)
    g2 = 1.0 / (1.0 + np.exp(0.5))  # σ(−1·0.5)
    np.testing.assert_allclose(np.asarray(z), [[g1 * h1 + g2 * h2]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("options", OPTION_GRID, ids=_ids)
def test_float64_value_matches_numpy_reference(options):
    rng = np.random.default_rng(0)
    in_dims = (2, 3) if options["gate"] == "gmu" else (2, 3, 4)
    with jax.enable_x64(True):
        params = random_params(rng, in_dims, 3, options)
        xs = inputs(rng, in_dims, 5)
        z = F.gated(params, xs, **options)
        assert z.dtype == jnp.float64
    expected = reference(params, xs, **options)
    np.testing.assert_allclose(np.asarray(z), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("granularity", ["feature", "modality"])
def test_gmu_equals_the_papers_formula(granularity):
    rng = np.random.default_rng(1)
    options = dict(gate="gmu", granularity=granularity)
    with jax.enable_x64(True):
        params = random_params(rng, (3, 4), 2, options)
        x1, x2 = inputs(rng, (3, 4), 6)
        z = F.gated(params, (x1, x2), **options)
        gates = F.soft_gates(params, (x1, x2), **options)
    w1, w2 = (np.asarray(k) for k in params["kernels"])
    wg, bg = np.asarray(params["gate_kernels"][0]), np.asarray(params["gate_biases"][0])
    x1, x2 = np.asarray(x1), np.asarray(x2)
    h1, h2 = np.tanh(x1 @ w1), np.tanh(x2 @ w2)
    g = 1.0 / (1.0 + np.exp(-(np.concatenate([x1, x2], axis=-1) @ wg + bg)))
    assert g.shape == (6, 2 if granularity == "feature" else 1)
    np.testing.assert_allclose(np.asarray(z), g * h1 + (1.0 - g) * h2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gates), np.stack([g, 1.0 - g], axis=-2), atol=1e-12)


@pytest.mark.parametrize("gate_source", ["all", "self", "others"])
@pytest.mark.parametrize("granularity", ["feature", "modality"])
def test_softmax_gates_sum_to_one_over_modalities(gate_source, granularity):
    options = dict(gate="softmax", gate_source=gate_source, granularity=granularity)
    op = fusion.create("gated", (3, 4, 5), 6, rngs=nnx.Rngs(0), **options)
    xs = inputs(np.random.default_rng(2), (3, 4, 5), 7, jnp.float32)
    g = op.gates(xs)
    assert g.shape == (7, 3, 6 if granularity == "feature" else 1)
    assert np.all(g > 0)
    np.testing.assert_allclose(np.sum(g, axis=-2), 1.0, rtol=1e-6)
    # The output is a convex combination of the tanh projections, so |z| < 1.
    assert np.all(np.abs(op(xs)) < 1.0)


def test_gate_source_self_reads_only_its_own_modality():
    options = dict(gate="sigmoid", gate_source="self")
    op = fusion.create("gated", (3, 4, 5), 6, rngs=nnx.Rngs(0), **options)
    rng = np.random.default_rng(3)
    xs = inputs(rng, (3, 4, 5), 8, jnp.float32)
    before = op.gates(xs)
    for m in range(3):
        changed = list(xs)
        changed[m] = xs[m] * 3.0 + 1.0
        after = op.gates(changed)
        for k in range(3):
            if k == m:
                assert not np.allclose(after[:, k], before[:, k])
            else:  # g_k reads only x_k: bitwise unchanged
                np.testing.assert_array_equal(after[:, k], before[:, k])


def test_gate_source_others_ignores_its_own_modality_and_all_reads_everything():
    rng = np.random.default_rng(4)
    xs = inputs(rng, (3, 4, 5), 8, jnp.float32)
    changed = (xs[0] * 3.0 + 1.0, *xs[1:])
    others = fusion.create("gated", (3, 4, 5), 6, rngs=nnx.Rngs(0), gate_source="others")
    g, g_changed = others.gates(xs), others.gates(changed)
    np.testing.assert_array_equal(g_changed[:, 0], g[:, 0])
    assert not np.allclose(g_changed[:, 1], g[:, 1])
    assert not np.allclose(g_changed[:, 2], g[:, 2])
    every = fusion.create("gated", (3, 4, 5), 6, rngs=nnx.Rngs(0), gate_source="all")
    g, g_changed = every.gates(xs), every.gates(changed)
    for k in range(3):
        assert not np.allclose(g_changed[:, k], g[:, k])


def test_modality_granularity_gives_one_weight_per_modality():
    op = fusion.create("gated", (3, 4, 5), 6, rngs=nnx.Rngs(0), granularity="modality")
    xs = inputs(np.random.default_rng(5), (3, 4, 5), 4, jnp.float32)
    assert op.gates(xs).shape == (4, 3, 1)
    assert op.gate_kernels[0].shape == (12, 1)


@pytest.mark.parametrize("options", OPTION_GRID, ids=_ids)
def test_every_option_combination_trains_every_parameter(options):
    in_dims = (3, 4) if options["gate"] == "gmu" else (3, 4, 5)
    op = fusion.create("gated", in_dims, 3, rngs=nnx.Rngs(0), **options)
    # Batch and time dims, to exercise gates over more than one leading axis.
    xs = tuple(jax.random.normal(jax.random.key(m), (2, 5, d)) for m, d in enumerate(in_dims))
    target = jax.random.normal(jax.random.key(9), (2, 5, 3))
    np.testing.assert_array_equal(op(xs), F.gated(op.functional_params(), xs, **options))
    graphdef, state = nnx.split(op)

    def loss(state):
        return jnp.mean((nnx.merge(graphdef, state)(xs) - target) ** 2)

    grads = jax.grad(loss)(state)
    np.testing.assert_allclose(
        jax.jit(lambda s: nnx.merge(graphdef, s)(xs))(state), op(xs), rtol=1e-5, atol=1e-6
    )
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert np.any(g != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("projection", "relu"),
        ("gate_source", "neighbours"),
        ("gate", "hard"),
        ("granularity", "token"),
    ],
)
def test_bad_option_values_raise_naming_the_option(option, value):
    with pytest.raises(ValueError, match=rf"gated: {option}={value!r} is not one of"):
        fusion.create("gated", (3, 4, 5), 2, rngs=nnx.Rngs(0), **{option: value})
    with pytest.raises(ValueError, match=rf"{option}={value!r}"):
        F.init_gated(jax.random.key(0), (3, 4), 2, **{option: value})


def test_gmu_needs_two_modalities_and_all_modalities_as_source():
    with pytest.raises(ValueError, match="gate='gmu' is defined for exactly 2 modalities, got 3"):
        fusion.create("gated", (3, 4, 5), 2, rngs=nnx.Rngs(0), gate="gmu")
    for source in ("self", "others"):
        with pytest.raises(
            ValueError, match=rf"gate_source must be 'all', got gate_source='{source}'"
        ):
            fusion.create("gated", (3, 4), 2, rngs=nnx.Rngs(0), gate="gmu", gate_source=source)


def test_params_built_with_other_options_are_rejected():
    xs = inputs(np.random.default_rng(7), (3, 4, 5), 2, jnp.float32)
    params = F.init_gated(jax.random.key(0), (3, 4, 5), 2, gate_source="self")
    with pytest.raises(ValueError, match=r"gate kernels have shapes.*gate_source='all'"):
        F.gated(params, xs)
    with pytest.raises(ValueError, match="granularity='modality'"):
        F.gated(params, xs, gate_source="self", granularity="modality")
    with pytest.raises(ValueError, match="projection='linear' needs params\\['biases'\\]"):
        F.gated(params, xs, gate_source="self", projection="linear")
    with pytest.raises(ValueError, match="gated: modality 2 has feature size 6"):
        F.gated(params, (*xs[:2], jnp.ones((2, 6))), gate_source="self")
