"""One process of a multi-process training run on CPU (see test_multiprocess.py).

    python -m tests.train.multiprocess_checks PROCESS_ID NUM_PROCESSES PORT WORKDIR

With NUM_PROCESSES = 1 no distributed runtime is started. Prints one JSON line: the
process's view of the trained parameters and of the run.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmfuse import models
from mmfuse.train import fit, make_mesh, read_metrics


def main(process_id: str, num_processes: str, port: str, workdir: str) -> None:
    if int(num_processes) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}", num_processes=int(num_processes), process_id=int(process_id)
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    data = {"x": x, "label": (2 * x[:, 0] - x[:, 1] * x[:, 2]).astype(np.float32)}

    def loss_fn(model, batch, key):
        return jnp.mean((model(batch["x"])[:, 0] - batch["label"]) ** 2)

    def evaluate(model, batch):
        return {"mse": jnp.mean((model(batch["x"])[:, 0] - batch["label"]) ** 2)}

    result = fit(
        models.MLP(4, (16,), 1, rngs=nnx.Rngs(0)),
        loss_fn,
        optax.adam(1e-2),
        data,
        num_steps=24,
        batch_size=32,
        evaluate=evaluate,
        eval_data=data,
        eval_every=12,
        monitor="mse",
        log_every=6,
        progress=False,
        mesh=make_mesh(),
        workdir=workdir,
    )
    leaves = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(result.params)]
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "params": [leaf.ravel().tolist() for leaf in leaves],
                "best_step": result.best_step,
                "metric_lines": len(read_metrics(f"{workdir}/metrics.jsonl")),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
