"""Checks of sharded EMAP on 8 simulated CPU devices, run as a script by ``test_sharded``.

The device count is fixed when jax starts, so this runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before jax is imported; it
prints one JSON object of measurements for the test to assert on.
"""

import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")

import warnings

warnings.simplefilter("error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mmfuse import interactions  # noqa: E402
from tests.interactions.fns import additive, inputs, interacting  # noqa: E402
from tests.models import zoo  # noqa: E402


def max_rel_error(got, want):
    """max |got − want| / max(1, |want|) over every field of two decompositions."""
    pairs = [
        (got.original, want.original),
        *zip(got.marginals, want.marginals, strict=True),
        (got.grand_mean, want.grand_mean),
        (got.projected, want.projected),
    ]
    return max(
        float(np.max(np.abs(np.asarray(g) - np.asarray(w)) / np.maximum(1.0, np.abs(w))))
        for g, w in pairs
    )


def exact_checks(mesh):
    """Sharded exact EMAP against single-device EMAP for M = 2, 3 and three row layouts."""
    results = {}
    for label, widths, axis in [
        ("M2_both_axes", (3, 2), None),
        ("M3_one_axis", (3, 2, 2), "y"),
        ("M2_swapped_axes", (2, 3), ("y", "x")),
        ("M3_other_axis", (2, 2, 3), "x"),
    ]:
        n = 16
        fn, xs = interacting(widths), inputs(len(widths), n, widths)
        want = interactions.emap_decompose(fn, xs)
        got = interactions.sharded_emap_decompose(fn, xs, mesh=mesh, axis_name=axis, block_size=5)
        axes = ("x", "y") if axis is None else (axis,) if isinstance(axis, str) else axis
        results[label] = {
            "error": max_rel_error(got, want),
            "spec": [list(got.projected.sharding.spec[0])]
            if isinstance(got.projected.sharding.spec[0], tuple)
            else [[got.projected.sharding.spec[0]]],
            "axes": list(axes),
            "shape": list(got.projected.shape),
        }
    return results


def model_check(mesh):
    """A factorizing model: encodings sharded, head cross-paired on each device."""
    model = zoo.built("fusion_mlp_tensor")
    xs = zoo.vector_inputs(seed=3, batch=16)
    want = interactions.emap_model(model, xs)
    got = interactions.sharded_emap(*interactions.model_fn(model, xs), mesh=mesh)
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))))


def model_path_checks(mesh):
    """``sharded_emap_model`` on the fast paths: tensor fusion's row-shared contraction
    and an early-fusion MLP head split at its first layer (float32 and bf16), against
    ``emap_model`` on one device; and Monte-Carlo mode on a tensor model."""
    from flax import nnx

    from mmfuse import fusion, models

    rngs = nnx.Rngs(0)
    early = models.FusionModel(
        [None, None],
        fusion.create("nonlinear", (3, 5), 4, hidden_dims=(16, 8), rngs=rngs),
        models.MLP(4, (6,), 3, rngs=rngs),
    )
    xs = zoo.vector_inputs(seed=4, batch=16)
    results = {}
    for label, model, dtype in [
        ("tensor", zoo.built("fusion_mlp_tensor"), None),
        ("tensor_bf16", zoo.built("fusion_mlp_tensor"), jnp.bfloat16),
        ("split_mlp", early, None),
        ("split_mlp_bf16", early, jnp.bfloat16),
    ]:
        want = interactions.emap_model(model, xs, decompose=True, compute_dtype=dtype)
        got = interactions.sharded_emap_model(
            model, xs, mesh=mesh, decompose=True, block_size=3, compute_dtype=dtype
        )
        results[label] = {
            "error": max_rel_error(got, want),
            "sharded_rows": got.projected.sharding.spec[0] == ("x", "y"),
        }
    key = jax.random.key(0)
    mc = interactions.sharded_emap_model(
        zoo.built("fusion_mlp_tensor"), xs, mesh=mesh, num_samples=8, key=key
    )
    results["monte_carlo_finite"] = bool(np.all(np.isfinite(np.asarray(mc))))
    try:
        interactions.sharded_emap_model(early, [x[:12] for x in xs], mesh=mesh)
        results["indivisible"] = None
    except ValueError as error:
        results["indivisible"] = str(error)
    return results


def monte_carlo_checks(mesh):
    """z-scores of sharded Monte-Carlo estimates against exact values, and stderr ratios."""
    n, widths = 64, (3, 2)
    fn, xs = interacting(widths), inputs(30, n, widths)
    exact = interactions.emap_decompose(fn, xs)
    key = jax.random.key(1)
    sharded = interactions.sharded_emap_decompose(fn, xs, mesh=mesh, num_samples=64, key=key)
    single = interactions.emap_decompose(fn, xs, num_samples=64, key=key)
    z = np.concatenate(
        [
            np.ravel((np.asarray(e) - np.asarray(x)) / np.asarray(s))
            for e, s, x in [
                *zip(sharded.marginals, sharded.marginal_stderr, exact.marginals, strict=True),
                (sharded.projected, sharded.projected_stderr, exact.projected),
            ]
        ]
    )
    ratio = np.asarray(sharded.projected_stderr) / np.asarray(single.projected_stderr)
    return {
        "max_abs_z": float(np.max(np.abs(z))),
        "mean_sq_z": float(np.mean(z**2)),
        "mean_z": float(np.mean(z)),
        "num_z": int(z.size),
        "stderr_ratio_median": float(np.median(ratio)),
        "original_error": float(
            np.max(np.abs(np.asarray(sharded.original) - np.asarray(exact.original)))
        ),
    }


