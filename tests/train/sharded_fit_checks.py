"""Checks of ``fit`` on a device mesh, run in a fresh process (see test_sharded.py).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.train.sharded_fit_checks \
        {compare,stateful,save} DIR
    python -m tests.train.sharded_fit_checks resume DIR      # on one device

Prints one JSON line of results.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmfuse import fusion, models
from mmfuse.train import Checkpointer, fit, make_mesh, param_path

N, STEPS = 256, 12


def data():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(N, 6)).astype(np.float32)
    x2 = rng.normal(size=(N, 10)).astype(np.float32)
    return {"x1": x1, "x2": x2, "label": (x1[:, 0] * x2[:, 0] > 0).astype(np.int32)}


def model():
    rngs = nnx.Rngs(0)
    return models.FusionModel(
        [models.MLP(6, (16,), 8, rngs=rngs), models.MLP(10, (16,), 8, rngs=rngs)],
        fusion.create("low_rank_tensor", (8, 8), 16, rngs=rngs, rank=4),
        models.MLP(16, (), 2, rngs=rngs),
    )


def loss_fn(m, batch, key):
    logits = m((batch["x1"], batch["x2"]))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def evaluate(m, batch):
    logits = m((batch["x1"], batch["x2"]))
    return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}


def run(workdir=None, train_data=None, **kwargs):
    arrays = data()
    return fit(
        model(),
        loss_fn,
        optax.adam(1e-2),
        arrays if train_data is None else train_data,
        num_steps=STEPS,
        batch_size=32,
        seed=1,
        evaluate=evaluate,
        eval_data=arrays,
        eval_every=6,
        checkpoint_every=6,
        log_every=3,
        progress=False,
        workdir=workdir,
        **kwargs,
    )


class Normalized(nnx.Module):
    """Non-Param state: BatchNorm statistics, and dropout drawing from its own nnx.Rngs."""

    def __init__(self):
        self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=nnx.Rngs(0))
        self.drop = nnx.Dropout(0.25, rngs=nnx.Rngs(dropout=1))
        self.out = nnx.Linear(16, 2, rngs=nnx.Rngs(2))

    def __call__(self, xs, train=True):
        h = self.norm(jnp.concatenate(xs, axis=-1) + 3.0, use_running_average=not train)
        return self.out(self.drop(h, deterministic=not train))


def stateful_run(**kwargs):
    def loss(m, batch, key):
        logits = m((batch["x1"], batch["x2"]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    def score(m, batch):
        logits = m((batch["x1"], batch["x2"]), train=False)
        return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    arrays = data()
    settings = dict(num_steps=STEPS, batch_size=32, seed=1, evaluate=score, eval_data=arrays)
    return fit(
        Normalized(),
        loss,
        optax.adam(1e-2),
        arrays,
        **settings,
        eval_every=6,
        progress=False,
        **kwargs,
    )


def flat(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(flat(a), flat(b), strict=True))


def main(mode, directory):
    directory = pathlib.Path(directory)
    out = {"devices": jax.device_count()}
    if mode == "compare":
        single = run()
        data_parallel = run(mesh=make_mesh())
        mesh_2x4 = make_mesh((2, 4), ("data", "model"))
        sharded = run(mesh=mesh_2x4, param_axis="model")
        specs = {str(x.sharding.spec) for x in jax.tree.leaves(sharded.params)}
        # jax.make_mesh's meshes have Explicit axes by default; fit uses them as Auto
        explicit = jax.make_mesh((2, 4), ("data", "model"))
        assert all(kind == jax.sharding.AxisType.Explicit for kind in explicit.axis_types)
        explicit_run = run(mesh=explicit, param_axis="model")
        # and data already placed on such a mesh
        rows = jax.sharding.NamedSharding(explicit, jax.sharding.PartitionSpec("data"))
        placed = {k: jax.device_put(v, rows) for k, v in data().items()}
        placed_run = run(train_data=placed, mesh=explicit)
        out |= {
            "data_parallel_diff": max_diff(single.params, data_parallel.params),
            "mesh_2x4_diff": max_diff(single.params, sharded.params),
            "explicit_mesh_diff": max_diff(single.params, explicit_run.params),
            "explicit_placed_data_diff": max_diff(single.params, placed_run.params),
            "sharded_specs": sorted(specs),
            "param_scale": max(float(np.max(np.abs(x))) for x in flat(single.params)),
        }
    elif mode == "stateful":
        single = stateful_run()
        arrays = (nnx.Param, nnx.BatchStat, nnx.RngCount)  # not the keys
        states = {"single": nnx.state(single.model, arrays)}
        states["data_parallel"] = nnx.state(stateful_run(mesh=make_mesh()).model, arrays)
        mesh_2x4 = make_mesh((2, 4), ("data", "model"))
        states["mesh_2x4"] = nnx.state(
            stateful_run(mesh=mesh_2x4, param_axis="model").model, arrays
        )
        out |= {
            f"{name}_diff": max_diff(states["single"], state)
            for name, state in states.items()
            if name != "single"
        }
        out["mean_shift"] = float(np.max(np.abs(single.model.norm.mean[...])))
        out["rng_count"] = int(single.model.drop.rngs.count[...])
        out["same_rng_counts"] = (
            len({int(s["drop"]["rngs"]["count"][...]) for s in states.values()}) == 1
        )
    elif mode == "save":
        result = run(directory / "run", mesh=make_mesh())
        np.savez(directory / "final.npz", *flat(result.params))
        by_path = jax.tree_util.tree_flatten_with_path(result.params)[0]
        np.savez(directory / "final_by_path.npz", **{param_path(p): v for p, v in by_path})
        checkpoints = Checkpointer(directory / "run" / "checkpoints")
        out["steps"] = list(checkpoints.all_steps())
    elif mode == "resume":
        # Forget the final checkpoint: the run resumes on this one device from step 6.
        import shutil

        # the 8-device checkpoint also reads back as saved, without a target
        with Checkpointer(directory / "run" / "checkpoints") as checkpointer:
            state, _ = checkpointer.restore_saved(STEPS)
        as_saved = {
            param_path(p).removesuffix("/value"): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]
        }
        final = np.load(directory / "final_by_path.npz")
        out["as_saved_diff"] = max(
            float(np.max(np.abs(as_saved[key] - final[key]))) for key in final.files
        )
        out["as_saved_paths_match"] = sorted(as_saved) == sorted(final.files)
        shutil.rmtree(directory / "run" / "checkpoints" / str(STEPS))
        result = run(directory / "run")
        saved = np.load(directory / "final.npz")
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        out |= {
            "step": result.step,
            "diff": max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(flat(result.params), expected, strict=True)
            ),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