def large_monte_carlo(mesh):
    """N = 10^6 examples, K = 4 partners: the grand mean of an additive model is known."""
    n, widths = 1_000_000, (2, 2)
    fn = additive(widths, num_outputs=1)
    xs = inputs(40, n, widths)
    start = time.perf_counter()
    parts = interactions.sharded_emap_decompose(
        fn, xs, mesh=mesh, num_samples=4, key=jax.random.key(2)
    )
    projected = np.asarray(parts.projected)
    seconds = time.perf_counter() - start
    # E[f] for an additive f is the sum of each term's mean over the examples
    terms = [
        fn(tuple(jnp.zeros_like(x) if k != m else x for k, x in enumerate(xs))) for m in range(2)
    ]
    at_zero = fn(tuple(jnp.zeros_like(x[:1]) for x in xs))
    grand = sum(np.mean(np.asarray(t), axis=0) for t in terms) - np.asarray(at_zero)[0]
    z = (np.asarray(parts.grand_mean) - grand) / np.asarray(parts.grand_mean_stderr)
    return {
        "seconds": seconds,
        "shape": list(projected.shape),
        "finite": bool(np.all(np.isfinite(projected))),
        "grand_z": float(np.max(np.abs(z))),
    }


def huge_exact_traces(mesh):
    """M = 4, N = 1,296: 1296^3 > 2^31 pairs per example; tracing must not overflow."""
    fn = lambda xs: xs[0] + xs[1] * xs[2] - xs[3]  # noqa: E731
    shapes = [jax.ShapeDtypeStruct((1296,), jnp.float32)] * 4
    out = jax.eval_shape(
        lambda *xs: interactions.sharded_emap_decompose(fn, xs, mesh=mesh).projected, *shapes
    )
    return list(out.shape)


def error_checks(mesh):
    """The messages of the errors sharded EMAP raises on bad arguments."""
    fn, xs = interacting((3, 2)), inputs(50, 12, (3, 2))
    messages = {}
    for label, call in [
        ("indivisible", lambda: interactions.sharded_emap(fn, xs, mesh=mesh)),
        ("bad_axis", lambda: interactions.sharded_emap(fn, xs, mesh=mesh, axis_name="z")),
        ("not_a_mesh", lambda: interactions.sharded_emap(fn, xs, mesh=jax.devices())),
        (
            "nonfinite",
            lambda: interactions.sharded_emap(
                fn, (xs[0][:8].at[3, 0].set(jnp.nan), xs[1][:8]), mesh=mesh
            ),
        ),
    ]:
        try:
            call()
            messages[label] = None
        except ValueError as error:
            messages[label] = str(error)
    return messages


def explicit_mesh_checks(mesh):
    """emap, emap_model and emap_report on arrays placed on jax.make_mesh's mesh
    (Explicit axes) equal the same calls on unsharded arrays; inside jit, a clear error."""
    assert all(kind == jax.sharding.AxisType.Explicit for kind in mesh.axis_types)
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("x", "y")))
    fn, xs = interacting((3, 2)), inputs(52, 16, (3, 2))
    placed = tuple(jax.device_put(x, rows) for x in xs)
    model = zoo.fusion_mlp_tensor()
    model_xs = zoo.vector_inputs(batch=16)
    model_placed = tuple(jax.device_put(x, rows) for x in model_xs)
    labels = np.arange(16) % 2
    errors = {
        "emap": float(np.max(np.abs(interactions.emap(fn, placed) - interactions.emap(fn, xs)))),
        "monte_carlo": float(
            np.max(
                np.abs(
                    interactions.emap(fn, placed, num_samples=4, key=jax.random.key(0))
                    - interactions.emap(fn, xs, num_samples=4, key=jax.random.key(0))
                )
            )
        ),
        "emap_model": float(
            np.max(
                np.abs(
                    interactions.emap_model(model, model_placed)
                    - interactions.emap_model(model, model_xs)
                )
            )
        ),
        "emap_report": abs(
            interactions.emap_report(fn, placed, labels).projected
            - interactions.emap_report(fn, xs, labels).projected
        ),
    }
    # the sharded pass takes Explicit-sharded arrays as they are, also inside jit
    sharded = jax.jit(lambda *xs: interactions.sharded_emap(fn, xs, mesh=mesh))(*placed)
    errors["sharded_inside_jit"] = float(np.max(np.abs(sharded - interactions.emap(fn, xs))))
    try:
        jax.jit(lambda *xs: interactions.emap(fn, xs))(*placed)
        inside_jit = None
    except ValueError as error:
        inside_jit = str(error)
    return {"errors": errors, "inside_jit": inside_jit}


def main():
    mesh = jax.make_mesh((2, 4), ("x", "y"))
    start = time.perf_counter()
    results = {
        "device_count": jax.device_count(),
        "exact": exact_checks(mesh),
        "model": model_check(mesh),
        "model_paths": model_path_checks(mesh),
        "monte_carlo": monte_carlo_checks(mesh),
        "large": large_monte_carlo(mesh),
        "huge_exact_shape": huge_exact_traces(mesh),
        "errors": error_checks(mesh),
        "explicit_mesh": explicit_mesh_checks(mesh),
    }
    results["seconds"] = time.perf_counter() - start
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
